package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An import is one transaction, and the server refuses one over its limits (more operations
// or guards than it takes, a body over --max-value-bytes plus 4 MiB): its --dry-run fails as
// the import does, exit 1 with the same reason, nothing written. The dry run planned such an
// import, said "would import … nothing written" and exited 0, and the import then failed; for
// --from-etcd and --from-consul-export the failure told the user to "split the file", which
// they do not have.
func TestE2E_ImportDryRunOverTxnLimits(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/other/keep", "x")
	before, rev := storeContent(t, c)
	dir := t.TempDir()

	// A body over the limit: 30 certificates of 200 kB, 6 MB, from a Consul export.
	big := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 200_000)))
	var entries []string
	for i := range 30 {
		entries = append(entries, fmt.Sprintf(`{"key":"certs/c%02d","flags":0,"value":%q}`, i, big))
	}
	export := filepath.Join(dir, "certs.json")
	if err := os.WriteFile(export, []byte("["+strings.Join(entries, ",")+"]"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "--from-consul-export", export, "--prefix", "certs", "--appliance", "certs"}
	for _, dry := range []bool{false, true} {
		a := args
		if dry {
			a = append(a[:len(a):len(a)], "--dry-run")
		}
		r := c.run(a...)
		if r.code != exitError || !strings.Contains(r.stderr, "import cannot be atomic") || !strings.Contains(r.stderr, "txn body is") ||
			!strings.Contains(r.stderr, "nothing was written") || strings.Contains(r.stderr, "split the file") {
			t.Errorf("import of a body over the server's limit (dry run %v): %s", dry, r)
		}
		if dry && !strings.Contains(r.stderr, "nothing written, and the import is refused:") {
			t.Errorf("dry run does not say the import is refused: %s", r)
		}
	}
	assertUnchanged(t, c, before, rev)

	// More operations than the server takes in one transaction: a file of 10001 keys.
	keys := make(map[string]string, 10001)
	for i := range 10001 {
		keys[fmt.Sprintf("appliances/many/k%05d", i)] = "v"
	}
	data, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "many.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range [][]string{{"import", file}, {"import", file, "--dry-run"}} {
		r := c.run(a...)
		if r.code != exitError || !strings.Contains(r.stderr, "import cannot be atomic") || !strings.Contains(r.stderr, "txn has 10001 ops, over the limit of 10000") {
			t.Errorf("%s: %s", strings.Join(a, " "), r)
		}
	}
	assertUnchanged(t, c, before, rev)

	// An import of keys the store holds already puts nothing, however many it guards: it
	// writes nothing and exits 0, its dry run too.
	halves := [2]map[string]string{{}, {}}
	i := 0
	for k, v := range keys {
		halves[i%2][k] = v
		i++
	}
	for n, h := range halves {
		data, err := json.Marshal(map[string]any{"keys": h})
		if err != nil {
			t.Fatal(err)
		}
		half := filepath.Join(dir, fmt.Sprintf("half%d.json", n))
		if err := os.WriteFile(half, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c.ok("import", half)
	}
	for _, a := range [][]string{{"import", file, "--dry-run"}, {"import", file}} {
		if r := c.run(a...); r.code != 0 || strings.Contains(r.stderr, "cannot be atomic") {
			t.Errorf("%s of keys the store holds: %s", strings.Join(a, " "), r)
		}
	}
}
