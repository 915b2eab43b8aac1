package topology

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// YAML short tags of the scalars the schema uses.
const (
	tagNull  = "!!null"
	tagStr   = "!!str"
	tagInt   = "!!int"
	tagBool  = "!!bool"
	tagFloat = "!!float"
)

// maxValues bounds the values one document may expand to. Aliases let a
// small file name the same list many times over; a real topology holds a
// few thousand values.
const maxValues = 1 << 20

// decoder walks a yaml.Node tree by hand: every value is checked against the
// schema and every problem is recorded with its YAML path.
type decoder struct {
	*collector
	budget int // values left to decode before the document is too complex
}

func newDecoder() *decoder {
	return &decoder{collector: newCollector(), budget: maxValues}
}

// spend takes n values from the budget and reports whether decoding may go
// on; the first time it may not, it records why.
func (d *decoder) spend(n int) bool {
	if d.budget <= 0 {
		return false
	}
	d.budget -= n
	if d.budget <= 0 {
		d.errorf(nil, rootPath, "document too complex: its aliases expand to more than %d values", maxValues)
		return false
	}
	return true
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is an explicit or implicit YAML null.
func isNull(n *yaml.Node) bool {
	r := resolve(n)
	return r.Kind == yaml.ScalarNode && r.ShortTag() == tagNull
}

// describe names a node's kind and value for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
	default:
		return "nothing"
	}
	v := n.Value
	if utf8.RuneCountInString(v) > 40 {
		v = string([]rune(v)[:40]) + "..."
	}
	switch n.ShortTag() {
	case tagNull:
		return "null"
	case tagInt:
		return "integer " + v
	case tagFloat:
		return "number " + v
	case tagBool:
		return "boolean " + v
	case tagStr:
		return "string " + strconv.Quote(v)
	default:
		return fmt.Sprintf("%s %q", n.ShortTag(), v)
	}
}

// mapNode is a checked YAML mapping: its keys are known and unique.
type mapNode struct {
	d    *decoder
	path string
	node *yaml.Node
	vals map[string]*yaml.Node // key → value
	keys map[string]*yaml.Node // key → key node, for duplicate reports
}

// mapping checks that n is a mapping whose keys are all among keys and
// appear once; it returns nil (after recording the error) when n is not a
// mapping. Unknown and repeated keys are reported and ignored. Merge keys
// (<<: *anchor) are honoured: the mapping's own keys win over merged ones.
func (d *decoder) mapping(n *yaml.Node, path string, keys ...string) *mapNode {
	r := resolve(n)
	if r.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(r))
		return nil
	}
	if !d.spend(1 + len(r.Content)/2) {
		return nil
	}
	m := &mapNode{d: d, path: path, node: n, vals: make(map[string]*yaml.Node), keys: make(map[string]*yaml.Node)}
	merges := m.addPairs(r, keys, false)
	for i := 0; i < len(merges) && i < maxMerges; i++ {
		// Merged mappings may merge others in turn: append and go on.
		merges = append(merges, m.merge(merges[i], keys)...)
	}
	return m
}

// maxMerges bounds the merge keys followed for one mapping.
const maxMerges = 64

// addPairs adds the pairs of mapping r to m and returns the values of its
// merge keys. Keys that come from a merge never override and never clash.
func (m *mapNode) addPairs(r *yaml.Node, allowed []string, merged bool) (merges []*yaml.Node) {
	for i := 0; i+1 < len(r.Content); i += 2 {
		k, v := r.Content[i], r.Content[i+1]
		kr := resolve(k)
		if kr.Kind != yaml.ScalarNode {
			m.d.errorf(k, m.path, "mapping key must be a string, got %s", describe(kr))
			continue
		}
		if kr.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		key, kp := kr.Value, field(m.path, kr.Value)
		prev, dup := m.keys[key]
		switch {
		case !slices.Contains(allowed, key):
			m.d.errorf(k, kp, "unknown key %q", key)
		case dup && !merged:
			m.d.errorf(k, kp, "duplicate key %q (first at line %d)", key, prev.Line)
		case !dup:
			m.keys[key] = k
			m.vals[key] = v
			m.d.nodes[kp] = v
		}
	}
	return merges
}

