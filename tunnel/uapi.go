package tunnel

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The WireGuard cross-platform UAPI "get" reply, read from a device's UAPI
// socket (the lab, for any host's daemon) or from the device itself
// (Tunnel.Peers): one parser for both.

// uapiTimeout bounds one UAPI exchange over a socket.
const uapiTimeout = 2 * time.Second

// UAPIPeer is what a WireGuard device reports about one of its peers.
type UAPIPeer struct {
	PublicKeyHex  string    // the peer's public key, hex as in the UAPI
	LastHandshake time.Time // zero when the peer never completed a handshake
	RxBytes       uint64
	TxBytes       uint64
	Endpoint      string // "" when the device has no endpoint for the peer
}

// HasHandshake reports whether the peer has completed a handshake.
func (p UAPIPeer) HasHandshake() bool { return !p.LastHandshake.IsZero() }

// ReadPeers asks the WireGuard device listening on the UAPI socket sock
// (e.g. /var/run/wireguard/wg-host-a.sock) for its peers. The socket is a
// filesystem socket, so it may be read from any network namespace.
//
// The device's own private key, which the reply also carries, is skipped and
// never appears in a returned value or error.
func ReadPeers(sock string) ([]UAPIPeer, error) {
	c, err := net.DialTimeout("unix", sock, uapiTimeout)
	if err != nil {
		return nil, fmt.Errorf("wireguard uapi %s: %w", sock, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(uapiTimeout)); err != nil {
		return nil, fmt.Errorf("wireguard uapi %s: %w", sock, err)
	}
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return nil, fmt.Errorf("wireguard uapi %s: %w", sock, err)
	}
	peers, err := ParsePeers(c)
	if err != nil {
		return nil, fmt.Errorf("wireguard uapi %s: %w", sock, err)
	}
	return peers, nil
}

// ParsePeers reads a UAPI "get" reply up to its terminating empty line and
// returns its peers in the reply's order. Device keys (private_key,
// listen_port, ...) and peer keys it does not report are skipped; a line
// without '=', a bad number, a peer key before any public_key, errno other
// than 0 or a reply that ends before its empty line are errors, none of
// which quotes a line of the reply (it could be a key).
func ParsePeers(r io.Reader) ([]UAPIPeer, error) {
	var (
		peers     []UAPIPeer
		cur       *UAPIPeer
		sec, nsec int64
	)
	finish := func() {
		if cur == nil {
			return
		}
		if sec > 0 || nsec > 0 {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		peers = append(peers, *cur)
		cur, sec, nsec = nil, 0, 0
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			finish()
			return peers, nil
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, errors.New("malformed reply line (no '=')")
		}
		var err error
		switch key {
		case "public_key":
			finish()
			cur = &UAPIPeer{PublicKeyHex: val}
		case "errno":
			if val != "0" {
				return nil, fmt.Errorf("device returned errno=%s", val)
			}
		case "endpoint", "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes":
			if cur == nil {
				return nil, fmt.Errorf("%s before any public_key", key)
			}
			switch key {
			case "endpoint":
				cur.Endpoint = val
			case "last_handshake_time_sec":
				sec, err = strconv.ParseInt(val, 10, 64)
			case "last_handshake_time_nsec":
				nsec, err = strconv.ParseInt(val, 10, 64)
			case "rx_bytes":
				cur.RxBytes, err = strconv.ParseUint(val, 10, 64)
			case "tx_bytes":
				cur.TxBytes, err = strconv.ParseUint(val, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("bad %s: %w", key, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("reply ended before its empty line")
}

// Peers reads the peers' state from the device, sorted by name.
func (t *Tunnel) Peers() ([]PeerStatus, error) {
	s, err := t.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	// IpcGet gives the reply without the empty line that ends it on a
	// socket.
	ps, err := ParsePeers(strings.NewReader(s + "\n"))
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	names := t.peers
	t.mu.Unlock()
	return peerStatus(ps, func(pub Key) string { return names[pub] }), nil
}

// peerStatus turns a device's peers into what `vpcd status` shows, named
// by name and sorted by name.
func peerStatus(ps []UAPIPeer, name func(Key) string) []PeerStatus {
	var out []PeerStatus
	for _, p := range ps {
		var pub Key
		if b, err := hex.DecodeString(p.PublicKeyHex); err == nil && len(b) == len(pub) {
			copy(pub[:], b)
		}
		out = append(out, PeerStatus{Name: name(pub), PublicKey: pub.String(), Endpoint: p.Endpoint,
			LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
