package lab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/internal/testkit"
)

// privateRunEnv marks the copy of the test binary that runs inside a
// private mount namespace with a fresh /run (see inFreshRun).
const privateRunEnv = "VPCD_LAB_TEST_FRESH_RUN"

// inFreshRun runs the calling test again in a child process that has a
// mount namespace of its own (private propagation) and an empty tmpfs on
// /run, and reports whether the caller is that child. The child sees
// /run/netns as a fresh machine does (absent, so not a mount point),
// whatever `ip netns add` did to the machine's /run/netns before, and
// nothing it mounts there reaches the machine's namespaces. The tests are
// about iproute2's behaviour: they need root and fail without ip.
func inFreshRun(t *testing.T) bool {
	t.Helper()
	testkit.NeedRoot(t, "builds network namespaces")
	testkit.NeedTools(t, "ip")
	if os.Getenv(privateRunEnv) == "1" {
		if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on /run in the private mount namespace: %v", err)
		}
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), privateRunEnv+"=1")
	// Go makes every mount of the new namespace private (MS_REC|MS_PRIVATE
	// on /) before the exec.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test in a private mount namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the test did not pass in the private mount namespace")
	}
	return false
}

// ipNetnsAdd runs `ip netns add name` and registers the deletion of the namespace.
func ipNetnsAdd(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
}

// netnsMounts returns the mount points under /run/netns whose names start
// with prefix, visible or hidden beneath another mount.
func netnsMounts(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], filepath.Join(netnsDir, prefix)) {
			out = append(out, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// upDownClean brings lab name up without daemons, takes it down and checks
// that neither a namespace file nor a mount of the lab is left.
func upDownClean(t *testing.T, name, topo string, between func()) {
	t.Helper()
	if _, err := Up(context.Background(), Options{Name: name, TopologyPath: topo, NoDaemons: true}); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if between != nil {
		between()
	}
	if err := Down(name); err != nil {
		t.Errorf("lab down: %v", err)
	}
	assertGone(t, name)
	if m := netnsMounts(t, name+"-"); len(m) > 0 {
		t.Errorf("mounts of lab %s left behind: %v", name, m)
	}
}

// TestDownAfterIPNetnsAdd: `ip netns add` run while a lab is up (iproute2
// then makes /run/netns a bind mount of itself) must not leave the lab's
// namespaces behind, and the same lab comes up again.
func TestDownAfterIPNetnsAdd(t *testing.T) {
	if !inFreshRun(t) {
		return
	}
	name := fmt.Sprintf("h1-ipr-%d", os.Getpid())
	ha, hb := fmt.Sprintf("a%d", os.Getpid()), fmt.Sprintf("b%d", os.Getpid())
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	other := fmt.Sprintf("h1x%d", os.Getpid())
	t.Cleanup(func() { _ = Down(name) })

	upDownClean(t, name, topo, func() { ipNetnsAdd(t, other) })
	if t.Failed() {
		return
	}
	// The name is free again, and the namespace of iproute2 is untouched.
	upDownClean(t, name, topo, nil)
	if !nsExists(other) {
		t.Errorf("netns %s of `ip netns add` is gone", other)
	}
}

// TestDownIPNetnsAddFirst: `ip netns add` before the lab's first namespace.
func TestDownIPNetnsAddFirst(t *testing.T) {
	if !inFreshRun(t) {
		return
	}
	name := fmt.Sprintf("h1-ipf-%d", os.Getpid())
	ha, hb := fmt.Sprintf("a%d", os.Getpid()), fmt.Sprintf("b%d", os.Getpid())
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	t.Cleanup(func() { _ = Down(name) })

	ipNetnsAdd(t, fmt.Sprintf("h1y%d", os.Getpid()))
	upDownClean(t, name, topo, nil)
	upDownClean(t, name, topo, nil)
}

// TestShareNetnsDirAdoptsOldPins: namespaces pinned before /run/netns was a
// mount point (by an older vpcd) stay removable after the lab makes it one,
// and `ip netns add` afterwards hides nothing.
func TestShareNetnsDirAdoptsOldPins(t *testing.T) {
	if !inFreshRun(t) {
		return
	}
	old := fmt.Sprintf("h1-old-%d", os.Getpid())
	// Pin the way vpcd did before: straight into the plain directory.
	if err := onThread(func() error {
		h, err := netns.NewNamed(old)
		if err != nil {
			return err
		}
		return h.Close()
	}); err != nil {
		t.Fatalf("pin %s: %v", old, err)
	}
	t.Cleanup(func() { _ = deleteNS(old) })

	name := fmt.Sprintf("h1-adopt-%d", os.Getpid())
	ha, hb := fmt.Sprintf("a%d", os.Getpid()), fmt.Sprintf("b%d", os.Getpid())
	topo := writeFile(t, "topo.yaml", topoYAML(ha, hb, ""))
	t.Cleanup(func() { _ = Down(name) })
	upDownClean(t, name, topo, func() { ipNetnsAdd(t, fmt.Sprintf("h1z%d", os.Getpid())) })

	if m := netnsMounts(t, old); len(m) != 1 {
		t.Errorf("netns %s: mounts %v, want exactly one", old, m)
	}
	if err := deleteNS(old); err != nil {
		t.Errorf("delete the old pin: %v", err)
	}
	if nsExists(old) || len(netnsMounts(t, old)) > 0 {
		t.Errorf("netns %s left behind: %v", old, netnsMounts(t, old))
	}
}
