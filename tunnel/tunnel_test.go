package tunnel

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseKey(k.String())
	if err != nil || p != k {
		t.Fatalf("ParseKey(String()) = %v, %v", p, err)
	}
	if k.PublicKey() == k || k.PublicKey() == (Key{}) {
		t.Fatal("public key not derived")
	}
	if _, err := ParseKey("AAAA"); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestLoadOrCreateKeyMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %o, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || k2 != k1 {
		t.Fatalf("second load gave a different key (%v)", err)
	}
	os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o644)
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("world-readable key accepted: %v", err)
	}
}

func TestDeviceName(t *testing.T) {
	if got := DeviceName("a-very-long-host-name"); len(got) != 15 || !strings.HasPrefix(got, "wg-a-very") {
		t.Fatalf("DeviceName = %q", got)
	}
}

// One end of every pair initiates first, whichever end asks.
func TestLeadsOnePerPair(t *testing.T) {
	for i := 0; i < 50; i++ {
		a, _ := GeneratePrivateKey()
		b, _ := GeneratePrivateKey()
		ta := &Tunnel{pub: a.PublicKey()}
		tb := &Tunnel{pub: b.PublicKey()}
		if ta.leads(tb.pub) == tb.leads(ta.pub) {
			t.Fatalf("pair %d: both or neither lead", i)
		}
	}
}

func TestReadKeyFileMode(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "psk")
	if err := WriteKeyFile(p, k); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadKeyFile(p); err != nil || got != k {
		t.Fatalf("mode 0600: %v, %v", got, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o620, 0o400 | 0o004} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadKeyFile(p)
		want := fmt.Sprintf("preshared key %s: mode %04o gives group or others access, want 0600", p, mode)
		if err == nil || err.Error() != want {
			t.Errorf("mode %04o: error %v, want %q", mode, err, want)
		}
	}
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(p); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}
