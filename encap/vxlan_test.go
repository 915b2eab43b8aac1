package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, vni := range []uint32{1, 1001, MaxVNI} {
		b := make([]byte, HeaderLen)
		if err := PutHeader(b, vni); err != nil {
			t.Fatal(err)
		}
		if b[0] != 0x08 || b[1] != 0 || b[7] != 0 {
			t.Fatalf("header %x: flags or reserved bytes wrong", b)
		}
		got, err := ParseHeader(b)
		if err != nil || got != vni {
			t.Fatalf("ParseHeader = %d, %v; want %d", got, err, vni)
		}
	}
	if err := PutHeader(make([]byte, 8), MaxVNI+1); !errors.Is(err, ErrVNIRange) {
		t.Fatalf("VNI above 24 bits: %v", err)
	}
	if _, err := ParseHeader([]byte{0, 0, 0, 0, 0, 0, 1, 0}); err != ErrNoVNI {
		t.Fatalf("missing I flag: %v", err)
	}
	if _, err := ParseHeader([]byte{8}); err != ErrShort {
		t.Fatalf("short header: %v", err)
	}
}

// The layout constants are the sizes of gopacket's own layers.
func TestLayoutMatchesGopacket(t *testing.T) {
	inner := innerFrame(t, 40)
	outer := Outer{Src: netip.MustParseAddr("198.18.0.11"), Dst: netip.MustParseAddr("198.18.0.12"), ID: 1, SrcPort: 50000, VNI: 1001}
	pkt := make([]byte, OuterLen+len(inner))
	if err := PutOuter(pkt, outer, len(inner)); err != nil {
		t.Fatal(err)
	}
	copy(pkt[OuterLen:], inner)
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	at := map[gopacket.LayerType]int{}
	off := 0
	for _, l := range p.Layers() {
		if _, seen := at[l.LayerType()]; !seen {
			at[l.LayerType()] = off
		}
		off += len(l.LayerContents())
	}
	for _, c := range []struct {
		layer gopacket.LayerType
		want  int
	}{
		{layers.LayerTypeUDP, OuterUDPAt},
		{layers.LayerTypeVXLAN, VXLANAt},
		{layers.LayerTypeEthernet, InnerEthAt},
		{layers.LayerTypeICMPv4, InnerL4At},
	} {
		if got, ok := at[c.layer]; !ok || got != c.want {
			t.Errorf("%v at %d (found %v), want %d; layers %v", c.layer, got, ok, c.want, p.Layers())
		}
	}
}

// The constants are the C ones: bpf2go does not carry #defines over, so the
// test reads them from the header the programs are built with.
func TestConstantsMatchC(t *testing.T) {
	src, err := os.ReadFile("../bpf/lib/common.h")
	if err != nil {
		t.Fatal(err)
	}
	defs := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^#define (\w+) ([^/\n]*[^/\s])`).FindAllSubmatch(src, -1) {
		defs[string(m[1])] = string(m[2])
	}
	for name, want := range map[string]int{
		"ETH_HLEN": EthLen, "ETH_P_IP": EtherTypeIPv4, "IPPROTO_TCP_": ProtoTCP, "IPPROTO_UDP_": ProtoUDP,
		"VXLAN_PORT": VXLANPort, "VXLAN_FLAG_VNI": FlagVNI << 24, "VXLAN_OUTER_LEN": OuterLen,
	} {
		got, err := strconv.ParseInt(defs[name], 0, 64)
		if err != nil || int(got) != want {
			t.Errorf("C %s = %q, Go has %#x", name, defs[name], want)
		}
	}
	if defs["VXLAN_ENCAP_LEN"] != "(VXLAN_OUTER_LEN + ETH_HLEN)" {
		t.Errorf("C VXLAN_ENCAP_LEN = %q, Go has OuterLen + EthLen", defs["VXLAN_ENCAP_LEN"])
	}
}

