package netns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpcd/vpcd/encap"
	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
	"github.com/vpcd/vpcd/tapio"
)

// BenchmarkTapENI measures what a tap ENI carries with the ENI program at
// XDP and at tcx (SPEC §12, docs/datapath.md): a frame generator stands in
// for the VMM and writes MTU-sized UDP frames, each behind a virtio-net
// header, one write per frame, on the source tap's queue (as Firecracker's
// virtio-net backend does), and a reader drains the destination: another
// tap's queue, or a veth ENI's eth0. Guest CPU emulation plays no part.
// Reported: frames and bits per second that arrived, and the share lost.
//
// XDP on a tap can redirect only to another tap of the host (the tunnel is
// a layer-3 TUN without XDP transmit; a veth takes XDP frames only when
// its peer runs NAPI), so only tap → tap runs at both hooks.
func BenchmarkTapENI(b *testing.B) {
	testkit.NeedRoot(b, labNeeds)
	for _, hook := range []string{"xdp", "tcx"} {
		b.Run(hook, func(b *testing.B) {
			l := upLabWith(b, "vgb", "taps-bench.yaml", "--tap-hook", hook)
			b.Run("tap-tap", func(b *testing.B) { floodTap(b, l, "s1", tapReader(b, l, "s2"), netip.MustParseAddr("10.72.1.11")) })
			if hook == "xdp" {
				return
			}
			b.Run("tap-veth", func(b *testing.B) { floodTap(b, l, "s1", vethReader(b, l, "sv"), netip.MustParseAddr("10.72.1.12")) })
			b.Run("tap-tap-remote", func(b *testing.B) { floodTap(b, l, "s1", tapReader(b, l, "s3"), netip.MustParseAddr("10.72.1.20")) })
		})
	}
}

func tapReader(b *testing.B, l *lab.Lab, eni string) *os.File {
	q, err := l.OpenTap(eni)
	if err != nil {
		b.Fatal(err)
	}
	return q
}

func vethReader(b *testing.B, l *lab.Lab, eni string) *os.File {
	var s *os.File
	if err := l.Do(lab.ENI, eni, func() error {
		var err error
		s, err = tapio.PacketSocket("eth0")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return s
}

// benchFrameLen is the size of each frame: a full 1500-byte IP packet.
const benchFrameLen = 14 + 1500

// floodTap writes b.N frames from ENI src's tap (its address and MAC) to
// dst and counts what dst's reader gets.
func floodTap(b *testing.B, l *lab.Lab, src string, dst *os.File, dstIP netip.Addr) {
	e := l.Topology().ENIByName(src)
	q, err := l.OpenTap(src)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	frame := udpFrame(e.MAC, encap.GatewayMAC, e.IP, dstIP, benchFrameLen)
	// The first frames open the flow (conntrack, fast path) and warm up.
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, tapio.VnetHdrLen+tapio.MaxFrame)
		for {
			n, err := dst.Read(buf)
			if err != nil {
				return
			}
			if n >= tapio.VnetHdrLen+benchFrameLen {
				got.Add(1)
			}
		}
	}()
	for range 1000 {
		q.Write(frame)
	}
	testkit.WaitFor(b, 5*time.Second, "the first frames through", func() bool { return got.Load() > 0 })
	time.Sleep(100 * time.Millisecond) // let the warm-up drain before the count
	got.Store(0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := q.Write(frame); err != nil {
			b.Fatalf("write on %s's tap: %v", src, err)
		}
	}
	wrote := time.Since(start)
	// Until the reader has had what is on its way.
	last, at := got.Load(), time.Now()
	for time.Since(at) < 200*time.Millisecond {
		time.Sleep(10 * time.Millisecond)
		if n := got.Load(); n != last {
			last, at = n, time.Now()
		}
	}
	elapsed := at.Sub(start)
	b.StopTimer()
	dst.Close()
	<-done
	frames := float64(got.Load())
	// Each write returns once the hook has run and the frame is in the
	// destination's queue (or dropped there): the write rate is the
	// datapath's. The reader, one read per frame on the same two cores,
	// may fall behind and the destination queue drop: counted as lost.
	b.ReportMetric(float64(b.N)/wrote.Seconds()/1e6, "write-Mpps")
	b.ReportMetric(float64(b.N)*benchFrameLen*8/wrote.Seconds()/1e9, "write-Gbit/s")
	b.ReportMetric(frames*benchFrameLen*8/elapsed.Seconds()/1e9, "read-Gbit/s")
	b.ReportMetric(100*(1-frames/float64(b.N)), "%lost")
}

// udpFrame is a virtio-net header (no offloads) and an Ethernet frame of
// size bytes: IPv4 and UDP from src to dst, port 5201, zero UDP checksum.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, size int) []byte {
	f := make([]byte, tapio.VnetHdrLen+size)
	p := f[tapio.VnetHdrLen:]
	copy(p[0:6], dstMAC)
	copy(p[6:12], srcMAC)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 5201)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-14-20))
	return f
}
