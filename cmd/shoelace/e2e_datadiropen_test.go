//go:build !windows

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A store whose database etcd cannot open (here a directory where the db file was; after a
// root `etcdutl defrag`, a file the service's user may not open) stops the server with one
// line that says so and names the data dir. It was a Go panic and a goroutine dump, exit 2.
func TestE2E_ServerOnADatabaseItCannotOpen(t *testing.T) {
	s := freshServer(t)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(s.dataDir, "etcd", "member", "snap", "db")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(db, 0o700); err != nil {
		t.Fatal(err)
	}
	c := &runner{t: t}
	r := c.run("server", "--listen", "127.0.0.1:0", "--data-dir", s.dataDir, "--log-level", "error")
	if r.code != exitError || strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("server on a db it cannot open: %s; want exit %d and no panic", r, exitError)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last line is not a JSON log line: %v\n%s", err, r.stderr)
	}
	msg, _ := last["msg"].(string)
	errText, _ := last["error"].(string)
	if !strings.Contains(msg, "the server exits") || !strings.Contains(errText, "failed to open database") ||
		last["data_dir"] != filepath.Join(s.dataDir, "etcd") {
		t.Fatalf("last line %v; want the server's line saying it exits, why, and the data dir\n%s", last, r.stderr)
	}
}
