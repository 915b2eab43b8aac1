package vm

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Guest is what the guest's init configures: its NIC's address (with the
// subnet's prefix length) and default gateway, and its hostname.
type Guest struct {
	Hostname string
	Address  netip.Prefix
	Gateway  netip.Addr
}

// Ready is what the guest's init prints on its console once its network
// is configured and it reads commands.
const Ready = "VPCD-VM-READY"

// initScript is the guest's /init: busybox applets, the virtio-net
// modules, eth0 with the ENI's address, then a shell reading commands
// from the serial console (Console.Exec).
func initScript(g Guest, modules []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/busybox sh\n")
	b.WriteString("/bin/busybox --install -s /bin\n")
	b.WriteString("mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev 2>/dev/null\n")
	b.WriteString("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null\n")
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s || echo 'vpcd-vm: insmod %s failed'\n", path.Base(m), path.Base(m))
	}
	fmt.Fprintf(&b, "hostname %s\n", g.Hostname)
	b.WriteString("ip link set lo up\nip link set eth0 up\n")
	fmt.Fprintf(&b, "ip addr add %s dev eth0\n", g.Address)
	fmt.Fprintf(&b, "ip route add default via %s dev eth0\n", g.Gateway)
	b.WriteString("stty -echo 2>/dev/null\n")
	fmt.Fprintf(&b, "echo %s\n", Ready)
	// One command per line, its output and status framed by the host's
	// markers (Console.Exec); a command never ends the loop.
	b.WriteString("while true; do\n\tif read -r line; then eval \"$line\"; else sleep 1; fi\ndone\n")
	return b.String()
}

// WriteInitramfs writes a newc cpio archive to dst: /init for g, busybox
// from the host (busybox-static) and the kernel's Modules.
func WriteInitramfs(dst string, k *Kernel, g Guest) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox (busybox-static) for the guest: %w", err)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := &cpioWriter{w: bufio.NewWriter(f)}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "etc", "root"} {
		w.entry(d, 0o040755, 0, nil, 0)
	}
	w.entry("dev/console", 0o020600, 5<<8|1, nil, 0) // the console init's stdio opens
	init := initScript(g, Modules)
	w.entry("init", 0o100755, 0, strings.NewReader(init), int64(len(init)))
	if err := w.file("bin/busybox", bb, 0o100755); err != nil {
		return err
	}
	for _, m := range Modules {
		if err := w.file("lib/modules/"+path.Base(m), k.Modules[m], 0o100644); err != nil {
			return err
		}
	}
	w.entry("TRAILER!!!", 0, 0, nil, 0)
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if cerr := f.Close(); w.err == nil {
		w.err = cerr
	}
	return w.err
}

// cpioWriter writes the "newc" format the kernel unpacks into its rootfs.
type cpioWriter struct {
	w   *bufio.Writer
	ino int
	err error
}

func (c *cpioWriter) file(name, src string, mode uint32) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c.entry(name, mode, 0, f, st.Size())
	return c.err
}

// entry writes one header, name and data; rdev is major<<8|minor.
func (c *cpioWriter) entry(name string, mode uint32, rdev int, data io.Reader, size int64) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev>>8, rdev&0xff, len(name)+1, 0)
	c.write([]byte(hdr + name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
	if data != nil {
		n, err := io.Copy(c.w, data)
		if err == nil && n != size {
			err = fmt.Errorf("cpio %s: wrote %d bytes of %d", name, n, size)
		}
		if err != nil {
			c.err = err
			return
		}
		c.pad(int(size))
	}
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// CacheDir is where kernels are kept: $VPCD_VM_CACHE, else
// /var/cache/vpcd/vm.
func CacheDir() string {
	if d := os.Getenv("VPCD_VM_CACHE"); d != "" {
		return d
	}
	return filepath.Join("/var/cache/vpcd", "vm")
}
