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
