package main

import (
	"path/filepath"
	"testing"
)

// A JSON file that starts with a UTF-8 byte order mark (Notepad, Windows PowerShell's
// Out-File) is read as its JSON, as a YAML file with one already was: txn, appliance apply,
// appliance schema set and import refused it with "invalid character 'ï'". A value stays
// byte for byte: kv put - keeps a BOM it is given.
func TestE2E_JSONFilesWithByteOrderMark(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	const bom = "\ufeff"
	dir := t.TempDir()

	txn := filepath.Join(dir, "txn.json")
	writeFile(t, txn, bom+`{"ops":[{"op":"put","key":"shared/bom/txn","value":"t"}]}`)
	revisionOf(t, c.ok("txn", "-f", txn))
	revisionOf(t, string(c.runStdin([]byte(bom+`{"ops":[{"op":"put","key":"shared/bom/stdin","value":"s"}]}`), "txn", "-f", "-").stdout))

	apply := filepath.Join(dir, "bomapp.json")
	writeFile(t, apply, bom+`{"keys":{"app/port":"8080"}}`)
	revisionOf(t, c.ok("appliance", "apply", "bomapp", "-f", apply))
	noExt := filepath.Join(dir, "bomapp")
	writeFile(t, noExt, bom+`{"keys":{"app/port":"8081"}}`)
	revisionOf(t, c.ok("appliance", "apply", "bomapp", "-f", noExt))

	schema := filepath.Join(dir, "schema.json")
	writeFile(t, schema, bom+`{"type":"object"}`)
	revisionOf(t, c.ok("appliance", "schema", "set", "bomapp", "-f", schema))

	dump := filepath.Join(dir, "dump.json")
	writeFile(t, dump, bom+`{"keys":{"shared/bom/imported":"i"}}`)
	revisionOf(t, c.ok("import", dump))

	for key, want := range map[string]string{"shared/bom/txn": "t", "shared/bom/stdin": "s", "appliances/bomapp/app/port": "8081", "shared/bom/imported": "i"} {
		if got := c.ok("kv", "get", key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	// A value is not a file to decode: its BOM is kept.
	if r := c.runStdin([]byte(bom+"v"), "kv", "put", "shared/bom/value", "-"); r.code != 0 {
		t.Fatalf("kv put -: %s", r)
	}
	if got := c.ok("kv", "get", "shared/bom/value"); got != bom+"v" {
		t.Errorf("a value with a BOM came back as %q", got)
	}
}

// YAML's flow style on stdin ({keys: {app: {port: 8080}}}) starts with '{' as JSON does: it
// is applied as the YAML it is; it was sent as JSON and refused ("not valid JSON: invalid
// character … at byte 1").
func TestE2E_ApplyFlowStyleYAMLFromStdin(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	if r := c.runStdin([]byte("{keys: {app: {port: 8080, name: web}}}\n"), "appliance", "apply", "flowyaml", "-f", "-"); r.code != 0 {
		t.Fatalf("apply of flow-style YAML: %s", r)
	}
	if got := c.ok("kv", "get", "appliances/flowyaml/app/port"); got != "8080" {
		t.Errorf("app/port = %q", got)
	}
	// Broken JSON is still answered as JSON.
	checkFailure(t, c.runStdin([]byte(`{"keys": {"a": "b",}`), "appliance", "apply", "flowyaml", "-f", "-"), exitError, "not valid JSON", nil)
}
