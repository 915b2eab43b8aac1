package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Interface offload features by their ethtool names (as `ethtool -k`
// prints them), set through the SIOCETHTOOL ioctl: the feature names are
// looked up in the device's string set, so no bit number is hard-coded.

const (
	ethtoolGSSetInfo  = 0x37 // ETHTOOL_GSSET_INFO
	ethtoolGStrings   = 0x1b // ETHTOOL_GSTRINGS
	ethtoolSFeatures  = 0x3b // ETHTOOL_SFEATURES
	ethtoolGFeatures  = 0x3a // ETHTOOL_GFEATURES
	ethSSFeatures     = 4    // ETH_SS_FEATURES
	ethGStringLen     = 32
	ethtoolMaxFeature = 256
)

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

func ethtoolIoctl(ifname string, buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = uintptr(unsafe.Pointer(&buf[0]))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return errno
	}
	return nil
}

// featureNames returns the device's feature names, in bit order.
func featureNames(ifname string) ([]string, error) {
	// struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1].
	info := make([]byte, 4+4+8+4)
	binary.NativeEndian.PutUint32(info[0:], ethtoolGSSetInfo)
	binary.NativeEndian.PutUint64(info[8:], 1<<ethSSFeatures)
	if err := ethtoolIoctl(ifname, info); err != nil {
		return nil, fmt.Errorf("ethtool %s: string set: %w", ifname, err)
	}
	n := binary.NativeEndian.Uint32(info[16:])
	if binary.NativeEndian.Uint64(info[8:]) == 0 || n == 0 || n > ethtoolMaxFeature {
		return nil, fmt.Errorf("ethtool %s: no feature names", ifname)
	}
	// struct ethtool_gstrings: cmd, string_set, len, data[len*32].
	gs := make([]byte, 12+int(n)*ethGStringLen)
	binary.NativeEndian.PutUint32(gs[0:], ethtoolGStrings)
	binary.NativeEndian.PutUint32(gs[4:], ethSSFeatures)
	binary.NativeEndian.PutUint32(gs[8:], n)
	if err := ethtoolIoctl(ifname, gs); err != nil {
		return nil, fmt.Errorf("ethtool %s: feature names: %w", ifname, err)
	}
	names := make([]string, n)
	for i := range names {
		s := gs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		names[i] = string(s)
	}
	return names, nil
}

// setFeatures turns the named offload features of ifname on or off. A name
// the device does not know is an error when it is to be on (and left out
// of want when it is to be off: an older kernel lacks it); one it cannot
// change is reported by the features read back. want is not changed.
func setFeatures(ifname string, want map[string]bool) error {
	names, err := featureNames(ifname)
	if err != nil {
		return err
	}
	blocks := (len(names) + 31) / 32
	// struct ethtool_sfeatures: cmd, size, {valid, requested}[size].
	sf := make([]byte, 8+blocks*8)
	binary.NativeEndian.PutUint32(sf[0:], ethtoolSFeatures)
	binary.NativeEndian.PutUint32(sf[4:], uint32(blocks))
	bit := map[string]int{}
	for i, n := range names {
		bit[n] = i
	}
	for name, on := range want {
		i, ok := bit[name]
		if !ok && !on {
			continue // this kernel has no such offload to turn off
		}
		if !ok {
			return fmt.Errorf("ethtool %s: no feature %q", ifname, name)
		}
		off := 8 + (i/32)*8
		valid := binary.NativeEndian.Uint32(sf[off:]) | 1<<(i%32)
		binary.NativeEndian.PutUint32(sf[off:], valid)
		req := binary.NativeEndian.Uint32(sf[off+4:])
		if on {
			req |= 1 << (i % 32)
		} else {
			req &^= 1 << (i % 32)
		}
		binary.NativeEndian.PutUint32(sf[off+4:], req)
	}
	if err := ethtoolIoctl(ifname, sf); err != nil {
		return fmt.Errorf("ethtool %s: set features: %w", ifname, err)
	}
	got, err := features(ifname, names)
	if err != nil {
		return err
	}
	for name, on := range want {
		if _, known := bit[name]; known && got[name] != on {
			return fmt.Errorf("ethtool %s: feature %s stayed %v", ifname, name, got[name])
		}
	}
	return nil
}

// features reads the active state of every feature of ifname.
func features(ifname string, names []string) (map[string]bool, error) {
	blocks := (len(names) + 31) / 32
	// struct ethtool_gfeatures: cmd, size, {available, requested, active,
	// never_changed}[size].
	gf := make([]byte, 8+blocks*16)
	binary.NativeEndian.PutUint32(gf[0:], ethtoolGFeatures)
	binary.NativeEndian.PutUint32(gf[4:], uint32(blocks))
	if err := ethtoolIoctl(ifname, gf); err != nil {
		return nil, fmt.Errorf("ethtool %s: features: %w", ifname, err)
	}
	out := make(map[string]bool, len(names))
	for i, n := range names {
		active := binary.NativeEndian.Uint32(gf[8+(i/32)*16+8:])
		out[n] = active&(1<<(i%32)) != 0
	}
	return out, nil
}
