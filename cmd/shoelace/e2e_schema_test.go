package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// shoelace appliance schema set/get/rm, and every CLI write that touches the appliance (apply,
// kv put, kv rm, rollback, import) refused with exit 1 when it breaks the schema, changing nothing.
func TestE2E_ApplianceSchema(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	file := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	schema := `{"type":"object","required":["nginx"],"properties":{"nginx":{"type":"object","required":["port"],` +
		`"properties":{"port":{"type":"string","format":"port"},"mode":{"enum":["a","b"]}}},"env":{"pattern":"^(prod|dev)$"}}}`
	sfile := file("schema.json", schema)

	// A tree that the schema will refuse, written before the schema exists.
	rev0 := revisionOf(t, c.ok("appliance", "apply", "sc-web", "-f", file("v0.yaml", "keys:\n  nginx: {port: 99999}\n")))

	c.fails(exitNotFound, `appliance "sc-web" has no schema`, "appliance", "schema", "get", "sc-web")
	c.fails(exitError, "invalid schema", "appliance", "schema", "set", "sc-web", "-f", file("bad.json", `{"required": "nginx"}`))
	c.fails(exitUsage, "missing -f FILE", "appliance", "schema", "set", "sc-web")
	// Set on keys that break it: set anyway, with a warning. The flag may follow the positional.
	r := c.run("appliance", "schema", "set", "sc-web", "-f", sfile)
	if r.code != 0 || !strings.Contains(r.stderr, "warning: the keys it has now break it") || !strings.Contains(r.stderr, "key nginx/port: format") {
		t.Fatalf("schema set over keys that break it: %s", r)
	}
	revisionOf(t, r.stdout)
	if got := c.ok("appliance", "schema", "get", "sc-web"); got != schema+"\n" {
		t.Fatalf("schema get = %q", got)
	}

	c.ok("appliance", "apply", "sc-web", "-f", file("v1.yaml", "keys:\n  nginx: {port: 80, mode: a}\n  env: prod\n"))
	c.ok("kv", "put", "appliances/sc-web/nginx/port", "8080")
	before, lastRel := storeContent(t, c)

	for _, tc := range []struct {
		want string
		args []string
	}{
		{"key nginx/port: format", []string{"appliance", "apply", "sc-web", "-f", file("v2.yaml", "keys:\n  nginx: {port: 0}\n")}},
		{"key nginx/port: format", []string{"appliance", "apply", "sc-web", "-f", file("v2.yaml", "keys:\n  nginx: {port: 0}\n"), "--dry-run"}},
		{"key env: pattern", []string{"kv", "put", "appliances/sc-web/env", "qa"}},
		{"key nginx/port: required", []string{"kv", "rm", "appliances/sc-web/nginx/port"}},
		{"key nginx: required", []string{"kv", "rm", "appliances/sc-web", "--recurse"}},
		{"key nginx/port: format", []string{"appliance", "rollback", "sc-web", "--to", strconv.FormatInt(rev0, 10)}},
		{"key nginx/mode: enum", []string{"import", "--merge", file("dump.json", `{"keys":{"shared/sc":"1","appliances/sc-web/nginx/mode":"z"}}`)}},
	} {
		c.fails(exitError, `appliance "sc-web" breaks its schema: `+tc.want, tc.args...)
	}
	assertUnchanged(t, c, before, lastRel) // the import too was all or nothing

	// Without the schema, the rollback goes through.
	revisionOf(t, c.ok("appliance", "schema", "rm", "sc-web"))
	c.fails(exitNotFound, "no schema", "appliance", "schema", "rm", "sc-web")
	c.ok("appliance", "rollback", "sc-web", "--to", strconv.FormatInt(rev0, 10))
	if got := c.ok("kv", "get", "appliances/sc-web/nginx/port"); got != "99999" {
		t.Fatalf("port after rollback %q", got)
	}
	if r := c.run("appliance", "schema", "--help"); r.code != 0 || !strings.Contains(r.stdout, "schema_violation") {
		t.Fatalf("schema --help: %s", r)
	}
}

// A schema kept in YAML is set from a .yaml file or from stdin, kept as JSON (which schema get
// prints), and checks writes as the same schema in JSON does; a bad one exits 1 naming its line.
func TestE2E_ApplianceSchemaYAML(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	file := func(name, data string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	yml := "# web\ntype: object\nrequired: [nginx]\nproperties:\n  nginx:\n    required: [port]\n    properties:\n      port: {type: string, format: port}\n      mode: {enum: [a, b]}\n"
	sfile := filepath.Join(dir, "web.schema.yaml")
	writeFile(t, sfile, yml)
	revisionOf(t, c.ok("appliance", "schema", "set", "sc-yaml", "-f", sfile))
	got := c.ok("appliance", "schema", "get", "sc-yaml")
	if !strings.Contains(got, `"required": [`) || !strings.Contains(got, `"format": "port"`) || strings.Contains(got, "#") {
		t.Fatalf("schema get after a YAML set = %q, want the schema as JSON", got)
	}
	c.fails(exitError, `appliance "sc-yaml" breaks its schema: key nginx/mode: enum`,
		"appliance", "apply", "sc-yaml", "-f", file("v.yaml", "keys:\n  nginx: {port: 80, mode: z}\n"))
	c.ok("appliance", "apply", "sc-yaml", "-f", file("v.yaml", "keys:\n  nginx: {port: 80, mode: a}\n"))

	// From stdin: YAML when it does not start with "{".
	revisionOf(t, string(c.runStdin([]byte("required: [env]\n"), "appliance", "schema", "set", "sc-yaml2", "-f", "-").stdout))
	if got := c.ok("appliance", "schema", "get", "sc-yaml2"); !strings.Contains(got, `"required": [`) || !strings.Contains(got, `"env"`) {
		t.Fatalf("schema get after a YAML set from stdin = %q", got)
	}
	c.fails(exitError, `line 2: key "200" at /properties is not a string`,
		"appliance", "schema", "set", "sc-yaml2", "-f", file("bad.yml", "properties:\n  200: {type: string}\n"))
}