// innerFrame is an Ethernet + IPv4 + ICMP echo frame between two workloads.
func innerFrame(t *testing.T, payload int) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 10, 0, 1, 10}, DstMAC: GatewayMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.IP{10, 0, 1, 10}, DstIP: net.IP{10, 0, 2, 10}}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(make([]byte, payload)))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// PutOuter writes, byte for byte, what gopacket serializes for the same
// IPv4/UDP/VXLAN headers, but for the UDP checksum, which it leaves zero.
func TestPutOuterEqualsGopacket(t *testing.T) {
	for _, c := range []struct {
		outer   Outer
		payload int
	}{
		{Outer{Src: netip.MustParseAddr("198.18.0.11"), Dst: netip.MustParseAddr("198.18.0.12"), ID: 0, SrcPort: 49152, VNI: 1}, 0},
		{Outer{Src: netip.MustParseAddr("10.7.1.10"), Dst: netip.MustParseAddr("10.7.1.30"), ID: 65535, SrcPort: 65535, VNI: MaxVNI}, 1400},
		{Outer{Src: netip.MustParseAddr("255.255.255.255"), Dst: netip.MustParseAddr("0.0.0.1"), ID: 4242, SrcPort: SourcePort(7), VNI: 4242}, 9},
	} {
		inner := innerFrame(t, c.payload)
		got := make([]byte, OuterLen+len(inner))
		if err := PutOuter(got, c.outer, len(inner)); err != nil {
			t.Fatal(err)
		}
		copy(got[OuterLen:], inner)

		s4, d4 := c.outer.Src.As4(), c.outer.Dst.As4()
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: TTL, Id: c.outer.ID, Protocol: layers.IPProtocolUDP, SrcIP: s4[:], DstIP: d4[:]}
		udp := &layers.UDP{SrcPort: layers.UDPPort(c.outer.SrcPort), DstPort: VXLANPort}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		vx := &layers.VXLAN{ValidIDFlag: true, VNI: c.outer.VNI}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			ip, udp, vx, gopacket.Payload(inner)); err != nil {
			t.Fatal(err)
		}
		want := buf.Bytes()
		if binary.BigEndian.Uint16(got[OuterUDPAt+6:]) != 0 {
			t.Errorf("%+v: UDP checksum %x, want none", c.outer, got[OuterUDPAt+6:OuterUDPAt+8])
		}
		copy(got[OuterUDPAt+6:OuterUDPAt+8], want[OuterUDPAt+6:OuterUDPAt+8])
		if !bytes.Equal(got, want) {
			t.Errorf("%+v:\n got %x\nwant %x", c.outer, got[:EncapLen], want[:EncapLen])
		}

		// And gopacket's decoders read it back.
		p := gopacket.NewPacket(got, layers.LayerTypeIPv4, gopacket.Default)
		dip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		dvx, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if dip == nil || dvx == nil || p.ErrorLayer() != nil {
			t.Fatalf("%+v: layers %v, error %v", c.outer, p.Layers(), p.ErrorLayer())
		}
		if !dvx.ValidIDFlag || dvx.VNI != c.outer.VNI || !bytes.Equal(dvx.LayerPayload(), inner) {
			t.Errorf("%+v: VXLAN VNI %d valid %v", c.outer, dvx.VNI, dvx.ValidIDFlag)
		}
	}
	if err := PutOuter(make([]byte, OuterLen-1), Outer{}, 0); err != ErrShort {
		t.Errorf("short buffer: %v", err)
	}
	if err := PutOuter(make([]byte, OuterLen), Outer{Src: netip.IPv4Unspecified(), Dst: netip.IPv4Unspecified(), VNI: MaxVNI + 1}, 0); err != ErrVNIRange {
		t.Errorf("VNI above 24 bits: %v", err)
	}
}

// ParseHeader reads the VNI of any header gopacket writes.
func TestParseHeaderGopacket(t *testing.T) {
	for _, vni := range []uint32{0, 1, 1001, 0x123456, MaxVNI} {
		buf := gopacket.NewSerializeBuffer()
		if err := (&layers.VXLAN{ValidIDFlag: true, VNI: vni}).SerializeTo(buf, gopacket.SerializeOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, err := ParseHeader(buf.Bytes()); err != nil || got != vni {
			t.Errorf("VNI %d: ParseHeader = %d, %v", vni, got, err)
		}
	}
}

func TestSourcePort(t *testing.T) {
	for _, h := range []uint32{0, 1, SourcePorts - 1, SourcePorts, 1<<32 - 1} {
		p := SourcePort(h)
		if p < SourcePortBase || int(p) != SourcePortBase+int(h%SourcePorts) {
			t.Errorf("SourcePort(%d) = %d", h, p)
		}
	}
	if Ports(0x1234, 0x5678) != 0x12345678 {
		t.Errorf("Ports(0x1234, 0x5678) = %#x", Ports(0x1234, 0x5678))
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{8, 0, 0, 0, 0, 3, 0xe9, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		vni, err := ParseHeader(b)
		if err == nil && vni > MaxVNI {
			t.Fatalf("VNI %d above 24 bits", vni)
		}
	})
}
