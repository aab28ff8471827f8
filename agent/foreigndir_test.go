//go:build !windows

package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

const foreignDirConf = header + `templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/etc/appdir/x
    command: echo ran >> $DIR/ran
`

// A destination whose directory (reached through a link of root's, as etc/appdir -> /tmp/d) is
// another user's, in a directory all may write: that user made /tmp/d first and wrote the
// output to x there. once refuses the install, naming the directory, its owner, the directory
// it is in and what to do; the file stays as it was, nothing is written in the directory and
// the command does not run; render --dry and validate say so too. Before, the agent found x
// holding the output and left it in place, its owner's, who could rewrite root's configuration
// at will (or, with other bytes there, installed in the directory its owner may swap).
func TestAgent_AnotherUsersDirectoryWhereOthersMayWriteIsRefused(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, foreignDirConf)
	shared := filepath.Join(dir, "tmp") // as /tmp
	d := filepath.Join(shared, "d")
	x := filepath.Join(d, "x")
	for _, p := range []string{filepath.Join(dir, "etc"), shared, d} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(d, filepath.Join(dir, "etc", "appdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(x, []byte("a=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(x, 0o666); err != nil { // its owner's to rewrite
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		// The agent's user's own directory: installed in, as before.
		t.Log("not root: a directory of another user's cannot be made; the agent's user's own is installed in")
		if err := a.Once(context.Background(), "", false); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, p := range []string{d, x} {
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	wants := []string{d + " is owned by uid 4242", "in " + shared + ",", "(mode 1777)", "chown root " + d, "move the destination"}
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 templates not in place") {
		t.Fatalf("Once = %v, want the template not in place", err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("Once: %v\nlacks %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the command ran")
	}
	fi, err := os.Stat(x)
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 4242 || fi.Mode().Perm() != 0o666 {
		t.Fatalf("%s: %v, %v: want it left as its owner made it", x, fi, err)
	}
	if ents, _ := os.ReadDir(d); len(ents) != 1 {
		t.Fatalf("%s holds %d entries, want x alone", d, len(ents))
	}
	// Another output: refused the same way, nothing written.
	a2, _, _ := testAgent(t, newViewServer(t, map[string]string{"a": "2"}), strings.ReplaceAll(foreignDirConf, "$DIR", dir))
	if err := a2.Once(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), d+" is owned by uid 4242") {
		t.Fatalf("Once of another output = %v", err)
	}
	if got, _ := os.ReadFile(x); string(got) != "a=1\n" {
		t.Fatalf("%s = %q", x, got)
	}
	if ents, _ := os.ReadDir(d); len(ents) != 1 {
		t.Fatalf("%s holds %d entries, want x alone", d, len(ents))
	}
	var out bytes.Buffer
	a.Render(context.Background(), &out, agent.DryOptions{})
	if !strings.Contains(out.String(), "!!! ") || !strings.Contains(out.String(), d+" is owned by uid 4242") {
		t.Fatalf("render --dry:\n%s", out.String())
	}
	warned := strings.Join(a.Warnings(), "\n")
	for _, w := range wants {
		if !strings.Contains(warned, w) {
			t.Fatalf("validate's warnings lack %q:\n%s", w, warned)
		}
	}
}

// An application's own configuration directory, given to its user in a directory only root may
// write (/etc/app owned by appuser), is installed in by root's agent as before, its command run.
func TestAgent_ApplicationUsersDirectoryUnderRootsIsInstalledIn(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, strings.ReplaceAll(foreignDirConf, "etc/appdir/x", "etc/app/sub/x"))
	app := filepath.Join(dir, "etc", "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(app, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(app, "sub", "x")); got != "a=1\n" {
		t.Fatalf("x = %q", got)
	}
	if got := read(t, filepath.Join(dir, "ran")); got != "ran\n" {
		t.Fatalf("command: %q", got)
	}
	if w := strings.Join(a.Warnings(), "\n"); strings.Contains(w, "owned by") {
		t.Fatalf("validate warns:\n%s", w)
	}
}
