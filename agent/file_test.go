//go:build !windows

package agent_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// A template may read local files only when its entry says allow_file: true.
func TestAgent_FileFunctionNeedsAllowFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	const tmpl = `templates:
  - contents: "port {{ key \"port\" }} host {{ file \"$DIR/hostname\" }}"
    destination: $DIR/out.conf
`
	dir, path := writeConfig(t, strings.ReplaceAll(header, "$URL", srv.URL)+tmpl)
	if err := os.WriteFile(dir+"/hostname", []byte("vm-7"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err == nil {
		_, err = agent.New(cfg, agent.Options{Logger: slog.New(slog.DiscardHandler), ConfigPath: path})
	}
	if err == nil || !strings.Contains(err.Error(), "file") {
		t.Fatalf("a template calling file without allow_file was accepted (err %v)", err)
	}
	if _, err := os.Stat(dir + "/out.conf"); !os.IsNotExist(err) {
		t.Fatal("something was written for a refused template")
	}

	a, dir, _ := testAgent(t, srv, header+strings.Replace(tmpl, "    destination:", "    allow_file: true\n    destination:", 1))
	if err := os.WriteFile(dir+"/hostname", []byte("vm-7"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Once(context.Background(), "", true); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dir+"/out.conf"); got != "port 80 host vm-7" {
		t.Fatalf("out.conf = %q", got)
	}
}
