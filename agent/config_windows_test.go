//go:build windows

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A destination written with forward slashes, as Windows users write them, is the file its
// backslash form names: accepted, caught as a duplicate of that form, and a suggestion for an
// unclean one reads as a path (no doubled backslashes).
func TestValidate_ForwardSlashes(t *testing.T) {
	c := DefaultConfig()
	c.Server, c.Appliance, c.Token = "http://127.0.0.1:7400", "web", "tok"
	c.CacheDir = filepath.ToSlash(filepath.Join(os.TempDir(), "shoelace-forward-slashes-test", "cache"))
	c.AllowedDirs = []string{"C:/App"}
	c.Templates = []Template{
		{Contents: "a", Destination: "C:/App/a.conf"},
		{Contents: "b", Destination: `c:\app\A.conf`},
		{Contents: "c", Destination: "C:/App//c.conf"},
	}
	err := c.Validate()
	var problems []string
	if ce, ok := err.(*ConfigError); ok {
		problems = ce.Problems
	} else if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`template c:\app\A.conf: destination is also rendered by config: templates[0]`,
		`destination "C:\App\\c.conf" must be a clean path (no '..', '.', '\\' or trailing '\'); did you mean "C:\App\c.conf"?`,
	}
	if len(problems) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(problems, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.Contains(problems[i], w) {
			t.Errorf("problem %d = %s\nwant it to hold %s", i, problems[i], w)
		}
	}
	if got := c.Templates[0].Destination; got != `C:\App\a.conf` {
		t.Errorf("destination = %s, want C:\\App\\a.conf", got)
	}
}
