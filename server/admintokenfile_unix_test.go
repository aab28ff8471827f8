//go:build !windows

package server

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A FIFO at --admin-token-file (planted, or left by a tool that pipes the token somewhere) is
// no token to keep: the first start writes its admin token there and serves. Before, looking
// for a token to keep read the FIFO and waited for a writer for good: the server never served
// and SIGTERM did not stop it.
func TestServe_AdminTokenFileFIFONeverHangs(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.EtcdEndpoints = testutil.Etcd(t)
	cfg.Root = testutil.Root(t)
	cfg.DataDir = ""
	cfg.AdminTokenFile = filepath.Join(dir, "admin.token")
	if err := syscall.Mkfifo(cfg.AdminTokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	// Should the server wait on the FIFO, a writer that comes and goes after a while lets it
	// go on, so that the test fails instead of hanging.
	done := make(chan struct{})
	var fired atomic.Bool
	go func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			fired.Store(true)
			if f, err := os.OpenFile(cfg.AdminTokenFile, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
	}()
	s := serve(t, cfg)
	var token string
	waitFor(t, "the admin token made", func() bool {
		if fi, err := os.Lstat(cfg.AdminTokenFile); err != nil || !fi.Mode().IsRegular() {
			return false
		}
		b, err := os.ReadFile(cfg.AdminTokenFile)
		token = strings.TrimSpace(string(b))
		return err == nil && token != ""
	})
	close(done)
	if fired.Load() {
		t.Fatal("the server waited on the FIFO at --admin-token-file until a writer came")
	}
	if res, body := s.req(t, token, "PUT", "/v1/kv/shared/a", "1"); res.StatusCode != 200 {
		t.Fatalf("write with the new admin token: %d %s", res.StatusCode, body)
	}
	if kept, _ := filepath.Glob(cfg.AdminTokenFile + ".replaced-*"); len(kept) != 0 {
		t.Fatalf("a FIFO was kept as a token: %v", kept)
	}
}