// merge adds the pairs of the value of a merge key: a mapping or a list of
// mappings. It returns the merge keys found inside them.
func (m *mapNode) merge(v *yaml.Node, allowed []string) []*yaml.Node {
	r := resolve(v)
	var sources []*yaml.Node
	switch r.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{r}
	case yaml.SequenceNode:
		sources = r.Content
	}
	var merges []*yaml.Node
	for _, src := range sources {
		sr := resolve(src)
		if sr.Kind != yaml.MappingNode {
			m.d.errorf(src, field(m.path, "<<"), "expected a mapping to merge, got %s", describe(sr))
			continue
		}
		if !m.d.spend(1 + len(sr.Content)/2) {
			return nil
		}
		merges = append(merges, m.addPairs(sr, allowed, true)...)
	}
	if len(sources) == 0 {
		m.d.errorf(v, field(m.path, "<<"), "expected a mapping or a list of mappings to merge, got %s", describe(r))
	}
	return merges
}

// at returns the path of key in this mapping.
func (m *mapNode) at(key string) string { return field(m.path, key) }

// has reports whether key is present, even with a null value.
func (m *mapNode) has(key string) bool {
	_, ok := m.vals[key]
	return ok
}

// opt returns the value of an optional key, or nil when absent or null.
func (m *mapNode) opt(key string) *yaml.Node {
	v := m.vals[key]
	if v == nil || isNull(v) {
		return nil
	}
	return v
}

// req returns the value of a required key, or nil (after recording the
// error) when it is absent or null.
func (m *mapNode) req(key string) *yaml.Node {
	v, ok := m.vals[key]
	switch {
	case !ok:
		m.d.errorf(m.node, m.at(key), "missing required key %q", key)
	case isNull(v):
		m.d.errorf(v, m.at(key), "must not be empty")
	default:
		return v
	}
	return nil
}

// list returns the elements of a YAML sequence; null counts as empty.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	r := resolve(n)
	if isNull(r) {
		return nil
	}
	if r.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describe(r))
		return nil
	}
	if !d.spend(1 + len(r.Content)) {
		return nil
	}
	for i, e := range r.Content {
		d.nodes[elem(path, i)] = e
	}
	return r.Content
}

// decodeList decodes each element of the list n with one; element i of the
// result always comes from element i of the YAML list.
func decodeList[T any](d *decoder, n *yaml.Node, path string, one func(*yaml.Node, string) T) []T {
	var out []T
	for i, e := range d.list(n, path) {
		out = append(out, one(e, elem(path, i)))
	}
	return out
}

// str decodes any non-null scalar as its literal text, so that
// account_id: 012345678901 keeps its leading zero.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	r := resolve(n)
	if r.Kind != yaml.ScalarNode || r.ShortTag() == tagNull {
		d.errorf(n, path, "expected a string, got %s", describe(r))
		return "", false
	}
	return r.Value, true
}

// text decodes a non-empty string.
func (d *decoder) text(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if ok && s == "" {
		d.errorf(n, path, "must not be empty")
		return "", false
	}
	return s, ok
}

// word decodes a non-empty string without spaces or control characters:
// such values end up in space-separated flow-log lines.
func (d *decoder) word(n *yaml.Node, path string) (string, bool) {
	s, ok := d.text(n, path)
	if ok && strings.IndexFunc(s, isSpaceOrControl) >= 0 {
		d.errorf(n, path, "%q must not contain spaces or control characters", s)
		return "", false
	}
	return s, ok
}

// name decodes the name of a host, VPC, ENI or other object. Names appear
// in flow logs, metrics labels, file and device names and "kind:NAME"
// references, so they may not hold spaces, control characters, '/' or ':'.
func (d *decoder) name(n *yaml.Node, path string) (string, bool) {
	s, ok := d.text(n, path)
	if ok && !ValidName(s) {
		d.errorf(n, path, "name %q must not contain spaces, control characters, '/' or ':'", s)
		return "", false
	}
	return s, ok
}

