// Package netns holds vpcd's integration tests: real namespaces, veths,
// eBPF programs, wireguard-go and traffic, built with the lab.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// vpcdBinary is built once by TestMain for the labs' daemons.
var vpcdBinary string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Every test here skips with a reason; nothing to build.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vpcd-netns-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vpcdBinary = filepath.Join(dir, "vpcd")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", vpcdBinary, "github.com/vpcd/vpcd/cmd/vpcd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build vpcd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// labNeeds is why the tests here need root.
const labNeeds = "builds network namespaces and loads eBPF programs"

// upLab brings up a lab from a topology file under testdata and tears it
// down when the test ends, on every path.
func upLab(t testing.TB, name, topo string) *lab.Lab {
	t.Helper()
	return upLabWith(t, name, topo)
}

// editedTopology writes testdata/name with its first old replaced by
// new to a file of the test's own and returns that file's path; the test
// fails when old is not there (the test topology changed under it).
func editedTopology(t testing.TB, name, old, new string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), old) {
		t.Fatalf("testdata/%s has no %q to replace", name, old)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(strings.Replace(string(src), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// upLabWith is upLab with extra flags for every daemon.
func upLabWith(t testing.TB, name, topo string, daemonFlags ...string) *lab.Lab {
	t.Helper()
	testkit.NeedRoot(t, labNeeds)
	if !filepath.IsAbs(topo) {
		topo = filepath.Join("testdata", topo)
	}
	return startLab(t, lab.Options{Name: name, TopologyPath: topo, Binary: vpcdBinary, DaemonFlags: daemonFlags}, 60*time.Second, 30)
}

// startLab brings up the lab o describes, within the given time, and tears
// it down when the test ends, on every path; a failed test shows each
// daemon's last logLines lines.
func startLab(t testing.TB, o lab.Options, within time.Duration, logLines int) *lab.Lab {
	t.Helper()
	lab.Down(o.Name) // a lab a killed earlier run left behind
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	l, err := lab.Up(ctx, o)
	if err != nil {
		t.Fatalf("lab up (etcd %v): %v", o.Etcd, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Topology().Hosts {
				if b, err := os.ReadFile(l.LogPath(h.Name)); err == nil {
					t.Logf("log of %s:\n%s", h.Name, lastLines(string(b), logLines))
				}
			}
		}
		if err := lab.Down(o.Name); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs argv in a namespace of the lab and returns its output and exit
// code.
func run(t testing.TB, l *lab.Lab, kind lab.Kind, target string, argv ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	code, err := l.Exec(ctx, kind, target, argv, nil, &out, &out)
	if err != nil {
		t.Fatalf("%s %s: %v: %s", kind, target, err, out.String())
	}
	return out.String(), code
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t testing.TB, l *lab.Lab, kind lab.Kind, target string, argv ...string) string {
	t.Helper()
	out, code := run(t, l, kind, target, argv...)
	if code != 0 {
		t.Fatalf("%s %s: %s: exit %d:\n%s", kind, target, strings.Join(argv, " "), code, out)
	}
	return out
}

// ping reports whether count pings from eni to dst all got answers.
func ping(t testing.TB, l *lab.Lab, eni, dst string, count int) bool {
	t.Helper()
	_, code := run(t, l, lab.ENI, eni, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst)
	return code == 0
}

// pingNone reports whether none of count pings got an answer.
func pingNone(t testing.TB, l *lab.Lab, eni, dst string, count int) bool {
	t.Helper()
	out, _ := run(t, l, lab.ENI, eni, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst)
	return strings.Contains(out, " 0 received")
}

// background starts argv inside a namespace of the lab; stop ends it with
// SIGINT (so captures flush) and waits.
type background struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startIn(t testing.TB, l *lab.Lab, kind lab.Kind, target string, argv ...string) *background {
	t.Helper()
	b := &background{cmd: exec.Command(argv[0], argv[1:]...)}
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
	if err := l.Do(kind, target, b.cmd.Start); err != nil {
		t.Fatalf("start %v in %s %s: %v", argv, kind, target, err)
	}
	t.Cleanup(func() { b.stop() })
	return b
}

func (b *background) stop() string { return b.stopWith(syscall.SIGINT) }

// stopWith ends the process with sig and waits (SIGKILL after 5 s).
func (b *background) stopWith(sig syscall.Signal) string {
	if b.cmd.Process == nil || b.cmd.ProcessState != nil {
		return b.out.String()
	}
	// A grace for the last packets to reach a capture before it stops: a
	// capture says what it got only once it has stopped, so there is
	// nothing to poll, and callers do not know what to expect of it.
	time.Sleep(300 * time.Millisecond)
	b.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	return b.out.String()
}

// capture runs tcpdump on an interface of a namespace into a pcap file.
func capture(t testing.TB, l *lab.Lab, kind lab.Kind, target, iface string) (*background, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.pcap", target, iface))
	// A 32 MiB buffer: bursts (a poll's worth of mirror copies) must not
	// overflow the capture, or exact counts would be wrong.
	b := startIn(t, l, kind, target, "tcpdump", "-i", iface, "-B", "32768", "--immediate-mode", "-U", "-n", "-w", path)
	// tcpdump prints "listening on" once its socket is bound.
	if !testkit.Eventually(5*time.Second, func() bool { return strings.Contains(b.out.String(), "listening on") }) {
		t.Fatalf("tcpdump on %s %s did not start: %s", target, iface, b.out.String())
	}
	return b, path
}

// tshark runs tshark on a pcap with a display filter and returns the
// fields it prints, one line per packet.
func tshark(t testing.TB, pcap, filter string, extra ...string) []string {
	t.Helper()
	args := append([]string{"-n", "-r", pcap, "-Y", filter}, extra...)
	out, err := exec.Command("tshark", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, out)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "Running as user") {
			lines = append(lines, line)
		}
	}
	return lines
}

// drops reads a host daemon's drop counters.
func drops(t testing.TB, l *lab.Lab, host string) map[string]uint64 {
	t.Helper()
	st, err := control.QueryStatus(l.SocketPath(host))
	if err != nil {
		t.Fatalf("status of %s: %v", host, err)
	}
	return st.Drops
}

// awaitListening waits until a TCP socket listens on port in an ENI's
// namespace: a server started in the background is ready for clients.
func awaitListening(t testing.TB, l *lab.Lab, eni string, port int) {
	t.Helper()
	suffix := fmt.Sprintf(":%04X", port) // local_address is ADDR:PORT in hex
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("a listener on port %d in %s", port, eni), func() bool {
		found := false
		err := l.Do(lab.ENI, eni, func() error {
			for _, table := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
				b, err := os.ReadFile(table)
				if err != nil {
					return err
				}
				for _, line := range strings.Split(string(b), "\n")[1:] {
					f := strings.Fields(line)
					if len(f) > 3 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" { // 0A: LISTEN
						found = true
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("sockets of %s: %v", eni, err)
		}
		return found
	})
}

// pauseDaemon stops a host's daemon with SIGSTOP; resume lets it go on,
// and runs when the test ends if the test has not called it.
func pauseDaemon(t testing.TB, l *lab.Lab, host string) (resume func()) {
	t.Helper()
	pid := l.DaemonPID(host)
	if pid <= 0 {
		t.Fatalf("no daemon PID for host %s", host)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}
