//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
