package mirror

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/vpcd/vpcd/dataplane"
)

// Session is a mirror session whose source ENI is on this host.
type Session struct {
	Name   string
	Index  uint32 // the datapath's index (dataplane.Datapath.MirrorIndex)
	VNI    uint32
	Source netip.Addr // the source ENI's address: the copies' outer source
	Target netip.Addr // the target ENI's address; invalid for a pcap target
	Pcap   string     // the pcap file; "" for an ENI target
	// Ring: copies of this session come through the ring (a pcap target,
	// or an ENI target whose source ENI's program runs at XDP); the
	// kernel sends the others itself, and the daemon does not poll for
	// them.
	Ring bool
}

// Stats is what the daemon did with a session's copies.
type Stats struct {
	Sent    uint64 // sent to the target or written to the file
	Dropped uint64 // copies the daemon could not send or write
	Errors  uint64 // of Dropped: failed sends or writes
}

type sessionState struct {
	Session
	pcap  *pcapFile
	sent  atomic.Uint64
	drops atomic.Uint64
	errs  atomic.Uint64
	sport uint16
}

// Reader is where copies come from (dataplane.MirrorReader).
type Reader interface {
	// Read waits until deadline (zero: no limit) for a copy.
	Read(deadline time.Time, out *dataplane.MirrorRecord) error
	// Wake makes a waiting Read return early.
	Wake() error
	Close() error
}

// Mirror delivers copies from the datapath to the sessions' targets.
type Mirror struct {
	log *slog.Logger
	rd  Reader

	mu      sync.Mutex
	byIndex map[uint32]*sessionState
	byName  map[string]*sessionState
	pcaps   map[string]*pcapFile
	fd      int // AF_PACKET socket on the injection interface; -1: none
	ifindex int
	closing chan struct{}
	done    chan struct{}
	ipID    uint16
	errLog  time.Time
	out     sender // copies for ENI targets, written a batch at a time
}

// Poll is how long the reader waits for copies before it looks at the ring
// again (the datapath wakes it early only when the ring fills up) and
// flushes pcap files that are due.
const Poll = 20 * time.Millisecond

// Start begins delivering copies from rd. injectIfindex is the interface
// copies for ENI targets are written to (0: none yet).
func Start(rd Reader, injectIfindex int, log *slog.Logger) (*Mirror, error) {
	if log == nil {
		log = slog.Default()
	}
	m := &Mirror{log: log, rd: rd, byIndex: map[uint32]*sessionState{}, byName: map[string]*sessionState{},
		pcaps: map[string]*pcapFile{}, fd: -1, closing: make(chan struct{}), done: make(chan struct{})}
	if injectIfindex > 0 {
		if err := m.openInject(injectIfindex); err != nil {
			return nil, err
		}
	}
	go m.run()
	return m, nil
}

func (m *Mirror) openInject(ifindex int) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: receives nothing
	if err != nil {
		return fmt.Errorf("mirror injection socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("mirror injection socket: bind: %w", err)
	}
	m.fd, m.ifindex = fd, ifindex
	return nil
}

// SetInject points ENI-target copies at an injection interface.
func (m *Mirror) SetInject(ifindex int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ifindex == m.ifindex {
		return nil
	}
	if m.fd >= 0 {
		unix.Close(m.fd)
		m.fd, m.ifindex = -1, 0
	}
	if ifindex <= 0 {
		return nil
	}
	return m.openInject(ifindex)
}

// Update replaces the sessions. Counters of sessions that stay are kept;
// pcap files stay open while a session writes them.
func (m *Mirror) Update(sessions []Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	byIndex := map[uint32]*sessionState{}
	byName := map[string]*sessionState{}
	pcaps := map[string]*pcapFile{}
	for _, s := range sessions {
		st := m.byName[s.Name]
		if st == nil {
			st = &sessionState{}
		}
		st.Session = s
		st.sport = SourcePort(s.Index)
		st.pcap = nil
		if s.Pcap != "" {
			p := pcaps[s.Pcap]
			if p == nil {
				p = m.pcaps[s.Pcap]
			}
			if p == nil {
				var err error
				if p, err = openPcap(s.Pcap); err != nil {
					errs = append(errs, fmt.Errorf("mirror session %s: %w", s.Name, err))
				}
			}
			if p != nil {
				pcaps[s.Pcap] = p
				st.pcap = p
			}
		}
		byIndex[s.Index] = st
		byName[s.Name] = st
	}
	for path, p := range m.pcaps {
		if pcaps[path] == nil {
			if err := p.close(); err != nil {
				errs = append(errs, fmt.Errorf("pcap %s: %w", path, err))
			}
		}
	}
	idle := !m.polling()
	m.byIndex, m.byName, m.pcaps = byIndex, byName, pcaps
	if idle && m.polling() {
		// The reader waits without a deadline while no session exists;
		// now it has copies to poll for.
		m.rd.Wake()
	}
	return errors.Join(errs...)
}

