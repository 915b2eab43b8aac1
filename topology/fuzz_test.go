package topology

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every failure is an
// ErrorList of located one-line errors, and that whatever parses survives
// Marshal unchanged.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, doc := range []string{tricky, baseMirror, "", "version: 1\nhosts: [*a]\n", "a: &a [*a]\n"} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := Parse(data)
		if err != nil {
			checkErrorList(t, top, err)
			return
		}
		out, err := Marshal(top)
		if err != nil {
			t.Fatalf("Marshal of a parsed topology: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(t)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, top) {
			t.Fatalf("round trip changed the topology:\n%s", out)
		}
	})
}

func checkErrorList(t *testing.T, top *Topology, err error) {
	t.Helper()
	if top != nil {
		t.Error("Parse returned both a Topology and errors")
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is %T %v, want a non-empty ErrorList", err, err)
	}
	for _, e := range list {
		if e == nil || e.Path == "" || e.Msg == "" {
			t.Fatalf("error without path or message: %#v", e)
		}
		if strings.ContainsAny(e.Path+e.Msg, "\r\n") {
			t.Fatalf("error is not one line: %q", e.Error())
		}
	}
}
