package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as `ip netns
// add` does.
const netnsDir = "/run/netns"

// onThread runs fn on a fresh goroutine locked to its OS thread and hands it
// the thread's original network namespace. Whatever fn does to the thread's
// network namespace is undone afterwards; if that fails the thread stays
// locked, so the Go runtime destroys it instead of reusing it.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inNS runs fn on a locked OS thread switched into the named network
// namespace. The mount namespace stays the caller's, so /sys/fs/bpf and the
// rest of the filesystem are the machine's.
func inNS(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer h.Close()
	return onThread(func() error {
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter netns %s: %w", name, err)
		}
		return fn()
	})
}

// shareNetnsDir makes /run/netns a shared mount of its own, as `ip netns
// add` does the first time it runs (a recursive bind mount of the directory
// onto itself, then MS_SHARED|MS_REC). Pinning a namespace before that
// would be fatal to its removal: iproute2's bind mount would cover the pin,
// so that umount finds only the copy and the file stays busy (EBUSY)
// forever. When /run/netns is not a mount point yet but already holds pins
// (made by an older vpcd), the pins are copied into the new mount by the
// recursive bind, and the originals, now hidden beneath it, are unmounted
// through a descriptor of the covered directory, so every namespace keeps
// exactly one, visible, pin.
func shareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	// EINVAL: not a mount point. Keep a handle on the directory that the
	// bind mount is about to cover.
	under, err := unix.Open(netnsDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", netnsDir, err)
	}
	defer unix.Close(under)
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s onto itself: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	names, err := listNS()
	if err != nil {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, n := range names {
		// The path goes through the covered directory, so it reaches
		// only a pin made before the bind mount; EINVAL: none there.
		p := fmt.Sprintf("/proc/self/fd/%d/%s", under, n)
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount the pin of netns %s beneath %s: %w", n, netnsDir, err))
		}
	}
	return errors.Join(errs...)
}

// createNS creates a named network namespace, bind-mounted under /run/netns,
// without moving any thread of the caller into it.
func createNS(name string) error {
	if err := shareNetnsDir(); err != nil {
		return err
	}
	return onThread(func() error {
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		return h.Close()
	})
}

// deleteNS unmounts and removes a named network namespace. A namespace that
// is already gone, or only half made (file without mount), is no error.
func deleteNS(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	if err := os.Remove(p); errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("remove netns %s: %s is still a mount point hidden beneath a later bind mount of %s (pinned by a vpcd older than the `ip netns add` that made that mount; it goes away at reboot): %w", name, p, netnsDir, err)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

// nsExists reports whether a named network namespace exists.
func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// listNS returns the names of all named network namespaces.
func listNS() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// labNamespaces returns the existing namespaces that belong to lab name:
// every namespace whose name starts with "<name>-", except those that carry
// the prefix of another existing lab whose name itself starts with
// "<name>-" (so that "vpcd lab down" does not destroy lab "vpcd-2"), unless
// own lists them.
func labNamespaces(name string, own map[string]bool) ([]string, error) {
	all, err := listNS()
	if err != nil {
		return nil, err
	}
	var others []string
	if ents, err := os.ReadDir(RunDir); err == nil {
		for _, e := range ents {
			if o := e.Name(); o != name && strings.HasPrefix(o, name+"-") {
				others = append(others, o+"-")
			}
		}
	}
	var out []string
next:
	for _, n := range all {
		if !strings.HasPrefix(n, name+"-") {
			continue
		}
		if !own[n] {
			for _, o := range others {
				if strings.HasPrefix(n, o) {
					continue next
				}
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// nsHandle opens a netlink handle inside the named namespace. The caller
// closes both the returned namespace handle and the netlink handle.
func nsHandle(name string) (*netlink.Handle, netns.NsHandle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, netns.None(), fmt.Errorf("netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, netns.None(), fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	return h, ns, nil
}

// rackBridge opens a netlink handle in the rack's netns and finds its
// bridge; done closes the handle and the netns.
func rackBridge(rackNS string) (h *netlink.Handle, br netlink.Link, done func(), err error) {
	h, ns, err := nsHandle(rackNS)
	if err != nil {
		return nil, nil, nil, err
	}
	done = func() { h.Close(); ns.Close() }
	if br, err = h.LinkByName(bridgeName); err != nil {
		done()
		return nil, nil, nil, fmt.Errorf("bridge %s in netns %s: %w", bridgeName, rackNS, err)
	}
	return h, br, done, nil
}
