package topology

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Kinds of flow-log destination returned by SplitDestination.
const (
	DestFile   = "file"       // file://PATH: AWS text lines with a header
	DestJSONL  = "jsonl+file" // jsonl+file://PATH: one JSON object per line
	DestStdout = "stdout"     // stdout: AWS text lines on standard output
	DestIPFIX  = "ipfix+udp"  // ipfix+udp://HOST:PORT: IPFIX (RFC 7011) export
)

// flowLogFields is the one list of the fields a flow-log format may name:
// the validator checks formats against it and package flowlogs prints each
// of them (a test there checks that it knows every one). The first
// defaultFieldCount make the AWS version 2 default format, in its order.
var flowLogFields = [...]string{
	"version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
	"protocol", "packets", "bytes", "start", "end", "action", "log-status",
	"vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr",
	"flow-direction", "traffic-path", "encryption-status", "vni",
}

const defaultFieldCount = 14

// FlowLogFields returns every field a flow-log format may name.
func FlowLogFields() []string { return slices.Clone(flowLogFields[:]) }

// defaultFields are the fields of the AWS version 2 default format.
func defaultFields() []string { return slices.Clone(flowLogFields[:defaultFieldCount]) }

// isFlowLogField reports whether name is a field a custom format may use.
func isFlowLogField(name string) bool { return slices.Contains(flowLogFields[:], name) }

// FormatFields returns the field names (without "${" and "}") of a flow-log
// format: "default" gives the AWS version 2 fields; any other format must be
// space-separated ${field} tokens naming known fields.
func FormatFields(format string) ([]string, error) {
	if format == DefaultFlowLogFormat {
		return defaultFields(), nil
	}
	tokens := strings.Fields(format)
	if len(tokens) == 0 {
		return nil, fmt.Errorf("empty format: want \"default\" or ${field} tokens")
	}
	fields := make([]string, 0, len(tokens))
	for _, tok := range tokens {
		name, ok := strings.CutPrefix(tok, "${")
		if ok {
			name, ok = strings.CutSuffix(name, "}")
		}
		switch {
		case !ok:
			return nil, fmt.Errorf("format token %q is not a ${field}", tok)
		case !isFlowLogField(name):
			return nil, fmt.Errorf("unknown flow-log field %q in format", tok)
		}
		fields = append(fields, name)
	}
	return fields, nil
}

// Fields returns the field names of the flow log's format.
func (f *FlowLog) Fields() []string {
	fields, err := FormatFields(f.Format)
	if err != nil {
		return defaultFields()
	}
	return fields
}

// ExpandHost replaces {host} in a flow-log destination (or its path) with
// the name of the host whose daemon writes it.
func ExpandHost(dest, host string) string {
	return strings.ReplaceAll(dest, "{host}", host)
}

// SplitDestination splits a flow-log destination into its kind (DestFile,
// DestJSONL, DestStdout or DestIPFIX) and target: the path for files (which
// may hold {host}), "HOST:PORT" for IPFIX, "" for stdout.
func SplitDestination(dest string) (kind, target string, err error) {
	if dest == DestStdout {
		return DestStdout, "", nil
	}
	scheme, rest, ok := strings.Cut(dest, "://")
	if !ok {
		return "", "", fmt.Errorf("invalid destination %q: want file://PATH, jsonl+file://PATH, stdout or ipfix+udp://HOST:PORT", dest)
	}
	switch scheme {
	case DestFile, DestJSONL:
		if rest == "" {
			return "", "", fmt.Errorf("destination %q names no file", dest)
		}
		return scheme, rest, nil
	case DestIPFIX:
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" {
			return "", "", fmt.Errorf("invalid IPFIX destination %q: want ipfix+udp://HOST:PORT", dest)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", "", fmt.Errorf("invalid port %q in destination %q: want 1..65535", port, dest)
		}
		return scheme, rest, nil
	}
	return "", "", fmt.Errorf("unknown destination scheme %q in %q: want file://, jsonl+file://, stdout or ipfix+udp://", scheme, dest)
}

func (d *decoder) flowLog(n *yaml.Node, path string) FlowLog {
	f := FlowLog{TrafficType: DefaultTrafficType, AggregationInterval: DefaultAggregationInterval, Format: DefaultFlowLogFormat}
	m := d.mapping(n, path, "name", "resource", "traffic_type", "aggregation_interval", "format", "destination")
	if m == nil {
		return f
	}
	if v := m.req("name"); v != nil {
		f.Name, _ = d.name(v, m.at("name"))
	}
	if v := m.req("resource"); v != nil {
		f.Resource, f.ResourceKind, f.ResourceName = d.resource(v, m.at("resource"))
	}
	if v := m.opt("traffic_type"); v != nil {
		f.TrafficType, _ = d.enum(v, m.at("traffic_type"), "ALL", "ACCEPT", "REJECT")
	}
	if v := m.opt("aggregation_interval"); v != nil {
		f.AggregationInterval, _ = d.duration(v, m.at("aggregation_interval"), time.Second, 600*time.Second)
	}
	if v := m.opt("format"); v != nil {
		f.Format, _ = d.flowLogFormat(v, m.at("format"))
	}
	if v := m.req("destination"); v != nil {
		f.Destination, _ = d.destination(v, m.at("destination"))
	}
	return f
}

// resource decodes "vpc:NAME", "subnet:NAME" or "eni:NAME".
func (d *decoder) resource(n *yaml.Node, path string) (res, kind, name string) {
	s, ok := d.str(n, path)
	if !ok {
		return "", "", ""
	}
	kind, name, found := strings.Cut(s, ":")
	switch {
	case !found || name == "":
		d.errorf(n, path, "invalid resource %q: want vpc:NAME, subnet:NAME or eni:NAME", s)
	case kind != "vpc" && kind != "subnet" && kind != "eni":
		d.errorf(n, path, "invalid resource kind %q in %q: want vpc, subnet or eni", kind, s)
	default:
		return s, kind, name
	}
	return "", "", ""
}

func (d *decoder) flowLogFormat(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if _, err := FormatFields(s); err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	return s, true
}

func (d *decoder) destination(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if _, _, err := SplitDestination(s); err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	return s, true
}
