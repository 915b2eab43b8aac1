// Package etcdtest runs a real etcd server (Debian's etcd-server, the
// `etcd` binary) for tests: on loopback or any address, on free ports,
// with a temporary data directory, optionally with TLS client
// certificates it generates, stopped by PID in the test's cleanup. It
// also has a TCP proxy that can cut a client off from etcd.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/controlplane"
)

// Options configure Start; the zero value is a plain etcd on 127.0.0.1.
type Options struct {
	// Host is the address etcd listens on; "127.0.0.1" when empty.
	Host string
	// ClientPort and PeerPort; free ones when zero.
	ClientPort, PeerPort int
	// TLS makes etcd require client certificates signed by a CA the
	// server generates (Server.TLS holds the files).
	TLS bool
	// Wrap is put before the etcd command, e.g. {"nsenter", "--net=/run/netns/x"}.
	Wrap []string
	// Dir holds data, certificates and the log; a t.TempDir() when empty.
	Dir string
}

// Server is a running (or stopped) etcd.
type Server struct {
	t       testing.TB
	opts    Options
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	// TLS files when Options.TLS: CA, server and a client certificate.
	TLS *controlplane.TLSFiles
}

// Start starts etcd and waits until it answers; the test fails (not
// skips) when the etcd binary is missing. Cleanup stops it.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatalf("etcd binary not found (install Debian's etcd-server): %v", err)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.ClientPort == 0 {
		opts.ClientPort = FreePort(t, opts.Host)
	}
	if opts.PeerPort == 0 {
		opts.PeerPort = FreePort(t, opts.Host)
	}
	s := &Server{t: t, opts: opts, dataDir: filepath.Join(opts.Dir, "data"), logPath: filepath.Join(opts.Dir, "etcd.log")}
	if opts.TLS {
		files, err := controlplane.GenerateTLS(opts.Dir, opts.Host)
		if err != nil {
			t.Fatal(err)
		}
		s.TLS = files
	}
	t.Cleanup(func() { s.Stop() })
	s.Restart()
	return s
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string {
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.ClientPort))
}

// Config is a controlplane.Config for this server (with the client
// certificate when TLS).
func (s *Server) Config() controlplane.Config {
	c := controlplane.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second}
	if s.TLS != nil {
		c.CAFile, c.CertFile, c.KeyFile = s.TLS.CA, s.TLS.ClientCert, s.TLS.ClientKey
	}
	return c
}

// Client opens a client, closed in cleanup.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.Config().Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// PID is the running etcd's process id (0 when stopped).
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Restart starts etcd on the same data directory and ports (after
// Stop), and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("etcdtest: Restart of a running etcd")
	}
	peer := "http://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.PeerPort))
	args := []string{"etcd",
		"--name", "default",
		"--data-dir", s.dataDir,
		"--listen-client-urls", s.Endpoint(),
		"--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default=" + peer,
		"--initial-cluster-state", "new",
		"--logger", "zap", "--log-outputs", s.logPath,
	}
	if s.opts.TLS {
		args = append(args, "--cert-file", s.TLS.ServerCert, "--key-file", s.TLS.ServerKey,
			"--trusted-ca-file", s.TLS.CA, "--client-cert-auth")
	}
	args = append(append([]string(nil), s.opts.Wrap...), args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	s.waitReady()
}

func (s *Server) waitReady() {
	s.t.Helper()
	cli, err := s.Config().Client()
	if err != nil {
		s.t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/etcdtest-ready")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("etcd exited while starting: %v\n%s", err, tail(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("etcd did not answer within 30 s: %v\n%s", err, tail(log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills etcd (SIGKILL, by PID) and waits for it to exit. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// FreePort returns a TCP port free on host at the time of the call.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return fmt.Sprintf("%s", b)
}
