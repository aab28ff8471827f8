//go:build !windows

package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `make peers` gives what rewriting the templates' peer goldens needs (templates/README.md): a
// real etcd and etcdctl of go.mod's version next to confd and consul-template, built from this
// checkout, go.mod and go.sum untouched. Before, it built only confd and consul-template, and the
// README sent the reader to a script outside the repository.
func TestPeers_BuildsEtcdForTheGoldens(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "templates", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "`make peers`") || strings.Contains(string(readme), "/work/") {
		t.Error("templates/README.md does not send the reader to `make peers` for the peers, or names a path outside the repository")
	}

	want, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimPrefix(strings.TrimSpace(string(want)), "v")
	modBefore, _ := os.ReadFile(filepath.Join("..", "go.mod"))
	sumBefore, _ := os.ReadFile(filepath.Join("..", "go.sum"))

	// confd and consul-template come from the module proxy: stand-ins, which the script keeps.
	dir := t.TempDir()
	for _, name := range []string{"confd", "consul-template"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := filepath.Abs(filepath.Join("peers", "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script, dir)
	cmd.Dir = t.TempDir() // from anywhere, as make peers PEERS_DIR=… may be
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/peers/build.sh: %v\n%s", err, out)
	}
	for name, args := range map[string][]string{"etcd": {"--version"}, "etcdctl": {"version"}} {
		out, err := exec.Command(filepath.Join(dir, name), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, args[0], err, out)
		}
		if !strings.Contains(string(out), " "+version+"\n") {
			t.Errorf("%s %s: %q, want version %s", name, args[0], out, version)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "confd")); string(b) != "#!/bin/sh\n" {
		t.Error("the script rebuilt a confd that was there")
	}
	modAfter, _ := os.ReadFile(filepath.Join("..", "go.mod"))
	sumAfter, _ := os.ReadFile(filepath.Join("..", "go.sum"))
	if !bytes.Equal(modBefore, modAfter) || !bytes.Equal(sumBefore, sumAfter) {
		t.Error("scripts/peers/build.sh changed go.mod or go.sum")
	}
}
