package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the topology file at path. A file that cannot be
// read gives the error of os.ReadFile; a file that does not validate gives
// an ErrorList, as Parse does.
func Load(path string) (*Topology, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse decodes and validates a topology file (SPEC §2) and fills in its
// defaults. When the file has problems Parse returns a nil Topology and an
// ErrorList holding every problem, each with its YAML path, in document
// order.
//
// Choices where SPEC §2 is silent:
//   - A key with a null value (`mtu:`) counts as absent, except that a null
//     list is an empty one: `egress:` alone means nothing out, like `egress: []`.
//   - String fields take any scalar as written (`account_id: 012345678901`);
//     integer fields take only YAML integers (`"80"` is refused).
//   - Names may not hold spaces, control characters, '/' or ':'; subnet names
//     are unique across VPCs, since ENIs name their subnet alone.
//   - Subnets are /30 or larger; security-group references, network ACLs and
//     mirror targets must be in the same VPC as what refers to them; a mirror
//     target is never its own source; an ENI's interface is never its host's
//     underlay interface.
//   - Flow logs default to traffic_type ALL, aggregation_interval 600s (as
//     AWS) and format "default"; mirror-filter rules default to protocol all
//     and 0.0.0.0/0 both ways; from_port and to_port come together.
//   - Anchors, aliases and merge keys (<<) work.
func Parse(data []byte) (*Topology, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, ErrorList{{Path: rootPath, Msg: oneLine(err.Error())}}
	}
	d := newDecoder()
	d.nodes[""] = root
	t := d.topology(root)
	d.validate(t)
	if err := d.err(); err != nil {
		return nil, err
	}
	sortRules(t)
	return t, nil
}

// parseYAML returns the root node of the single YAML document in data.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML library is not ours: a panic on hostile input must
		// become an error, not take the daemon down.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty document: want a mapping with version and hosts")
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(err)
	default:
		return nil, fmt.Errorf("more than one YAML document (the second starts at line %d): want one", next.Line)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty document: want a mapping with version and hosts")
	}
	return doc.Content[0], nil
}

// yamlError rewords an error of the YAML library: "yaml: line 3: did not
// find expected key" becomes "invalid YAML: line 3: did not find expected key".
func yamlError(err error) error {
	return errors.New("invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: "))
}
