package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// uapiTimeout bounds one UAPI exchange.
const uapiTimeout = 2 * time.Second

// PeerState is what a WireGuard device reports about one of its peers.
type PeerState struct {
	PublicKeyHex  string    // the peer's public key, hex as in the UAPI
	LastHandshake time.Time // zero when the peer never completed a handshake
	RxBytes       uint64
	TxBytes       uint64
	Endpoint      string // "" when the device has no endpoint for the peer
}

// HasHandshake reports whether the peer has completed a handshake.
func (p PeerState) HasHandshake() bool { return !p.LastHandshake.IsZero() }

// ReadPeers asks the WireGuard device listening on the UAPI socket sock
// (e.g. /var/run/wireguard/wg-host-a.sock) for its peers. The socket is a
// filesystem socket, so it may be read from any network namespace.
//
// The device's own private key, which the reply also carries, is skipped and
// never appears in a returned value or error.
func ReadPeers(sock string) ([]PeerState, error) {
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
	peers, err := parsePeers(c)
	if err != nil {
		return nil, fmt.Errorf("wireguard uapi %s: %w", sock, err)
	}
	return peers, nil
}

// parsePeers reads a UAPI "get" reply up to its terminating empty line.
func parsePeers(r io.Reader) ([]PeerState, error) {
	var (
		peers     []PeerState
		cur       *PeerState
		sec, nsec int64
	)
	finish := func() {
		if cur == nil {
			return
		}
		if sec > 0 {
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
			// Never quote the line: it could be a key.
			return nil, errors.New("malformed reply line (no '=')")
		}
		var err error
		switch key {
		case "public_key":
			finish()
			cur = &PeerState{PublicKeyHex: val}
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
