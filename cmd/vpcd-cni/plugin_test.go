package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcd/vpcd/control"
	"github.com/vpcd/vpcd/topology"
)

func TestENIName(t *testing.T) {
	id := "0123456789abcdef0123"
	// The usual interface: the container ID itself.
	if a := eniName(id, "eth0"); a != id {
		t.Fatalf("eniName(%q, eth0) = %q, want the ID", id, a)
	}
	// Another interface of the same container: the ID, the interface
	// and a hash, the same every time.
	b := eniName(id, "net1")
	if b != eniName(id, "net1") || !strings.HasPrefix(b, "cni-"+id+"-net1-") || len(b) != len("cni-"+id+"-net1-")+8 {
		t.Fatalf("eniName(%q, net1) = %q", id, b)
	}
	names := map[string]bool{}
	for _, p := range [][2]string{{id, "eth0"}, {id, "net1"}, {id, "eth1"}, {id + "4", "eth0"}, {"a/b", "eth0"}, {"a.b", "eth0"}, {"cni-x", "eth0"}, {"cni-x", "net1"}, {"a\xffb", "eth0"}, {"ab", "eth0"}} {
		n := eniName(p[0], p[1])
		if names[n] {
			t.Fatalf("two attachments share the name %q", n)
		}
		names[n] = true
	}
	// An ID a topology name could not be (invalid UTF-8 here) is not used
	// as it is.
	if n := eniName("a\xffb", "eth0"); !topology.ValidName(n) {
		t.Fatalf("eniName gave %q, which no topology takes", n)
	}
	// Characters a topology name may not hold are left out.
	if n := eniName("a/b:c d", "eth0"); strings.ContainsAny(n, "/: ") || !strings.HasPrefix(n, "cni-abcd-eth0-") {
		t.Fatalf("eniName: %q", n)
	}
}

// fakeDaemon answers the control socket as a daemon would, from memory.
type fakeDaemon struct {
	mu       sync.Mutex
	fileMode bool
	addErr   error
	enis     map[string]control.DynamicENI
	deleted  []string
}

func (f *fakeDaemon) Status(bool) *control.Status {
	st := &control.Status{Host: "h"}
	if !f.fileMode {
		st.ControlPlane = &control.ControlPlaneStatus{Connected: true, Registered: true}
	}
	return st
}
func (f *fakeDaemon) Reload(string) {}
func (f *fakeDaemon) Subscribe() (<-chan control.Event, func(), error) {
	return nil, nil, errors.New("no events")
}

func (f *fakeDaemon) AddENI(req control.DynamicENI) (*control.DynamicENI, error) {
	if f.fileMode {
		return nil, &control.ENIError{Code: control.CodeFileMode, Msg: "file mode"}
	}
	if f.addErr != nil {
		return nil, f.addErr
	}
	// A daemon would make the veth pair; there is none here, so ADD
	// fails after this and must undo it.
	req.Interface, req.Peer, req.Address, req.Gateway, req.MAC, req.MTU = "vcx", "vp-none-here", "10.0.1.4/24", "10.0.1.1", "02:00:0a:00:01:04", 1500
	f.mu.Lock()
	f.enis[req.Name] = req
	f.mu.Unlock()
	return &req, nil
}

func (f *fakeDaemon) DeleteENI(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.enis, name)
	f.deleted = append(f.deleted, name)
	return nil
}

func (f *fakeDaemon) ListENIs(network string) ([]control.DynamicENI, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []control.DynamicENI
	for _, e := range f.enis {
		if network == "" || e.Attachment.Network == network {
			out = append(out, e)
		}
	}
	return out, nil
}

func serve(t *testing.T, d *fakeDaemon) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vpcd.sock")
	l, err := control.Listen(sock, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return sock
}

