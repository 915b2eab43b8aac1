package controlplane

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vpcd/vpcd/topology"
)

// DefaultPrefix is where vpcd keeps its keys unless told otherwise.
const DefaultPrefix = "/vpcd"

// SchemaVersion is the "schema" of every value this vpcd writes. A reader
// accepts values of this schema and older ones; a value of a newer schema
// is an error naming its key.
const SchemaVersion = 1

// The kinds of applied objects, as they appear in keys and in `vpcd get`.
const (
	KindSettings       = "settings" // one object, "global": version, account_id, tunnel
	KindHosts          = "hosts"    // a host's static config from the file (no public key)
	KindVPCs           = "vpcs"     // a VPC without its subnets
	KindSubnets        = "subnets"  // a subnet, naming its VPC
	KindSecurityGroups = "security-groups"
	KindNetworkACLs    = "network-acls"
	KindENIs           = "enis"
	KindFlowLogs       = "flow-logs"
	KindMirrorFilters  = "mirror-filters"
	KindMirrorSessions = "mirror-sessions"
)

// Kinds lists every kind of applied object in the order a topology file
// holds them.
var Kinds = []string{KindSettings, KindHosts, KindVPCs, KindSubnets, KindSecurityGroups,
	KindNetworkACLs, KindENIs, KindFlowLogs, KindMirrorFilters, KindMirrorSessions}

// settingsName is the name of the one settings object.
const settingsName = "global"

// keys computes the keys of one prefix.
type keys struct{ prefix string }

func newKeys(prefix string) keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return keys{strings.TrimRight(prefix, "/")}
}

func (k keys) all() string                     { return k.prefix + "/" }
func (k keys) commit() string                  { return k.prefix + "/commit" }
func (k keys) pending() string                 { return k.prefix + "/pending" }
func (k keys) lock() string                    { return k.prefix + "/lock" }
func (k keys) objects() string                 { return k.prefix + "/objects/" }
func (k keys) object(kind, name string) string { return k.objects() + kind + "/" + name }
func (k keys) hosts() string                   { return k.prefix + "/hosts/" }
func (k keys) host(name string) string         { return k.hosts() + name }

// objectRef parses an object key into its kind and name.
func (k keys) objectRef(key string) (kind, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.objects())
	if !ok {
		return "", "", false
	}
	kind, name, ok = strings.Cut(rest, "/")
	return kind, name, ok && kind != "" && name != ""
}

// commitRecord is the value of <prefix>/commit: which apply the objects
// belong to. Readers assemble objects only as of a commit's revision.
type commitRecord struct {
	Schema     int    `json:"schema"`
	Generation int64  `json:"generation"` // 1 for the first apply, +1 per apply that changed something
	ID         string `json:"id"`         // the apply run's id
	Time       string `json:"time"`       // RFC 3339, UTC
	Objects    int    `json:"objects"`    // how many objects the state holds
}

// pendingRecord is the value of <prefix>/pending: an apply writing in
// several transactions. It is deleted by the transaction that commits.
type pendingRecord struct {
	Schema     int    `json:"schema"`
	Generation int64  `json:"generation"`
	ID         string `json:"id"`
	Time       string `json:"time"`
}

// HostRecord is a daemon's live registration, the value of
// <prefix>/hosts/<name> under the daemon's lease. It holds what only the
// running daemon knows (its public key) or may override (address, port,
// MTU); the rest of a host's config comes from the applied file.
type HostRecord struct {
	Schema     int        `json:"schema"`
	Name       string     `json:"name"`
	UnderlayIP netip.Addr `json:"underlay_ip"`
	ListenPort uint16     `json:"listen_port"`
	PublicKey  string     `json:"public_key"`
	MTU        int        `json:"mtu"`
}

// objectValue is the value of an object key.
type objectValue struct {
	Schema int             `json:"schema"`
	Kind   string          `json:"kind"`
	Name   string          `json:"name"`
	Spec   json.RawMessage `json:"spec"`
}

// settingsSpec is the spec of the settings object.
type settingsSpec struct {
	Version   int
	AccountID string
	Tunnel    topology.Tunnel
}

// eniSpec writes an ENI's MAC as text rather than base64.
type eniSpec struct {
	topology.ENI
	MAC string `json:"MAC"`
}

