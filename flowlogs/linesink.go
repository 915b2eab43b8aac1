package flowlogs

import (
	"cmp"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vpcd/vpcd/topology"
)

// chunkBytes bounds what a line sink renders before writing it out, so that
// a large interval does not hold its whole rendering in memory.
const chunkBytes = 64 << 10

// output is where a lineSink's lines go.
type output interface {
	// write writes p, whole lines, with one write call.
	write(p []byte) error
	// room returns how many more bytes the current file takes before
	// rotating; a batch of lines is cut so that it fits.
	room() int64
	sync() error
	close() error
}

// lineSink writes one line per record to an output: the text, JSON lines
// and stdout sinks differ only in how they encode a record and where the
// lines go.
type lineSink struct {
	counters
	out    output
	encode func(dst []byte, r *Record) []byte // one record, without a newline
	buf    []byte
	closed bool
}

// NewFileSink returns a sink writing AWS text lines of format f to the file
// at path, with {host} replaced by host. Parent directories are created
// (0750) and files are 0640. Each file starts with the header line. When
// a file would grow beyond maxBytes (≤ 0: never) it is renamed PATH.1, older
// ones shift up to PATH.keep and the oldest is dropped. Flush fsyncs.
func NewFileSink(path, host string, f Format, maxBytes int64, keep int) (Sink, error) {
	out, err := openRotatingFile(topology.ExpandHost(path, host), []byte(f.Header()+"\n"), maxBytes, keep)
	if err != nil {
		return nil, err
	}
	return &lineSink{out: out, encode: f.AppendLine}, nil
}

// NewJSONLinesSink returns a sink writing one JSON object per record (see
// Format.AppendJSON) to the file at path, with {host} replaced by host. It
// creates, rotates and syncs files as NewFileSink does; the files have no
// header.
func NewJSONLinesSink(path, host string, f Format, maxBytes int64, keep int) (Sink, error) {
	out, err := openRotatingFile(topology.ExpandHost(path, host), nil, maxBytes, keep)
	if err != nil {
		return nil, err
	}
	return &lineSink{out: out, encode: f.AppendJSON}, nil
}

// NewStdoutSink returns a sink writing the header line of f once, then AWS
// text lines, to w (normally os.Stdout).
func NewStdoutSink(w io.Writer, f Format) Sink {
	return &lineSink{out: &streamOutput{w: w, header: []byte(f.Header() + "\n")}, encode: f.AppendLine}
}

// Write renders recs, one line each, and writes them in chunks of whole
// lines. A chunk that fails counts its records as lost; the others are
// still written. It returns the first error.
func (s *lineSink) Write(recs []Record) error {
	if s.closed {
		return os.ErrClosed
	}
	var firstErr error
	buf, first := s.buf[:0], 0 // first: index of the first record in buf
	for i := range recs {
		mark := len(buf)
		buf = append(s.encode(buf, &recs[i]), '\n')
		if mark > 0 && int64(len(buf)) > min(s.out.room(), chunkBytes) {
			firstErr = cmp.Or(firstErr, s.emit(buf[:mark], i-first))
			buf, first = append(buf[:0], buf[mark:]...), i
		}
	}
	if len(buf) > 0 {
		firstErr = cmp.Or(firstErr, s.emit(buf, len(recs)-first))
	}
	s.buf = buf[:0]
	return firstErr
}

// emit writes p, the lines of n records.
func (s *lineSink) emit(p []byte, n int) error {
	if err := s.out.write(p); err != nil {
		s.fail(n)
		return err
	}
	return nil
}

// Flush makes the written lines durable (fsync for files).
func (s *lineSink) Flush() error {
	if s.closed {
		return os.ErrClosed
	}
	if err := s.out.sync(); err != nil {
		s.errors.Add(1)
		return err
	}
	return nil
}

// Close flushes and closes the output.
func (s *lineSink) Close() error {
	if s.closed {
		return os.ErrClosed
	}
	err := s.Flush()
	s.closed = true
	return cmp.Or(err, s.out.close())
}

// streamOutput writes to an io.Writer, the header before the first lines.
type streamOutput struct {
	w       io.Writer
	header  []byte
	started bool
	buf     []byte
}

func (o *streamOutput) write(p []byte) error {
	if !o.started {
		o.buf = append(append(o.buf[:0], o.header...), p...)
		p = o.buf
	}
	if _, err := o.w.Write(p); err != nil {
		return err
	}
	o.started, o.buf = true, nil
	return nil
}

func (o *streamOutput) room() int64  { return math.MaxInt64 }
func (o *streamOutput) sync() error  { return nil }
func (o *streamOutput) close() error { return nil }

// rotatingFile is a file output with a header line and size-based rotation.
type rotatingFile struct {
	path     string
	header   []byte // written at the top of every file; may be empty
	maxBytes int64  // ≤ 0: never rotate
	keep     int    // rotated files kept: path.1 .. path.keep
	f        *os.File
	size     int64
}

// openRotatingFile creates path's directory (0750) and opens path for
// appending, writing the header if the file is new or empty.
func openRotatingFile(path string, header []byte, maxBytes int64, keep int) (*rotatingFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	w := &rotatingFile{path: path, header: header, maxBytes: maxBytes, keep: max(keep, 0)}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// open opens w.path for appending (0640), writing the header into an empty
// file.
func (w *rotatingFile) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil && st.Size() == 0 {
		err = f.Chmod(0o640) // whatever the umask
		if err == nil && len(w.header) > 0 {
			_, err = f.Write(w.header)
		}
	}
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, max(st.Size(), int64(len(w.header)))
	return nil
}

// fresh reports whether the current file holds no record yet.
func (w *rotatingFile) fresh() bool {
	return w.size <= int64(len(w.header))
}

func (w *rotatingFile) room() int64 {
	if w.maxBytes <= 0 || w.f == nil || w.fresh() {
		return math.MaxInt64
	}
	return w.maxBytes - w.size
}

// write appends p, rotating first if p would take the file beyond
// maxBytes. A write that fails part way is truncated back, so that the
// file never holds part of a line.
func (w *rotatingFile) write(p []byte) error {
	if w.f == nil { // a failed rotation left no file open
		if err := w.open(); err != nil {
			return err
		}
	}
	if w.maxBytes > 0 && !w.fresh() && w.size+int64(len(p)) > w.maxBytes {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(p)
	if err != nil {
		if n > 0 {
			err = cmp.Or(w.f.Truncate(w.size), err)
		}
		return err
	}
	w.size += int64(n)
	return nil
}

// rotate closes the current file and shifts path → path.1 → … →
// path.keep, dropping the oldest, then opens a new file.
func (w *rotatingFile) rotate() error {
	err := w.f.Sync()
	err = cmp.Or(w.f.Close(), err)
	w.f = nil
	if err != nil {
		return err
	}
	if w.keep == 0 {
		err = os.Remove(w.path)
	}
	for i := w.keep; i >= 1 && err == nil; i-- {
		err = os.Rename(w.rotated(i-1), w.rotated(i))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	return w.open()
}

// rotated returns the name of the i-th rotated file; 0 is the current one.
func (w *rotatingFile) rotated(i int) string {
	if i == 0 {
		return w.path
	}
	return w.path + "." + strconv.Itoa(i)
}

func (w *rotatingFile) sync() error {
	if w.f == nil {
		return nil
	}
	return w.f.Sync()
}

func (w *rotatingFile) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
