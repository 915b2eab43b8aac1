package netns

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestDemo runs `vpcd demo` as a user would and checks that it reports
// every expectation met and leaves nothing behind: no namespace, pin, lab
// directory or daemon.
func TestDemo(t *testing.T) {
	testkit.NeedRoot(t, labNeeds)
	start := time.Now()
	var out bytes.Buffer
	cmd := exec.Command(vpcdBinary, "demo", "--mib", "16")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("vpcd demo: %v\n%s", err, out.String())
	}
	t.Logf("demo ran in %.1fs", time.Since(start).Seconds())
	text := out.String()
	for _, want := range []string{"reachability", "TCP connections", "throughput", "tunnels", "drops counted", "traffic mirroring", "the appliance received", "lab removed"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "UNEXPECTED") {
		t.Errorf("demo reported an unexpected result:\n%s", text)
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "vpcd-demo-") {
		t.Errorf("demo left namespaces:\n%s", ns)
	}
	for _, p := range []string{"/sys/fs/bpf/vpcd-lab/vpcd-demo", "/run/vpcd/labs/vpcd-demo"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("demo left %s", p)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("vpcd-lab/vpcd-demo")) {
			t.Errorf("demo left a daemon running: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
