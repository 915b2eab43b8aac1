package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/vpcd/vpcd/encap"
)

// The TUN's virtio-net header: struct virtio_net_hdr_v1_hash_tunnel of
// Linux 6.17+, 24 bytes. Only the first 10 bytes and the two tunnel offsets
// carry anything for a TUN.
const (
	vnetHdrLen = 24

	vnetFlagNeedsCsum     = 0x01
	vnetFlagDataValid     = 0x02
	vnetFlagUDPTunnelCsum = 0x08

	vnetGSONone      = 0x00
	vnetGSOTCPv4     = 0x01
	vnetGSOUDPL4     = 0x05
	vnetGSOTunnelV4  = 0x20
	vnetGSOTunnelV6  = 0x40
	vnetGSOECN       = 0x80
	vnetGSOTunnelAny = vnetGSOTunnelV4 | vnetGSOTunnelV6

	tunFUDPTunnelGSO     = 0x080 // TUN_F_UDP_TUNNEL_GSO
	tunFUDPTunnelGSOCsum = 0x100 // TUN_F_UDP_TUNNEL_GSO_CSUM
)

type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.LittleEndian.Uint16(b[2:])
	h.gsoSize = binary.LittleEndian.Uint16(b[4:])
	h.csumStart = binary.LittleEndian.Uint16(b[6:])
	h.csumOffset = binary.LittleEndian.Uint16(b[8:])
}

// vxlanTUN is the tun.Device wireguard-go reads from and writes to. It
// wraps a kernel TUN that hands over whole GSO super-packets, VXLAN ones
// included (TUN_F_UDP_TUNNEL_GSO), and splits each into the VXLAN packets
// of its segments, so that one read gives wireguard-go a whole batch to
// encrypt: the per-packet cost of a TUN read stays off the fast path.
type vxlanTUN struct {
	file *os.File
	raw  interface {
		Write(func(uintptr) bool) error
	}
	// rawRead reads without the poller's wait; draining enables its use.
	rawRead interface {
		Read(func(uintptr) bool) error
	}
	draining bool
	name     string
	mtu      int
	events   chan tun.Event
	// tunnelGSO is set when the kernel accepted UDP tunnel offloads.
	tunnelGSO bool
	// trimErr is why the mirror batch filter is missing (attachTrim).
	trimErr error

	rmu  sync.Mutex // guards rbuf and held (wireguard-go reads from one goroutine)
	rbuf []byte
	// held is a frame longer than the MTU that a drain took off the queue;
	// the next Read returns it first, in a batch of its own (see whole).
	held  []byte
	heldN int
	// copies are the single mirror copies held (hold.go); deadline is
	// set while the file has a read deadline.
	copies   copyHolds
	deadline bool
	// canHold is set when the file takes read deadlines (Read must wake
	// for held copies).
	canHold bool

	// Write runs on wireguard-go's one receive goroutine per peer; wmu
	// guards the scratch space shared by the peers' writers.
	wmu    sync.Mutex
	gsoHdr []byte
	cbuf   []byte // a compact batch's copies (writeCompact)
	iov    [][]byte
	one    [2][]byte // writeOne's iov
	oneHdr [vnetHdrLen]byte
	// wcall and rcall are the writers' and the reader's system calls.
	wcall, rcall devCall
	// order and later are Write's scratch for putting traffic first.
	order, later [][]byte
	log          *slog.Logger
	stats        DeviceStats
	// groOff is set once the kernel refused a coalesced packet.
	groOff atomic.Bool
	// batches makes the copies of mirrored super-packets (tunbatch.go).
	batches tunnelBatches

	closeOnce sync.Once
}

// DeviceStats counts the tunnel device's system calls and packets: the
// ratio of packets to calls is the batching the offloads achieve.
type DeviceStats struct {
	Reads, ReadPackets   atomic.Uint64
	Writes, WritePackets atomic.Uint64
	ReadErrors           atomic.Uint64
	// CopiesHeld counts single mirror copies held to share a packet.
	CopiesHeld atomic.Uint64
}

