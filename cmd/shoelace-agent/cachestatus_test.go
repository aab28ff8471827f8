//go:build !windows

package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// A view that run cannot save in cache_dir (here a directory in the cache file's place; a full
// disk or a read-only cache_dir alike) is said by status, which read "in place" with nothing
// wrong while only the log said "cache not saved", and a start while the server was away then
// had an older view or none. status says why it is not saved, in text and in --json, until a
// save succeeds once the way is clear.
func TestE2E_StatusSaysTheCacheIsNotSaved(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/a.conf
`)
	srv.put("appliances/web/v", "1")
	a := e.startAgent()
	defer a.stop(t)
	cache := e.path("cache/web.json")
	waitFor(t, "a.conf", fileIs(e.path("a.conf"), "v=1\n"))
	waitFor(t, "the cache", func() bool { return strings.Contains(readFileOr(cache), `"v":"1"`) })
	const notSaved = "last-known-good view NOT saved"
	if _, out, _ := e.agentCmd("status"); strings.Contains(out, notSaved) {
		t.Fatalf("status = %q, want nothing of the cache: it is saved", out)
	}

	if err := os.Remove(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	srv.put("appliances/web/v", "2")
	waitFor(t, "a.conf", fileIs(e.path("a.conf"), "v=2\n"))
	waitFor(t, "the cache write to fail", func() bool { return strings.Contains(a.logs.String(), `"msg":"cache not saved"`) })
	var out string
	waitFor(t, "status to say the cache is not saved", func() bool {
		_, out, _ = e.agentCmd("status")
		return strings.Contains(out, notSaved)
	})
	if !strings.Contains(out, "is a directory") || !strings.Contains(out, "a.conf: in place") {
		t.Fatalf("status = %q, want why (a directory) and a.conf in place", out)
	}
	_, js, _ := e.agentCmd("status", "--json")
	var st struct {
		Agent struct {
			CacheError string `json:"cache_error"`
		} `json:"agent"`
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil || !strings.Contains(st.Agent.CacheError, "is a directory") {
		t.Fatalf("status --json = %s (%v), want agent.cache_error saying why", js, err)
	}

	if err := os.Remove(cache); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache saved once the way is clear", func() bool { return strings.Contains(readFileOr(cache), `"v":"2"`) })
	waitFor(t, "status to say nothing of it any more", func() bool {
		_, out, _ = e.agentCmd("status")
		return !strings.Contains(out, notSaved) && strings.Contains(out, "a.conf: in place")
	})
}

// readFileOr is the file's contents, "" when it cannot be read.
func readFileOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
