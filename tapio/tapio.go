// Package tapio does what a VMM's virtio-net backend does with a tap ENI
// (SPEC §12): it opens queues of a persistent tap with virtio-net headers
// and offloads on, and reads and writes whole frames on them. Pump joins
// such a queue to a packet socket on a veth in a workload namespace, so
// that the namespace looks like a veth ENI's (eth0 with the ENI's address
// and MAC) and every test tool works against a tap ENI without a VMM; the
// benchmark uses the same queues as a frame generator.
package tapio

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VnetHdrLen is the size of the virtio-net header in front of every frame
// on a queue Open returns (struct virtio_net_hdr, as the kernel's packet
// sockets use with PACKET_VNET_HDR; Firecracker's virtio 1.0 header is 12
// bytes, the same fields and num_buffers).
const VnetHdrLen = 10

// MaxFrame is the largest frame a queue hands over: a 64 KiB GSO
// super-packet with its Ethernet header.
const MaxFrame = 65536 + 14

// Offloads the queues ask for (TUNSETOFFLOAD): checksums left to the
// reader and TCP super-packets, as a virtio-net guest with TSO does.
const offloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

type ifreq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// Open attaches a queue to the tap ifname of the calling thread's network
// namespace (with vnet headers, as vpcd creates a tap ENI's; one more
// queue of a multi-queue tap, the only one of a single-queue tap, which
// must have no other reader) and returns it non-blocking, for Go's poller.
func Open(ifname string) (*os.File, error) {
	f, err := open(ifname, unix.IFF_MULTI_QUEUE)
	if errors.Is(err, unix.EINVAL) {
		// TUNSETIFF refuses a queue setting other than the tap's.
		f, err = open(ifname, 0)
	}
	return f, err
}

func open(ifname string, mq uint16) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	fail := func(what string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %s: %w", ifname, what, err)
	}
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], ifname)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | mq
	if err := ioctl(fd, unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); err != nil {
		return fail("TUNSETIFF", err)
	}
	hdr := int32(VnetHdrLen)
	if err := ioctl(fd, unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&hdr))); err != nil {
		return fail("TUNSETVNETHDRSZ", err)
	}
	if err := ioctl(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
		return fail("TUNSETOFFLOAD", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("non-blocking", err)
	}
	return os.NewFile(uintptr(fd), "tap:"+ifname), nil
}

func ioctl(fd int, req uint, arg uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg); errno != 0 {
		return errno
	}
	return nil
}

// PacketSocket opens a raw packet socket on ifname of the calling thread's
// network namespace that carries the same virtio-net header in front of
// each frame as a tap queue (PACKET_VNET_HDR) and does not read back what
// it writes. Frames can then be copied between the two unchanged, GSO
// super-packets and checksum offload included.
func PacketSocket(ifname string) (*os.File, error) {
	ifi, err := ifindex(ifname)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", ifname, err)
	}
	for _, o := range [][2]int{{unix.PACKET_VNET_HDR, 1}, {unix.PACKET_IGNORE_OUTGOING, 1}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o[0], o[1]); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("packet socket on %s: option %d: %w", ifname, o[0], err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket on %s: bind: %w", ifname, err)
	}
	return os.NewFile(uintptr(fd), "packet:"+ifname), nil
}

func ifindex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, req); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return int(req.Uint32()), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Pump copies frames both ways between a and b (tap queues or packet
// sockets from PacketSocket, each frame behind a virtio-net header) until
// either fails or is closed; it then closes both and returns the first
// error that is not the close itself.
func Pump(a, b *os.File) error {
	errc := make(chan error, 2)
	go func() { errc <- copyFrames(b, a) }()
	go func() { errc <- copyFrames(a, b) }()
	err := <-errc
	a.Close()
	b.Close()
	<-errc
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// copyFrames moves one frame per read from src to dst. A frame dst refuses
// (say, a malformed one) is dropped, as a NIC would; only read errors end
// the copy.
func copyFrames(dst, src *os.File) error {
	buf := make([]byte, VnetHdrLen+MaxFrame)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return err
		}
		if _, err := dst.Write(buf[:n]); errors.Is(err, os.ErrClosed) {
			return err
		}
	}
}
