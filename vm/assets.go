// Package vm runs small Linux VMs on tap ENIs for the lab and its tests
// (SPEC §12): QEMU's microvm machine (Firecracker's device model) booting
// a Debian cloud kernel with an initramfs built here from busybox-static,
// configured with the ENI's address and MAC, and a command channel on its
// serial console.
package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// KernelPackage is the Debian package whose newest dependency provides the
// guest kernel and its modules.
const KernelPackage = "linux-image-cloud-amd64"

// Modules are the kernel modules the guest loads, in order, to get its
// virtio-net NIC on virtio-mmio (the cloud kernel builds them as modules).
var Modules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_mmio.ko",
	"net/core/failover.ko",
	"drivers/net/net_failover.ko",
	"drivers/net/virtio_net.ko",
}

// Kernel is an extracted guest kernel: the image and the modules the guest
// loads, by their names under the kernel's module tree.
type Kernel struct {
	Version string
	Image   string            // vmlinuz
	Modules map[string]string // Modules entry → file
}

// Tools lists the host programs the VMs need, for errors that name what
// is missing.
func Tools() []string {
	return []string{"qemu-system-x86_64", "busybox", "apt-get", "apt-cache", "dpkg-deb"}
}

// Missing names the first host program (or device) a VM needs that this
// machine lacks, or "".
func Missing() string {
	for _, t := range Tools() {
		if _, err := exec.LookPath(t); err != nil {
			return t
		}
	}
	return ""
}

// FetchKernel makes sure cacheDir holds the guest kernel: the package
// KernelPackage depends on, fetched with apt-get download and unpacked with
// dpkg-deb -x (nothing is installed on the host). An earlier fetch is
// reused.
func FetchKernel(cacheDir string) (*Kernel, error) {
	dep, err := output("apt-cache", "depends", KernelPackage)
	if err != nil {
		return nil, err
	}
	pkg := ""
	for _, line := range strings.Split(dep, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		return nil, fmt.Errorf("%s depends on no linux-image package:\n%s", KernelPackage, dep)
	}
	version := strings.TrimPrefix(pkg, "linux-image-")
	root := filepath.Join(cacheDir, pkg)
	k := &Kernel{Version: version, Image: filepath.Join(root, "boot", "vmlinuz-"+version), Modules: map[string]string{}}
	for _, m := range Modules {
		k.Modules[m] = filepath.Join(root, "lib", "modules", version, "kernel", m)
	}
	if k.complete() {
		return k, nil
	}
	dl := filepath.Join(cacheDir, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return nil, err
	}
	// _apt cannot write into a root-only directory; download as root.
	cmd := exec.Command("apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dl)
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[len(debs)-1], err, out)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return nil, err
	}
	for _, d := range debs {
		os.Remove(d)
	}
	if !k.complete() {
		return nil, fmt.Errorf("%s: no %s or a module of %v in the package", pkg, k.Image, Modules)
	}
	return k, nil
}

func (k *Kernel) complete() bool {
	if _, err := os.Stat(k.Image); err != nil {
		return false
	}
	for _, f := range k.Modules {
		if _, err := os.Stat(f); err != nil {
			return false
		}
	}
	return true
}

func output(name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return out.String(), nil
}
