package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/controlplane/etcdtest"
)

// TestApplyGet drives `vpcd apply` and `vpcd get` against a real etcd.
func TestApplyGet(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	ep := srv.Endpoint()
	rev := func() int64 {
		r, err := cli.Get(context.Background(), "/")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}

	for _, c := range []string{"apply", "get"} {
		if out, _, code := vpcd(t, c, "--help"); code != 0 || !strings.Contains(out, "--etcd") {
			t.Errorf("%s --help: exit %d\n%s", c, code, out)
		}
	}

	// An invalid file: validate's lines, exit 1, etcd untouched.
	before := rev()
	_, wantErr, wantCode := vpcd(t, "validate", "--config", "../../topology/testdata/broken.yaml")
	_, gotErr, code := vpcd(t, "apply", "--etcd", ep, "-f", "../../topology/testdata/broken.yaml")
	if code != 1 || wantCode != 1 || gotErr != wantErr {
		t.Fatalf("apply of a broken file: exit %d, stderr\n%s\nwant exit 1 and validate's\n%s", code, gotErr, wantErr)
	}
	if rev() != before {
		t.Fatal("apply of a broken file touched etcd")
	}
	// Validated before anything of etcd is used: an etcd that is not
	// there, with a CA file that is not there either, changes nothing.
	_, gotErr, code = vpcd(t, "apply", "--etcd", "http://127.0.0.1:1", "--etcd-ca", "/nonexistent/ca.pem", "--timeout", "1m",
		"-f", "../../topology/testdata/broken.yaml")
	if code != 1 || gotErr != wantErr {
		t.Fatalf("apply of a broken file without etcd: exit %d, stderr\n%s\nwant exit 1 and validate's\n%s", code, gotErr, wantErr)
	}

	out, errOut, code := vpcd(t, "apply", "--etcd", ep, "-f", "../../topology/testdata/example.yaml", "--dry-run")
	if code != 0 || !strings.Contains(out, "created enis/") || !strings.Contains(out, "nothing written") || rev() != before {
		t.Fatalf("apply --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = vpcd(t, "apply", "--etcd", ep, "-f", "../../topology/testdata/example.yaml")
	if code != 0 || !strings.Contains(out, "created enis/") || !strings.Contains(out, "generation 1") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ = vpcd(t, "apply", "--etcd", ep, "-f", "../../topology/testdata/example.yaml"); strings.TrimSpace(out) != "no change" {
		t.Fatalf("second apply: %s", out)
	}

	out, errOut, code = vpcd(t, "get", "--etcd", ep, "enis")
	if code != 0 || !strings.HasPrefix(out, "NAME") || strings.Count(out, "\n") < 2 {
		t.Fatalf("get enis: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = vpcd(t, "get", "--etcd", ep, "hosts", "--json")
	var res controlplane.GetResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Items) == 0 || *res.Items[0].Live {
		t.Fatalf("get hosts --json: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code = vpcd(t, "get", "--etcd", ep, "enis", "no-such-eni"); code != 1 {
		t.Errorf("get of a missing eni: exit %d, want 1", code)
	}
	if _, _, code = vpcd(t, "get", "--etcd", ep, "gizmos"); code != 1 {
		t.Errorf("get of an unknown kind: exit %d, want 1", code)
	}
}