// openVXLANTUN creates the tunnel device with a virtio-net header and the
// offloads that keep VXLAN GSO packets whole.
func openVXLANTUN(name string, mtu int) (*vxlanTUN, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	fail := func(err error) (*vxlanTUN, error) {
		unix.Close(fd)
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fail(fmt.Errorf("create tunnel device %s: %w", name, err))
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		return fail(fmt.Errorf("tunnel device %s: virtio-net header size: %w", name, err))
	}
	t := &vxlanTUN{name: name, mtu: mtu, events: make(chan tun.Event, 4), rbuf: make([]byte, vnetHdrLen+65536), gsoHdr: make([]byte, vnetHdrLen+encap.InnerL4At+60)}
	base := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	// UDP segmentation too where the kernel has it (6.2): a batch of one
	// mirror session's copies (UDP GRO on the mirror device) then comes
	// whole, as one read.
	uso := unix.TUN_F_USO4 | unix.TUN_F_USO6
	if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base|uso|tunFUDPTunnelGSO|tunFUDPTunnelGSOCsum) == nil {
		t.tunnelGSO = true
	} else if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base|tunFUDPTunnelGSO|tunFUDPTunnelGSOCsum) == nil {
		t.tunnelGSO = true
	} else if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base); err != nil {
		return fail(fmt.Errorf("tunnel device %s: offloads: %w", name, err))
	}
	// Without it a batch of mirror copies arrives with the rest of the
	// frame it was made of, which is copied for nothing and dropped.
	t.trimErr = attachTrim(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(err)
	}
	t.file = os.NewFile(uintptr(fd), "/dev/net/tun")
	sc, err := t.file.SyscallConn()
	if err != nil {
		t.file.Close()
		return nil, err
	}
	t.raw = sc
	t.rawRead = sc
	t.draining = true
	t.canHold = t.file.SetReadDeadline(time.Time{}) == nil
	t.events <- tun.EventUp
	return t, nil
}

func (t *vxlanTUN) File() *os.File           { return t.file }
func (t *vxlanTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *vxlanTUN) Name() (string, error)    { return t.name, nil }
func (t *vxlanTUN) Events() <-chan tun.Event { return t.events }
func (t *vxlanTUN) BatchSize() int           { return conn.IdealBatchSize }

func (t *vxlanTUN) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.file.Close()
		close(t.events)
	})
	return err
}

// errMalformed is what unpack says of a frame the kernel should never have
// given us. Read counts such a frame (ReadErrors) and never returns the
// error: wireguard-go closes the whole device on any error from Read.
var errMalformed = errors.New("tunnel device: malformed frame")

// Read reads one frame from the kernel and returns its packets: one, or the
// VXLAN packets of every segment of a GSO super-packet.
//
// A packet longer than the MTU (a workload's packet without DF that the
// underlay fragments) is returned in a batch of its own. wireguard-go sends
// one read's packets to a peer as one UDP GSO send when they allow it, and
// the kernel refuses such a send whole (EMSGSIZE) when its segments do not
// fit the path MTU: the fragments of one large datagram, read together,
// were all lost. Alone, the message goes out as IP fragments.
//
// Single mirror copies are held a moment to travel together (hold.go): a
// Read returns them when they are due, never an empty batch.
func (t *vxlanTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	for {
		if n := t.copies.flushDue(time.Now(), bufs, sizes, offset); n > 0 {
			t.stats.ReadPackets.Add(uint64(n))
			return n, nil
		}
		count, err := t.readBatch(bufs, sizes, offset)
		if err != nil {
			return 0, err
		}
		if count > 0 {
			if t.copies.held() {
				n := t.copies.flushDue(time.Now(), bufs[count:], sizes[count:], offset)
				t.stats.ReadPackets.Add(uint64(n))
				count += n
			}
			return count, nil
		}
	}
}

// readWait reads one frame, waiting no longer than the held copies may
// (0 bytes when they are due first).
func (t *vxlanTUN) readWait(b []byte) (int, error) {
	if next := t.copies.next(); !next.IsZero() {
		t.file.SetReadDeadline(next)
		t.deadline = true
	} else if t.deadline {
		t.file.SetReadDeadline(time.Time{})
		t.deadline = false
	}
	n, err := t.file.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	return n, err
}

