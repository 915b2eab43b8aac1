package dataplane

import (
	"testing"

	"github.com/vpcd/vpcd/bpf"
)

// TestHookNames: every place a program reports drops from has a name.
func TestHookNames(t *testing.T) {
	for h := bpf.EniEventHookHOOK_ENI; h <= bpf.EniEventHookHOOK_UNDERLAY; h++ {
		if hookName(h) == "" {
			t.Errorf("event hook %d has no name", h)
		}
	}
}

// FuzzDecodeIPv4: the monitor's decoder of captured packet heads takes any
// bytes without panicking.
func FuzzDecodeIPv4(f *testing.F) {
	f.Add(ipv4Packet(macA, GatewayMAC, ipA, ipB, 6, false, make([]byte, 20))[14:])
	f.Add([]byte{0x4f, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev DropEvent
		decodeIPv4(&ev, b)
	})
}
