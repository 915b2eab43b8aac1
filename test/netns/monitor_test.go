package netns

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/vpcd/vpcd/agent"
)

// TestMonitor streams a daemon's events with `vpcd monitor --json` while
// a connection is refused and pings pass: a drop with its reason and ENI,
// and flow events, must appear; filters must hold.
func TestMonitor(t *testing.T) {
	needRoot(t)
	needTools(t, "ping")
	l := upLab(t, "vm", "flowlogs.yaml")
	listen(t, l, "f2", "10.7.1.20:81")

	cmd := exec.Command(vpcdBinary, "monitor", "--socket", l.SocketPath("q"), "--json", "--eni", "f2")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var mu sync.Mutex
	var events []agent.Event
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev agent.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // the monitor subscribes
	canConnect(l, "f1", "10.7.1.20:81")
	ping(t, l, "f1", "10.7.1.20", 2)

	var drop, flow bool
	ok := eventually(5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			if ev.ENI != "f2" {
				t.Errorf("the --eni f2 filter let through %+v", ev)
			}
			if ev.Kind == "drop" && ev.Reason == "sg_ingress" && ev.DstPort == 81 && ev.Src == "10.7.1.10" {
				drop = true
			}
			if ev.Kind == "flow" && ev.Verdict == "ACCEPT" && ev.Protocol == 1 && ev.Packets > 0 {
				flow = true
			}
		}
		return drop && flow
	})
	if !ok {
		mu.Lock()
		t.Fatalf("drop event seen %v, flow event seen %v, in %+v", drop, flow, events)
	}
}