// ValidName reports whether s may name a host, VPC, ENI or other object
// (see name): not empty, no spaces, control characters, '/' or ':'.
// Whoever makes names outside a file (the CNI plugin) checks them here.
func ValidName(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return isSpaceOrControl(r) || r == '/' || r == ':' }) < 0
}

func isSpaceOrControl(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError
}

// integer decodes an integer in lo..hi.
func (d *decoder) integer(n *yaml.Node, path string, lo, hi int) (int, bool) {
	r := resolve(n)
	var v int64
	if r.Kind != yaml.ScalarNode || r.ShortTag() != tagInt || r.Decode(&v) != nil {
		d.errorf(n, path, "expected an integer, got %s", describe(r))
		return 0, false
	}
	if v < int64(lo) || v > int64(hi) {
		d.errorf(n, path, "%d is out of range %d..%d", v, lo, hi)
		return 0, false
	}
	return int(v), true
}

// boolean decodes true or false.
func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	r := resolve(n)
	var v bool
	if r.Kind != yaml.ScalarNode || r.ShortTag() != tagBool || r.Decode(&v) != nil {
		d.errorf(n, path, "expected true or false, got %s", describe(r))
		return false, false
	}
	return v, true
}

// enum decodes one of the given strings (case-sensitive).
func (d *decoder) enum(n *yaml.Node, path string, options ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !slices.Contains(options, s) {
		d.errorf(n, path, "invalid value %q: want %s", s, strings.Join(options, ", "))
		return "", false
	}
	return s, true
}

// addr decodes an IPv4 address.
func (d *decoder) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		d.errorf(n, path, "invalid IPv4 address %q", s)
	case !a.Is4():
		d.errorf(n, path, "IPv6 address %s is not supported (IPv4 only)", a)
	default:
		return a, true
	}
	return netip.Addr{}, false
}

// prefix decodes a canonical IPv4 CIDR: no host bits may be set.
func (d *decoder) prefix(n *yaml.Node, path string) (netip.Prefix, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		d.errorf(n, path, "invalid CIDR %q: want a.b.c.d/len", s)
	case !p.Addr().Is4():
		d.errorf(n, path, "IPv6 CIDR %s is not supported (IPv4 only)", p)
	case p.Masked() != p:
		d.errorf(n, path, "CIDR %s has host bits set: did you mean %s?", p, p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

// mac decodes a 6-byte unicast MAC address.
func (d *decoder) mac(n *yaml.Node, path string) (net.HardwareAddr, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return nil, false
	}
	m, err := net.ParseMAC(s)
	switch {
	case err != nil || len(m) != 6:
		d.errorf(n, path, "invalid MAC address %q: want 6 bytes such as 02:00:0a:00:01:0a", s)
	case m[0]&1 != 0:
		d.errorf(n, path, "MAC address %s is multicast: want a unicast address", m)
	case slices.Equal(m, make(net.HardwareAddr, 6)):
		d.errorf(n, path, "MAC address %s is all zeros", m)
	default:
		return m, true
	}
	return nil, false
}

// ifname decodes a Linux network interface name.
func (d *decoder) ifname(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if msg := checkIfname(s); msg != "" {
		d.errorf(n, path, "invalid interface name %q: %s", s, msg)
		return "", false
	}
	return s, true
}

// checkIfname returns why s is not a valid Linux interface name, or "".
func checkIfname(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 15:
		return fmt.Sprintf("%d bytes, at most 15 allowed", len(s))
	case s == "." || s == "..":
		return "reserved name"
	case strings.IndexFunc(s, func(r rune) bool { return isSpaceOrControl(r) || r == '/' || r == ':' }) >= 0:
		return "must not contain spaces, control characters, '/' or ':'"
	}
	return ""
}

// duration decodes a Go duration string in lo..hi.
func (d *decoder) duration(n *yaml.Node, path string, lo, hi time.Duration) (time.Duration, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.errorf(n, path, "invalid duration %q: want a Go duration such as 60s or 1m", s)
	case v < lo || v > hi:
		d.errorf(n, path, "%s is out of range %s..%s", v, lo, hi)
	default:
		return v, true
	}
	return 0, false
}
