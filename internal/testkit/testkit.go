// Package testkit holds what vpcd's tests share: the gate on root, the check
// for the tools a test runs, a network namespace of a test's own, and
// waiting for a condition instead of for a fixed time.
//
// Only tests import it.
package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NeedRoot skips the test unless it runs as root; why says what the test
// does that needs it ("loads eBPF programs").
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

// NeedTools fails (does not skip) the test when a tool it runs is not on
// PATH: .ci/run installs them all, so a missing one is a broken machine,
// not a reason to pass silently.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install it, as .ci/run does)", tool)
		}
	}
}

// FreshNamespace locks the calling goroutine to its OS thread and moves the
// thread into a new, anonymous network namespace (it goes away with its
// last reference: the thread, a socket, a link's peer). The returned
// function moves the thread back and unlocks it.
//
// If the thread cannot be moved back it stays locked: the runtime then
// ends the thread with its goroutine instead of running other goroutines
// in the wrong namespace.
func FreshNamespace(t testing.TB) (restore func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread() // still in the original namespace
		t.Fatalf("current network namespace: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		// netns.New may have left the thread in a namespace of its own.
		err = fmt.Errorf("new network namespace: %w", err)
		if serr := netns.Set(orig); serr != nil {
			orig.Close()
			t.Fatalf("%v; and back: %v (the thread stays locked and dies with the goroutine)", err, serr)
		}
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		defer orig.Close()
		ns.Close()
		if err := netns.Set(orig); err != nil {
			t.Errorf("return to the test's network namespace: %v (the thread stays locked and dies with the goroutine)", err)
			return
		}
		runtime.UnlockOSThread()
	}
}

// InNewNetns runs fn inside a new network namespace (see FreshNamespace),
// on the calling goroutine's locked thread, and moves back afterwards on
// every path, t.Fatal in fn included. It skips the test unless it runs as
// root.
func InNewNetns(t testing.TB, fn func()) {
	t.Helper()
	NeedRoot(t, "creates a network namespace")
	defer FreshNamespace(t)()
	fn()
}

// Eventually calls cond until it returns true or timeout has passed, and
// reports whether it did; cond runs at least once. The pause between calls
// starts at 10 ms and doubles up to 200 ms.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// WaitFor is Eventually that fails the test, naming what it waited for,
// when cond does not hold within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("gave up after %v waiting for %s", timeout, what)
	}
}
