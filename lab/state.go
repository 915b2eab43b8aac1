package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/vpcd/vpcd/tunnel"
)

// Fixed locations on the machine.
const (
	// RunDir holds one directory per lab.
	RunDir = "/run/vpcd/labs"
	// BPFFSRoot holds one bpffs directory per lab, one subdirectory per host.
	BPFFSRoot = "/sys/fs/bpf/vpcd-lab"
	// WireGuardSockDir is where wireguard-go puts its UAPI sockets.
	WireGuardSockDir = "/var/run/wireguard"
	// MetricsAddr is the metrics address of every lab daemon; each listens
	// inside its own host namespace, so they do not collide.
	MetricsAddr = "127.0.0.1:9477"
)

// Names of files in the lab directory and in each host's state directory.
const (
	stateFile    = "state.json"
	topologyFile = "topology.yaml"
	hostsDir     = "hosts"
	logFile      = "vpcd.log"
	pidFile      = "vpcd.pid"
	sockFile     = "vpcd.sock"
	bridgeName   = "rack0"
)

// DefaultName returns the name of the lab when none is given: "vpcd".
func DefaultName() string { return "vpcd" }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// checkName rejects names that cannot be part of a file or namespace name.
func checkName(kind, name string) error {
	if !nameRE.MatchString(name) || len(name) > 64 {
		return fmt.Errorf("%s name %q: want letters, digits, '.', '_' or '-' (at most 64)", kind, name)
	}
	return nil
}

// labDir returns the state directory of lab name.
func labDir(name string) string { return filepath.Join(RunDir, name) }

// state is what a lab made, as recorded in state.json.
type state struct {
	Name      string      `json:"name"`
	Dir       string      `json:"dir"`
	Source    string      `json:"source"`   // topology file given to up or apply
	Topology  string      `json:"topology"` // the copy the daemons read
	Binary    string      `json:"binary,omitempty"`
	NoDaemons bool        `json:"no_daemons,omitempty"`
	Created   time.Time   `json:"created"`
	RackNS    string      `json:"rack_ns,omitempty"`
	Hosts     []hostState `json:"hosts"`
	ENIs      []eniState  `json:"enis"`
	// Etcd is the lab's etcd server when the daemons run in etcd mode
	// (Options.Etcd); nil when they read the topology file.
	Etcd *etcdState `json:"etcd,omitempty"`
}

// hostState is one host of the lab.
type hostState struct {
	Name     string `json:"name"`
	NS       string `json:"netns"`
	StateDir string `json:"state_dir"`
	Log      string `json:"log"`
	PIDFile  string `json:"pid_file"`
	Socket   string `json:"socket"`
	BPFFS    string `json:"bpffs"`
	Device   string `json:"tunnel_device"`
	UAPI     string `json:"uapi_socket"`
	PID      int    `json:"pid,omitempty"` // 0 when not started by the lab
	// Flags are extra `vpcd run` flags (Options.DaemonFlags), kept for
	// restarts.
	Flags []string `json:"flags,omitempty"`
}

// eniState is one ENI namespace of the lab.
type eniState struct {
	Name      string `json:"name"`
	Host      string `json:"host"`
	NS        string `json:"netns"`
	Interface string `json:"interface"`
}

// newHostState returns the paths of host in lab name.
func newHostState(name, dir, host string) hostState {
	sd := filepath.Join(dir, hostsDir, host)
	dev := tunnel.DeviceName(host)
	return hostState{
		Name:     host,
		NS:       hostNSName(name, host),
		StateDir: sd,
		Log:      filepath.Join(sd, logFile),
		PIDFile:  filepath.Join(sd, pidFile),
		Socket:   filepath.Join(sd, sockFile),
		BPFFS:    filepath.Join(BPFFSRoot, name, host),
		Device:   dev,
		UAPI:     filepath.Join(WireGuardSockDir, dev+".sock"),
	}
}

func rackNSName(lab string) string       { return lab + "-rack" }
func hostNSName(lab, host string) string { return lab + "-h-" + host }
func eniNSName(lab, eni string) string   { return lab + "-e-" + eni }

// host returns the recorded state of a host, or nil.
func (s *state) host(name string) *hostState {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i]
		}
	}
	return nil
}

// eni returns the recorded state of an ENI, or nil.
func (s *state) eni(name string) *eniState {
	for i := range s.ENIs {
		if s.ENIs[i].Name == name {
			return &s.ENIs[i]
		}
	}
	return nil
}

// save writes state.json atomically.
func (s *state) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(s.Dir, stateFile), append(data, '\n'), 0o600)
}

// readState loads state.json of the lab in dir.
func readState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// writeAtomic writes data to path through a temporary file and a rename.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, perm)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
