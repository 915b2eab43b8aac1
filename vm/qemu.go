package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Machine is how a VM is started.
type Machine struct {
	Kernel     *Kernel
	Initramfs  string
	Tap        string // the tap ENI's interface, in the caller's namespace
	MAC        net.HardwareAddr
	Console    string // path of the serial console's unix socket
	ConsoleLog string // the console's output, all of it
	MemoryMiB  int    // default 256
	// Accel is "tcg" (the default) or "kvm". Nested KVM on this project's
	// machines hangs a Debian guest in its boot stub (DESIGN.md), so TCG.
	Accel string
}

// Command is the QEMU command line: the microvm machine (Firecracker's
// device model: virtio-mmio, no PCI, no firmware tables), one virtio-net
// device on the tap with vhost off, the serial console on a unix socket.
func (m *Machine) Command() *exec.Cmd {
	mem := m.MemoryMiB
	if mem == 0 {
		mem = 256
	}
	accel := []string{"-accel", "tcg"}
	if m.Accel == "kvm" {
		accel = []string{"-accel", "kvm", "-cpu", "host,-arch-capabilities"}
	}
	args := append(accel,
		"-M", "microvm",
		"-m", strconv.Itoa(mem),
		"-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-display", "none",
		"-kernel", m.Kernel.Image,
		"-initrd", m.Initramfs,
		// lpj: no delay-loop calibration, which under TCG on a loaded
		// host hangs now and then when the TSC cannot be calibrated
		// against the PIT; Boot retries what still hangs.
		"-append", "console=ttyS0 loglevel=4 lpj=5000000 no_timer_check panic=-1",
		"-netdev", "tap,id=n0,ifname="+m.Tap+",script=no,downscript=no,vhost=off",
		"-device", "virtio-net-device,netdev=n0,mac="+m.MAC.String(),
		"-chardev", "socket,id=c0,path="+m.Console+",server=on,wait=off,logfile="+m.ConsoleLog,
		"-serial", "chardev:c0",
		"-no-reboot",
	)
	return exec.Command("qemu-system-x86_64", args...)
}

// BootAttempts and BootTimeout bound Boot: a guest under TCG that is not
// at its shell after BootTimeout (it boots in about 2 s here) is hung in
// early timer setup and is started again.
const (
	BootAttempts = 3
	BootTimeout  = 20 * time.Second
)

// Boot starts m with start (which runs the command where the tap is, e.g.
// in a network namespace) until its guest answers on the console, and
// returns the running process (Boot waits for it: the caller must not),
// the console and how long the successful boot took from start to the
// guest's shell.
func Boot(ctx context.Context, m *Machine, start func(*exec.Cmd) error) (*exec.Cmd, *Console, time.Duration, error) {
	var last error
	for attempt := 0; attempt < BootAttempts && ctx.Err() == nil; attempt++ {
		os.Remove(m.Console)
		cmd := m.Command()
		began := time.Now()
		if err := start(cmd); err != nil {
			return nil, nil, 0, fmt.Errorf("start qemu: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		try, cancel := context.WithTimeout(ctx, BootTimeout)
		c, err := DialConsole(try, m.Console)
		if err == nil {
			err = c.WaitReady(try)
		}
		cancel()
		if err == nil {
			return cmd, c, time.Since(began), nil
		}
		if c != nil {
			c.Close()
		}
		cmd.Process.Kill()
		select {
		case werr := <-exited:
			if werr != nil && last == nil {
				last = fmt.Errorf("qemu: %v", werr)
			}
		case <-time.After(5 * time.Second):
		}
		last = fmt.Errorf("attempt %d: %w", attempt+1, err)
	}
	if last == nil {
		last = ctx.Err()
	}
	return nil, nil, 0, fmt.Errorf("boot on %s: %w (console log: %s)", m.Tap, last, m.ConsoleLog)
}

// Console is a connection to a VM's serial console, where its init reads
// commands.
type Console struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	n    int
}

// DialConsole connects to a console socket, waiting for it to appear until
// ctx ends.
func DialConsole(ctx context.Context, path string) (*Console, error) {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return &Console{conn: c, r: bufio.NewReader(c), n: int(time.Now().UnixNano() % 100000)}, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("console %s: %w", path, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the connection; the VM runs on.
func (c *Console) Close() error { return c.conn.Close() }

// WaitReady asks the guest's shell to answer until it does or ctx ends:
// the guest booted, configured its NIC and reads commands.
func (c *Console) WaitReady(ctx context.Context) error {
	for {
		try, cancel := context.WithTimeout(ctx, time.Second)
		_, code, err := c.Exec(try, "true")
		cancel()
		if err == nil && code == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the guest did not answer on its console: %w", ctx.Err())
		}
	}
}

// Exec runs cmd (one line of sh) in the guest and returns its output
// (stdout and stderr) and exit status. The output is framed by markers the
// shell computes ($((N+0))), so the echo of the command line, were the
// console echoing, never matches them.
func (c *Console) Exec(ctx context.Context, cmd string) (string, int, error) {
	if strings.ContainsAny(cmd, "\n\r") {
		return "", -1, errors.New("vm exec: one line only")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	begin, end := fmt.Sprintf("@@B%d", c.n), fmt.Sprintf("@@E%d ", c.n)
	line := fmt.Sprintf("echo \"@@B$((%d+0))\"; ( %s ) 2>&1 </dev/null; echo \"@@E$((%d+0)) $?\"\n", c.n, cmd, c.n)
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	if _, err := c.conn.Write([]byte(line)); err != nil {
		return "", -1, err
	}
	var out strings.Builder
	started := false
	for {
		s, err := c.r.ReadString('\n')
		if err != nil {
			return out.String(), -1, fmt.Errorf("vm exec %q: %w", cmd, err)
		}
		s = strings.TrimRight(s, "\r\n")
		switch {
		case s == begin:
			started = true
		case started && strings.HasPrefix(s, end):
			code, err := strconv.Atoi(strings.TrimPrefix(s, end))
			if err != nil {
				return out.String(), -1, fmt.Errorf("vm exec: status line %q", s)
			}
			return out.String(), code, nil
		case started:
			out.WriteString(s)
			out.WriteByte('\n')
		}
	}
}

// Kill ends the QEMU process pid if it is one of ours (its command line
// names console), and waits until it is gone.
func Kill(pid int, console string) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(b), "qemu-system") || !strings.Contains(string(b), console) {
		return nil // gone, or the PID is someone else's now
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	p.Signal(os.Kill)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return nil
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return nil // a zombie its parent will reap
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("qemu %d still runs", pid)
}
