//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// A templates_dir or confd_dir that others may add files to is refused, as a config file others
// may write is: a sticky /tmp does not keep another user from planting a *.yaml file there (or a
// link to one of root's) whose templates and commands the agent runs. It was read as it was.
func TestLoadConfig_CommandDirsOthersMayWriteRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o777 | os.ModeSticky, 0o757} {
		dir := t.TempDir()
		tdir := filepath.Join(dir, "templates.d")
		if err := os.Mkdir(tdir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tdir, mode); err != nil {
			t.Fatal(err)
		}
		_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\ntemplates_dir: "+tdir+"\ntemplates:\n  - {contents: x, destination: "+dir+"/out}\n")
		_, err := agent.LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), "templates_dir: "+tdir+" may be written by others") || !strings.Contains(err.Error(), "chmod go-w") {
			t.Fatalf("templates_dir of mode %v: %v", mode, err)
		}

		confd := writeConfd(t, map[string]string{
			"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/a.conf\"\n",
			"templates/a.tmpl": "x",
		})
		if err := os.Chmod(filepath.Join(confd, "conf.d"), mode); err != nil {
			t.Fatal(err)
		}
		_, path = writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\n")
		if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "confd_dir: "+filepath.Join(confd, "conf.d")+" may be written by others") {
			t.Fatalf("confd_dir's conf.d of mode %v: %v", mode, err)
		}
		if err := os.Chmod(filepath.Join(confd, "conf.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := agent.LoadConfig(path); err != nil {
			t.Fatalf("confd_dir mended: %v", err)
		}
	}
}
