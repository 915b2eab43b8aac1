package control

import (
	"errors"
	"strings"
	"testing"
)

// rotatingDaemon is a fakeDaemon that can rotate its key, or refuses to
// with err.
type rotatingDaemon struct {
	fakeDaemon
	rotations int
	err       error
}

func (d *rotatingDaemon) RotateKey() error {
	if d.err != nil {
		return d.err
	}
	d.rotations++
	return nil
}

// TestRotateKey: rotate-key reaches a daemon that can rotate and answers
// with its status; a daemon's refusal (file mode) comes back as one line;
// a daemon that cannot rotate at all says so.
func TestRotateKey(t *testing.T) {
	d := &rotatingDaemon{fakeDaemon: fakeDaemon{hub: NewHub(nil)}}
	sock := serve(t, d)
	st, err := RotateKey(sock)
	if err != nil || st == nil || st.Host != "h1" || d.rotations != 1 {
		t.Fatalf("rotate-key: %+v %v, rotations %d", st, err, d.rotations)
	}
	d.err = errors.New("rotate-key needs the etcd control plane")
	if _, err := RotateKey(sock); err == nil || !strings.Contains(err.Error(), "etcd control plane") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("refused rotate-key: %v, want the daemon's one line", err)
	}
	plain := serve(t, &fakeDaemon{hub: NewHub(nil)})
	if _, err := RotateKey(plain); err == nil || !strings.Contains(err.Error(), "cannot rotate") {
		t.Fatalf("rotate-key on a daemon without it: %v", err)
	}
}
