package server

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestServe_AdminTokenFileInUseIsKept: a first start against a store without tokens writes its
// admin token to --admin-token-file; when that file already holds a token (that of another
// store: another --root, etcd cluster or data dir, given the same file by mistake), the old
// token is kept next to it instead of being overwritten, since its secret exists nowhere else.
func TestServe_AdminTokenFileInUseIsKept(t *testing.T) {
	t.Run("hard link", func(t *testing.T) { testAdminTokenFileInUseIsKept(t) })
	// On a file system without hard links the old token is copied: the server still starts.
	t.Run("copy", func(t *testing.T) {
		old := linkFile
		linkFile = func(string, string) error { return syscall.EPERM }
		defer func() { linkFile = old }()
		testAdminTokenFileInUseIsKept(t)
	})
}

func testAdminTokenFileInUseIsKept(t *testing.T) {
	dir := t.TempDir()
	const old = "sl_the-only-admin-token-of-another-store\n"
	cfg := serveConfig(t, filepath.Join(dir, "admin.token"))
	if err := os.WriteFile(cfg.AdminTokenFile, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, cfg)
	var token string
	waitFor(t, "the admin token made", func() bool {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		token = strings.TrimSpace(string(b))
		return err == nil && token != "" && token+"\n" != old
	})
	if res, body := s.req(t, token, "PUT", "/v1/kv/shared/a", "1"); res.StatusCode != 200 {
		t.Fatalf("write with the new admin token: %d %s", res.StatusCode, body)
	}
	kept, _ := filepath.Glob(cfg.AdminTokenFile + ".replaced-*")
	if len(kept) != 1 {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("the old admin token file was not kept next to it: %v", entries)
	}
	b, err := os.ReadFile(kept[0])
	if err != nil || string(b) != old {
		t.Fatalf("kept %s = %q, %v; want the old token %q", kept[0], b, err, old)
	}
	if fi, err := os.Stat(kept[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kept %s: %v, %v; want mode 0600", kept[0], fi.Mode(), err)
	}
}
