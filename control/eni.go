package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Dynamic ENIs (SPEC §12): the vpcd-cni plugin asks the daemon of its
// host to create, look up, list and delete ENIs for containers.
const (
	// CmdENIAdd creates a dynamic ENI (Request.ENI: name, subnet, groups,
	// attachment) and answers once its program is attached and it is
	// published (Response.ENI, with address, MAC and interfaces).
	CmdENIAdd = "eni-add"
	// CmdENIDel deletes a dynamic ENI and its veth pair (Request.ENI.Name);
	// deleting one that is not there succeeds.
	CmdENIDel = "eni-del"
	// CmdENIList lists this host's dynamic ENIs (Response.ENIs), those of
	// one CNI network when Request.ENI.Attachment.Network is set.
	CmdENIList = "eni-list"
)

// ENIAttachment is what owns a dynamic ENI: a CNI network's attachment of
// one container's interface.
type ENIAttachment struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// DynamicENI is a dynamic ENI as the plugin asks for it and the daemon
// answers.
type DynamicENI struct {
	Name           string        `json:"name"`
	Subnet         string        `json:"subnet"`
	SecurityGroups []string      `json:"security_groups"`
	Attachment     ENIAttachment `json:"attachment"`

	// Filled by the daemon.
	Host string `json:"host,omitempty"`
	// Interface is the host side of the veth pair; Peer the other end,
	// in the daemon's network namespace until the plugin moves it into
	// the container's.
	Interface string `json:"interface,omitempty"`
	Peer      string `json:"peer,omitempty"`
	// Address is the ENI's address with the subnet's prefix length, e.g.
	// "10.0.1.4/24"; Gateway the subnet's router (.1).
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	MAC     string `json:"mac,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
	// Attached is whether the ENI's program is attached on this host.
	Attached bool `json:"attached,omitempty"`
}

// Codes of ENIError.
const (
	CodeUnknownSubnet = "unknown_subnet"
	CodeUnknownGroup  = "unknown_group"
	CodeSubnetFull    = "subnet_full"
	CodeFileMode      = "file_mode"     // the daemon runs from a file: no control plane
	CodeNotReady      = "not_ready"     // the daemon cannot reach its control plane (yet)
	CodeInvalid       = "invalid"       // the request itself is wrong
	CodeNameTaken     = "name_taken"    // another owner holds the ENI name
	CodeExists        = "exists"        // the attachment is set up already (ADD twice)
	CodeInternal      = "internal"      // anything else
	CodeNoDaemon      = "daemon_absent" // client side: nothing answers on the socket
)

// ENIError is a dynamic-ENI request's failure, with a code the plugin
// maps to a CNI error.
type ENIError struct {
	Code string
	Msg  string
}

func (e *ENIError) Error() string { return e.Msg }

// ENIErrorCode is err's code (CodeInternal when err is no ENIError).
func ENIErrorCode(err error) string {
	var e *ENIError
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ENIManager is a Daemon that makes dynamic ENIs.
type ENIManager interface {
	AddENI(req DynamicENI) (*DynamicENI, error)
	DeleteENI(name string) error
	ListENIs(network string) ([]DynamicENI, error)
}

// eniTimeout bounds one dynamic-ENI exchange: an ADD waits for etcd and
// for the datapath, under load (many ADDs at once) for seconds.
const eniTimeout = 60 * time.Second

// serveENI answers an eni-* request.
func serveENI(c net.Conn, d Daemon, req Request) {
	c.SetDeadline(time.Now().Add(eniTimeout))
	enc := json.NewEncoder(c)
	m, ok := d.(ENIManager)
	if !ok {
		enc.Encode(Response{Error: "this daemon makes no dynamic ENIs", Code: CodeFileMode})
		return
	}
	fail := func(err error) { enc.Encode(Response{Error: err.Error(), Code: ENIErrorCode(err)}) }
	if req.ENI == nil {
		fail(&ENIError{CodeInvalid, "request without eni"})
		return
	}
	switch req.Cmd {
	case CmdENIAdd:
		e, err := m.AddENI(*req.ENI)
		if err != nil {
			fail(err)
			return
		}
		enc.Encode(Response{ENI: e})
	case CmdENIDel:
		if err := m.DeleteENI(req.ENI.Name); err != nil {
			fail(err)
			return
		}
		enc.Encode(Response{})
	case CmdENIList:
		l, err := m.ListENIs(req.ENI.Attachment.Network)
		if err != nil {
			fail(err)
			return
		}
		enc.Encode(Response{ENIs: l})
	}
}

// AddENI asks the daemon behind socket for a dynamic ENI.
func AddENI(socket string, e DynamicENI) (*DynamicENI, error) {
	r, err := eniQuery(socket, Request{Cmd: CmdENIAdd, ENI: &e})
	if err != nil {
		return nil, err
	}
	if r.ENI == nil {
		return nil, &ENIError{CodeInternal, "daemon answered without an ENI"}
	}
	return r.ENI, nil
}

// DeleteENI asks the daemon to delete the dynamic ENI name.
func DeleteENI(socket, name string) error {
	_, err := eniQuery(socket, Request{Cmd: CmdENIDel, ENI: &DynamicENI{Name: name}})
	return err
}

// ListENIs asks for the host's dynamic ENIs of network ("" for all).
func ListENIs(socket, network string) ([]DynamicENI, error) {
	r, err := eniQuery(socket, Request{Cmd: CmdENIList, ENI: &DynamicENI{Attachment: ENIAttachment{Network: network}}})
	if err != nil {
		return nil, err
	}
	return r.ENIs, nil
}

func eniQuery(socket string, req Request) (*Response, error) {
	c, err := net.DialTimeout("unix", socket, dialTimeout)
	if err != nil {
		return nil, &ENIError{CodeNoDaemon, fmt.Sprintf("no vpcd daemon at %s: %v", socket, err)}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(eniTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, &ENIError{CodeNoDaemon, fmt.Sprintf("vpcd daemon at %s: %v", socket, err)}
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, &ENIError{CodeInternal, fmt.Sprintf("vpcd daemon at %s: %v", socket, err)}
	}
	if resp.Error != "" {
		code := resp.Code
		if code == "" {
			code = CodeInternal
		}
		return nil, &ENIError{code, resp.Error}
	}
	return &resp, nil
}
