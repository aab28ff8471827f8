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

// --format yaml with -o json asks for two formats: a usage error that names both and says which
// flag sets the export's format, before any request (it printed YAML and said nothing; found by
// a CLI walk). -o json alone, or with --format json, is the JSON export; SHOELACE_OUTPUT=json
// set for a whole pipeline does not override a --format yaml given on the command line.
func TestE2E_ExportFormatAndOutputDisagree(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	c.ok("kv", "put", "appliances/e2e-fmt/port", "80")
	const want = `appliance export: --format yaml and --output json ask for two formats: the export's is set by --format (json or yaml); drop --output json, or give --format json (see shoelace appliance export --help)`
	c.fails(exitUsage, want, "appliance", "export", "e2e-fmt", "--format", "yaml", "-o", "json")
	c.fails(exitUsage, want, "--output=json", "appliance", "export", "e2e-fmt", "--format=yaml")
	for _, args := range [][]string{{"-o", "json"}, {"-o", "json", "--format", "json"}} {
		if got := c.ok(append([]string{"appliance", "export", "e2e-fmt"}, args...)...); !strings.HasPrefix(got, "{") {
			t.Errorf("export %q = %q, want JSON", args, got)
		}
	}
	if got := c.with("SHOELACE_OUTPUT=json").ok("appliance", "export", "e2e-fmt", "--format", "yaml"); got != "keys:\n  port: \"80\"\n" {
		t.Errorf("export --format yaml with SHOELACE_OUTPUT=json = %q, want YAML", got)
	}
}
