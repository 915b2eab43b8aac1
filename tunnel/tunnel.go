// Package tunnel runs the host-to-host WireGuard tunnel that carries every
// VPC packet crossing hosts: a wireguard-go device on a TUN, one peer per
// other host, a UAPI socket so that `wg show` works. The eBPF datapath
// redirects VXLAN-wrapped frames into the TUN and takes decrypted ones from
// its ingress; there is no other path between hosts, so no cleartext one.
package tunnel

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Peer is another host.
type Peer struct {
	Name      string
	PublicKey Key
	Endpoint  netip.AddrPort // its underlay address and listen port
	// AllowedIP is the address the VXLAN outer header names for this peer
	// (its underlay address, /32).
	AllowedIP netip.Prefix
}

// Config describes this host's end of the tunnel.
type Config struct {
	Device       string // tunnel device name, e.g. wg-host-a or vpcd0
	PrivateKey   Key
	ListenPort   uint16
	MTU          int
	PresharedKey *Key
	Peers        []Peer
	// Keepalive makes each peer send a keepalive at this interval so that
	// sessions exist before the first packet needs them; 0 disables.
	Keepalive time.Duration
	// BeforeUp, when set, runs once the device exists and before it goes
	// up, with its name and index: the place to attach the program that
	// must see every packet the device delivers. An error stops Start
	// and removes the device.
	BeforeUp func(name string, ifindex int) error
}

// Tunnel is a running WireGuard device.
type Tunnel struct {
	log     *slog.Logger
	dev     *device.Device
	tun     tun.Device
	uapi    net.Listener
	name    string
	ifindex int

	mu     sync.Mutex // guards pub, peers, paced and closed
	pub    Key        // this host's public key
	peers  map[Key]string
	paced  map[Key]bool // peers whose persistent keepalive is configured
	closed bool
}

// followerDelay is how long the host with the greater public key waits
// before its first keepalive to a new peer. Both ends of a new pair start
// at the same time (a lab, a fleet rollout, a reload that adds a peer);
// if both sent an initiation at once, each would consume the other's
// while its own was in flight, and wireguard-go's handshake workers can
// then derive a session whose receive index the peer never learns, so
// one direction is dead until the 15-second retry. One initiator per pair
// avoids that: the lesser key initiates at once, the greater only if no
// session came by this delay. Traffic still initiates at once, either way.
const followerDelay = 400 * time.Millisecond

// leads reports whether this host initiates first towards peer.
func (t *Tunnel) leads(peer Key) bool {
	for i := range t.pub {
		if t.pub[i] != peer[i] {
			return t.pub[i] < peer[i]
		}
	}
	return true
}

// openTUN creates a TUN device without a virtio-net header. With no
// offloads the kernel segments and checksums in software before the
// device, so every packet wireguard-go reads is a whole, valid one.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tunnel device %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// createTUN makes the tunnel device: the offloading one that keeps VXLAN
// GSO packets whole, or, on a kernel without virtio-net headers for UDP
// tunnels, a plain TUN whose every packet the kernel segments first.
func createTUN(name string, mtu int, log *slog.Logger) (tun.Device, error) {
	vt, err := openVXLANTUN(name, mtu)
	if err == nil {
		vt.log = log
		if err := setMTU(name, mtu); err != nil {
			vt.Close()
			return nil, err
		}
		log.Info("tunnel device", "device", name, "udp_tunnel_gso", vt.tunnelGSO)
		if vt.trimErr != nil {
			log.Warn("batches of mirror copies reach the daemon with the rest of their frame", "device", name, "err", vt.trimErr)
		}
		return vt, nil
	}
	log.Warn("tunnel device without offloads", "device", name, "err", err)
	f, err := openTUN(name)
	if err != nil {
		return nil, err
	}
	td, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tunnel device %s: %w", name, err)
	}
	return td, nil
}

func setMTU(name string, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tunnel device %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("tunnel device %s: MTU %d: %w", name, mtu, err)
	}
	return nil
}

