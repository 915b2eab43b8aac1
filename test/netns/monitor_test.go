package netns

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
)

// TestMonitor streams a daemon's events with `vpcd monitor --json` while
// a connection is refused and pings pass: a drop with its reason and ENI,
// and flow events, must appear; filters must hold.
func TestMonitor(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	testkit.NeedTools(t, "ping")
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
	var events []control.Event
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev control.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			}
		}
	}()
	// The monitor subscribes at some point after it starts: what happens
	// before is not streamed. Traffic goes on until both kinds of event
	// come through.
	var drop, flow bool
	seen := 0
	ok := testkit.Eventually(15*time.Second, func() bool {
		mu.Lock()
		fresh := events[seen:]
		seen = len(events)
		mu.Unlock()
		for _, ev := range fresh {
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
		if drop && flow {
			return true
		}
		canConnect(l, "f1", "10.7.1.20:81")
		ping(t, l, "f1", "10.7.1.20", 2)
		return false
	})
	if !ok {
		mu.Lock()
		t.Fatalf("drop event seen %v, flow event seen %v, in %+v", drop, flow, events)
	}
}
