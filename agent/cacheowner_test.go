//go:build !windows

package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A cached view the agent did not write (another user's, or one others may write) is not
// rendered: whoever planted it would choose what root writes when the server is away.
func TestLoadCache_RefusesAViewNotTheAgents(t *testing.T) {
	dir := t.TempDir()
	view := `{"appliance":"web","revision":9,"store":"s","keys":{"a":"planted"}}`
	path := CachePath(dir, "web")
	if err := os.WriteFile(path, []byte(view), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCache(dir, "web"); err != nil {
		t.Fatalf("the agent's own cache: %v", err)
	}
	os.Chmod(path, 0o666)
	if _, err := LoadCache(dir, "web"); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("a cache others may write was used: %v", err)
	}
	os.Chmod(path, 0o600)
	if os.Getuid() != 0 {
		t.Skip("needs root to give the cache another owner")
	}
	os.Chown(path, 4242, 4242)
	if _, err := LoadCache(dir, "web"); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Fatalf("another user's cache was used: %v", err)
	}
	// A cache_dir of another user's is a config error.
	os.Chown(path, 0, 0)
	os.Chown(dir, 4242, 4242)
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(cfgPath, []byte("server: http://127.0.0.1:1\ntoken: x\nappliance: web\ncache_dir: "+dir+"\ntemplates:\n  - contents: x\n    destination: "+filepath.Join(t.TempDir(), "x")+"\n"), 0o600)
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Fatalf("cache_dir of another user accepted: %v", err)
	}
}

// A FIFO at the cached view's or the owed commands' name is refused at once: reading it would
// block the agent for good.
func TestLoadCache_FIFONotRead(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{CachePath(dir, "web"), OwedPath(dir, "web")} {
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 2)
	go func() { _, err := LoadCache(dir, "web"); done <- err }()
	go func() { _, err := loadOwed(dir, "web"); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("a FIFO read as the agent's file: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reading a FIFO planted in cache_dir blocked")
		}
	}
}

// TestLoadStatus_NotARegularFile: status reads the status file at a name in cache_dir, which a
// config that others may write (status judges none: it runs nothing) can point anywhere: a
// named pipe there blocked status for good, a device such as /dev/zero filled memory. Either
// is refused at once, naming what it is.
func TestLoadStatus_NotARegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(StatusPath(dir, "web"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", StatusPath(dir, "zero")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ appliance, want string }{{"web", "a named pipe (FIFO), not a regular file"}, {"zero", "a character device, not a regular file"}} {
		done := make(chan error, 1)
		go func() { _, err := LoadStatus(dir, tc.appliance); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadStatus of %s = %v, want %q", tc.appliance, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("LoadStatus of %s still reading after 10s", tc.appliance)
		}
	}
}

// A cache file larger than any view the agent could have saved (a corrupted file, a sparse
// one) is refused by its size, unread. Before, it was read whole: a 3 GiB sparse cache took
// the agent 10 GiB of memory and a minute, at a start while the server was away.
func TestLoadCache_HugeFileRefusedUnread(t *testing.T) {
	dir := t.TempDir()
	path := CachePath(dir, "web")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxCacheBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = LoadCache(dir, "web")
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "over 512 MiB") {
		t.Fatalf("LoadCache of a cache over the limit = %v, want an error naming the limit", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Fatalf("LoadCache allocated %d MiB for a cache it refuses", got>>20)
	}
}

// A cached view or record that group or others may read (written by an older version, by hand,
// or restored from a backup) holds the appliance's secrets: reading it sets it to 0600. Before,
// it stayed readable until the agent next rewrote it, which an unchanged view never makes.
func TestLoadCache_SetsAReadableFileTo0600(t *testing.T) {
	dir := t.TempDir()
	cache, owed := CachePath(dir, "web"), OwedPath(dir, "web")
	if err := os.WriteFile(cache, []byte(`{"appliance":"web","revision":9,"store":"s","keys":{"a":"secret"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(owed, []byte(`{"appliance":"web","owed":[]}`), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cache, 0o644) // whatever the umask
	os.Chmod(owed, 0o640)
	c, err := LoadCache(dir, "web")
	if err != nil || c.Keys["a"] != "secret" {
		t.Fatalf("a cache others may read but not write is the agent's own: %v %v", c, err)
	}
	if _, err := loadOwed(dir, "web"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cache, owed} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s left at mode %04o after it was read", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

// A cached view that is a hard link of another file (an operator's cp -l or a backup tool's
// restore) is read, but its mode, which is the other name's too, is left as it is: before,
// reading cache_dir/web.json set the operator's file at the other name to 0600.
func TestLoadCache_HardLinkedFileModeLeftAlone(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	theirs := filepath.Join(elsewhere, "web-backup.json")
	if err := os.WriteFile(theirs, []byte(`{"appliance":"web","revision":9,"store":"s","keys":{"a":"v"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(theirs, 0o644)
	if err := os.Link(theirs, CachePath(dir, "web")); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCache(dir, "web")
	if err != nil || c.Keys["a"] != "v" {
		t.Fatalf("the hard-linked cache was not read: %v %v", c, err)
	}
	fi, err := os.Stat(theirs)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("the file at the other name of a hard link was set to %04o by reading the cache", fi.Mode().Perm())
	}
}