// Start creates the device, configures the peers, runs cfg.BeforeUp and
// brings the device up.
func Start(cfg Config, log *slog.Logger) (*Tunnel, error) {
	if log == nil {
		log = slog.Default()
	}
	td, err := createTUN(cfg.Device, cfg.MTU, log)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{log: log, tun: td, name: cfg.Device, pub: cfg.PrivateKey.PublicKey(),
		peers: map[Key]string{}, paced: map[Key]bool{}}
	wglog := &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...), "component", "wireguard") },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...), "component", "wireguard") },
	}
	t.dev = device.NewDevice(td, conn.NewDefaultBind(), wglog)

	if err := t.configure(cfg, true); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.dev.Up(); err != nil {
		t.Close()
		return nil, fmt.Errorf("tunnel %s up: %w", cfg.Device, err)
	}
	l, err := netlink.LinkByName(cfg.Device)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("tunnel device %s: %w", cfg.Device, err)
	}
	t.ifindex = l.Attrs().Index
	// The tunnel carries only what the eBPF programs put in it: no IPv6
	// link-local chatter from the host.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+cfg.Device+"/disable_ipv6", []byte("1"), 0o644)
	if cfg.BeforeUp != nil {
		if err := cfg.BeforeUp(cfg.Device, t.ifindex); err != nil {
			t.Close()
			return nil, fmt.Errorf("tunnel device %s: %w", cfg.Device, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Close()
		return nil, fmt.Errorf("tunnel device %s up: %w", cfg.Device, err)
	}

	uf, err := ipc.UAPIOpen(cfg.Device)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("tunnel %s: UAPI socket: %w", cfg.Device, err)
	}
	t.uapi, err = ipc.UAPIListen(cfg.Device, uf)
	if err != nil {
		uf.Close()
		t.Close()
		return nil, fmt.Errorf("tunnel %s: UAPI socket: %w", cfg.Device, err)
	}
	go t.serveUAPI()
	return t, nil
}

func (t *Tunnel) serveUAPI() {
	for {
		c, err := t.uapi.Accept()
		if err != nil {
			return
		}
		go t.dev.IpcHandle(c)
	}
}

func hexKey(k Key) string { return hex.EncodeToString(k[:]) }

// configure writes the device configuration. Peers that are not in cfg
// are removed; the others are updated in place, so their sessions survive
// a reload (replacing them would force new handshakes and stall traffic).
func (t *Tunnel) configure(cfg Config, withKey bool) error {
	var b strings.Builder
	if withKey {
		fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\n", hexKey(cfg.PrivateKey), cfg.ListenPort)
	}
	want := map[Key]bool{}
	for _, p := range cfg.Peers {
		want[p.PublicKey] = true
	}
	t.mu.Lock()
	for k := range t.peers {
		if !want[k] {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hexKey(k))
		}
	}
	t.mu.Unlock()
	peers := map[Key]string{}
	paced := map[Key]bool{}
	var later []Key
	t.mu.Lock()
	for _, p := range cfg.Peers {
		peers[p.PublicKey] = p.Name
		fmt.Fprintf(&b, "public_key=%s\n", hexKey(p.PublicKey))
		if cfg.PresharedKey != nil {
			fmt.Fprintf(&b, "preshared_key=%s\n", hexKey(*cfg.PresharedKey))
		}
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		fmt.Fprintf(&b, "replace_allowed_ips=true\nallowed_ip=%s\n", p.AllowedIP)
		switch {
		case cfg.Keepalive <= 0:
			fmt.Fprintf(&b, "persistent_keepalive_interval=0\n")
		case t.paced[p.PublicKey] || t.leads(p.PublicKey):
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(cfg.Keepalive/time.Second))
			paced[p.PublicKey] = true
		default:
			later = append(later, p.PublicKey)
		}
	}
	t.mu.Unlock()
	if err := t.dev.IpcSet(b.String()); err != nil {
		// The configuration holds keys: never echo it.
		return fmt.Errorf("tunnel %s: configure peers: %v", t.name, redact(err))
	}
	t.mu.Lock()
	t.peers = peers
	t.paced = paced
	t.mu.Unlock()
	for _, k := range later {
		time.AfterFunc(followerDelay, func() { t.startKeepalive(k, cfg.Keepalive) })
	}
	return nil
}

// startKeepalive turns on a follower's persistent keepalive. wireguard-go
// sends one at once: on the session the leader made, or, if none came,
// after a handshake of its own.
func (t *Tunnel) startKeepalive(peer Key, every time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.peers[peer]; t.closed || !ok || t.paced[peer] {
		return
	}
	cmd := fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n", hexKey(peer), int(every/time.Second))
	if err := t.dev.IpcSet(cmd); err != nil {
		t.log.Warn("tunnel: start keepalive", "device", t.name, "error", redact(err))
		return
	}
	t.paced[peer] = true
}