// readBatch reads a frame and whatever else is queued behind it; 0
// packets when all it read is held.
func (t *vxlanTUN) readBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	var n int
	if t.heldN > 0 {
		n, t.heldN = t.heldN, 0
		t.rbuf, t.held = t.held, t.rbuf
	} else {
		var err error
		if n, err = t.readWait(t.rbuf); err != nil || n == 0 {
			return 0, err
		}
	}
	count, err := t.unpack(t.rbuf[:n], bufs, sizes, offset)
	if err != nil {
		// The frame is lost, counted; the tunnel reads on.
		t.stats.ReadErrors.Add(1)
		return 0, nil
	}
	if !t.whole(t.rbuf[:n]) {
		return count, nil
	}
	// Take what else is queued without waiting (ACKs come one frame
	// each), while a whole super-packet's segments would still fit.
	// Every frame counts against the budget, held copies too, and held
	// copies that fall due end the drain.
	for frames := 1; t.draining && len(bufs)-count >= maxSegments+maxBatchPackets && frames < len(bufs); frames++ {
		if t.copies.due() {
			break
		}
		n, ok := t.tryRead(t.rbuf)
		if !ok {
			break
		}
		if !t.whole(t.rbuf[:n]) {
			if t.held == nil {
				t.held = make([]byte, len(t.rbuf))
			}
			t.rbuf, t.held, t.heldN = t.held, t.rbuf, n
			break
		}
		c, err := t.unpack(t.rbuf[:n], bufs[count:], sizes[count:], offset)
		if err != nil {
			// This frame is lost; the ones before it are not.
			t.stats.ReadErrors.Add(1)
			break
		}
		count += c
	}
	return count, nil
}

// whole reports whether a frame from the kernel crosses the underlay
// without IP fragmentation: a GSO frame's segments do, a single packet when
// it fits the MTU.
func (t *vxlanTUN) whole(frame []byte) bool {
	if len(frame) < vnetHdrLen || t.mtu <= 0 {
		return true // malformed (unpack says so), or no MTU known
	}
	var h vnetHdr
	h.decode(frame)
	return h.gsoType != vnetGSONone || len(frame)-vnetHdrLen <= t.mtu || compactMarked(frame[vnetHdrLen:])
}

// maxSegments bounds the segments of one frame: 64 KiB of payload cut at
// the smallest MSS worth coalescing for. maxBatchPackets bounds the tunnel
// packets of the copies made of one (tunbatch.go).
const (
	maxSegments     = 64
	maxBatchPackets = 16
)

// tryRead reads one frame if one is queued, without waiting.
func (t *vxlanTUN) tryRead(b []byte) (int, bool) {
	if t.rawRead == nil {
		return 0, false
	}
	c := &t.rcall
	c.buf = b
	err := t.rawRead.Read(c.readFn())
	c.buf = nil
	return c.n, err == nil && c.err == nil && c.n > 0
}

// devCall is one read or writev on the device, made through the file's
// RawConn without allocating: a closure per call escapes to the heap, and
// at tens of thousands of calls a second that garbage (and the fresh
// pages the heap then faults in) cost a receiving daemon several percent
// of its CPU. Each devCall belongs to one goroutine at a time (rmu, wmu).
type devCall struct {
	buf         []byte       // read's buffer
	iov         []unix.Iovec // writev's
	n           int
	err         error
	read, write func(uintptr) bool // the method values, made once
}

func (c *devCall) readFn() func(uintptr) bool {
	if c.read == nil {
		c.read = c.doRead
	}
	return c.read
}

func (c *devCall) writeFn() func(uintptr) bool {
	if c.write == nil {
		c.write = c.doWritev
	}
	return c.write
}

// doRead never waits: it reports done whatever the read says.
func (c *devCall) doRead(fd uintptr) bool {
	c.n, c.err = unix.Read(int(fd), c.buf)
	return true
}

// doWritev waits for the device to take the packet when its queue is
// full.
func (c *devCall) doWritev(fd uintptr) bool {
	c.n, c.err = 0, nil
	if len(c.iov) == 0 {
		return true
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iov[0])), uintptr(len(c.iov)))
	if e != 0 {
		c.err = e
		return e != unix.EAGAIN
	}
	c.n = int(r)
	return true
}

