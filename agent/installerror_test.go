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
	"github.com/shoelace-dev/shoelace/templates"
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

// A destination larger than any render (a sparse file of gigabytes; an existing file named by
// mistake) is not replaced, as it could not be put back if the reload failed: the install
// fails saying so, and leaves it as it was. Before, the agent read it whole into memory to
// keep it for the undo (12 GB of memory for a sparse file of 4 GiB), and replaced it.
func TestAgent_DestinationOverRenderLimitIsNotReplaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/big.conf
    command: echo ran >> $DIR/ran
`)
	big := filepath.Join(dir, "big.conf")
	size := int64(templates.DefaultMaxOutputBytes) + 1
	if err := os.WriteFile(big, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, size); err != nil {
		t.Fatal(err)
	}
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), big+" holds 67108865 bytes, over the 67108864") || !strings.Contains(err.Error(), "not read nor replaced") {
		t.Fatalf("Once = %v, want the install refused for the size of the file there", err)
	}
	fi, err := os.Stat(big)
	if err != nil || fi.Size() != size {
		t.Fatalf("big.conf: %v, %v; want it left as it was", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); !os.IsNotExist(err) {
		t.Fatalf("the command ran: %v", err)
	}
	// render --dry fails it too, and prints no diff of it.
	var out strings.Builder
	err = a.Render(context.Background(), &out, agent.DryOptions{})
	if err == nil || !strings.Contains(out.String(), "!!! "+big+": "+big+" holds 67108865 bytes") || len(out.String()) > 4096 {
		t.Fatalf("Render = %v, printed %d bytes: %.400q; want it to fail the template", err, out.Len(), out.String())
	}
}