// polling reports whether a session's copies come through the ring, under
// m.mu: only then does the reader poll it.
func (m *Mirror) polling() bool {
	for _, st := range m.byIndex {
		if st.Ring {
			return true
		}
	}
	return false
}

// Stats returns what the daemon did with a session's copies.
func (m *Mirror) Stats(name string) (Stats, bool) {
	m.mu.Lock()
	st := m.byName[name]
	m.mu.Unlock()
	if st == nil {
		return Stats{}, false
	}
	return Stats{Sent: st.sent.Load(), Dropped: st.drops.Load(), Errors: st.errs.Load()}, true
}

func (m *Mirror) run() {
	defer close(m.done)
	var rec dataplane.MirrorRecord
	for {
		select {
		case <-m.closing:
			return
		default:
		}
		// No session whose copies come through the ring: wait without
		// polling (every poll costs the daemon thread switches) until
		// Update wakes the reader.
		var deadline time.Time
		m.mu.Lock()
		if m.polling() {
			deadline = time.Now().Add(Poll)
		}
		m.mu.Unlock()
		err := m.rd.Read(deadline, &rec)
		switch {
		case err == nil:
			m.mu.Lock()
			m.deliver(&rec)
			// Take what else the ring holds, up to a batch, without
			// waiting, and send it in one go.
			for m.out.n > 0 && m.out.n < sendBatch && m.rd.Read(time.Unix(1, 0), &rec) == nil {
				m.deliver(&rec)
			}
			m.sendOut()
			m.mu.Unlock()
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			m.flush(time.Now(), false)
		default:
			select {
			case <-m.closing:
				return
			default:
			}
			m.log.Warn("mirror ring", "err", err)
			time.Sleep(Poll)
		}
	}
}

// deliver writes a copy to its session's pcap file or adds it to the
// batch for the injection interface (sent when full: see sendOut). Called
// with m.mu held.
func (m *Mirror) deliver(rec *dataplane.MirrorRecord) {
	st := m.byIndex[rec.Session]
	if st == nil {
		return // a session removed since the copy was made
	}
	if st.Pcap != "" {
		if st.pcap == nil {
			st.drops.Add(1)
			return
		}
		if err := st.pcap.write(rec.Time, rec.OrigLen, rec.Data); err != nil {
			m.fail(st, err)
			return
		}
		st.sent.Add(1)
		st.pcap.flush(time.Now(), false)
		return
	}
	if m.fd < 0 || !st.Target.IsValid() {
		st.drops.Add(1)
		return
	}
	m.ipID++
	frame, err := Encap(m.out.next(), st.Index, st.VNI, st.Source, st.Target, m.ipID, st.sport, rec.Data)
	if err != nil {
		m.fail(st, err)
		return
	}
	if m.out.add(frame, st) {
		m.sendOut()
	}
}

// sendOut sends the batched copies. Called with m.mu held; a batch only
// fills while the socket is open (deliver drops copies without one) and is
// sent before the lock is let go, so the socket cannot change under it.
func (m *Mirror) sendOut() { m.out.flush(m.fd, m.ifindex, m.fail) }

// fail counts a failed send or write, logging at most once a minute.
func (m *Mirror) fail(st *sessionState, err error) {
	st.drops.Add(1)
	st.errs.Add(1)
	if now := time.Now(); now.Sub(m.errLog) >= time.Minute {
		m.errLog = now
		m.log.Warn("mirror copies failing (logged once a minute; see vpcd_mirror_dropped_total)", "session", st.Name, "err", err)
	}
}

func (m *Mirror) flush(now time.Time, always bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for path, p := range m.pcaps {
		if err := p.flush(now, always); err != nil {
			m.log.Warn("pcap flush", "file", path, "err", err)
		}
	}
}

// Close stops delivery, flushes and closes the pcap files.
func (m *Mirror) Close() error {
	close(m.closing)
	m.rd.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for path, p := range m.pcaps {
		if err := p.close(); err != nil {
			errs = append(errs, fmt.Errorf("pcap %s: %w", path, err))
		}
	}
	m.pcaps = map[string]*pcapFile{}
	if m.fd >= 0 {
		unix.Close(m.fd)
		m.fd = -1
	}
	return errors.Join(errs...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
