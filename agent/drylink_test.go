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
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/app.conf
`)
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("root-only-line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The destination is the agent's link to a file not made yet in the shared directory.
	if err := os.Symlink(filepath.Join(shared, "app.conf"), filepath.Join(dir, "app.conf")); err != nil {
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
