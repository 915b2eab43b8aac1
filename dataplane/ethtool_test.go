package dataplane

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vpcd/vpcd/internal/testkit"
)

// TestSetFeatures turns veth offloads off and GRO on by name and reads
// them back; a feature this kernel lacks is skipped when it is to be off
// and an error when it is to be on.
func TestSetFeatures(t *testing.T) {
	testkit.NeedRoot(t, "creates a veth pair in a new network namespace")
	testkit.InNewNetns(t, func() {
		va := netlink.NewLinkAttrs()
		va.Name = "ft0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: va, PeerName: "ft1"}); err != nil {
			t.Fatal(err)
		}
		names, err := featureNames("ft0")
		if err != nil {
			t.Fatal(err)
		}
		before, err := features("ft0", names)
		if err != nil {
			t.Fatal(err)
		}
		if !before["tx-tcp-segmentation"] || before["rx-udp-gro-forwarding"] {
			t.Fatalf("a new veth: TSO %v, UDP GRO forwarding %v; want on, off", before["tx-tcp-segmentation"], before["rx-udp-gro-forwarding"])
		}
		want := map[string]bool{"tx-checksum-ip-generic": false, "tx-tcp-segmentation": false, "rx-gro": true, "rx-udp-gro-forwarding": true, "tx-no-such-offload": false}
		if err := setFeatures("ft0", want); err != nil {
			t.Fatal(err)
		}
		after, err := features("ft0", names)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"tx-checksum-ip-generic", "tx-tcp-segmentation", "rx-gro", "rx-udp-gro-forwarding"} {
			if after[n] != want[n] {
				t.Errorf("%s = %v after setting it to %v", n, after[n], want[n])
			}
		}
		if err := setFeatures("ft0", map[string]bool{"rx-no-such-offload": true}); err == nil {
			t.Error("turning on an offload the device lacks: no error")
		}
	})
}
