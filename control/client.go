package control

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// Timeouts of the client: to reach the daemon, and for a whole status
// exchange.
const (
	dialTimeout  = 3 * time.Second
	queryTimeout = 10 * time.Second
)

// QueryStatus asks the daemon behind socket for its status.
func QueryStatus(socket string) (*Status, error) { return query(socket, Request{Cmd: CmdStatus}) }

// QueryConntrack asks for the status with every tracked connection.
func QueryConntrack(socket string) (*Status, error) {
	return query(socket, Request{Cmd: CmdStatus, Conntrack: true})
}

// Reload asks the daemon to read its topology again and returns its
// status once the result is applied (or refused: the daemon logs and
// counts a refusal; the status is the unchanged one).
func Reload(socket string) (*Status, error) { return query(socket, Request{Cmd: CmdReload}) }

// RotateKey asks the daemon to make a new key pair and publish its public
// key; it returns the status with the new key.
func RotateKey(socket string) (*Status, error) { return query(socket, Request{Cmd: CmdRotateKey}) }

func query(socket string, req Request) (*Status, error) {
	c, err := net.DialTimeout("unix", socket, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("no daemon at %s: %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(queryTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("daemon at %s: %w", socket, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("daemon at %s: %s", socket, resp.Error)
	}
	return resp.Status, nil
}

// Monitor streams the daemon's events to fn until fn returns false or the
// daemon goes away.
func Monitor(socket string, fn func(Event) bool) error {
	c, err := net.DialTimeout("unix", socket, dialTimeout)
	if err != nil {
		return fmt.Errorf("no daemon at %s: %w", socket, err)
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(Request{Cmd: CmdMonitor}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("daemon at %s: %w", socket, err)
		}
		if !fn(ev) {
			return nil
		}
	}
}
