package tunnel

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePeers(t *testing.T) {
	const reply = "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n" +
		"listen_port=51820\n" +
		"public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\n" +
		"preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n" +
		"protocol_version=1\n" +
		"endpoint=198.18.0.12:51820\n" +
		"last_handshake_time_sec=1700000000\n" +
		"last_handshake_time_nsec=500\n" +
		"tx_bytes=38333\n" +
		"rx_bytes=2224\n" +
		"persistent_keepalive_interval=0\n" +
		"allowed_ip=198.18.0.12/32\n" +
		"public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376\n" +
		"protocol_version=1\n" +
		"last_handshake_time_sec=0\n" +
		"last_handshake_time_nsec=0\n" +
		"tx_bytes=0\n" +
		"rx_bytes=0\n" +
		"errno=0\n" +
		"\n" +
		"trailing=ignored\n"
	peers, err := ParsePeers(strings.NewReader(reply))
	if err != nil {
		t.Fatal(err)
	}
	want := []UAPIPeer{
		{
			PublicKeyHex:  "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33",
			LastHandshake: time.Unix(1700000000, 500),
			RxBytes:       2224,
			TxBytes:       38333,
			Endpoint:      "198.18.0.12:51820",
		},
		{PublicKeyHex: "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376"},
	}
	if len(peers) != len(want) {
		t.Fatalf("got %d peers, want %d: %+v", len(peers), len(want), peers)
	}
	for i := range want {
		if !peers[i].LastHandshake.Equal(want[i].LastHandshake) {
			t.Errorf("peer %d: handshake %v, want %v", i, peers[i].LastHandshake, want[i].LastHandshake)
		}
		peers[i].LastHandshake = want[i].LastHandshake
		if peers[i] != want[i] {
			t.Errorf("peer %d: got %+v, want %+v", i, peers[i], want[i])
		}
	}
	if !peers[0].HasHandshake() || peers[1].HasHandshake() {
		t.Errorf("HasHandshake: got %v, %v; want true, false", peers[0].HasHandshake(), peers[1].HasHandshake())
	}

	for name, bad := range map[string]string{
		"errno":     "errno=22\n\n",
		"truncated": "public_key=aa\nrx_bytes=1\n",
		"number":    "public_key=aa\nrx_bytes=x\n\n",
		"orphan":    "rx_bytes=1\n\n",
		"no equals": "private_key\n\n",
	} {
		if _, err := ParsePeers(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// The private key never shows in an error.
	_, err = ParsePeers(strings.NewReader("private_key=secretsecret\nbogus line\n\n"))
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error %v: want one that does not quote the reply", err)
	}
}

func TestReadPeersSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "wg.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if string(buf[:n]) != "get=1\n\n" {
			return
		}
		io.WriteString(c, "public_key=aa\nlast_handshake_time_sec=5\nerrno=0\n\n")
	}()
	peers, err := ReadPeers(sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].PublicKeyHex != "aa" || !peers[0].HasHandshake() {
		t.Fatalf("got %+v", peers)
	}
}

// The device's own reply (IpcGet) goes through the same parser: named and
// sorted by name, keys in base64, preshared and private keys nowhere.
func TestPeerStatusFromDevice(t *testing.T) {
	var pubB, pubC Key
	pubB[0], pubC[0] = 1, 2
	get := "private_key=aa\nlisten_port=51820\npublic_key=" + hexKey(pubC) + "\nprotocol_version=1\n" +
		"public_key=" + hexKey(pubB) + "\npreshared_key=bb\nendpoint=198.18.0.12:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\n"
	ps, err := ParsePeers(strings.NewReader(get + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[Key]string{pubB: "host-b", pubC: "host-c"}
	st := peerStatus(ps, func(k Key) string { return names[k] })
	if len(st) != 2 || st[0].Name != "host-b" || st[1].Name != "host-c" {
		t.Fatalf("peers %+v", st)
	}
	p := st[0]
	if p.PublicKey != pubB.String() || p.Endpoint != "198.18.0.12:51820" || p.RxBytes != 10 || p.TxBytes != 20 {
		t.Fatalf("peer %+v", p)
	}
	if !p.LastHandshake.Equal(time.Unix(1700000000, 5)) || !st[1].LastHandshake.IsZero() {
		t.Fatalf("handshakes %v, %v", p.LastHandshake, st[1].LastHandshake)
	}
	if peerStatus(nil, nil) != nil {
		t.Fatal("no peers: want nil, as `vpcd status --json` always printed")
	}
}

// FuzzParsePeers: a UAPI reply of any shape parses without panicking, and
// an error never quotes the device's private key.
func FuzzParsePeers(f *testing.F) {
	f.Add("public_key=" + strings.Repeat("01", 32) + "\nendpoint=198.18.0.12:51820\nlast_handshake_time_sec=5\nrx_bytes=1\n\n")
	f.Add("errno=0\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		const secret = "c2VjcmV0IGtleSBtYXRlcmlhbA"
		_, err := ParsePeers(strings.NewReader("private_key=" + secret + "\n" + s))
		if err != nil && !strings.Contains(s, secret) && strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q quotes the private key", err)
		}
	})
}
