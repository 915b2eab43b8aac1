package mirror

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// pcapFile is a pcap target: copies are buffered and flushed at least once
// a second, so tcpdump and tshark can read a live file.
type pcapFile struct {
	path    string
	f       *os.File
	buf     *bufio.Writer
	w       *pcapgo.Writer
	flushed time.Time
	refs    int
}

// openPcap opens path for appending copies: a new or empty file gets the
// pcap header (Ethernet, nanosecond timestamps); an existing capture of
// ours goes on where it ended. The file is 0600: copies are workload data.
// A symbolic link at path is refused (O_NOFOLLOW), so one planted there
// cannot make the daemon truncate or write the file it points to; so is
// anything but a regular file.
func openPcap(path string) (*pcapFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("pcap %s: is a symbolic link, refused", path)
	}
	if err != nil {
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("pcap %s: not a regular file (%s), refused", path, st.Mode().Type())
	}
	p := &pcapFile{path: path, f: f, flushed: time.Now()}
	if st.Size() >= 24 && ourHeader(f) {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("pcap %s: %w", path, err)
		}
		p.buf = bufio.NewWriterSize(f, 64<<10)
		p.w = pcapgo.NewWriterNanos(p.buf)
		return p, nil
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	p.buf = bufio.NewWriterSize(f, 64<<10)
	p.w = pcapgo.NewWriterNanos(p.buf)
	if err := p.w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	if err := p.buf.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	return p, nil
}

// ourHeader reports whether f starts with the header openPcap writes: the
// nanosecond-resolution magic, little-endian as pcapgo writes it, and the
// Ethernet link type.
func ourHeader(f *os.File) bool {
	var h [24]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(h[0:4]) == 0xa1b23c4d &&
		binary.LittleEndian.Uint32(h[20:24]) == uint32(layers.LinkTypeEthernet)
}

func (p *pcapFile) write(t time.Time, origLen int, data []byte) error {
	return p.w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: origLen}, data)
}

// flush writes buffered copies out when a second has passed (or always).
func (p *pcapFile) flush(now time.Time, always bool) error {
	if !always && now.Sub(p.flushed) < time.Second {
		return nil
	}
	p.flushed = now
	return p.buf.Flush()
}

func (p *pcapFile) close() error {
	err := p.buf.Flush()
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}
