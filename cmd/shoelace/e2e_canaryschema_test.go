package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A write with --canary checks its candidate against the appliance's schema as it is when the
// rollout starts, whatever the replica cached before: a schema set since refuses a candidate
// that breaks it (exit 1), and one removed since refuses nothing. Before, a rollout start
// checked against the schemas the replica had cached: one set since was not seen (the rollout
// of a candidate that breaks it started), and after a schema rm the start failed with
// "shoelace: stale schema", exit 1, on every try.
func TestE2E_CanaryChecksTheCurrentSchema(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("canary-schema-%d", time.Now().UnixNano())
	c.ok("kv", "put", "appliances/"+name+"/app/port", "8080")
	enrollOne(t, s, c, name)

	dir := t.TempDir()
	good, bad, schema := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml"), filepath.Join(dir, "schema.json")
	writeFile(t, good, "keys:\n  app:\n    port: 8081\n")
	writeFile(t, bad, "keys:\n  app:\n    port: 99999\n")
	writeFile(t, schema, `{"properties": {"app": {"properties": {"port": {"type": "string", "format": "port"}}}}}`)
	abort := func() { c.run("appliance", "rollout", "abort", name) }

	// A rollout started before the schema exists: the replica knows the appliance has none.
	c.ok("appliance", "apply", name, "-f", good, "--canary", "100%", "--manual")
	abort()

	c.ok("appliance", "schema", "set", name, "-f", schema)
	c.fails(exitError, `appliance "`+name+`" breaks its schema: key app/port`, "appliance", "apply", name, "-f", bad, "--canary", "100%", "--manual")
	abort()
	// A plain write refused by the schema: the replica has it cached.
	c.fails(exitError, "breaks its schema", "kv", "put", "appliances/"+name+"/app/port", "99999")

	c.ok("appliance", "schema", "rm", name)
	r := c.run("appliance", "apply", name, "-f", bad, "--canary", "100%", "--manual")
	if r.code != 0 || !strings.Contains(r.stderr, "rollout ") || !strings.Contains(r.stderr, "started") {
		t.Fatalf("canary of a candidate only the removed schema refused: %s", r)
	}
	abort()
}
