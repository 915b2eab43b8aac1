package dataplane

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/vpcd/vpcd/bpf"
	"github.com/vpcd/vpcd/encap"
)

// DropEvent is one dropped packet as `vpcd monitor` shows it.
type DropEvent struct {
	Time      time.Time
	Ifindex   int
	Reason    string
	Direction Direction
	Hook      string // "eni", "tunnel" or "underlay"
	Len       int
	// Decoded from the packet's first bytes; zero when they did not say.
	// For the tunnel hook these are the inner packet's, with its VNI.
	VNI              uint32
	Protocol         uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// EventReader reads drop events from the datapath's ring buffer.
type EventReader struct {
	r      *ringbuf.Reader
	offset int64 // wall minus monotonic clock, ns
}

// Events opens the ring buffer. Events flow only while SetMonitor(true).
func (d *Datapath) Events() (*EventReader, error) {
	r, err := ringbuf.NewReader(d.eni.Events)
	if err != nil {
		return nil, err
	}
	return &EventReader{r: r, offset: time.Now().UnixNano() - int64(monotonicNow())}, nil
}

// SetMonitor turns drop events on or off in the datapath.
func (d *Datapath) SetMonitor(on bool) error {
	d.monitor = on
	var cfg bpf.EniVpcdConfig
	if err := d.eni.Config.Lookup(uint32(0), &cfg); err != nil {
		return err
	}
	cfg.Monitor = 0
	if on {
		cfg.Monitor = 1
	}
	return d.eni.Config.Put(uint32(0), &cfg)
}

// ErrClosed is returned by Read once the reader is closed.
var ErrClosed = errors.New("event reader closed")

// Read waits for the next event.
func (e *EventReader) Read() (DropEvent, error) {
	rec, err := e.r.Read()
	if errors.Is(err, os.ErrClosed) {
		return DropEvent{}, ErrClosed
	}
	if err != nil {
		return DropEvent{}, err
	}
	var raw bpf.EniDropEvent
	if len(rec.RawSample) < binary.Size(raw) {
		return DropEvent{}, errors.New("short drop event")
	}
	if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &raw); err != nil {
		return DropEvent{}, err
	}
	ev := DropEvent{
		Time:      time.Unix(0, int64(raw.Time)+e.offset),
		Ifindex:   int(raw.Ifindex),
		Reason:    DropReasonName(DropReason(raw.Reason)),
		Direction: Direction(raw.Dir),
		Len:       int(raw.Len),
		Hook:      hookName(bpf.EniEventHook(raw.Hook)),
	}
	head := raw.Head[:min(int(raw.Captured), len(raw.Head))]
	switch bpf.EniEventHook(raw.Hook) {
	case bpf.EniEventHookHOOK_TUNNEL: // outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
		if len(head) >= encap.InnerEthAt {
			ev.VNI = binary.BigEndian.Uint32(head[encap.VXLANAt+4:]) >> 8
		}
		if len(head) > encap.InnerIPAt {
			decodeIPv4(&ev, head[encap.InnerIPAt:])
		}
	default:
		if len(head) > encap.EthLen && binary.BigEndian.Uint16(head[12:]) == encap.EtherTypeIPv4 {
			decodeIPv4(&ev, head[encap.EthLen:])
		}
	}
	return ev, nil
}

// hookName names a program's place (enum event_hook) as DropEvent.Hook
// does; "" for a value this version does not know.
func hookName(h bpf.EniEventHook) string {
	switch h {
	case bpf.EniEventHookHOOK_ENI:
		return "eni"
	case bpf.EniEventHookHOOK_TUNNEL:
		return "tunnel"
	case bpf.EniEventHookHOOK_UNDERLAY:
		return "underlay"
	}
	return ""
}

func decodeIPv4(ev *DropEvent, b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ev.Protocol = b[9]
	ev.Src = netip.AddrFrom4([4]byte(b[12:16]))
	ev.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || ihl > len(b) {
		return
	}
	l4 := b[ihl:]
	if (ev.Protocol == 6 || ev.Protocol == 17) && len(l4) >= 4 {
		ev.SrcPort = binary.BigEndian.Uint16(l4[0:])
		ev.DstPort = binary.BigEndian.Uint16(l4[2:])
	}
}

// Close stops Read.
func (e *EventReader) Close() error { return e.r.Close() }
