package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A value of markup (an XML or HTML config) that kv put stores goes through every CLI write that
// sends it in a JSON body: txn, rollback and import. The client wrote each '<', '>' and '&' as
// \u003c, six bytes for one, so a value of 900 KB of them, within --max-value-bytes, made a body
// of 5.4 MB, over the server's body limit (--max-value-bytes plus 4 MiB): the txn file that curl
// posts as it is was refused (exit 1, "txn body is over the limit"), and so was the rollback of
// the appliance to the state that held it, and the import of its export.
func TestE2E_MarkupValueInJSONBodies(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	t.Cleanup(func() { c.run("kv", "rm", "appliances/e2emarkup", "--recurse") })
	markup := strings.Repeat("<>&", 300_000) // 900,000 bytes, within --max-value-bytes
	key := "appliances/e2emarkup/conf"

	// txn -f FILE, the file as curl would post it.
	body, err := json.Marshal(map[string]any{"ops": []map[string]string{{"op": "put", "key": key, "value": markup}}})
	if err != nil {
		t.Fatal(err)
	}
	body = []byte(strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(body)))
	file := filepath.Join(t.TempDir(), "markup.json")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	rev := revisionOf(t, c.ok("txn", "-f", file))
	if got := c.ok("kv", "get", key); got != markup {
		t.Fatalf("after the txn the value is %d bytes, want the %d written", len(got), len(markup))
	}

	// Rollback to the state that held it.
	c.ok("kv", "put", key, "small")
	c.ok("appliance", "rollback", "e2emarkup", "--to", strconv.FormatInt(rev, 10))
	if got := c.ok("kv", "get", key); got != markup {
		t.Fatalf("after the rollback the value is %d bytes, want the %d of revision %d", len(got), len(markup), rev)
	}

	// Import of a file that holds it (an export's "keys").
	export := filepath.Join(t.TempDir(), "export.json")
	exported, err := json.Marshal(map[string]any{"keys": map[string]string{key: markup}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(export, exported, 0o644); err != nil {
		t.Fatal(err)
	}
	c.ok("kv", "put", key, "small")
	c.ok("import", export, "--dry-run")
	c.ok("import", export)
	if got := c.ok("kv", "get", key); got != markup {
		t.Fatalf("after the import the value is %d bytes, want the %d exported", len(got), len(markup))
	}
}
