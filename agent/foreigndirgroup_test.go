//go:build !windows

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A directory on a destination's way written by its owner and by its owner's private group
// alone (a user's directory under umask 002, 0775) is written by no one else, as cache_dir's
// parents are judged: root's agent installs in another user's directory under it. A group with
// another member, or a directory all may write, is refused as before. Before, any group-writable
// directory counted as one others may write, and the install was refused.
func TestInstall_DirectoryWrittenByItsOwnersPrivateGroupAloneIsNotOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: a directory of another user's cannot be made; the agent's user's own is installed in")
	}
	root := os.Geteuid() == 0
	home := t.TempDir()
	dev := mkdir(t, filepath.Join(home, "dev"), 0o775) // as /home/dev under umask 002
	app := mkdir(t, filepath.Join(dev, "app"), 0o775)
	if root {
		for _, p := range []string{dev, app} {
			if err := os.Chown(p, 4242, 4242); err != nil {
				t.Fatal(err)
			}
		}
	}
	x := filepath.Join(app, "x")
	keep := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}
	accountFiles(t, "dev:x:4242:4242::/home/dev:/bin/sh\n", "dev:x:4242:\n")
	if _, err := atomicfile.Write(x, []byte("a\n"), keep); err != nil {
		t.Fatalf("install under a directory of its owner's private group: %v", err)
	}
	if got, _ := os.ReadFile(x); string(got) != "a\n" {
		t.Fatalf("x = %q", got)
	}
	if !root {
		return
	}
	accountFiles(t, "dev:x:4242:4242::/home/dev:/bin/sh\nmallory:x:1001:1001::/:/bin/sh\n", "dev:x:4242:mallory\n")
	_, err := atomicfile.Write(x, []byte("b\n"), keep)
	var fe *atomicfile.ForeignDirError
	if !errors.As(err, &fe) || fe.Dir != app || !strings.Contains(err.Error(), "which its group may write (mode 0775") {
		t.Fatalf("install under a directory a group of two may write: %v", err)
	}
	accountFiles(t, "dev:x:4242:4242::/home/dev:/bin/sh\n", "dev:x:4242:\n")
	os.Chmod(dev, 0o777)
	if _, err := atomicfile.Write(x, []byte("b\n"), keep); !errors.As(err, &fe) || !strings.Contains(err.Error(), "which others may write (mode 0777") {
		t.Fatalf("install under a directory all may write: %v", err)
	}
	if got, _ := os.ReadFile(x); string(got) != "a\n" {
		t.Fatalf("x = %q", got)
	}
}
