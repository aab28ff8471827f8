//go:build !windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/agent"
)

// An install whose directory cannot be opened (another user's link on its way when the test is
// root, else a directory the agent may not read) names its path once. Before, it said
// "install P: install P: directory: …".
func TestAgent_InstallErrorNamesThePathOnce(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/link/a
`)
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(link, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := os.Chmod(real, 0o300); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(real, 0o755)
	}
	err := a.Once(context.Background(), "", false)
	if err == nil {
		t.Fatal("Once = nil, want the install refused")
	}
	dest := filepath.Join(dir, "link", "a")
	if !strings.Contains(err.Error(), "install "+dest+": ") || strings.Contains(err.Error(), "install "+dest+": install ") {
		t.Fatalf("Once = %v, want \"install %s: …\" once", err, dest)
	}
	if _, err := os.Stat(filepath.Join(real, "a")); !os.IsNotExist(err) {
		t.Fatalf("a written: %v", err)
	}
}

// The end of a failed command's output in the error is cut on a character boundary: output
// of three-byte characters (€) is never cut inside one. Before, the cut took the last 400
// bytes, and the error (in status, the report and the log) began with a broken character.
func TestAgent_CommandOutputCutOnACharacter(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: "for i in $(seq 200); do printf '\u20ac'; done; exit 1"
`)
	a.Once(context.Background(), "", false) // the file is in place: no error, the failure in status
	s, err := agent.LoadStatus(filepath.Join(dir, "cache"), "web")
	if err != nil {
		t.Fatal(err)
	}
	msg := s.LastError
	if !strings.Contains(msg, "exited with status 1") || !strings.Contains(msg, "€€€") {
		t.Fatalf("last error %q, want the command's output in it", msg)
	}
	if !utf8.ValidString(msg) || strings.ContainsRune(msg, utf8.RuneError) {
		t.Fatalf("error cut inside a character: %q", msg)
	}
	if got := read(t, filepath.Join(dir, "a")); got != "a=1" {
		t.Fatalf("a = %q", got)
	}
}
