//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// The agent's own files in cache_dir are never written where a link planted there leads, and
// are owned by the agent whoever owned the name before: whoever could write cache_dir must not
// get the view's secrets, nor have another file clobbered.
func TestAgent_CacheDirLinkAndForeignFile(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := agent.CachePath(cacheDir, "web")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	c := agent.Cached{Appliance: "web", Store: "s", Revision: 3, Keys: map[string]string{"secrets/pw": "s3cret-value"}}
	if err := agent.SaveCache(cacheDir, c); err != nil {
		t.Fatal(err)
	}
	if got := read(t, victim); got != "precious\n" {
		t.Fatalf("the cache was written through the link planted in cache_dir: victim holds %q", got)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || !strings.Contains(read(t, path), "s3cret-value") {
		t.Fatalf("cache file after a planted link: %v %v", fi, err)
	}

	if os.Getuid() != 0 {
		t.Log("not root: the owner of a planted file cannot be made another user's; that part is not checked")
		return
	}
	// A file planted under the name by another user: the cache does not keep its owner.
	os.Remove(path)
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := agent.SaveCache(cacheDir, c); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
		t.Fatalf("the cache, with its secrets, is owned by %d:%d, the planted file's owner; want the agent's %d:%d",
			st.Uid, st.Gid, os.Getuid(), os.Getgid())
	}
}
