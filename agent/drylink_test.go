//go:build !windows

package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// render --dry reads the file a destination's link leads to as the install reaches it, not by
// name after its check: a link that another user plants where the destination's link leads
// (a file not made yet in a directory all may write, as /tmp), between the check and the read,
// is not followed, and what it leads to (a file only root may read) is not printed in the
// diff. Before, the dry run judged the way to the file, then read it by name, following
// whatever link was there by then, and printed that file's lines.
func TestAgent_RenderDryReadsNothingThroughALinkPlantedAfterItsCheck(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, oneAppConf)
	// The destination is the agent's link to a file not made yet in the shared directory.
	shared := linkedIntoShared(t, dir, "app.conf")
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("root-only-line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	planted := false
	defer agent.SetDryChecked(func(string) {
		if planted {
			return
		}
		planted = true
		at := filepath.Join(shared, "app.conf")
		if err := os.Symlink(victim, at); err != nil {
			t.Error(err)
		}
		if os.Geteuid() != 0 {
			t.Log("not root: a link of another user's cannot be made; the link planted is the agent's user's own")
		} else if err := os.Lchown(at, 4242, 4242); err != nil {
			t.Error(err)
		}
	})()
	var out bytes.Buffer
	a.Render(context.Background(), &out, agent.DryOptions{})
	if !planted {
		t.Fatalf("the dry run never reached its read:\n%s", out.String())
	}
	if os.Geteuid() == 0 && strings.Contains(out.String(), "root-only-line") {
		t.Fatalf("render --dry printed the file another user's link leads to:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "+a=1") {
		t.Fatalf("render --dry lacks the rendered line:\n%s", out.String())
	}
	if got, err := os.ReadFile(victim); err != nil || string(got) != "root-only-line\n" {
		t.Fatalf("victim = %q, %v", got, err)
	}
}

// render --dry shows a file that another user planted where a destination's link leads, in a
// directory all may write (/tmp), as the install sees it: no file (the install replaces it with
// a new one of its own, and never puts it back). Before, its bytes were printed as they were,
// terminal escape sequences included, into the diff of a dry run by root.
func TestAgent_RenderDryShowsAFilePlantedInASharedDirectoryAsNoFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, oneAppConf)
	shared := linkedIntoShared(t, dir, "app.conf")
	planted := filepath.Join(shared, "app.conf")
	if err := os.WriteFile(planted, []byte("\x1b]0;title\x07planted-line\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	root := os.Geteuid() == 0
	if !root {
		t.Log("not root: a file of another user's cannot be made; the file is the agent's user's own")
	} else if err := os.Chown(planted, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := a.Render(context.Background(), &out, agent.DryOptions{}); err != nil {
		t.Fatalf("Render = %v\n%s", err, out.String())
	}
	if root && (strings.Contains(out.String(), "planted-line") || !strings.Contains(out.String(), "app.conf: would change (new file)")) {
		t.Fatalf("render --dry shows the planted file, want it a new file as the install makes it:\n%q", out.String())
	}
	if !strings.Contains(out.String(), "+a=1") {
		t.Fatalf("render --dry lacks the rendered line:\n%s", out.String())
	}
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(planted); err != nil || read(t, planted) != "a=1\n" || root && fi.Mode().Perm() != 0o644 {
		t.Fatalf("installed: %v, %v, want a=1 in a file of the agent's, mode 0644", fi, err)
	}
}

// oneAppConf is an agent config with one template, destination $DIR/app.conf.
const oneAppConf = header + `templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/app.conf
`

// linkedIntoShared makes dir/shared, a directory all may write, with the sticky bit (as /tmp
// is), and for each name a link dir/name that leads to shared/name, not made yet: the agent's
// destination links of the tests here. It returns the shared directory.
func linkedIntoShared(t *testing.T, dir string, names ...string) string {
	t.Helper()
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.Symlink(filepath.Join(shared, n), filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return shared
}
