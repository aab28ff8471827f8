package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A snapshot restored with a --root under which it holds no Shoelace store (the server it was
// taken of ran with another --root, or the default) made an etcd whose server started empty
// and made a new admin token: the restore said "restored", the data looked lost. It is refused,
// naming the root the snapshot holds, and leaves nothing behind, so that it can be run again.
func TestE2E_SnapshotRestoreOfAnotherRoot(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "e2e-restore-root/k", "v")
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)

	restore := &runner{t: t}
	for _, tc := range []struct{ root, want string }{
		{"/other/", "holds no Shoelace store under the root /other/ but one under /shoelace/: give --root /shoelace/"},
		{"other", `root "other" must start and end with '/'`},
	} {
		dir := filepath.Join(t.TempDir(), "restored")
		r := restore.fails(exitError, tc.want, "snapshot", "restore", snap, "--data-dir", dir, "--root", tc.root)
		if r.stdout != "" {
			t.Errorf("refused restore with --root %s printed %q", tc.root, r.stdout)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("refused restore with --root %s left %s: %v", tc.root, dir, err)
		}
	}
	// A data dir that was there keeps what it held, and nothing of the refused restore.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keep"), "x")
	restore.fails(exitError, "give --root /shoelace/", "snapshot", "restore", snap, "--data-dir", dir, "--root", "/other/")
	if left, _ := os.ReadDir(dir); len(left) != 1 || left[0].Name() != "keep" {
		t.Errorf("refused restore into a data dir left %v there", left)
	}
	// The root the snapshot holds restores.
	if r := restore.run("snapshot", "restore", snap, "--data-dir", dir, "--root", "/shoelace/"); r.code != 0 || !strings.Contains(r.stdout, "store id ") {
		t.Errorf("restore with the snapshot's root: %s", r)
	}
}
