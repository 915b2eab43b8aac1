package mirror

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/vpcd/vpcd/encap"
)

// The injected frame decodes, with gopacket's independent decoders, as
// IPv4/UDP 4789/VXLAN with the session's VNI around the copied frame, and
// the IPv4 checksum is right.
func TestEncapDecodes(t *testing.T) {
	inner := make([]byte, 128)
	for i := range inner {
		inner[i] = byte(i * 3)
	}
	copy(inner[12:], []byte{0x08, 0x00})
	src, dst := netip.MustParseAddr("10.7.1.10"), netip.MustParseAddr("10.7.1.30")
	frame, err := Encap(nil, 7, 4242, src, dst, 99, SourcePort(7), inner)
	if err != nil {
		t.Fatal(err)
	}

	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	vx, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	if eth == nil || ip == nil || udp == nil || vx == nil {
		t.Fatalf("layers: %v", p.Layers())
	}
	if !bytes.Equal(eth.SrcMAC, []byte{0x02, 0x6d, 0, 0, 0, 7}) {
		t.Errorf("source MAC %s does not name session 7", eth.SrcMAC)
	}
	if ip.SrcIP.String() != "10.7.1.10" || ip.DstIP.String() != "10.7.1.30" || ip.TTL != 64 || ip.Id != 99 {
		t.Errorf("IPv4 %s -> %s ttl %d id %d", ip.SrcIP, ip.DstIP, ip.TTL, ip.Id)
	}
	if int(ip.Length) != len(frame)-14 {
		t.Errorf("IPv4 length %d, frame carries %d", ip.Length, len(frame)-14)
	}
	if udp.DstPort != 4789 || int(udp.Length) != len(frame)-14-20 || udp.SrcPort < 49152 {
		t.Errorf("UDP %d -> %d length %d", udp.SrcPort, udp.DstPort, udp.Length)
	}
	if !vx.ValidIDFlag || vx.VNI != 4242 {
		t.Errorf("VXLAN VNI %d valid %v", vx.VNI, vx.ValidIDFlag)
	}
	if !bytes.Equal(vx.LayerPayload(), inner) {
		t.Error("the copied frame is not the VXLAN payload")
	}
	// Recomputing the header checksum gives the same value.
	h := append([]byte(nil), frame[14:34]...)
	want := binary.BigEndian.Uint16(h[10:])
	h[10], h[11] = 0, 0
	if got := encap.Checksum(h); got != want {
		t.Errorf("IPv4 checksum %#04x, recomputed %#04x", want, got)
	}
	// Copies of one session share a source port; SourcePort stays the
	// formula it always was.
	for _, s := range []uint32{0, 1, 7, 1023} {
		if got, want := SourcePort(s), uint16(49152+s*2654435761%16384); got != want {
			t.Errorf("session %d: source port %d, want %d", s, got, want)
		}
	}
}

// A pcap target is readable by an independent reader, keeps timestamps and
// original lengths, is 0600, and a reopened file goes on where it ended.
func TestPcapFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "m.pcap")
	p, err := openPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1795850000, 123456789)
	if err := p.write(t0, 1514, make([]byte, 96)); err != nil {
		t.Fatal(err)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	p, err = openPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.write(t0.Add(time.Second), 60, make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(time.Now(), true); err != nil {
		t.Fatal(err)
	}
	defer p.close()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v: want 0600", st.Mode().Perm(), err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []gopacket.CaptureInfo
	for {
		_, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		got = append(got, ci)
	}
	if len(got) != 2 {
		t.Fatalf("%d packets read back, want 2 (the reopened file must be appended to)", len(got))
	}
	if !got[0].Timestamp.Equal(t0) || got[0].Length != 1514 || got[0].CaptureLength != 96 {
		t.Errorf("first packet %+v", got[0])
	}
}

// A symbolic link planted at a pcap path is refused, dangling or not, and
// what it points to is left alone; so is a FIFO.
func TestPcapRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "m.pcap")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if p, err := openPcap(link); err == nil {
		p.close()
		t.Fatal("pcap through a symbolic link opened")
	} else if want := "pcap " + link + ": is a symbolic link, refused"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "keep me" {
		t.Errorf("link target changed: %q, %v", data, err)
	}

	missing := filepath.Join(dir, "missing")
	dangling := filepath.Join(dir, "d.pcap")
	if err := os.Symlink(missing, dangling); err != nil {
		t.Fatal(err)
	}
	if p, err := openPcap(dangling); err == nil {
		p.close()
		t.Fatal("pcap through a dangling symbolic link opened")
	}
	if _, err := os.Lstat(missing); err == nil {
		t.Errorf("dangling link's target %s was created", missing)
	}

	fifo := filepath.Join(dir, "f.pcap")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := openPcap(fifo); err == nil {
		p.close()
		t.Fatal("pcap on a FIFO opened")
	}
}