// object is one applied object: its kind, name and encoded value.
type object struct {
	kind, name string
	value      []byte
}

func (o object) ref() string { return o.kind + "/" + o.name }

// encodeObject encodes spec as the value of the object kind/name.
func encodeObject(kind, name string, spec any) object {
	raw, err := json.Marshal(spec)
	if err != nil {
		// Topology types marshal without error; anything else is a bug.
		panic(fmt.Sprintf("controlplane: encode %s/%s: %v", kind, name, err))
	}
	v, _ := json.Marshal(objectValue{Schema: SchemaVersion, Kind: kind, Name: name, Spec: raw})
	return object{kind, name, v}
}

// objectsOf splits a topology into its objects, in file order. Hosts lose
// their public key: in etcd mode a host publishes its own.
func objectsOf(t *topology.Topology) []object {
	var objs []object
	objs = append(objs, encodeObject(KindSettings, settingsName, settingsSpec{t.Version, t.AccountID, t.Tunnel}))
	for _, h := range t.Hosts {
		h.PublicKey = ""
		objs = append(objs, encodeObject(KindHosts, h.Name, h))
	}
	for _, v := range t.VPCs {
		subnets := v.Subnets
		v.Subnets = nil
		objs = append(objs, encodeObject(KindVPCs, v.Name, v))
		for _, s := range subnets {
			s.VPC = v.Name
			objs = append(objs, encodeObject(KindSubnets, s.Name, s))
		}
	}
	for _, g := range t.SecurityGroups {
		objs = append(objs, encodeObject(KindSecurityGroups, g.Name, g))
	}
	for _, a := range t.NetworkACLs {
		objs = append(objs, encodeObject(KindNetworkACLs, a.Name, a))
	}
	for _, e := range t.ENIs {
		objs = append(objs, encodeObject(KindENIs, e.Name, eniSpec{ENI: e, MAC: e.MAC.String()}))
	}
	for _, f := range t.FlowLogs {
		objs = append(objs, encodeObject(KindFlowLogs, f.Name, f))
	}
	for _, f := range t.MirrorFilters {
		objs = append(objs, encodeObject(KindMirrorFilters, f.Name, f))
	}
	for _, s := range t.MirrorSessions {
		objs = append(objs, encodeObject(KindMirrorSessions, s.Name, s))
	}
	return objs
}

// decodeValue checks an object value's envelope.
func decodeValue(key string, data []byte) (objectValue, error) {
	var v objectValue
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%s: %w", key, err)
	}
	if v.Schema < 1 || v.Schema > SchemaVersion {
		return v, fmt.Errorf("%s: schema %d, this vpcd reads 1..%d (written by a newer vpcd?)", key, v.Schema, SchemaVersion)
	}
	return v, nil
}

// decodeHost decodes a registration.
func decodeHost(key string, data []byte) (HostRecord, error) {
	var h HostRecord
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("%s: %w", key, err)
	}
	if h.Schema < 1 || h.Schema > SchemaVersion {
		return h, fmt.Errorf("%s: schema %d, this vpcd reads 1..%d (written by a newer vpcd?)", key, h.Schema, SchemaVersion)
	}
	return h, nil
}

// errNoCommit means nothing was ever applied under the prefix.
var errNoCommit = errors.New("nothing applied yet")

// assemble builds a topology from applied objects (keyed "kind/name") and
// live registrations (by host name), and validates it exactly as a
// topology file is validated (topology.Parse of its Marshal).
//
// A host is in the topology when it has applied config or a registration.
// Address, port, MTU and public key come from its registration when it
// has one; a host without a registration has no public key, which means
// no tunnel to it. Objects are sorted by name within their kind.
func assemble(objs map[string][]byte, regs map[string]HostRecord) (*topology.Topology, error) {
	t, err := build(objs, regs)
	if err != nil {
		return nil, err
	}
	return revalidate(t)
}

// revalidate runs the file's validation on t and returns the result with
// defaults filled in.
func revalidate(t *topology.Topology) (*topology.Topology, error) {
	data, err := topology.Marshal(t)
	if err != nil {
		return nil, err
	}
	return topology.Parse(data)
}

