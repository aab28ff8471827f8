package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// A second server on the data dir of a running one is refused at once, naming the lock; the
// line said "server: open store: open store: start embedded etcd in …", the step twice.
func TestE2E_ServerOnADataDirInUse(t *testing.T) {
	s := freshServer(t)
	c := &runner{t: t}
	r := c.run("server", "--listen", "127.0.0.1:0", "--data-dir", s.dataDir, "--log-level", "error")
	want := "shoelace: server: open store: start embedded etcd in " + filepath.Join(s.dataDir, "etcd") + ": data dir is in use by another process"
	if r.code != exitError || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "open store") != 1 {
		t.Fatalf("second server on %s: %s; want exit %d saying %q once", s.dataDir, r, exitError, want)
	}
}
