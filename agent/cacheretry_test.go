//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

// A cache (and status file) that could not be written (a full disk, a read-only file system;
// here a directory in the cache file's place) is written once it can be, without waiting for
// the next view. Before, the failed write was dropped: until the view changed again the cache
// kept an older view, which a start while the server is away renders over newer files.
func TestAgent_RunCacheNotSavedIsTriedAgain(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	cacheDir := filepath.Join(dir, "cache")
	if err := os.MkdirAll(agent.CachePath(cacheDir, "web"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(agent.StatusPath(cacheDir, "web"), 0o700); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the cache write to fail", func() bool { return strings.Contains(logs.String(), "cache not saved") })
	if err := os.Remove(agent.CachePath(cacheDir, "web")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(agent.StatusPath(cacheDir, "web")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache written again", func() bool {
		c, err := agent.LoadCache(cacheDir, "web")
		return err == nil && c.Keys["a"] == "1"
	})
	waitFor(t, "the status written again", func() bool {
		s, err := agent.LoadStatus(cacheDir, "web")
		return err == nil && s.Revision == 10
	})
}

// The temp files a killed run left in cache_dir (a cache, status, owed record or token being
// written: the view's secrets, a token) are removed at the next start, as those next to the
// destinations are. Before, they stayed for good, with the secrets of a view long replaced.
func TestAgent_RunRemovesWhatAKilledRunLeftInCacheDir(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	cacheDir := filepath.Join(dir, "cache")
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		t.Fatal(err)
	}
	plant := func(name string, age time.Duration) string {
		p := filepath.Join(cacheDir, name)
		if err := os.WriteFile(p, []byte(`{"keys":{"secrets/pw":"old-secret"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var left []string
	for _, p := range []string{agent.CachePath(cacheDir, "web"), agent.StatusPath(cacheDir, "web"), agent.OwedPath(cacheDir, "web"),
		agent.InstanceTokenPath(cacheDir, "web"), agent.EnrollKeyPath(cacheDir, "web")} {
		left = append(left, plant("."+filepath.Base(p)+".shoelace-1234", time.Minute))
	}
	kept := []string{plant(".other.json.shoelace-1", time.Hour), plant(".web.json.shoelace-99", -time.Minute)}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	for _, p := range left {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left by a killed run is still there (%v)", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if !strings.Contains(logs.String(), ".web.json.shoelace-1234") {
		t.Errorf("the removal is not logged:\n%s", logs.String())
	}
}