// unpack turns one frame from the kernel into packets in bufs: the packet
// itself, or the VXLAN packets of every segment of a GSO super-packet.
func (t *vxlanTUN) unpack(frame []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(frame) < vnetHdrLen {
		return 0, errMalformed
	}
	t.stats.Reads.Add(1)
	var h vnetHdr
	h.decode(frame)
	pkt := frame[vnetHdrLen:]
	if c, ok := parseCompact(pkt); ok && t.mtu > 0 {
		// A compact batch of copies the kernel made of a super-packet.
		// Its offload state is the cloned super-packet's, meaningless
		// now: the marks say what it is. Cut into tunnel packets of
		// whole segments.
		n, err := splitCompact(c, t.mtu, bufs, sizes, offset)
		t.stats.ReadPackets.Add(uint64(n))
		return n, err
	}
	h.gsoType = innerGSOType(pkt, h.gsoType)
	if h.gsoType == vnetGSONone {
		if h.flags&vnetFlagNeedsCsum != 0 {
			// An inner TCP checksum stays partial, as the split leaves
			// it (the receiver completes it); anything else is summed.
			if at, ok := innerTCP(pkt); !ok || int(h.csumStart) != at || h.csumOffset != 16 {
				if !encap.CompletePartial(pkt, int(h.csumStart), int(h.csumOffset)) {
					return 0, errMalformed
				}
			}
		}
		if len(bufs[0])-offset < len(pkt) {
			return 0, errMalformed
		}
		if payload, ok := holdable(pkt, t.mtu); ok && t.canHold && len(bufs) >= 2 {
			n := t.copies.add(pkt, payload, t.mtu, time.Now(), bufs, sizes, offset)
			t.stats.CopiesHeld.Add(1)
			t.stats.ReadPackets.Add(uint64(n))
			return n, nil
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		t.stats.ReadPackets.Add(1)
		return 1, nil
	}
	if g, per := copiesPerPacket(pkt, h, t.mtu); per > 1 {
		// A batch of one mirror session's copies: several copies per
		// packet across the tunnel (one encryption, one message), cut
		// into the copies by the receiving vpcd's kernel.
		h.gsoSize = uint16(per * g)
		n, err := splitVXLAN(pkt, h, bufs, sizes, offset, csumCopies)
		for i := 0; i < n; i++ {
			markBatch(bufs[i][offset:offset+sizes[i]], g)
		}
		t.stats.ReadPackets.Add(uint64(n))
		return n, err
	}
	idx, marked := takeMark(pkt)
	n, err := splitVXLAN(pkt, h, bufs, sizes, offset, csumPartial)
	if marked {
		// A mirror session's copies of these segments, made here; none
		// (counted) when the segments are lost.
		room := bufs[n:]
		if err != nil {
			room = nil
		}
		k := t.batches.make(pkt, int(h.gsoSize), idx, t.mtu, room, sizes[n:], offset)
		if n > 0 {
			padToSegment(bufs[n:n+k], sizes[n:n+k], offset, bufs[0][offset:offset+sizes[0]], t.mtu)
		}
		n += k
	}
	t.stats.ReadPackets.Add(uint64(n))
	return n, err
}

// Write hands decrypted packets to the kernel. Runs of segments of one
// inner TCP flow go as one VXLAN GSO super-packet (see coalesce.go); the
// rest one by one. Packets are marked checksum-valid: WireGuard has just
// authenticated every byte, so the receiver need not checksum them again.
func (t *vxlanTUN) Write(bufs [][]byte, offset int) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.stats.WritePackets.Add(uint64(len(bufs)))
	bufs, reordered := t.trafficFirst(bufs, offset)
	for i := 0; i < len(bufs); {
		t.stats.Writes.Add(1)
		n, err := t.writeRun(bufs[i:], offset)
		if err != nil {
			if reordered {
				return 0, err // i counts the reordered packets
			}
			return i, err
		}
		i += n
	}
	return len(bufs), nil
}