func args(sock, extra string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0",
		StdinData: []byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "net", "type": "vpcd-cni", "subnet": "s", "socket": %q%s}`, sock, extra))}
}

func code(t *testing.T, err error) uint {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is no CNI error", err)
	}
	return e.Code
}

func TestErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want uint
		msg  string
	}{
		{"unknown subnet", &control.ENIError{Code: control.CodeUnknownSubnet, Msg: `unknown subnet "s"`}, CodeUnknownSubnet, "unknown subnet"},
		{"unknown group", &control.ENIError{Code: control.CodeUnknownGroup, Msg: `unknown security group "g"`}, CodeUnknownGroup, "unknown security group"},
		{"subnet full", &control.ENIError{Code: control.CodeSubnetFull, Msg: "subnet full: s"}, CodeSubnetFull, "subnet full"},
		{"not ready", &control.ENIError{Code: control.CodeNotReady, Msg: "etcd"}, types.ErrTryAgainLater, "etcd"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &fakeDaemon{addErr: c.err, enis: map[string]control.DynamicENI{}}
			err := cmdAdd(args(serve(t, d), ""))
			if code(t, err) != c.want || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("%v (code %d), want code %d", err, code(t, err), c.want)
			}
		})
	}
	t.Run("file mode", func(t *testing.T) {
		d := &fakeDaemon{fileMode: true}
		sock := serve(t, d)
		err := cmdAdd(args(sock, ""))
		if code(t, err) != CodeFileMode || !strings.Contains(err.Error(), "dynamic ENIs need the etcd control plane") {
			t.Fatalf("ADD: %v", err)
		}
		if err := cmdStatus(args(sock, "")); code(t, err) != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS: %v", err)
		}
	})
	t.Run("no daemon", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "none.sock")
		if err := cmdAdd(args(sock, "")); code(t, err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "not running") {
			t.Fatalf("ADD: %v", err)
		}
		if err := cmdDel(args(sock, "")); code(t, err) != types.ErrTryAgainLater {
			t.Fatalf("DEL: %v", err)
		}
		if err := cmdStatus(args(sock, "")); code(t, err) != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS: %v", err)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		a := args("/none", "")
		a.StdinData = []byte(`{"cniVersion": "1.0.0", "name": "net", "type": "vpcd-cni"}`)
		if err := cmdAdd(a); code(t, err) != types.ErrInvalidNetworkConfig {
			t.Fatalf("no subnet: %v", err)
		}
		a.StdinData = []byte(`{"cniVersion": `)
		if err := cmdAdd(a); code(t, err) != types.ErrDecodingFailure {
			t.Fatalf("not JSON: %v", err)
		}
	})
}

// TestAddUndoes: when the container's side cannot be set up, ADD deletes
// the ENI it was given.
func TestAddUndoes(t *testing.T) {
	d := &fakeDaemon{enis: map[string]control.DynamicENI{}}
	err := cmdAdd(args(serve(t, d), ""))
	if err == nil {
		t.Fatal("ADD succeeded without a veth")
	}
	if len(d.enis) != 0 || !slices.Equal(d.deleted, []string{eniName("c1", "eth0")}) {
		t.Fatalf("after a failed ADD: ENIs %v, deleted %v", d.enis, d.deleted)
	}
}

func TestGC(t *testing.T) {
	d := &fakeDaemon{enis: map[string]control.DynamicENI{}}
	for _, c := range []struct{ network, id string }{{"net", "keep"}, {"net", "drop"}, {"other", "x"}} {
		n := eniName(c.id, "eth0")
		d.enis[n] = control.DynamicENI{Name: n, Attachment: control.ENIAttachment{Network: c.network, ContainerID: c.id, IfName: "eth0"}}
	}
	a := args(serve(t, d), `, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]`)
	if err := cmdGC(a); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.deleted, []string{eniName("drop", "eth0")}) {
		t.Fatalf("GC deleted %v", d.deleted)
	}
}

// TestOtherNames: an ENI made under another name than eniName gives (an
// older plugin's cni-<12 characters>-<hash>) is found by the attachment
// the daemon recorded: GC keeps it while its container lives, CHECK finds
// it, DEL deletes it.
func TestOtherNames(t *testing.T) {
	d := &fakeDaemon{enis: map[string]control.DynamicENI{}}
	old := "cni-c1-0123abcd"
	d.enis[old] = control.DynamicENI{Name: old, Subnet: "s", Attached: true,
		Attachment: control.ENIAttachment{Network: "net", ContainerID: "c1", IfName: "eth0"}}
	sock := serve(t, d)
	if err := cmdGC(args(sock, `, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]`)); err != nil {
		t.Fatal(err)
	}
	if len(d.deleted) != 0 {
		t.Fatalf("GC deleted %v, the ENI of a container it was told lives", d.deleted)
	}
	// (CHECK goes on to the container's interface, which the fake has
	// not: only that it found the ENI is asked here.)
	if err := cmdCheck(args(sock, "")); err != nil && code(t, err) == types.ErrUnknownContainer {
		t.Errorf("CHECK did not find the ENI: %v", err)
	}
	if err := cmdDel(args(sock, "")); err != nil || !slices.Equal(d.deleted, []string{old}) {
		t.Fatalf("DEL: %v, deleted %v; want %s", err, d.deleted, old)
	}
}
