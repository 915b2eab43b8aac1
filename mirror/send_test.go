package mirror

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/dataplane"
	"github.com/vpcd/vpcd/encap"
	"github.com/vpcd/vpcd/internal/testkit"
)

// ringDouble hands out queued records the way the datapath's ring does:
// at once while it holds some, else after waiting until the deadline.
type ringDouble struct {
	mu   sync.Mutex
	recs []dataplane.MirrorRecord
	wake chan struct{}
}

func (r *ringDouble) push(recs ...dataplane.MirrorRecord) {
	r.mu.Lock()
	r.recs = append(r.recs, recs...)
	r.mu.Unlock()
	r.Wake()
}

func (r *ringDouble) Read(deadline time.Time, out *dataplane.MirrorRecord) error {
	for {
		r.mu.Lock()
		if len(r.recs) > 0 {
			*out = r.recs[0]
			r.recs = r.recs[1:]
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
		wait := time.Until(deadline)
		if !deadline.IsZero() && wait <= 0 {
			return os.ErrDeadlineExceeded
		}
		if deadline.IsZero() {
			wait = time.Hour
		}
		select {
		case <-r.wake:
		case <-time.After(wait):
		}
	}
}

func (r *ringDouble) Wake() error {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

func (r *ringDouble) Close() error { return nil }

// Copies for ENI targets leave in batches of sendmmsg, every one of them
// in order and counted: 150 copies of two sessions cross batch bounds and
// arrive, as frames on a real veth, exactly as Encap makes them.
func TestInjectBatches(t *testing.T) {
	testkit.NeedRoot(t, "creates a network namespace, a veth pair and AF_PACKET sockets")
	defer testkit.FreshNamespace(t)() // anonymous: gone with its last socket

	va := netlink.NewLinkAttrs()
	va.Name = "inj"
	va.MTU = 9000
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: va, PeerName: "inj-peer"}); err != nil {
		t.Fatal(err)
	}
	inj, err := netlink.LinkByName("inj")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netlink.LinkByName("inj-peer")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{inj, peer} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	// The capture: every IPv4 frame arriving at the peer.
	capFD, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(capFD)
	if err := unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: peer.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(capFD, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(capFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	rd := &ringDouble{wake: make(chan struct{}, 1)}
	m, err := Start(rd, inj.Attrs().Index, nil) // its socket is in this namespace
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src, dst := netip.MustParseAddr("10.7.1.10"), netip.MustParseAddr("10.7.1.30")
	if err := m.Update([]Session{
		{Name: "a", Index: 3, VNI: 4242, Source: src, Target: dst, Ring: true},
		{Name: "b", Index: 5, VNI: 4343, Source: src, Target: dst, Ring: true},
	}); err != nil {
		t.Fatal(err)
	}
	const total = 150
	var recs []dataplane.MirrorRecord
	for i := range total {
		data := make([]byte, 60+i%40)
		binary.BigEndian.PutUint32(data, uint32(i)) // the copy's number
		data[12], data[13] = 0x08, 0x00
		sess := uint32(3)
		if i%3 == 0 {
			sess = 5
		}
		recs = append(recs, dataplane.MirrorRecord{Session: sess, OrigLen: len(data), Data: data, Time: time.Now()})
	}
	rd.push(recs...)

	buf := make([]byte, 2048)
	for i := range total {
		n, _, err := unix.Recvfrom(capFD, buf, 0)
		if err != nil {
			t.Fatalf("copy %d of %d: %v", i, total, err)
		}
		frame := buf[:n]
		want := recs[i]
		if n != HeaderLen+len(want.Data) {
			t.Fatalf("copy %d: %d bytes, want %d", i, n, HeaderLen+len(want.Data))
		}
		if got := binary.BigEndian.Uint32(frame[HeaderLen:]); got != uint32(i) {
			t.Fatalf("copy %d arrived as number %d: out of order", i, got)
		}
		if got := binary.BigEndian.Uint32(frame[8:12]); got != want.Session {
			t.Fatalf("copy %d: source MAC names session %d, want %d", i, got, want.Session)
		}
		vni := binary.BigEndian.Uint32(frame[encap.EthLen+encap.VXLANAt+4:]) >> 8
		if wantVNI := map[uint32]uint32{3: 4242, 5: 4343}[want.Session]; vni != wantVNI {
			t.Fatalf("copy %d: VNI %d, want %d", i, vni, wantVNI)
		}
	}
	a, _ := m.Stats("a")
	b, _ := m.Stats("b")
	if a.Sent != 100 || b.Sent != 50 || a.Dropped+b.Dropped != 0 {
		t.Fatalf("stats a=%+v b=%+v, want 100 and 50 sent, none dropped", a, b)
	}
	m.mu.Lock()
	calls := m.out.calls
	m.mu.Unlock()
	// 64 + 64 + 22 when the reader takes the queue at once; a few more
	// if it woke before the records were all queued.
	if calls > 6 {
		t.Errorf("%d copies took %d system calls: not batched", total, calls)
	}
	t.Logf("%d copies in %d sendmmsg calls", total, calls)
}
