package topology

import "testing"

// TestMaxConnections reads max_connections and works out the default: an
// equal share of the conntrack table among the ENIs of a host, at least
// MinDefaultConnections.
func TestMaxConnections(t *testing.T) {
	doc := base + `enis:
  - {name: a1, host: h1, subnet: blue-1, ip: 10.0.1.10, max_connections: 5000}
  - {name: a2, host: h1, subnet: blue-1, ip: 10.0.1.11}
  - {name: a3, host: h1, subnet: blue-1, ip: 10.0.1.12}
  - {name: b1, host: h2, subnet: red-1, ip: 10.0.1.10}
`
	top := mustParse(t, doc)
	want := map[string][2]int{ // as written, in effect
		"a1": {5000, 5000},
		"a2": {0, ConntrackTableSize / 3},
		"a3": {0, ConntrackTableSize / 3},
		"b1": {0, ConntrackTableSize},
	}
	for name, w := range want {
		e := top.ENIByName(name)
		if e.MaxConnections != w[0] || top.MaxConnections(e) != w[1] {
			t.Errorf("%s: max_connections %d, in effect %d; want %d and %d", name, e.MaxConnections, top.MaxConnections(e), w[0], w[1])
		}
	}
	// Many ENIs on one host: each still gets the minimum.
	many := &Topology{}
	for i := 0; i < 1000; i++ {
		many.ENIs = append(many.ENIs, ENI{Host: "h"})
	}
	if got := many.MaxConnections(&many.ENIs[0]); got != MinDefaultConnections {
		t.Errorf("1000 ENIs on a host: default %d, want %d", got, MinDefaultConnections)
	}
}
