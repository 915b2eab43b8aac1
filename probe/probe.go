// Package probe sends test traffic from inside a workload's namespace
// without outside tools: ICMP echo and a timed TCP transfer. Callers run
// these on a thread already switched into the namespace (lab.Lab.Do):
// sockets belong to the namespace they were made in.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// PingResult is the outcome of Ping.
type PingResult struct {
	Sent, Received int
	RTTs           []time.Duration
}

// AvgRTT is the mean round-trip time of the answered echoes.
func (r PingResult) AvgRTT() time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range r.RTTs {
		sum += d
	}
	return sum / time.Duration(len(r.RTTs))
}

// Ping sends count ICMP echo requests to dst, interval apart, waiting up to
// timeout for each answer.
func Ping(dst netip.Addr, count int, interval, timeout time.Duration) (PingResult, error) {
	var res PingResult
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return res, fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	to := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("vpcd-probe")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return res, err
		}
		start := time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			return res, fmt.Errorf("ping %s: %w", dst, err)
		}
		res.Sent++
		deadline := start.Add(timeout)
		for {
			c.SetReadDeadline(deadline)
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: this one is lost
			}
			if from.String() != dst.String() {
				continue
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
				res.Received++
				res.RTTs = append(res.RTTs, time.Since(start))
				break
			}
		}
		if seq < count {
			time.Sleep(interval)
		}
	}
	return res, nil
}

// Listen opens a TCP sink on addr that accepts one connection, reads it to
// the end and reports the byte count on the returned channel.
func Listen(addr string) (net.Listener, <-chan int64, error) {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, nil, err
	}
	got := make(chan int64, 1)
	go func() {
		defer close(got)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	return l, got, nil
}

// Transfer connects to addr and sends size bytes, returning the achieved
// rate in bits per second of payload.
func Transfer(ctx context.Context, addr string, size int64) (float64, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	var sent int64
	for sent < size {
		n := int64(len(buf))
		if size-sent < n {
			n = size - sent
		}
		w, err := c.Write(buf[:n])
		sent += int64(w)
		if err != nil {
			return 0, err
		}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	// Wait for the peer to close: all bytes were received.
	one := make([]byte, 1)
	if _, err := c.Read(one); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	secs := time.Since(start).Seconds()
	return float64(sent*8) / secs, nil
}

// Connect tries a TCP connection to addr and reports whether it opened.
func Connect(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp4", addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}
