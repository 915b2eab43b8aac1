package mirror

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendBatch is the most copies written to the injection interface in one
// system call. Each copy still crosses the datapath on its own; the batch
// saves the system calls, and with a small CPU budget it lets the runtime
// hand the daemon's other work to another thread while the kernel runs
// the batch.
const sendBatch = 64

// mmsghdr is struct mmsghdr: x/sys/unix has sendmmsg's number, not its
// types. Go pads it as C does (to the alignment of msghdr's pointers).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// sender gathers frames for the injection socket and writes them with
// sendmmsg. Not safe for concurrent use (the Mirror's mutex guards it).
type sender struct {
	bufs [sendBatch][]byte
	sess [sendBatch]*sessionState
	n    int
	hdrs [sendBatch]mmsghdr
	iovs [sendBatch]unix.Iovec
	addr unix.RawSockaddrLinklayer
	// calls counts sendmmsg calls (tests read it).
	calls int
}

// next returns the buffer for the next frame; add commits it.
func (s *sender) next() []byte { return s.bufs[s.n] }

func (s *sender) add(frame []byte, st *sessionState) bool {
	s.bufs[s.n], s.sess[s.n] = frame, st
	s.n++
	return s.n == sendBatch
}

// flush writes the gathered frames to fd, an AF_PACKET socket, on
// ifindex, never waiting for room: a full queue drops copies, not traffic.
// Each frame is counted sent or dropped on its session; fail is called
// for a frame an error other than a full queue refused.
func (s *sender) flush(fd, ifindex int, fail func(*sessionState, error)) {
	if s.n == 0 {
		return
	}
	s.addr = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_IP), Ifindex: int32(ifindex)}
	for i := 0; i < s.n; i++ {
		s.iovs[i].Base = &s.bufs[i][0]
		s.iovs[i].SetLen(len(s.bufs[i]))
		s.hdrs[i] = mmsghdr{hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&s.addr)),
			Namelen: uint32(unsafe.Sizeof(s.addr)),
			Iov:     &s.iovs[i],
			Iovlen:  1,
		}}
	}
	for at := 0; at < s.n; {
		sent, err := sendmmsg(fd, s.hdrs[at:s.n])
		s.calls++
		for _, st := range s.sess[at : at+sent] {
			st.sent.Add(1)
		}
		at += sent
		if err == nil && sent > 0 {
			continue
		}
		if err == nil { // no progress and no reason: count it as a full queue
			err = unix.EAGAIN
		}
		// The frame at at was refused (when some before it went, the
		// kernel reports its error on this second call).
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
			s.sess[at].drops.Add(1)
		} else {
			fail(s.sess[at], err)
		}
		at++
	}
	clear(s.sess[:s.n])
	s.n = 0
}

func sendmmsg(fd int, hdrs []mmsghdr) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return 0, errno
		}
		return int(n), nil
	}
}
