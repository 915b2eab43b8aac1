package flowlogs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// records returns n accepted TCP records with distinct source ports.
func records(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = tcpRecord()
		recs[i].SrcPort = uint16(1024 + i)
	}
	return recs
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s does not end with a newline", path)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestFileSinkHeaderHostMode(t *testing.T) {
	dir := t.TempDir()
	f := mustFormat(t, "default")
	s, err := NewFileSink(filepath.Join(dir, "logs", "{host}-blue.log"), "h1", f, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(3)
	for range 2 {
		if err := s.Write(recs); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "logs", "h1-blue.log")
	lines := readLines(t, path)
	if len(lines) != 7 || lines[0] != f.Header() {
		t.Fatalf("file has %d lines, first %q; want the header then 6 records", len(lines), lines[0])
	}
	for i, l := range lines[1:] {
		if want := f.Line(recs[i%3]); l != want {
			t.Errorf("line %d = %q, want %q", i+1, l, want)
		}
	}
	checkMode(t, path, 0o640)
	checkMode(t, filepath.Join(dir, "logs"), os.ModeDir|0o750)

	// Reopening appends without a second header.
	s, err = NewFileSink(filepath.Join(dir, "logs", "{host}-blue.log"), "h1", f, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(recs[:1]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if lines := readLines(t, path); len(lines) != 8 || strings.Count(strings.Join(lines, "\n"), "version") != 1 {
		t.Errorf("after reopening: %d lines, want 8 with one header", len(lines))
	}
}

// checkMode checks that path has exactly mode want, or for directories (whose
// mode the umask narrows) no more than want.
func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	got := st.Mode()
	if got != want && !(got.IsDir() && want.IsDir() && got.Perm()&^want.Perm() == 0) {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

func TestFileSinkModeIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "f.log")
	s, err := NewFileSink(path, "", mustFormat(t, "default"), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v under umask 077, want 0640", st.Mode().Perm())
	}
}

func TestFileSinkRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.log")
	f := mustFormat(t, "default")
	lineLen := int64(len(f.Line(tcpRecord())) + 1)
	headerLen := int64(len(f.Header()) + 1)
	const perFile, keep = 4, 2
	s, err := NewFileSink(path, "", f, headerLen+perFile*lineLen, keep)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(20) // 5 files' worth: flows.log, .1, .2 kept, 2 dropped
	for i := 0; i < len(recs); i += 3 {
		if err := s.Write(recs[i:min(i+3, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, name := range []string{path + ".2", path + ".1", path} {
		lines := readLines(t, name)
		if lines[0] != f.Header() {
			t.Errorf("%s starts with %q, want the header", name, lines[0])
		}
		if len(lines)-1 > perFile {
			t.Errorf("%s holds %d records, want at most %d", name, len(lines)-1, perFile)
		}
		checkMode(t, name, 0o640)
		got = append(got, lines[1:]...)
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.3 exists: keep is %d", path, keep)
	}
	// The kept files hold the newest records, in order, each whole.
	want := recs[len(recs)-len(got):]
	for i, l := range got {
		if l != f.Line(want[i]) {
			t.Errorf("kept record %d = %q, want %q", i, l, f.Line(want[i]))
		}
	}
	if len(got) < 2*perFile {
		t.Errorf("kept %d records, want at least %d", len(got), 2*perFile)
	}
}

func TestFileSinkRotationKeepZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.log")
	f := mustFormat(t, "default")
	s, err := NewFileSink(path, "", f, 200, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		s.Write(records(1))
	}
	s.Close()
	if _, err := os.Stat(path + ".1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("keep 0 left %s.1", path)
	}
	if lines := readLines(t, path); lines[0] != f.Header() || len(lines) != 2 {
		t.Errorf("got %d lines starting %q, want header and 1 record", len(lines), lines[0])
	}
}

func TestJSONLinesSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "{host}.jsonl")
	f := mustFormat(t, custom(allFields...))
	s, err := NewJSONLinesSink(path, "h2", f, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := tcpRecord()
	r.InterfaceID = "we\"ird\\\n\x01é"
	nodata := Record{InterfaceID: "a1", Start: t0, End: t0, LogStatus: StatusNoData, VNI: 7}
	if err := s.Write([]Record{r, nodata}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, strings.Replace(path, "{host}", "h2", 1))
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (no header)", len(lines))
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("line 1 %q: %v", lines[0], err)
	}
	for k, want := range map[string]any{
		"version": 7.0, "account-id": "123456789010", "interface-id": r.InterfaceID,
		"srcaddr": "172.31.16.139", "dstport": 22.0, "protocol": 6.0, "packets": 20.0, "bytes": 4249.0,
		"start": 1418530010.0, "action": "ACCEPT", "log-status": "OK", "tcp-flags": 3.0, "type": "IPv4",
		"flow-direction": "ingress", "encryption-status": 1.0, "vni": 4242.0,
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
	for _, k := range []string{"instance-id", "traffic-path"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s present, want omitted (it prints \"-\")", k)
		}
	}
	got = nil
	if err := json.Unmarshal([]byte(lines[1]), &got); err != nil {
		t.Fatalf("line 2 %q: %v", lines[1], err)
	}
	if len(got) != 6 || got["log-status"] != "NODATA" || got["interface-id"] != "a1" || got["vni"] != 7.0 {
		t.Errorf("nodata record = %v, want version, interface-id, start, end, log-status, vni", got)
	}
}

func TestStdoutSink(t *testing.T) {
	var out bytes.Buffer
	f := mustFormat(t, "default")
	s := NewStdoutSink(&out, f)
	s.Write(records(2))
	s.Write(nil)
	s.Write(records(1))
	s.Close()
	sc := bufio.NewScanner(&out)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	want := []string{f.Header(), f.Line(records(2)[0]), f.Line(records(2)[1]), f.Line(records(1)[0])}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestLineSinkCountsErrors(t *testing.T) {
	s := NewStdoutSink(failWriter{}, mustFormat(t, "default"))
	if err := s.Write(records(5)); err == nil {
		t.Error("Write succeeded on a failing writer")
	}
	if s.Lost() != 5 || s.Errors() != 1 {
		t.Errorf("Lost %d, Errors %d; want 5, 1", s.Lost(), s.Errors())
	}
}

func TestLineSinkChunksWholeLines(t *testing.T) {
	var out countingWriter
	f := mustFormat(t, "default")
	s := NewStdoutSink(&out, f)
	recs := records(5000) // several chunks
	if err := s.Write(recs); err != nil {
		t.Fatal(err)
	}
	if out.calls < 2 {
		t.Errorf("%d write calls for %d bytes: want chunks", out.calls, out.Len())
	}
	for i, w := range out.sizes {
		if w > chunkBytes+len(f.Line(recs[0]))+len(f.Header())+2 {
			t.Errorf("write %d is %d bytes, beyond a chunk", i, w)
		}
	}
	if got := strings.Count(out.String(), "\n"); got != len(recs)+1 {
		t.Errorf("%d lines, want %d", got, len(recs)+1)
	}
}

// countingWriter records the size of each write call and that each ends a
// line.
type countingWriter struct {
	bytes.Buffer
	calls int
	sizes []int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	w.sizes = append(w.sizes, len(p))
	if len(p) > 0 && p[len(p)-1] != '\n' {
		return 0, errors.New("write of a partial line")
	}
	return w.Buffer.Write(p)
}

func TestOpenSink(t *testing.T) {
	dir := t.TempDir()
	f := mustFormat(t, "default")
	for _, dest := range []string{"file://" + dir + "/{host}.log", "jsonl+file://" + dir + "/x.jsonl", "stdout", "ipfix+udp://127.0.0.1:4739"} {
		s, err := OpenSinkOptions(dest, "h", f, Options{Stdout: &bytes.Buffer{}})
		if err != nil {
			t.Errorf("OpenSink(%q): %v", dest, err)
			continue
		}
		s.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "h.log")); err != nil {
		t.Errorf("file:// with {host}: %v", err)
	}
	for _, dest := range []string{"ftp://x", "file://", "ipfix+udp://127.0.0.1", "nowhere", "file:///proc/no/such/dir/x.log"} {
		_, err := OpenSink(dest, "h", f)
		if err == nil {
			t.Errorf("OpenSink(%q) succeeded", dest)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, dest) || strings.Contains(msg, "\n") {
			t.Errorf("OpenSink(%q): error %q should be one line naming the destination", dest, msg)
		}
	}
}
