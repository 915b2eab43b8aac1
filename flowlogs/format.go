package flowlogs

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/vpcd/vpcd/topology"
)

// minVersion is the version of a format that uses only version 2 fields
// (or only fields of our own, such as vni).
const minVersion = 2

// Format is a parsed flow-log format: the fields a record prints, in order,
// and the version they imply. Make one with ParseFormat; the zero Format
// prints nothing.
type Format struct {
	fields  []field
	version int
}

// ParseFormat parses a flow-log format: "default" is the AWS version 2
// line; anything else must be ${field} tokens separated by spaces, naming
// the fields of SPEC §6.
func ParseFormat(s string) (Format, error) {
	names, err := topology.FormatFields(s)
	if err != nil {
		return Format{}, err
	}
	f := Format{fields: make([]field, 0, len(names)), version: minVersion}
	for _, name := range names {
		fd, ok := lookupField(name)
		if !ok {
			return Format{}, fmt.Errorf("flow-log field %q is not supported", name)
		}
		f.fields = append(f.fields, fd)
		f.version = max(f.version, fd.version)
	}
	return f, nil
}

// Fields returns the field names of f, in order.
func (f Format) Fields() []string {
	names := make([]string, len(f.fields))
	for i, fd := range f.fields {
		names[i] = fd.name
	}
	return names
}

// Version returns the flow-log version f prints: the highest AWS version
// among its fields, at least 2. The vni field, ours, does not raise it.
func (f Format) Version() int {
	return f.version
}

// Header returns the header line AWS writes at the top of a file: the field
// names separated by spaces.
func (f Format) Header() string {
	return strings.Join(f.Fields(), " ")
}

// Line returns r as a line of f (without a newline).
func (f Format) Line(r Record) string {
	return string(f.AppendLine(nil, &r))
}

// AppendLine appends r as a line of f, without a newline, to dst: the
// values separated by single spaces, "-" for fields that do not apply.
func (f Format) AppendLine(dst []byte, r *Record) []byte {
	for i, fd := range f.fields {
		if i > 0 {
			dst = append(dst, ' ')
		}
		var ok bool
		if dst, ok = fd.value(dst, r, f.version); !ok {
			dst = append(dst, '-')
		}
	}
	return dst
}

// AppendJSON appends r as a JSON object, without a newline, to dst. Keys are
// the AWS field names of f; counts, ports, times and codes are JSON
// numbers, the others strings. Fields that do not apply (printed "-" in a
// text line) are omitted.
func (f Format) AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, '{')
	first := true
	for _, fd := range f.fields {
		mark := len(dst)
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, fd.name...)
		dst = append(dst, `":`...)
		valueAt := len(dst)
		if !fd.number {
			dst = append(dst, '"')
		}
		var ok bool
		if dst, ok = fd.value(dst, r, f.version); !ok {
			dst = dst[:mark]
			continue
		}
		if !fd.number {
			dst = escapeJSON(dst, valueAt+1)
			dst = append(dst, '"')
		}
		first = false
	}
	return append(dst, '}')
}

// escapeJSON rewrites dst[from:], raw text just appended, as the body of a
// JSON string: quotes, backslashes and control characters are escaped and
// invalid UTF-8 becomes U+FFFD. Text that needs no escaping (the usual case)
// is left in place without copying.
func escapeJSON(dst []byte, from int) []byte {
	clean := true
	for _, c := range dst[from:] {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return dst
	}
	raw := string(dst[from:])
	dst = dst[:from]
	for _, c := range raw { // ranging over a string yields U+FFFD for invalid UTF-8
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', byte(c))
		case c < 0x20:
			dst = fmt.Appendf(dst, `\u%04x`, c)
		default:
			dst = utf8.AppendRune(dst, c)
		}
	}
	return dst
}