func build(objs map[string][]byte, regs map[string]HostRecord) (*topology.Topology, error) {
	t := &topology.Topology{}
	settings := false
	hosts := map[string]topology.Host{}
	var subnets []topology.Subnet
	var errs []error
	for ref, data := range objs {
		v, err := decodeValue(ref, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := decodeSpec(t, v, hosts, &subnets); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref, err))
			continue
		}
		if v.Kind == KindSettings {
			settings = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !settings {
		return nil, errNoCommit
	}
	for name, r := range regs {
		h, ok := hosts[name]
		if !ok {
			h = topology.Host{Name: name, UnderlayInterface: "eth0", ListenPort: 51820, MTU: 1500}
		}
		if r.UnderlayIP.IsValid() {
			h.UnderlayIP = r.UnderlayIP
		}
		if r.ListenPort != 0 {
			h.ListenPort = r.ListenPort
		}
		if r.MTU != 0 {
			h.MTU = r.MTU
		}
		h.PublicKey = r.PublicKey
		hosts[name] = h
	}
	for _, h := range hosts {
		t.Hosts = append(t.Hosts, h)
	}
	byName := func(a, b string) int { return cmp.Compare(a, b) }
	slices.SortFunc(t.Hosts, func(a, b topology.Host) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.VPCs, func(a, b topology.VPC) int { return byName(a.Name, b.Name) })
	slices.SortFunc(subnets, func(a, b topology.Subnet) int { return byName(a.Name, b.Name) })
	for _, s := range subnets {
		i := slices.IndexFunc(t.VPCs, func(v topology.VPC) bool { return v.Name == s.VPC })
		if i < 0 {
			return nil, fmt.Errorf("%s/%s: vpc %q is not in etcd", KindSubnets, s.Name, s.VPC)
		}
		t.VPCs[i].Subnets = append(t.VPCs[i].Subnets, s)
	}
	slices.SortFunc(t.SecurityGroups, func(a, b topology.SecurityGroup) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.NetworkACLs, func(a, b topology.NetworkACL) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.ENIs, func(a, b topology.ENI) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.FlowLogs, func(a, b topology.FlowLog) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.MirrorFilters, func(a, b topology.MirrorFilter) int { return byName(a.Name, b.Name) })
	slices.SortFunc(t.MirrorSessions, func(a, b topology.MirrorSession) int { return byName(a.Name, b.Name) })
	return t, nil
}

// decodeSpec adds the object v to t (hosts and subnets to their own
// collections, which build joins later).
func decodeSpec(t *topology.Topology, v objectValue, hosts map[string]topology.Host, subnets *[]topology.Subnet) error {
	var err error
	switch v.Kind {
	case KindSettings:
		var s settingsSpec
		if err = json.Unmarshal(v.Spec, &s); err == nil {
			t.Version, t.AccountID, t.Tunnel = s.Version, s.AccountID, s.Tunnel
		}
	case KindHosts:
		var h topology.Host
		if err = json.Unmarshal(v.Spec, &h); err == nil {
			hosts[h.Name] = h
		}
	case KindVPCs:
		var x topology.VPC
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.VPCs = append(t.VPCs, x)
		}
	case KindSubnets:
		var x topology.Subnet
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			*subnets = append(*subnets, x)
		}
	case KindSecurityGroups:
		var x topology.SecurityGroup
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.SecurityGroups = append(t.SecurityGroups, x)
		}
	case KindNetworkACLs:
		var x topology.NetworkACL
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.NetworkACLs = append(t.NetworkACLs, x)
		}
	case KindENIs:
		var x eniSpec
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			if x.MAC != "" {
				x.ENI.MAC, err = net.ParseMAC(x.MAC)
			}
			t.ENIs = append(t.ENIs, x.ENI)
		}
	case KindFlowLogs:
		var x topology.FlowLog
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.FlowLogs = append(t.FlowLogs, x)
		}
	case KindMirrorFilters:
		var x topology.MirrorFilter
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.MirrorFilters = append(t.MirrorFilters, x)
		}
	case KindMirrorSessions:
		var x topology.MirrorSession
		if err = json.Unmarshal(v.Spec, &x); err == nil {
			t.MirrorSessions = append(t.MirrorSessions, x)
		}
	default:
		err = fmt.Errorf("unknown kind %q", v.Kind)
	}
	return err
}
