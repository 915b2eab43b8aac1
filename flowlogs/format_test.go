package flowlogs

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// allFields is every field SPEC §6 lists, in the order it lists them.
var allFields = []string{"version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport",
	"dstport", "protocol", "packets", "bytes", "start", "end", "action", "log-status",
	"vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr",
	"flow-direction", "traffic-path", "encryption-status", "vni"}

func custom(fields ...string) string {
	tokens := make([]string, len(fields))
	for i, f := range fields {
		tokens[i] = "${" + f + "}"
	}
	return strings.Join(tokens, " ")
}

func mustFormat(t testing.TB, s string) Format {
	t.Helper()
	f, err := ParseFormat(s)
	if err != nil {
		t.Fatalf("ParseFormat(%q): %v", s, err)
	}
	return f
}

var t0 = time.Unix(1418530010, 0)

// tcpRecord is an accepted SSH flow, as in AWS's documentation.
func tcpRecord() Record {
	return Record{
		AccountID: "123456789010", InterfaceID: "a1",
		SrcAddr: netip.MustParseAddr("172.31.16.139"), DstAddr: netip.MustParseAddr("172.31.16.21"),
		SrcPort: 20641, DstPort: 22, Protocol: ProtoTCP, Packets: 20, Bytes: 4249,
		Start: t0, End: t0.Add(60 * time.Second), Action: ActionAccept, LogStatus: StatusOK,
		VPCID: "blue", SubnetID: "blue-a", TCPFlags: 3, FlowDirection: DirectionIngress,
		EncryptionStatus: 1, VNI: 4242,
	}
}

func TestParseFormatDefault(t *testing.T) {
	f := mustFormat(t, "default")
	want := "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
	if got := f.Header(); got != want {
		t.Errorf("Header() = %q, want %q", got, want)
	}
	if got := strings.Join(f.Fields(), " "); got != want {
		t.Errorf("Fields() = %q", got)
	}
	if f.Version() != 2 {
		t.Errorf("Version() = %d, want 2", f.Version())
	}
}

func TestParseFormatCustom(t *testing.T) {
	f := mustFormat(t, custom(allFields...))
	if got, want := f.Header(), strings.Join(allFields, " "); got != want {
		t.Errorf("Header() = %q, want %q", got, want)
	}
}

func TestParseFormatErrors(t *testing.T) {
	for _, s := range []string{"${srcaddr} ${nosuch}", "", "srcaddr", "${srcaddr}${dstaddr}", "${}"} {
		_, err := ParseFormat(s)
		if err == nil {
			t.Errorf("ParseFormat(%q) succeeded", s)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFormat(%q) error spans lines: %q", s, err)
		}
	}
	_, err := ParseFormat("${srcaddr} ${nosuch}")
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown field: error %v does not name it", err)
	}
}

func TestFormatVersion(t *testing.T) {
	for _, tc := range []struct {
		fields []string
		want   int
	}{
		{[]string{"srcaddr", "dstaddr"}, 2},
		{[]string{"vni"}, 2},
		{[]string{"version", "vpc-id"}, 3},
		{[]string{"tcp-flags", "srcaddr"}, 3},
		{[]string{"pkt-dstaddr", "flow-direction"}, 5},
		{[]string{"traffic-path"}, 5},
		{[]string{"encryption-status", "version"}, 7},
		{[]string{"vni", "type"}, 3},
		{allFields, 7},
	} {
		f := mustFormat(t, custom(tc.fields...))
		if f.Version() != tc.want {
			t.Errorf("%v: Version() = %d, want %d", tc.fields, f.Version(), tc.want)
		}
		if tc.fields[0] == "version" {
			if got := f.Line(tcpRecord()); !strings.HasPrefix(got, strconv.Itoa(tc.want)+" ") {
				t.Errorf("%v: line %q does not start with the version", tc.fields, got)
			}
		}
	}
}

func TestLineDefault(t *testing.T) {
	f := mustFormat(t, "default")
	accept := tcpRecord()
	reject := tcpRecord()
	reject.SrcAddr, reject.DstAddr = netip.MustParseAddr("172.31.9.69"), netip.MustParseAddr("172.31.9.12")
	reject.SrcPort, reject.DstPort, reject.Action = 49761, 3389, ActionReject
	nodata := Record{AccountID: "123456789010", InterfaceID: "a1", Start: time.Unix(1431280876, 0),
		End: time.Unix(1431280934, 0), LogStatus: StatusNoData}
	skip := nodata
	skip.LogStatus = StatusSkipData
	icmp := tcpRecord()
	icmp.Protocol, icmp.SrcPort, icmp.DstPort, icmp.ICMPType, icmp.Packets, icmp.Bytes = ProtoICMP, 0, 0, 8, 10, 1280
	gre := tcpRecord()
	gre.Protocol, gre.AccountID = 47, ""
	for _, tc := range []struct {
		name string
		r    Record
		want string
	}{
		{"accept", accept, "2 123456789010 a1 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"},
		{"reject", reject, "2 123456789010 a1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"},
		{"nodata", nodata, "2 123456789010 a1 - - - - - - - 1431280876 1431280934 - NODATA"},
		{"skipdata", skip, "2 123456789010 a1 - - - - - - - 1431280876 1431280934 - SKIPDATA"},
		{"icmp", icmp, "2 123456789010 a1 172.31.16.139 172.31.16.21 0 0 1 10 1280 1418530010 1418530070 ACCEPT OK"},
		{"no ports, no account", gre, "2 - a1 172.31.16.139 172.31.16.21 - - 47 20 4249 1418530010 1418530070 ACCEPT OK"},
	} {
		if got := f.Line(tc.r); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestLineCustom(t *testing.T) {
	f := mustFormat(t, custom(allFields...))
	r := tcpRecord()
	want := "7 123456789010 a1 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK " +
		"blue blue-a - 3 IPv4 172.31.16.139 172.31.16.21 ingress - 1 4242"
	if got := f.Line(r); got != want {
		t.Errorf("tcp:\n got %q\nwant %q", got, want)
	}

	r.Protocol, r.InstanceID, r.TrafficPath, r.EncryptionStatus = ProtoUDP, "web-1", 1, EncryptionUnknown
	r.PktSrcAddr = netip.MustParseAddr("192.0.2.7")
	r.FlowDirection = DirectionEgress
	want = "7 123456789010 a1 172.31.16.139 172.31.16.21 20641 22 17 20 4249 1418530010 1418530070 ACCEPT OK " +
		"blue blue-a web-1 - IPv4 192.0.2.7 172.31.16.21 egress 1 - 4242"
	if got := f.Line(r); got != want {
		t.Errorf("udp:\n got %q\nwant %q", got, want)
	}

	nodata := Record{InterfaceID: "a1", VPCID: "blue", SubnetID: "blue-a", Start: t0, End: t0.Add(time.Minute),
		LogStatus: StatusNoData, EncryptionStatus: 0, VNI: 4242}
	want = "7 - a1 - - - - - - - 1418530010 1418530070 - NODATA blue blue-a - - - - - - - - 4242"
	if got := f.Line(nodata); got != want {
		t.Errorf("nodata:\n got %q\nwant %q", got, want)
	}
}

func TestAppendLineAppends(t *testing.T) {
	f := mustFormat(t, "${srcaddr} ${dstport}")
	r := tcpRecord()
	got := string(f.AppendLine([]byte("x:"), &r))
	if got != "x:172.31.16.139 22" {
		t.Errorf("AppendLine = %q", got)
	}
}