// trafficFirst returns bufs with the mirror copies among them moved after
// the traffic, each in its order, and whether it moved any. A batch's
// copies come between the segments of consecutive super-packets: left
// there, they would cut the runs that writeRun hands the kernel as one
// super-packet, and the receiving workload's stack would take a third
// more packets.
func (t *vxlanTUN) trafficFirst(bufs [][]byte, offset int) ([][]byte, bool) {
	first := -1
	for i, b := range bufs {
		if isCopy(b[offset:]) {
			first = i
			break
		}
	}
	if first < 0 {
		return bufs, false
	}
	out, copies := append(t.order[:0], bufs[:first]...), t.later[:0]
	for _, b := range bufs[first:] {
		if isCopy(b[offset:]) {
			copies = append(copies, b)
		} else {
			out = append(out, b)
		}
	}
	if len(copies) == len(bufs)-first {
		return bufs, false // nothing to move
	}
	t.order, t.later = append(out, copies...), copies
	return t.order, true
}

// isCopy reports whether pkt carries mirror copies: the mirror mark in
// its VPC VXLAN header.
func isCopy(pkt []byte) bool {
	return len(pkt) > encap.VXLANAt+7 && pkt[0] == 0x45 && pkt[9] == encap.ProtoUDP && pkt[encap.VXLANAt+7] == mirrorMark
}

