package control

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestStatusKeysAreSnakeCase: every field `vpcd status --json` prints,
// down to the nested structs of other packages, has a snake_case key of
// its own (a field without a tag would print as its Go name).
func TestStatusKeysAreSnakeCase(t *testing.T) {
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() == "time" || typ.PkgPath() == "net/netip" {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" {
				continue
			}
			if !snake.MatchString(tag) {
				t.Errorf("%s.%s (%s) prints as %q: want a snake_case json key", path, f.Name, typ, tag)
			}
			walk(f.Type, path+"."+tag)
		}
	}
	walk(reflect.TypeOf(Status{}), "status")
	if len(seen) < 5 {
		t.Fatalf("walked only %d struct types", len(seen))
	}
}
