//go:build !windows

package server

import (
	"context"
	"net"
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
	cfg := serveConfig(t, filepath.Join(dir, "admin.token"))
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

// An admin token file whose kept name cannot be made (here, one too long for the file system:
// the name plus ".replaced-TIME" is over 255 bytes) stops the first start with an error that
// names it, and the store is left without an admin token, so that the start after the operator
// moved the file makes one. Before, the admin token was stored first and its secret then
// thrown away: every later start found a token in the store and wrote none, locked out for good.
func TestServe_AdminTokenFileNotKeptStoresNoToken(t *testing.T) {
	dir := t.TempDir()
	cfg := serveConfig(t, filepath.Join(dir, strings.Repeat("a", 235)))
	const old = "sl_the-only-admin-token-of-another-store\n"
	if err := os.WriteFile(cfg.AdminTokenFile, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- Serve(context.Background(), ln, cfg, testutil.Logger()) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "keep the token already in") {
			t.Fatalf("first start: %v, want the error of keeping the old token", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the first start did not stop on the token file it could not keep")
	}
	if b, err := os.ReadFile(cfg.AdminTokenFile); err != nil || string(b) != old {
		t.Fatalf("the old token file = %q, %v; want it as it was", b, err)
	}
	// The operator moves the old token away and starts again.
	if err := os.Rename(cfg.AdminTokenFile, filepath.Join(dir, "old.token")); err != nil {
		t.Fatal(err)
	}
	s := serve(t, cfg)
	var token string
	waitFor(t, "the admin token made at the second start", func() bool {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		token = strings.TrimSpace(string(b))
		return err == nil && token != ""
	})
	if res, body := s.req(t, token, "PUT", "/v1/kv/shared/a", "1"); res.StatusCode != 200 {
		t.Fatalf("write with the new admin token: %d %s", res.StatusCode, body)
	}
}

// TestBootstrap_AdminTokenLeftSwappedForALink: whoever may write the directory of the admin token
// file (one shared, or /tmp on a system that follows anyone's links there) may swap a symbolic
// link in for a file named as a temp file of the admin token's secret once a starting server
// listed them. The link, leading to the temp file an earlier run left, was followed, found to
// hold the admin token's secret and renamed over the admin token file; that temp file, old, was
// then removed as a secret the store does not hold (the one the store holds was installed),
// leaving the admin token file a link, someone else's, to nothing: nobody had the secret.
func TestBootstrap_AdminTokenLeftSwappedForALink(t *testing.T) {
	first := newFixture(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "admin.token")
	id := []byte(first.st.ID())
	left := leftSecret(t, file, first.token, id, true)
	// Named as a temp file of the same store, listed before the one left.
	planted := filepath.Join(dir, "."+filepath.Base(file)+".tmp"+storeTag(id)+"-0")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	afterLeftSecretsList = func() {
		if err := os.Remove(planted); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(left, planted); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterLeftSecretsList = nil }()

	next := newFixtureOn(t, first.st, func(c *Config) { c.AdminTokenFile = file })
	if fi, err := os.Lstat(file); err != nil {
		t.Fatal(err)
	} else if !fi.Mode().IsRegular() {
		t.Fatalf("%s after the next start is %s, want a regular file", file, fi.Mode().Type())
	}
	if next.token != first.token {
		t.Fatalf("%s holds %q after the next start, want the stored admin token's secret", file, next.token)
	}
}