// redact keeps an IPC error's kind without any text that could carry key
// material.
func redact(err error) string {
	var ipcErr *device.IPCError
	if errors.As(err, &ipcErr) {
		return fmt.Sprintf("IPC error %d", ipcErr.ErrorCode())
	}
	return "invalid configuration"
}

// UpdatePeers replaces the peer set (a topology reload). Sessions of peers
// whose key and endpoint did not change are kept.
func (t *Tunnel) UpdatePeers(cfg Config) error { return t.configure(cfg, false) }

// SetPrivateKey replaces this host's key pair (rotate-key). Every session
// ends: the next packet to a peer starts a handshake with the new key,
// and a peer that knows the new public key can start one towards us.
func (t *Tunnel) SetPrivateKey(k Key) error {
	if err := t.dev.IpcSet(fmt.Sprintf("private_key=%s\n", hexKey(k))); err != nil {
		return fmt.Errorf("tunnel %s: set private key: %v", t.name, redact(err))
	}
	t.mu.Lock()
	t.pub = k.PublicKey()
	t.mu.Unlock()
	return nil
}

// Name is the tunnel device's name; Ifindex its interface index.
func (t *Tunnel) Name() string { return t.name }
func (t *Tunnel) Ifindex() int { return t.ifindex }

// PeerStatus is what `wg show` prints of a peer.
type PeerStatus struct {
	Name          string    `json:"name"`
	PublicKey     string    `json:"public_key"`
	Endpoint      string    `json:"endpoint"`
	LastHandshake time.Time `json:"last_handshake"`
	RxBytes       uint64    `json:"rx_bytes"`
	TxBytes       uint64    `json:"tx_bytes"`
}

// DeviceCounters reports the tunnel device's batching: system calls and
// packets each way (zero for the plain fallback device), and the packets
// the kernel dropped at the device.
type DeviceCounters struct {
	Reads        uint64 `json:"reads"`
	ReadPackets  uint64 `json:"read_packets"`
	Writes       uint64 `json:"writes"`
	WritePackets uint64 `json:"write_packets"`
	// ReadErrors counts frames read but lost as malformed.
	ReadErrors uint64 `json:"read_errors"`
	// MirrorBatches counts the batches of mirror copies the tunnel made
	// from the super-packets it carried (tunbatch.go).
	MirrorBatches uint64 `json:"mirror_batches"`
	// CopiesHeld counts single mirror copies the device held a moment
	// to send several in one packet (hold.go).
	CopiesHeld   uint64 `json:"copies_held"`
	UDPTunnelGSO bool   `json:"udp_tunnel_gso"`
	// QueueDrops are packets bound for the tunnel that the device's
	// queue had no room for (the daemon did not read them in time);
	// WriteDrops are packets the daemon wrote that the kernel dropped.
	// Both come from the device's statistics; KernelStats is false when
	// they could not be read (then they and, for the plain device, the
	// packet counts are unknown, not zero).
	QueueDrops  uint64 `json:"queue_drops"`
	WriteDrops  uint64 `json:"write_drops"`
	KernelStats bool   `json:"kernel_stats"`
}

// Counters returns the device's counters.
func (t *Tunnel) Counters() DeviceCounters {
	var c DeviceCounters
	vt, batching := t.tun.(*vxlanTUN)
	if batching {
		c = DeviceCounters{
			Reads: vt.stats.Reads.Load(), ReadPackets: vt.stats.ReadPackets.Load(),
			Writes: vt.stats.Writes.Load(), WritePackets: vt.stats.WritePackets.Load(),
			ReadErrors: vt.stats.ReadErrors.Load(), UDPTunnelGSO: vt.tunnelGSO,
			MirrorBatches: vt.batches.made.Load(), CopiesHeld: vt.stats.CopiesHeld.Load(),
		}
	}
	if l, err := netlink.LinkByIndex(t.ifindex); err == nil && l.Attrs().Statistics != nil {
		st := l.Attrs().Statistics
		c.QueueDrops, c.WriteDrops, c.KernelStats = st.TxDropped, st.RxDropped, true
		if !batching {
			// The plain device counts no system calls; its packets
			// come from the kernel (sent to it: read by us).
			c.ReadPackets, c.WritePackets = st.TxPackets, st.RxPackets
		}
	}
	return c
}

// Close stops the device; the TUN and the UAPI socket go with it.
func (t *Tunnel) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	if t.uapi != nil {
		t.uapi.Close()
	}
	if t.dev != nil {
		t.dev.Close()
	} else if t.tun != nil {
		t.tun.Close()
	}
}
