package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// An export in YAML is an apply body: applied again (to the same appliance or a copy), it
// must give back every value byte for byte. yaml.v3 writes a value that starts with a newline,
// or whose first line starts with a tab, as a literal block that it does not read back the
// same (leading newlines dropped) or at all (a tab where it expects indentation).
func TestE2E_ExportYAMLKeepsEveryValue(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	keys := map[string]string{
		"nginx.conf":    "\tlisten 80;\n\tserver_name web;\n",
		"newline":       "\n",
		"two-newlines":  "\n\n",
		"blank-first":   "\nfirst line after a blank\n",
		"tab-then-line": "\t\nx",
		"tab-only":      "\t",
		"lead-blank":    "\n\tindented\n",
		"motd":          "line 1\nline 2\n",
		"crlf":          "a\r\nb\r\n",
		"separator":     "a\u2028b\nc\n",
		"plain":         "8080",
	}
	body, _ := json.Marshal(map[string]any{"keys": keys})
	src := filepath.Join(dir, "src.json")
	writeFile(t, src, string(body))
	c.ok("appliance", "apply", "e2e-yaml-src", "-f", src)

	r := c.run("appliance", "export", "e2e-yaml-src", "--format", "yaml")
	if r.code != 0 {
		t.Fatalf("export --format yaml: %s", r)
	}
	file := filepath.Join(dir, "export.yaml")
	writeFile(t, file, r.stdout)
	if a := c.run("appliance", "apply", "e2e-yaml-copy", "-f", file); a.code != 0 {
		t.Fatalf("apply of the YAML export: %s\nexport:\n%s", a, r.stdout)
	}
	for k, v := range keys {
		if got := c.ok("kv", "get", "appliances/e2e-yaml-copy/"+k); got != v {
			t.Errorf("%s: %q came back as %q through the YAML export:\n%s", k, v, got, r.stdout)
		}
	}
	// Applied onto the appliance it came from, it changes nothing.
	if a := c.run("appliance", "apply", "e2e-yaml-src", "-f", file); a.code != 0 || !strings.Contains(a.stderr, "nothing written") {
		t.Errorf("apply of the YAML export onto its own appliance: %s", a)
	}
}
