package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A cache_dir its user cannot write (the agent runs as a user of its own, and cache_dir is in a
// directory of root's, mode 0755) passed validate without a word: run then logged "cache not
// saved" at every pass and had no last-known-good view to render when the server was away.
// validate warns, naming the directory and the user it checked as; as root, who may write
// there, it does not.
func TestE2E_ValidateWarnsOfACacheDirItsUserCannotWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run validate as nobody beside a directory of root's")
	}
	const nobody = 65534
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "shoelace-agent")
	data, err := os.ReadFile(filepath.Join(binDir, "shoelace-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "lib") // root's, mode 0755
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(out, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\ntoken: t\nappliance: web\ncache_dir: "+root+`/cache
templates:
  - contents: "x"
    destination: `+out+`/a.conf
`), 0o644); err != nil {
		t.Fatal(err)
	}
	validate := func(asNobody bool) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "validate", "--config", cfg)
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		}
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := cmd.Run(); err != nil {
			t.Fatalf("validate: %v\n%s", err, b.String())
		}
		return b.String()
	}
	got := validate(true)
	want := "cache_dir " + root + "/cache: " + root + " is not writable by uid 65534, who runs validate: an agent run as uid 65534 saves there neither its last-known-good view"
	if !strings.Contains(got, want) || !strings.Contains(got, "run validate as that user") {
		t.Errorf("validate as nobody does not warn %q:\n%s", want, got)
	}
	if got := validate(false); strings.Contains(got, "cache_dir") {
		t.Errorf("validate as root warns of cache_dir:\n%s", got)
	}
}
