package tunnel

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The ENI program writes a compact batch of mirror copies (compact.go)
// into the front of the super-packet it cloned and leaves the rest of the
// frame behind it: cutting it off in the program (bpf_skb_change_tail)
// would first copy the whole 64 KiB frame into one new buffer. It tags
// the batch with batchTag instead, and the tunnel device's socket filter
// cuts it to its IPv4 length as the kernel hands it over: the rest's pages
// are dropped, never copied.

// batchTag is MIRROR_BATCH_TAG in bpf/lib/common.h.
const batchTag = 0x6d420000

// tunSetFilterEBPF is TUNSETFILTEREBPF: _IOR('T', 225, int).
const tunSetFilterEBPF = 0x800454e1

// Offsets in struct __sk_buff.
const (
	skbLenOff  = 0
	skbMarkOff = 8
)

// trimProgram returns the filter: the IPv4 total length of a tagged
// packet, every other packet's own length (the device keeps what the
// filter returns, and drops a packet it returns 0 for).
func trimProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "vpcd_tun_trim",
		Type: ebpf.SocketFilter,
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R0, asm.R6, skbMarkOff, asm.Word),
			asm.JNE.Imm(asm.R0, batchTag, "keep"),
			// The packet starts at its outer IPv4 header (a layer-3
			// device); LD_ABS reads in host order, and ends the
			// program with 0 (a drop) past the packet.
			asm.LoadAbs(2, asm.Half),
			asm.Return(),
			asm.LoadMem(asm.R0, asm.R6, skbLenOff, asm.Word).WithSymbol("keep"),
			asm.Return(),
		},
		License: "Dual BSD/GPL",
	})
}

// attachTrim loads the filter and attaches it to the TUN open at fd; the
// device holds its own reference to the program.
func attachTrim(fd int) error {
	prog, err := trimProgram()
	if err != nil {
		return fmt.Errorf("load the mirror batch filter: %w", err)
	}
	defer prog.Close()
	pfd := int32(prog.FD())
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tunSetFilterEBPF, uintptr(unsafe.Pointer(&pfd))); errno != 0 {
		return fmt.Errorf("attach the mirror batch filter: %w", errno)
	}
	return nil
}
