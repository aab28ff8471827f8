//go:build !windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A destination's missing directories are not made where another user's symbolic link on the
// way leads: the install refuses to follow that link, and so does the making of its
// directories. Before, the agent (root) made them first, through the link (a /root/.ssh for a
// destination under a service user's directory), and only then refused the install.
func TestAgent_MissingDirsNotMadeThroughAnotherUsersLink(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/www/site/.ssh/authorized_keys
`)
	www, victim := filepath.Join(dir, "www"), filepath.Join(dir, "victim")
	for _, d := range []string{www, victim} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(www, 0o777); err != nil {
		t.Fatal(err)
	}
	// Planted after the config was loaded (and judged): by another user when the test is root.
	if err := os.Symlink(victim, filepath.Join(www, "site")); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: a link of another user's cannot be made; only the part with the agent's own link is checked")
	} else if err := os.Lchown(filepath.Join(www, "site"), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 templates not in place") {
		t.Fatalf("Once = %v, want the template not in place", err)
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Fatalf("the agent made %s in %s, where the link leads", ents[0].Name(), victim)
	}
}
