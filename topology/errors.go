package topology

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// rootPath is the path of errors about the document as a whole.
const rootPath = "(root)"

// FieldError is one problem in a topology file, located by its YAML path
// such as "enis[3].ip" or "(root)" for the document itself.
type FieldError struct {
	Path string
	Msg  string // one line, naming the offending value
}

// Error returns "PATH: message".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ErrorList is every problem found in a topology file, in document order.
type ErrorList []*FieldError

// Error returns one "PATH: message" line per problem.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the individual *FieldError values to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// located is a FieldError with the document position used to order it.
type located struct {
	line, col int
	err       *FieldError
}

// collector gathers errors while a document is walked. It remembers the node
// found at every path so that checks made after the walk can still report
// errors in document order.
type collector struct {
	errs  []located
	nodes map[string]*yaml.Node
}

func newCollector() *collector {
	return &collector{nodes: make(map[string]*yaml.Node)}
}

// errorf records an error at path, positioned at node n (which may be nil).
func (c *collector) errorf(n *yaml.Node, path, format string, args ...any) {
	if path == "" {
		path = rootPath
	}
	l := located{err: &FieldError{Path: path, Msg: oneLine(fmt.Sprintf(format, args...))}}
	if n != nil {
		l.line, l.col = n.Line, n.Column
	}
	c.errs = append(c.errs, l)
}

// errorAt records an error at path, positioned at the node recorded for path
// or, when the path is not in the document (a defaulted field), for the
// nearest enclosing path that is.
func (c *collector) errorAt(path, format string, args ...any) {
	c.errorf(c.nodeAt(path), path, format, args...)
}

func (c *collector) nodeAt(path string) *yaml.Node {
	for p := path; p != ""; p = parentPath(p) {
		if n, ok := c.nodes[p]; ok {
			return n
		}
	}
	return c.nodes[""]
}

// err returns the collected errors sorted in document order, or nil.
func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(c.errs, func(a, b located) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.col, b.col))
	})
	list := make(ErrorList, len(c.errs))
	for i, l := range c.errs {
		list[i] = l.err
	}
	return list
}

// field returns the path of key inside the mapping at parent.
func field(parent, key string) string {
	if !isPlainKey(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// elem returns the path of the i-th element of the list at parent.
func elem(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// parentPath strips the last component of a path: "a[1].b" → "a[1]" → "a".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func isPlainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// oneLine keeps a message on one line whatever the input held.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}
