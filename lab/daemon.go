package lab

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/tunnel"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/topology"
)

// Stop timeouts: SIGTERM, then SIGKILL after this long.
const (
	downStopTimeout = 5 * time.Second
	stopTimeout     = 10 * time.Second
	killTimeout     = 5 * time.Second
	pollInterval    = 200 * time.Millisecond
	logTailLines    = 20
)

// daemonArgs returns the arguments of host's `vpcd run`.
func daemonArgs(topoPath string, hs *hostState, e *etcdState) []string {
	source := []string{"--config", topoPath}
	if e != nil {
		source = e.etcdFlags()
	}
	return append(append([]string{"run"}, source...), append([]string{
		"--host", hs.Name,
		"--state-dir", hs.StateDir,
		"--bpffs", hs.BPFFS,
		"--socket", hs.Socket,
		"--metrics", MetricsAddr,
		"--tunnel-device", tunnel.DeviceName(hs.Name),
	}, hs.Flags...)...)
}

// startDaemon starts host's daemon inside its network namespace (root mount
// namespace), reading topoPath or, when e is set, the lab's etcd, in a session of its own so that it outlives the caller, with
// output appended to its log. It records the PID in vpcd.pid and hs.
func startDaemon(binary, dir, topoPath string, hs *hostState, e *etcdState) error {
	if binary == "" {
		return errors.New("no vpcd binary given")
	}
	if err := os.MkdirAll(hs.StateDir, 0o700); err != nil {
		return fmt.Errorf("host %s: %w", hs.Name, err)
	}
	// Mount bpffs here, once, rather than let daemons that start together
	// race to mount it: a second mount would hide the first one's pins.
	if err := dataplane.EnsureBPFFS(hs.BPFFS); err != nil {
		return fmt.Errorf("host %s: %w", hs.Name, err)
	}
	logf, err := os.OpenFile(hs.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("host %s: %w", hs.Name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- vpcd lab: starting %s %s at %s\n", binary,
		strings.Join(daemonArgs(topoPath, hs, e), " "), time.Now().Format(time.RFC3339))

	cmd := exec.Command(binary, daemonArgs(topoPath, hs, e)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The child inherits the network namespace of the thread that forks it.
	if err := inNS(hs.NS, cmd.Start); err != nil {
		return fmt.Errorf("start daemon for host %s in netns %s: %w", hs.Name, hs.NS, err)
	}
	// Reap it if it exits while this process lives; otherwise init does.
	go func() { _ = cmd.Wait() }()
	hs.PID = cmd.Process.Pid
	if err := os.WriteFile(hs.PIDFile, []byte(strconv.Itoa(hs.PID)+"\n"), 0o644); err != nil {
		return fmt.Errorf("host %s: %w", hs.Name, err)
	}
	return nil
}

// isOurDaemon reports whether pid is alive and is `vpcd run` for hs (a PID
// may have been reused by now).
func isOurDaemon(pid int, hs *hostState) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 { // a zombie has an empty cmdline
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if !slices.Contains(args, "run") {
		return false
	}
	flag := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return ""
		}
		return args[i+1]
	}
	return flag("--host") == hs.Name && flag("--state-dir") == hs.StateDir
}

// running reports whether the recorded daemon of hs runs.
func running(hs *hostState) bool { return isOurDaemon(hs.PID, hs) }

// signalDaemon sends sig to pid if it is still hs's daemon and waits up to
// wait for it to exit. It reports whether the process is gone.
func signalDaemon(pid int, hs *hostState, sig unix.Signal, wait time.Duration) (bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("pidfd %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// Checked after pidfd_open: the descriptor pins the process we check.
	if !isOurDaemon(pid, hs) {
		return true, nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return true, nil
		}
		return false, fmt.Errorf("signal %v to pid %d (host %s): %w", sig, pid, hs.Name, err)
	}
	if wait <= 0 {
		return false, nil
	}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, time.Second).Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false, fmt.Errorf("wait for pid %d: %w", pid, err)
		}
		if n > 0 || !isOurDaemon(pid, hs) {
			return true, nil
		}
	}
}

// stopDaemon stops pid (hs's daemon): sig, then SIGKILL after wait.
func stopDaemon(pid int, hs *hostState, sig unix.Signal, wait time.Duration) error {
	gone, err := signalDaemon(pid, hs, sig, wait)
	if err != nil || gone {
		return err
	}
	gone, err = signalDaemon(pid, hs, unix.SIGKILL, killTimeout)
	if err != nil {
		return err
	}
	if !gone {
		return fmt.Errorf("daemon for host %s (pid %d) survived SIGKILL", hs.Name, pid)
	}
	return nil
}

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// keyHex turns a base64 WireGuard key into the UAPI's hex form.
func keyHex(b64 string) string {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}

// missingHandshakes returns why host's tunnel is not yet complete, or "".
func missingHandshakes(t *topology.Topology, hs *hostState) string {
	peers, err := tunnel.ReadPeers(hs.UAPI)
	if err != nil {
		return fmt.Sprintf("%s: %v", hs.Name, err)
	}
	byKey := map[string]tunnel.UAPIPeer{}
	for _, p := range peers {
		byKey[p.PublicKeyHex] = p
	}
	var missing []string
	for i := range t.Hosts {
		peer := &t.Hosts[i]
		if peer.Name == hs.Name {
			continue
		}
		if p, ok := byKey[keyHex(peer.PublicKey)]; !ok || !p.HasHandshake() {
			missing = append(missing, peer.Name)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: no handshake with %s", hs.Name, strings.Join(missing, ", "))
}

// controlReady reports whether a daemon's control socket accepts
// connections.
func controlReady(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitHandshakes waits until every host in hosts has a WireGuard handshake
// with every other host of t, failing early when a daemon exits.
func waitHandshakes(ctx context.Context, t *topology.Topology, hosts []*hostState) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var pending []string
		for _, hs := range hosts {
			if !running(hs) {
				return fmt.Errorf("daemon for host %s (pid %d) exited; last lines of %s:\n%s",
					hs.Name, hs.PID, hs.Log, logTail(hs.Log, logTailLines))
			}
			if m := missingHandshakes(t, hs); m != "" {
				pending = append(pending, m)
			} else if !controlReady(hs.Socket) {
				// The daemon opens its control socket once every program
				// is attached and every map is filled.
				pending = append(pending, hs.Name+": datapath not yet programmed")
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for WireGuard handshakes: %w (%s)", ctx.Err(), strings.Join(pending, "; "))
		case <-tick.C:
		}
	}
}
