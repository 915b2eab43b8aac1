package netns

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcd/vpcd/internal/testkit"
	"github.com/vpcd/vpcd/lab"
)

// testContainerd runs a container with a real runtime: Debian's
// containerd, started here with its own root, state and socket in the
// test's directory (stopped by PID), a busybox image built here and
// imported with `ctr image import`, networked by vpcd-cni through `ctr run
// --cni` in host cf1's namespace, reaching srv on cf2.
//
// ctr --cni reads the runtime's default places, /etc/cni/net.d and
// /opt/cni/bin: the test puts its configuration and the plugin there and
// removes them again.
func testContainerd(t *testing.T, l *lab.Lab) {
	testkit.NeedTools(t, "containerd", "ctr", "runc", "busybox")
	dir := t.TempDir()

	// The plugin and its configuration where ctr looks.
	installCNI(t, filepath.Join(cniTools.dir, "vpcd-cni"), fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "blue-ctr", "plugins": [
		{"type": "vpcd-cni", "subnet": "blue-web", "security_groups": ["web"], "socket": %q}]}`, l.SocketPath("cf1")))

	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ctd := startIn(t, l, lab.Host, "cf1", "containerd", "--config", filepath.Join(dir, "config.toml"))
	ctr := func(args ...string) (string, int) {
		return run(t, l, lab.Host, "cf1", append([]string{"ctr", "--address", sock}, args...)...)
	}
	testkit.WaitFor(t, 30*time.Second, "containerd answering", func() bool {
		_, code := ctr("version")
		return code == 0
	})
	defer func() {
		if t.Failed() {
			t.Logf("containerd:\n%s", lastLines(ctd.out.String(), 30))
		}
	}()

	image := filepath.Join(dir, "cfbox.tar")
	if err := writeBusyboxImage(image, "cfbox:latest"); err != nil {
		t.Fatal(err)
	}
	if out, code := ctr("image", "import", "--snapshotter", "native", image); code != 0 {
		t.Fatalf("ctr image import: exit %d: %s", code, out)
	}

	before := hostLinks(t, l, "cf1", "vc")
	script := "ip addr show eth0; ping -c 3 -W 1 10.0.1.10 && echo | nc -w 2 10.0.1.10 8080 && echo REACHED-SRV"
	out, code := ctr("run", "--rm", "--cni", "--snapshotter", "native", "docker.io/library/cfbox:latest", "cf-ctr1", "sh", "-c", script)
	if code != 0 || !strings.Contains(out, "REACHED-SRV") {
		t.Fatalf("ctr run --cni: exit %d:\n%s", code, out)
	}
	// The container had the lowest free address and the ENI's MAC.
	if !strings.Contains(out, "inet 10.0.1.") || !strings.Contains(out, "02:00:0a:00:01:") {
		t.Errorf("the container's eth0:\n%s", out)
	}
	// ctr removed the network when the container ended: DEL ran.
	if d := dynamicENIs(t, l, "cf1"); len(d) != 0 {
		t.Errorf("after the container ended: dynamic ENIs %v", d)
	}
	if after := hostLinks(t, l, "cf1", "vc"); len(after) != len(before) {
		t.Errorf("after the container ended: interfaces %v, before %v", after, before)
	}
}

// installCNI puts plugin into /opt/cni/bin and conflist into
// /etc/cni/net.d for the test; cleanup removes what it added.
func installCNI(t *testing.T, plugin, conflist string) {
	t.Helper()
	const binDir, confDir = "/opt/cni/bin", "/etc/cni/net.d"
	for _, d := range []string{binDir, confDir} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(d); os.Remove(filepath.Dir(d)) })
		}
	}
	// ctr loads the first configuration of the directory: ours must be it.
	conf := filepath.Join(confDir, "00-vpcd-cf-test.conflist")
	if entries, _ := os.ReadDir(confDir); len(entries) > 0 && entries[0].Name() < filepath.Base(conf) {
		t.Fatalf("%s holds %s, which ctr would load before the test's configuration", confDir, entries[0].Name())
	}
	if err := os.WriteFile(conf, []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(conf) })
	dst := filepath.Join(binDir, "vpcd-cni")
	if _, err := os.Stat(dst); err == nil {
		t.Fatalf("%s exists: the test does not replace an installed plugin", dst)
	}
	data, err := os.ReadFile(plugin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dst) })
}

// writeBusyboxImage writes a one-layer image in Docker's archive format
// (what `ctr image import` reads) holding busybox and its applets under
// /bin, and, when the machine's busybox is not static, the libraries it
// needs.
func writeBusyboxImage(path, tag string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dirs := map[string]bool{}
	addDir := func(d string) {
		for _, p := range parents(d) {
			if !dirs[p] {
				dirs[p] = true
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755})
			}
		}
	}
	addFile := func(src, dst string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		addDir(filepath.Dir(dst))
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: 0o755, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "etc", "run"} {
		addDir(d)
	}
	if err := addFile(bb, "bin/busybox"); err != nil {
		return err
	}
	for _, applet := range []string{"sh", "ping", "nc", "ip", "echo", "cat", "sleep"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777})
	}
	libs, err := sharedLibraries(bb)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := addFile(lib, strings.TrimPrefix(lib, "/")); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	diffID := sha256.Sum256(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": []string{"layer.tar"}}})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	out := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{"layer.tar", layer.Bytes()}, {cfgName, cfg}, {"manifest.json", manifest}} {
		if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data))}); err != nil {
			return err
		}
		if _, err := io.Copy(out, bytes.NewReader(e.data)); err != nil {
			return err
		}
	}
	return out.Close()
}

// parents lists d and its parent directories, outermost first ("a/b" →
// "a", "a/b").
func parents(d string) []string {
	d = strings.Trim(d, "/")
	if d == "" || d == "." {
		return nil
	}
	var out []string
	for i := range d {
		if d[i] == '/' {
			out = append(out, d[:i])
		}
	}
	return append(out, d)
}

// sharedLibraries lists the shared objects a binary loads (resolved paths,
// the loader included), none for a static one.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
				break
			}
		}
	}
	return libs, nil
}
