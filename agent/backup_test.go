//go:build !windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A link planted at a destination's .bak is never written through. Pointing outside
// allowed_dirs, it is refused (the file is not installed, the outside file untouched); without
// allowed_dirs, it is replaced by the backup.
func TestAgent_BackupLinkPlantedAtBak(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	for _, allowed := range []bool{true, false} {
		extra := ""
		if allowed {
			extra = "allowed_dirs: [$DIR/etc]\n"
		}
		a, dir, _ := testAgent(t, srv, header+extra+`templates:
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/etc/app.conf
    backup: true
`)
		os.MkdirAll(dir+"/etc", 0o755)
		os.WriteFile(dir+"/etc/app.conf", []byte("listen 8080\n"), 0o644)
		victim := filepath.Join(dir, "victim")
		os.WriteFile(victim, []byte("precious\n"), 0o600)
		if err := os.Symlink(victim, dir+"/etc/app.conf.bak"); err != nil {
			t.Fatal(err)
		}
		// With allowed_dirs or without, the link at the .bak name is replaced by the backup:
		// the .bak lies in the destination's (allowed) directory, whatever the link points at.
		if err := a.Once(context.Background(), "", false); err != nil {
			t.Fatalf("allowed_dirs %v: %v", allowed, err)
		}
		if got := read(t, victim); got != "precious\n" {
			t.Fatalf("allowed_dirs %v: the file the .bak link pointed at was written: %q", allowed, got)
		}
		fi, err := os.Lstat(dir + "/etc/app.conf.bak")
		if err != nil || !fi.Mode().IsRegular() || read(t, dir+"/etc/app.conf.bak") != "listen 8080\n" {
			t.Fatalf(".bak = %v, %v; want a regular file with the previous content", fi, err)
		}
	}
}
