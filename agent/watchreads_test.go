//go:build !windows

package agent

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fsnotify/fsnotify"

	"github.com/shoelace-dev/shoelace/templates"
)

// BenchmarkWatchReads is the work watchReads does after every pass for 200 templates that read
// 5 files each (a certificate, a key and a CA per service, some shared): every file and its
// directory already watched, as at each pass but the first.
func BenchmarkWatchReads(b *testing.B) {
	root := b.TempDir()
	a := &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for i := range 200 {
		dir := filepath.Join(root, "etc", "ssl", fmt.Sprintf("svc%d", i%20))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		var files []string
		for j := range 5 {
			f := filepath.Join(dir, fmt.Sprintf("f%d-%d.pem", i%40, j))
			if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
			files = append(files, f)
		}
		a.tmpls = append(a.tmpls, &tmpl{cfg: &Template{Destination: filepath.Join(root, "out", fmt.Sprintf("t%d.conf", i))},
			last: &templates.Result{Files: files}})
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	l := &loop{a: a, watcher: w, changedReads: map[string]bool{}, recheckReads: map[string]bool{}}
	l.watchReads()
	stopTimer(l.fsTimer)
	b.ResetTimer()
	for range b.N {
		l.watchReads()
	}
}

// TestLinkCache_AsLinksOf: the links watchReads finds through its cache, which lstats each
// path once, are those a walk with nothing cached finds: a Kubernetes volume's (cert.pem ->
// ..data/cert.pem, ..data -> ..2026_x), a link to a link in another directory, a loop, and a
// file with none.
func TestLinkCache_AsLinksOf(t *testing.T) {
	root := t.TempDir()
	vol, other := filepath.Join(root, "vol"), filepath.Join(root, "other")
	for _, d := range []string{filepath.Join(vol, "..2026_x"), filepath.Join(other, "..2026_y")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cert.pem"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		filepath.Join(vol, "..data"):     "..2026_x",
		filepath.Join(vol, "cert.pem"):   "..data/cert.pem",
		filepath.Join(other, "..data"):   "..2026_y",
		filepath.Join(vol, "ca.pem"):     filepath.Join(other, "ca.pem"),
		filepath.Join(other, "ca.pem"):   "..data/cert.pem",
		filepath.Join(vol, "loop"):       "loop2",
		filepath.Join(vol, "loop2"):      "loop",
		filepath.Join(root, "vol-alias"): "vol",
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	c := linkCache{}
	for _, f := range []string{"vol/cert.pem", "vol/ca.pem", "vol/loop", "vol-alias/cert.pem", "vol/..2026_x/cert.pem", "vol/missing", "vol/cert.pem"} {
		f = filepath.Join(root, f)
		want, got := linkCache{}.of(f), c.of(f)
		if !slices.Equal(got, want) {
			t.Errorf("%s: cached %v, uncached %v", f, got, want)
		}
	}
	if got := (linkCache{}).of(filepath.Join(root, "vol-alias/cert.pem")); len(got) != 3 {
		t.Errorf("vol-alias/cert.pem goes through %v, want vol-alias, cert.pem and ..data", got)
	}
}
