package templates

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// confdGoldens are the golden files written for confd alone: real confd must render them
// to the same bytes as Shoelace.
var confdGoldens = []string{"confd-nginx", "confd-haproxy", "confd-services", "confd-compat"}

// TestConfdParity renders the confd golden templates with the real confd (v0.16.0, etcd v3
// backend) against a real etcd holding testdata/view.json, and compares with the goldens.
// It needs the binaries of /work/shared/peers/build-peers.sh: set SHOELACE_PEERS_DIR to their
// directory. `make test` does not.
func TestConfdParity(t *testing.T) {
	dir := os.Getenv("SHOELACE_PEERS_DIR")
	if dir == "" {
		t.Skip("SHOELACE_PEERS_DIR is not set (build-peers.sh DIR builds etcd, etcdctl and confd)")
	}
	etcd, etcdctl, confd := filepath.Join(dir, "etcd"), filepath.Join(dir, "etcdctl"), filepath.Join(dir, "confd")
	tmp := t.TempDir()
	client, peer := "http://"+freeAddr(t), "http://"+freeAddr(t)
	srv := exec.Command(etcd, "--name", "parity", "--data-dir", filepath.Join(tmp, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "parity="+peer, "--log-level", "error")
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	ctl := func(args ...string) error {
		out, err := exec.Command(etcdctl, append([]string{"--endpoints", client}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("etcdctl %s: %w: %s", args[0], err, out)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for ctl("endpoint", "health") != nil {
		if time.Now().After(deadline) {
			t.Fatal("etcd did not become healthy in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	view := MustView(t)
	for k, v := range view.Keys {
		if err := ctl("put", "/"+k, "--", v); err != nil {
			t.Fatal(err)
		}
	}

	confdir := filepath.Join(tmp, "confd")
	for _, d := range []string{"conf.d", "templates", "out"} {
		if err := os.MkdirAll(filepath.Join(confdir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wants := map[string]string{}
	for _, name := range confdGoldens {
		raw, err := os.ReadFile(filepath.Join("testdata", name+".golden"))
		if err != nil {
			t.Fatal(err)
		}
		input, want, _ := strings.Cut(string(raw), goldenSep)
		wants[name] = want
		if err := os.WriteFile(filepath.Join(confdir, "templates", name+".tmpl"), []byte(input), 0o644); err != nil {
			t.Fatal(err)
		}
		toml := fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nkeys = [\"/\"]\n", name+".tmpl", filepath.Join(confdir, "out", name))
		if err := os.WriteFile(filepath.Join(confdir, "conf.d", name+".toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(confd, "-onetime", "-backend", "etcdv3", "-node", client, "-confdir", confdir, "-log-level", "error").CombinedOutput()
	if err != nil {
		t.Fatalf("confd: %v\n%s", err, out)
	}
	for _, name := range confdGoldens {
		got, err := os.ReadFile(filepath.Join(confdir, "out", name))
		if err != nil {
			t.Errorf("%s: confd wrote no output: %v", name, err)
			continue
		}
		if string(got) != wants[name] {
			t.Errorf("%s: confd renders differently from Shoelace\n--- confd\n%s\n--- shoelace (golden)\n%s", name, got, wants[name])
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
