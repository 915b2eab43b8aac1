package tunnel

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard Curve25519 key (private, public or preshared).
type Key [32]byte

// String returns the key in WireGuard's base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseKey decodes a base64 WireGuard key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("key is not base64: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key has %d bytes, want 32", len(b))
	}
	copy(k[:], b)
	return k, nil
}

// GeneratePrivateKey returns a new clamped Curve25519 private key.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// PublicKey derives the public key of a private key.
func (k Key) PublicKey() Key {
	var pub Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only possible for a low-order point, which a clamped scalar times
		// the base point never is.
		panic(err)
	}
	copy(pub[:], out)
	return pub
}

// PrivateKeyFile is the name of the private key inside a state directory.
const PrivateKeyFile = "private.key"

// LoadOrCreateKey reads DIR/private.key, creating it (mode 0600, directory
// 0700) with a new key when it does not exist. A key file readable by group
// or others is refused rather than used.
func LoadOrCreateKey(dir string) (Key, error) {
	path := filepath.Join(dir, PrivateKeyFile)
	data, err := readSecret("private key", path)
	if errors.Is(err, fs.ErrNotExist) {
		k, gerr := GeneratePrivateKey()
		if gerr != nil {
			return k, gerr
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return k, fmt.Errorf("state dir %s: %w", dir, err)
		}
		if err := WriteKeyFile(path, k); err != nil {
			return k, err
		}
		return k, nil
	}
	if err != nil {
		return Key{}, fmt.Errorf("private key %s: %w", path, err)
	}
	k, err := ParseKey(string(trimSpace(data)))
	if err != nil {
		return Key{}, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes a key in base64 with mode 0600, atomically.
func WriteKeyFile(path string, k Key) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadKeyFile reads a base64 key (e.g. a preshared key) from a file. Like
// the private key, a file that group or others may access is refused rather
// than used.
func ReadKeyFile(path string) (Key, error) {
	data, err := readSecret("preshared key", path)
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(string(trimSpace(data)))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// maxKeyFile bounds what is read of a key file: a key is 44 characters.
const maxKeyFile = 4096

// readSecret reads the key file path of the given kind ("private key",
// "preshared key"). The mode is checked on the descriptor that is read, so
// the file cannot be swapped between the check and the read. A missing file
// is an error that wraps fs.ErrNotExist.
func readSecret(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s: mode %04o gives group or others access, want 0600", what, path, perm)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return data, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// DeviceName is the tunnel device name of a host in the lab: "wg-" + host,
// cut to the kernel's 15-character limit.
func DeviceName(host string) string {
	n := "wg-" + host
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}
