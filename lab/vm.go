package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vpcd/vpcd/topology"
	"github.com/vpcd/vpcd/vm"
)

// vmsDir holds a directory per running VM, named after its ENI: the
// initramfs, the console socket and log, the QEMU PID.
const vmsDir = "vms"

// VM is a Linux guest on a tap ENI of the lab (SPEC §12).
type VM struct {
	ENI     string
	PID     int
	Console string // unix socket of its serial console
	Log     string // everything the guest printed
	// Boot is how long it took from starting QEMU to the guest's shell
	// with its network configured.
	Boot time.Duration
}

func (l *Lab) vmDir(eni string) string { return filepath.Join(l.st.Dir, vmsDir, eni) }

// canBootVMs reports why the VMs topology t lists cannot boot in a lab
// (without daemons when noDaemons): the taps are the daemons', and QEMU
// and busybox must be there. nil when t lists none.
func canBootVMs(t *topology.Topology, noDaemons bool) error {
	if len(t.VMs) == 0 {
		return nil
	}
	if noDaemons {
		return errors.New("vms needs the daemons (they create the taps the VMs use)")
	}
	if miss := vm.Missing(); miss != "" {
		return fmt.Errorf("vms needs %s (apt-get install qemu-system-x86 busybox-static)", miss)
	}
	return nil
}

// VMUp boots a VM on the tap of lab ENI eni, in its host's namespace: the
// microvm machine under TCG, a Debian cloud kernel (fetched once into
// vm.CacheDir()) and an initramfs with busybox configured with the ENI's
// address, MAC and gateway. It returns once the guest answers on its
// console. The VM outlives this process; VMDown or Down ends it.
func (l *Lab) VMUp(ctx context.Context, eni string) (*VM, error) {
	t := l.topo
	e := t.ENIByName(eni)
	if e == nil || l.st.eni(eni) == nil {
		return nil, fmt.Errorf("lab %s: no ENI %s", l.st.Name, eni)
	}
	if !e.IsTap() {
		return nil, fmt.Errorf("ENI %s is no tap ENI (interface_type: tap): a VM needs a tap", eni)
	}
	if miss := vm.Missing(); miss != "" {
		return nil, fmt.Errorf("a VM needs %s (apt-get install qemu-system-x86 busybox-static)", miss)
	}
	sub := findSubnet(t, e.Subnet)
	if sub == nil {
		return nil, fmt.Errorf("ENI %s: unknown subnet %s", eni, e.Subnet)
	}
	if pid := l.VMPID(eni); pid > 0 {
		return nil, fmt.Errorf("ENI %s already has a VM (PID %d)", eni, pid)
	}
	k, err := vm.FetchKernel(vm.CacheDir())
	if err != nil {
		return nil, err
	}
	dir := l.vmDir(eni)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	g := vm.Guest{Hostname: eni, Address: netip.PrefixFrom(e.IP, sub.CIDR.Bits()), Gateway: sub.CIDR.Masked().Addr().Next()}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := vm.WriteInitramfs(initrd, k, g); err != nil {
		return nil, err
	}
	m := &vm.Machine{Kernel: k, Initramfs: initrd, Tap: eniIf(e), MAC: eniMAC(e),
		Console: filepath.Join(dir, "console.sock"), ConsoleLog: filepath.Join(dir, "console.log")}
	hostNS := hostNSName(l.st.Name, e.Host)
	cmd, c, took, err := vm.Boot(ctx, m, func(cmd *exec.Cmd) error {
		qlog, err := os.OpenFile(filepath.Join(dir, "qemu.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer qlog.Close()
		cmd.Stdout, cmd.Stderr = qlog, qlog
		// A session of its own: the VM outlives `vpcd lab vm up`.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return inNS(hostNS, cmd.Start)
	})
	if err != nil {
		return nil, fmt.Errorf("VM on ENI %s: %w", eni, err)
	}
	c.Close()
	if err := os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		vm.Kill(cmd.Process.Pid, m.Console)
		return nil, err
	}
	return &VM{ENI: eni, PID: cmd.Process.Pid, Console: m.Console, Log: m.ConsoleLog, Boot: took}, nil
}

// VMExec runs one line of sh in the VM on ENI eni and returns its output
// and exit status.
func (l *Lab) VMExec(ctx context.Context, eni, command string) (string, int, error) {
	if l.VMPID(eni) <= 0 {
		return "", -1, fmt.Errorf("ENI %s has no VM (vpcd lab vm up %s)", eni, eni)
	}
	c, err := vm.DialConsole(ctx, filepath.Join(l.vmDir(eni), "console.sock"))
	if err != nil {
		return "", -1, err
	}
	defer c.Close()
	return c.Exec(ctx, command)
}

// VMDown stops the VM on ENI eni, if any, and removes its files.
func (l *Lab) VMDown(eni string) error {
	return stopVM(l.vmDir(eni))
}

// VMPID is the PID of the running QEMU of ENI eni's VM, or 0.
func (l *Lab) VMPID(eni string) int {
	dir := l.vmDir(eni)
	b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(dir, "console.sock")) {
		return 0
	}
	return pid
}

// stopVM kills the QEMU whose files are in dir (only if its command line
// names them) and removes dir.
func stopVM(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			if err := vm.Kill(pid, filepath.Join(dir, "console.sock")); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(dir)
}

// stopVMs stops every VM of the lab in dir (Down).
func stopVMs(dir string) error {
	ents, err := os.ReadDir(filepath.Join(dir, vmsDir))
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, stopVM(filepath.Join(dir, vmsDir, e.Name())))
	}
	return errors.Join(errs...)
}
