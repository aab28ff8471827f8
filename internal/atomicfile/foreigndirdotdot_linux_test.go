//go:build linux

package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A link of root's whose target climbs back with ".." (etc/app -> world/ok/sub/..) is walked
// down to sub, each directory judged, and then back up to ok: the directory reached by ".." is
// judged too. Another user who swaps ok, a directory of root's in one all may write, for one of
// theirs after the walk passed it is refused, and nothing is written in theirs. Before, ".."
// reopened ok by its name unjudged, and the file was installed in the other user's directory.
func TestWrite_AnotherUsersDirectoryReachedByDotDotRefused(t *testing.T) {
	root := os.Geteuid() == 0
	top := t.TempDir()
	world := filepath.Join(top, "world")
	ok := filepath.Join(world, "ok")
	for _, p := range []string{world, ok, filepath.Join(ok, "sub")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(world, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(top, "app")
	if err := os.Symlink("world/ok/sub/..", link); err != nil {
		t.Fatal(err)
	}
	swapped := false
	restore := atomicfile.SetBetween(func(step string) {
		if step != ".." || swapped {
			return
		}
		swapped = true
		if err := os.Rename(ok, ok+".old"); err != nil {
			t.Error(err)
		}
		if err := os.Mkdir(ok, 0o755); err != nil {
			t.Error(err)
		}
		if root {
			if err := os.Chown(ok, foreignUID, foreignUID); err != nil {
				t.Error(err)
			}
		}
	})
	_, err := atomicfile.Write(filepath.Join(link, "x"), []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep})
	restore()
	if !swapped {
		t.Fatal(`the walk never went back up by ".."`)
	}
	if !root {
		t.Log("not root: a directory of another user's cannot be made; the process's own is installed in")
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	wantForeign(t, "Write", err, ok)
	if got := names(t, ok); len(got) != 0 {
		t.Fatalf("%s holds %v", ok, got)
	}
}
