//go:build !windows

package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// Over a sequence of views, each pass renders exactly the templates whose inputs changed since
// the view their file was rendered from, also when other changes came in between (a template a
// pass left alone is compared with the next view from the one it was left at), and the files
// hold what the latest view renders.
func TestAgent_RenderViewOnlyChanged(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("test"), 0o600)
	tmpls := map[string]string{
		"key":  `{{ key "a" }}`,
		"list": `{{ range ls "list" }}{{ .Value }}{{ end }}`,
		"all":  `{{ len (tree "") }}`,
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server: http://127.0.0.1:1\ntoken_file: %s\nappliance: web\ncache_dir: %s\ntemplates:\n", tok, filepath.Join(dir, "cache"))
	for _, name := range []string{"key", "list", "all"} {
		fmt.Fprintf(&cfg, "  - contents: '%s'\n    destination: %s\n", tmpls[name], filepath.Join(dir, "out", name))
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(c, agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}

	view := map[string]string{"a": "1", "list/x": "1", "listing/z": "9", "other": "1"}
	steps := []struct {
		name   string
		change func(m map[string]string)
		want   int               // templates executed
		files  map[string]string // what they hold after it
	}{
		{"first view", func(map[string]string) {}, 3, map[string]string{"key": "1", "list": "1", "all": "4"}},
		{"an unlisted key changes", func(m map[string]string) { m["other"] = "2" }, 1, nil},
		{"again", func(m map[string]string) { m["other"] = "3" }, 1, nil},
		{"a sibling prefix's key changes", func(m map[string]string) { m["listing/z"] = "8" }, 1, nil},
		{"a key is added under the listed prefix", func(m map[string]string) { m["list/y"] = "2" }, 2, map[string]string{"list": "12", "all": "5"}},
		{"the read key changes", func(m map[string]string) { m["a"] = "2" }, 2, map[string]string{"key": "2"}},
		{"the same keys in a new view", func(map[string]string) {}, 0, nil},
		{"a listed key is removed", func(m map[string]string) { delete(m, "list/x") }, 2, map[string]string{"list": "2", "all": "4"}},
		{"the read key is removed and another added", func(m map[string]string) { m["a"] = "3"; m["b"] = "1" }, 2, map[string]string{"key": "3", "all": "5"}},
	}
	for i, st := range steps {
		next := maps.Clone(view)
		st.change(next)
		view = next
		got := a.RenderView(context.Background(), int64(i+1), view)
		if got.Executed != st.want || got.Failed != 0 {
			t.Fatalf("%s: executed %d templates (%d failed), want %d", st.name, got.Executed, got.Failed, st.want)
		}
		for name, want := range st.files {
			if b, err := os.ReadFile(filepath.Join(dir, "out", name)); err != nil || string(b) != want {
				t.Fatalf("%s: %s holds %q (%v), want %q", st.name, name, b, err, want)
			}
		}
	}
}
