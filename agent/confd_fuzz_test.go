//go:build !windows

package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzConfdResource feeds the conf.d reader arbitrary files: it never panics, and what it
// accepts is a template in confd mode whose source is a clean absolute path (src joined to
// templates/, as confd joins it: "../x" may leave it), whose perms are an
// octal mode without special bits and whose check holds no unexpanded {{.src}}. Seeds: the
// corpus in testdata/fuzz/FuzzConfdResource and confd's own resources (cmd/shoelace-agent's
// testdata).
func FuzzConfdResource(f *testing.F) {
	seeds, _ := filepath.Glob("../cmd/shoelace-agent/testdata/confd/conf.d/*.toml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	perms := regexp.MustCompile(`^0[0-7]{3}$`)
	f.Fuzz(func(t *testing.T, data []byte) {
		const dir = "/etc/confd"
		tm, _, _, errs := parseConfdResource("/etc/confd/conf.d/f.toml", data, dir, confdSettings{})
		if len(errs) > 0 {
			for _, e := range errs {
				if !strings.HasPrefix(e, "/etc/confd/conf.d/f.toml") {
					t.Fatalf("error does not name the file: %q", e)
				}
			}
			return
		}
		if tm.Functions != "confd" || !filepath.IsAbs(tm.Source) || filepath.Clean(tm.Source) != tm.Source {
			t.Fatalf("accepted %q as %+v", data, tm)
		}
		if tm.Perms != "" && !perms.MatchString(tm.Perms) {
			t.Fatalf("perms %q from %q", tm.Perms, data)
		}
		if strings.Contains(tm.Check, stagedMark) || (tm.Check != "" && strings.Contains(string(data), "{{.src}}") && !strings.Contains(tm.Check, "$SHOELACE_STAGED")) {
			t.Fatalf("check %q from %q", tm.Check, data)
		}
	})
}
