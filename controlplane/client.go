package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Config says how to reach etcd: the --etcd, --etcd-ca, --etcd-cert and
// --etcd-key flags of the commands.
type Config struct {
	// Endpoints are etcd client URLs, e.g. "https://10.0.0.1:2379".
	Endpoints []string
	// CAFile verifies the server's certificate; CertFile and KeyFile are
	// this client's certificate. TLS is used when any is set.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds the first connection; 5 s when zero.
	DialTimeout time.Duration
}

// SplitEndpoints splits a comma-separated --etcd value.
func SplitEndpoints(s string) []string {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// TLS returns the client TLS configuration, or nil when no file is set.
func (c Config) TLS() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate in it", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("etcd client certificate: --etcd-cert and --etcd-key come together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Client opens an etcd client. It does not wait for a connection: the
// first request does (and fails after DialTimeout when etcd is not there).
func (c Config) Client() (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(cfg)
}

// ClientConfig is the etcd client configuration Client uses, for a caller
// that adds to it (fleetsim counts requests with dial options).
func (c Config) ClientConfig() (clientv3.Config, error) {
	if len(c.Endpoints) == 0 {
		return clientv3.Config{}, errors.New("etcd: no endpoint")
	}
	tlsCfg, err := c.TLS()
	if err != nil {
		return clientv3.Config{}, err
	}
	timeout := c.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	return clientv3.Config{
		Endpoints:   c.Endpoints,
		TLS:         tlsCfg,
		DialTimeout: timeout,
		// Keepalive pings find a dead connection while a watch is idle.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// The client library's own logs would go to stderr as JSON;
		// vpcd reports what matters through its own logger and metrics.
		Logger: zap.NewNop(),
	}, nil
}
