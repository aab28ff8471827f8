package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowFront passes requests on to s, and the answers back in chunks of chunk bytes, pause apart,
// as a server across a slow link sends a large snapshot. With stall it sends the first chunk
// and then nothing, as a server that hangs mid-answer.
func slowFront(t *testing.T, s *testServer, chunk int64, pause time.Duration, stall bool) *httptest.Server {
	t.Helper()
	upstream := s.url()
	f := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, chunk)
		for {
			n, err := io.ReadFull(resp.Body, buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
			if stall {
				select {
				case <-r.Context().Done():
				case <-time.After(30 * time.Second):
				}
				return
			}
			time.Sleep(pause)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// TestE2E_SnapshotSlowerThanTimeout: --timeout (30 s by default) bounded the whole stream of
// snapshot save, so that the runbook's hourly backup of a store whose snapshot takes longer to
// cross the link (41 MB at 1 MB/s, tried) failed after 30 s with "cannot reach the server:
// context deadline exceeded", exit 6, from a server that was sending all along. --timeout now
// bounds each wait for the server: its answer to start, each pause in it.
func TestE2E_SnapshotSlowerThanTimeout(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	dir := t.TempDir()
	c.ok("snapshot", "save", filepath.Join(dir, "direct.db"))
	fi, err := os.Stat(filepath.Join(dir, "direct.db"))
	if err != nil {
		t.Fatal(err)
	}
	// About 20 chunks, 200 ms apart: 4 s in all, over --timeout 1s; no pause comes near it.
	chunk := max(fi.Size()/20, 1024)
	slow := slowFront(t, s, chunk, 200*time.Millisecond, false)
	snap := filepath.Join(dir, "slow.db")
	start := time.Now()
	r := c.with("SHOELACE_ADDR="+slow.URL).run("snapshot", "save", snap, "--timeout", "1s")
	took := time.Since(start)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "saved "+snap+" (") {
		t.Fatalf("snapshot save through a slow link: %s (after %s)", r, took)
	}
	if took < 2*time.Second {
		t.Fatalf("the snapshot came in %s: the test did not slow it past --timeout", took)
	}

	// A server that stops sending is still given up on after --timeout, and nothing is saved.
	stalled := slowFront(t, s, chunk, 0, true)
	part := filepath.Join(dir, "stalled.db")
	start = time.Now()
	c.with("SHOELACE_ADDR="+stalled.URL).fails(exitUnavailable, "(--timeout 1s)", "snapshot", "save", part, "--timeout", "1s")
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("a stalled snapshot was given up on after %s, want about --timeout", took)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("a stalled snapshot saved %s: %v", part, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("snapshot save left %q", left)
	}
}

// TestE2E_ExportSlowerThanTimeout: export, the runbook's other hourly backup, was cut off by
// --timeout as snapshot save was (after 30 s, exit 6, of a 41 MB store at 1 MB/s, tried).
func TestE2E_ExportSlowerThanTimeout(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "e2eslowexport/a", strings.Repeat("x", 64<<10))
	direct := c.ok("export")
	slow := slowFront(t, s, max(int64(len(direct))/20, 1024), 200*time.Millisecond, false)
	start := time.Now()
	r := c.with("SHOELACE_ADDR="+slow.URL).run("export", "--timeout", "1s")
	took := time.Since(start)
	if r.code != 0 || !strings.Contains(r.stdout, `"e2eslowexport/a"`) {
		t.Fatalf("export through a slow link: %s (after %s)", r, took)
	}
	if took < 2*time.Second {
		t.Fatalf("the export came in %s: the test did not slow it past --timeout", took)
	}
	stalled := slowFront(t, s, 1024, 0, true)
	c.with("SHOELACE_ADDR="+stalled.URL).fails(exitUnavailable, "(--timeout 1s)", "export", "--timeout", "1s")
}

// TestE2E_ListSlowerThanTimeout: kv ls of a large prefix is taken whole across a slow link, as
// export is; a listing that stops coming is given up on after --timeout.
func TestE2E_ListSlowerThanTimeout(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	for i := range 4 {
		c.ok("kv", "put", fmt.Sprintf("e2eslowlist/k%d", i), strings.Repeat("x", 16<<10))
	}
	direct := c.ok("kv", "ls", "e2eslowlist", "-o", "json")
	slow := slowFront(t, s, max(int64(len(direct))/20, 1024), 200*time.Millisecond, false)
	start := time.Now()
	r := c.with("SHOELACE_ADDR="+slow.URL).run("kv", "ls", "e2eslowlist", "-o", "json", "--timeout", "1s")
	took := time.Since(start)
	if r.code != 0 || !strings.Contains(r.stdout, `"e2eslowlist/k3"`) {
		t.Fatalf("kv ls through a slow link: %s (after %s)", r, took)
	}
	if took < 2*time.Second {
		t.Fatalf("the listing came in %s: the test did not slow it past --timeout", took)
	}
	stalled := slowFront(t, s, 1024, 0, true)
	c.with("SHOELACE_ADDR="+stalled.URL).fails(exitUnavailable, "(--timeout 1s)", "kv", "ls", "e2eslowlist", "-o", "json", "--timeout", "1s")
}