// writeRun writes bufs[0] and as many following packets as coalesce with
// it, returning how many it consumed.
func (t *vxlanTUN) writeRun(bufs [][]byte, offset int) (int, error) {
	if c, ok := parseCompact(bufs[0][offset:]); ok {
		return t.writeCompact(c, bufs[1:], offset)
	}
	head, ok := parseGRO(bufs[0][offset:])
	if !ok || !t.tunnelGSO || t.groOff.Load() {
		if _, g, copied := mirrorUnit(bufs[0][offset:]); !ok && copied {
			if t.tunnelGSO && !t.groOff.Load() {
				return t.writeCopies(bufs, offset)
			}
			if g > 0 {
				return 1, t.writeBatchAlone(bufs[0][offset:], g)
			}
		}
		return 1, t.writeOne(bufs[0][offset:])
	}
	gsoSize := head.payload
	next := head.seq + uint32(head.payload)
	total := len(head.pkt)
	psh := head.flags & tcpFlagPSH
	n := 1
	for ended := psh != 0; !ended && n < len(bufs); n++ {
		p, ok := parseGRO(bufs[n][offset:])
		if !ok || !canFollow(head, p, next, gsoSize, total) {
			break
		}
		total += p.payload
		next += uint32(p.payload)
		psh |= p.flags & tcpFlagPSH
		ended = p.payload < gsoSize || psh != 0
	}
	if n == 1 {
		return 1, t.writeOne(head.pkt)
	}
	err := t.writeGSO(bufs[:n], offset, head, gsoSize, total, psh)
	if errors.Is(err, unix.EINVAL) {
		// This kernel refuses our super-packets: stop coalescing and
		// send the run one by one.
		t.refuseGSO("a coalesced VXLAN packet", err)
		for _, b := range bufs[:n] {
			if err := t.writeOne(b[offset:]); err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	return n, err
}

func (t *vxlanTUN) writev(iov [][]byte) error {
	c := &t.wcall
	c.iov = c.iov[:0]
	for _, b := range iov {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			c.iov = append(c.iov, v)
		}
	}
	err := t.raw.Write(c.writeFn())
	clear(c.iov) // keep no packet alive
	if err != nil {
		return err
	}
	return c.err
}

// writeOne writes one packet. An inner TCP segment goes as
// CHECKSUM_PARTIAL with the pseudo-header sum in its field (senders leave
// TCP checksums partial, see splitVXLAN): the workload's stack takes it as
// verified, and a workload that forwards it gets a correct sum on the way
// out. Anything else is marked checksum-valid: WireGuard has just
// authenticated every byte.
func (t *vxlanTUN) writeOne(pkt []byte) error {
	hdr := &t.oneHdr
	clear(hdr[:])
	if at, ok := innerTCP(pkt); ok {
		ip := pkt[encap.InnerIPAt:]
		binary.BigEndian.PutUint16(pkt[at+16:], encap.PseudoPartial(encap.PseudoBase(ip[12:16], ip[16:20], encap.ProtoTCP), len(pkt)-at))
		hdr[0] = vnetFlagNeedsCsum
		binary.LittleEndian.PutUint16(hdr[6:], uint16(at))
		binary.LittleEndian.PutUint16(hdr[8:], 16)
	} else {
		hdr[0] = vnetFlagDataValid
	}
	t.one[0], t.one[1] = hdr[:], pkt
	err := t.writev(t.one[:])
	t.one[1] = nil
	return err
}

// wholeVXLAN reports whether pkt (at least encap.InnerL4At bytes) is a
// whole, unfragmented IPv4 packet without options, to the VXLAN port,
// carrying IPv4 in its inner Ethernet frame.
func wholeVXLAN(pkt []byte) bool {
	return pkt[0] == 0x45 && pkt[9] == encap.ProtoUDP &&
		binary.BigEndian.Uint16(pkt[6:])&0x3fff == 0 && int(binary.BigEndian.Uint16(pkt[2:])) == len(pkt) &&
		binary.BigEndian.Uint16(pkt[encap.OuterUDPAt+2:]) == encap.VXLANPort &&
		binary.BigEndian.Uint16(pkt[encap.InnerEthAt+12:]) == encap.EtherTypeIPv4
}

// innerTCP reports where the TCP header of a VXLAN-wrapped, unfragmented
// IPv4 TCP packet starts, with its header wholly in pkt and lengths that
// agree with pkt's.
func innerTCP(pkt []byte) (int, bool) {
	if len(pkt) < encap.InnerL4At || !wholeVXLAN(pkt) {
		return 0, false
	}
	ip := pkt[encap.InnerIPAt:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || ip[9] != encap.ProtoTCP || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 ||
		encap.InnerIPAt+int(binary.BigEndian.Uint16(ip[2:])) != len(pkt) {
		return 0, false
	}
	at := encap.InnerIPAt + ihl
	if at+20 > len(pkt) {
		return 0, false
	}
	return at, true
}

// writeGSO writes the run of segments in bufs as one VXLAN GSO packet:
// the first packet's headers, fixed up for the total length, then every
// segment's payload straight from wireguard-go's buffers.
func (t *vxlanTUN) writeGSO(bufs [][]byte, offset int, head groPacket, gsoSize, total int, psh uint8) error {
	hl := encap.InnerL4At + head.tcpLen
	hdr := t.gsoHdr[:vnetHdrLen+hl]
	v, h := hdr[:vnetHdrLen], hdr[vnetHdrLen:]
	clear(v)
	copy(h, head.pkt[:hl])

	ip := setGSOLengths(h, total)
	tcp := h[encap.InnerL4At:]
	tcp[13] |= psh
	// CHECKSUM_PARTIAL: the field holds the pseudo-header sum.
	binary.BigEndian.PutUint16(tcp[16:], encap.PseudoPartial(encap.PseudoBase(ip[12:16], ip[16:20], encap.ProtoTCP), total-encap.InnerL4At))

	// Plain TCPv4 GSO whose transport header (csum_start) is the inner
	// TCP header. The kernel takes it as is up to the tunnel program, whose
	// decapsulation leaves an ordinary TCP GSO packet, as GRO would have
	// made it. (This kernel's TUN refuses UDP-tunnel GSO on writes.)
	putGSOVnet(v, vnetGSOTCPv4, hl, gsoSize, 16)

	iov := t.iov[:0]
	iov = append(iov, hdr)
	for _, b := range bufs {
		p := b[offset:]
		tl := int(p[encap.InnerL4At+12]>>4) * 4
		iov = append(iov, p[encap.InnerL4At+tl:])
	}
	t.iov = iov
	return t.writev(iov)
}

// writeCopies writes bufs[0] and the mirror copies of the same session
// that follow it (see copyRun) as one UDP GSO packet: the copies'
// headers, fixed up for the total length, and each copy's payload from
// wireguard-go's buffers. Anything else goes alone.
func (t *vxlanTUN) writeCopies(bufs [][]byte, offset int) (int, error) {
	n, size, total, batch := copyRun(bufs, offset)
	if n < 2 && !batch {
		return 1, t.writeOne(bufs[0][offset:])
	}
	head := bufs[0][offset:]
	const hl = encap.InnerL4At + encap.UDPLen
	hdr := t.gsoHdr[:vnetHdrLen+hl]
	v, h := hdr[:vnetHdrLen], hdr[vnetHdrLen:]
	clear(v)
	copy(h, head[:hl])
	clearBatchMark(h)
	ip := setGSOLengths(h, total)
	udp := h[encap.InnerL4At:]
	binary.BigEndian.PutUint16(udp[4:], uint16(total-encap.InnerL4At))
	// CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the
	// kernel sums each copy when it cuts the batch.
	binary.BigEndian.PutUint16(udp[6:], encap.PseudoPartial(encap.PseudoBase(ip[12:16], ip[16:20], encap.ProtoUDP), total-encap.InnerL4At))

	// Plain UDP GSO whose transport header is the copies' UDP header, as
	// writeGSO does for TCP: the tunnel program's decapsulation leaves an
	// ordinary UDP GSO packet, cut into the copies where it is delivered.
	putGSOVnet(v, vnetGSOUDPL4, hl, size, 6)

	iov := t.iov[:0]
	iov = append(iov, hdr)
	for _, b := range bufs[:n] {
		iov = append(iov, b[offset+hl:])
	}
	t.iov = iov
	err := t.writev(iov)
	if errors.Is(err, unix.EINVAL) {
		t.refuseGSO("a batch of mirror copies", err)
		for _, b := range bufs[:n] {
			pkt := b[offset:]
			if _, g, _ := mirrorUnit(pkt); g > 0 {
				err = t.writeBatchAlone(pkt, g)
			} else {
				err = t.writeOne(pkt)
			}
			if err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	return n, err
}

// writeBatchAlone writes a batch of copies from a peer (see batchCopies)
// one copy at a time, for a kernel that refuses UDP GSO writes.
func (t *vxlanTUN) writeBatchAlone(pkt []byte, g int) error {
	clearBatchMark(pkt)
	segs := (len(pkt) - encap.InnerL4At - encap.UDPLen + g - 1) / g
	bufs := make([][]byte, segs)
	for i := range bufs {
		bufs[i] = make([]byte, encap.InnerL4At+encap.UDPLen+g)
	}
	sizes := make([]int, segs)
	n, err := splitVXLAN(pkt, vnetHdr{gsoType: vnetGSOTunnelV4 | vnetGSOUDPL4, gsoSize: uint16(g)}, bufs, sizes, 0, csumFull)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := t.writeOne(bufs[i][:sizes[i]]); err != nil {
			return err
		}
	}
	return nil
}

// setGSOLengths fixes the length fields and header checksums of h, the
// outer IPv4 + UDP + VXLAN + inner Ethernet + inner IPv4 headers of a
// coalesced VXLAN packet of total bytes, and returns the inner IPv4
// header.
func setGSOLengths(h []byte, total int) []byte {
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], encap.Checksum(h[:20]))
	binary.BigEndian.PutUint16(h[encap.OuterUDPAt+4:], uint16(total-encap.OuterUDPAt))
	ip := h[encap.InnerIPAt:]
	binary.BigEndian.PutUint16(ip[2:], uint16(total-encap.InnerIPAt))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], encap.Checksum(ip[:20]))
	return ip
}

// refuseGSO notes that the kernel refused a GSO write of what (EINVAL):
// from now on the device writes one packet at a time.
func (t *vxlanTUN) refuseGSO(what string, err error) {
	t.groOff.Store(true)
	if t.log != nil {
		t.log.Warn("the kernel refused "+what+"; writing one packet at a time", "device", t.name, "err", err)
	}
}

// putGSOVnet fills the virtio-net header v of a coalesced packet whose
// transport header (csum_start) is the inner one: CHECKSUM_PARTIAL, GSO
// of gsoType in gsoSize segments after hl bytes of headers, the checksum
// field csumOff bytes into the transport header.
func putGSOVnet(v []byte, gsoType uint8, hl, gsoSize, csumOff int) {
	v[0] = vnetFlagNeedsCsum
	v[1] = gsoType
	binary.LittleEndian.PutUint16(v[2:], uint16(hl))
	binary.LittleEndian.PutUint16(v[4:], uint16(gsoSize))
	binary.LittleEndian.PutUint16(v[6:], encap.InnerL4At)
	binary.LittleEndian.PutUint16(v[8:], uint16(csumOff))
}
