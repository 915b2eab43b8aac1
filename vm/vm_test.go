package vm

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestBootAndExec boots a guest on a tap of a fresh namespace and runs
// commands on its console: the kernel, the initramfs and the console
// protocol, without vpcd.
func TestBootAndExec(t *testing.T) {
	testkit.NeedRoot(t, "creates a tap and runs QEMU on it")
	testkit.NeedTools(t, Tools()...)
	k, err := FetchKernel(CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd")
	g := Guest{Hostname: "vgvm", Address: netip.MustParsePrefix("10.73.1.10/24"), Gateway: netip.MustParseAddr("10.73.1.1")}
	if err := WriteInitramfs(initrd, k, g); err != nil {
		t.Fatal(err)
	}
	m := &Machine{Kernel: k, Initramfs: initrd, Tap: "vgvm0", MAC: net.HardwareAddr{2, 0, 10, 73, 1, 10},
		Console: filepath.Join(dir, "console.sock"), ConsoleLog: filepath.Join(dir, "console.log")}
	var qemuOut strings.Builder
	var cmd *exec.Cmd
	t.Cleanup(func() {
		if cmd != nil {
			cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(m.ConsoleLog)
			t.Logf("qemu: %s\nconsole:\n%s", qemuOut.String(), b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A namespace of its own for the tap, entered to start QEMU.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewNamed("vg-vmtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); netns.DeleteNamed("vg-vmtest") })
	la := netlink.NewLinkAttrs()
	la.Name = "vgvm0"
	tt := &netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	err = netlink.LinkAdd(tt)
	if serr := netns.Set(orig); serr != nil {
		t.Fatal(serr) // the thread stays locked and dies with the test
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tt.Fds {
		f.Close()
	}
	cmd, c, took, err := Boot(ctx, m, func(cmd *exec.Cmd) error {
		cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := netns.Set(ns); err != nil {
			return err
		}
		defer netns.Set(orig)
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("booted to its shell in %v (%s)", took.Round(time.Millisecond), k.Version)
	out, code, err := c.Exec(ctx, "ip -4 addr show dev eth0; ip route")
	if err != nil || code != 0 {
		t.Fatalf("exec: %v, status %d: %s", err, code, out)
	}
	if !strings.Contains(out, "inet 10.73.1.10/24") || !strings.Contains(out, "default via 10.73.1.1") {
		t.Errorf("guest network:\n%s", out)
	}
	if out, code, _ := c.Exec(ctx, "echo one; false"); code != 1 || out != "one\n" {
		t.Errorf("exec of a failing command: %q, status %d", out, code)
	}
}
