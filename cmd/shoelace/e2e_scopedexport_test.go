package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestE2E_ImportReplaceOfAScopedExportIsRefused: an export made with a token that is not an
// admin token holds only the keys that token may read, and says so ("scoped": true); an
// import --replace of it would delete every key it could not see (every appliance, for a
// shared-only reader), so it is refused and nothing is written; --merge takes it.
func TestE2E_ImportReplaceOfAScopedExportIsRefused(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "shared/ntp", "pool.ntp.org")
	c.ok("kv", "put", "appliances/web/port", "8080")
	c.ok("kv", "put", "appliances/db/port", "5432")
	before, _ := storeContent(t, c)

	out := strings.Split(strings.TrimSpace(c.ok("token", "create", "--name", "shared-reader", "--read", "shared")), "\n")
	tokFile := filepath.Join(t.TempDir(), "reader.token")
	writeFile(t, tokFile, out[len(out)-1]+"\n")
	r := c.with("SHOELACE_TOKEN_FILE=" + tokFile).run("export")
	if r.code != 0 || !strings.Contains(r.stdout, `"scoped": true`) {
		t.Fatalf("export with a shared-only token: %s; want \"scoped\": true in it", r)
	}
	file := filepath.Join(t.TempDir(), "scoped.json")
	writeFile(t, file, r.stdout)
	if whole := c.ok("export"); strings.Contains(whole, "scoped") {
		t.Errorf("an admin token's export says scoped: %s", whole)
	}

	for _, args := range [][]string{{"import", file, "--replace"}, {"import", file, "--replace", "--dry-run"}} {
		r := c.run(args...)
		if r.code != exitError || r.stdout != "" || !strings.Contains(r.stderr, "not an admin token") ||
			!strings.Contains(r.stderr, "--merge") || !strings.Contains(r.stderr, "nothing written") {
			t.Errorf("%q: %s; want exit %d saying the file is scoped and to use --merge", args, r, exitError)
		}
	}
	if after, _ := storeContent(t, c); !reflect.DeepEqual(after, before) {
		t.Fatalf("a refused import --replace of a scoped export changed the store: %q, want %q", after, before)
	}

	r = c.run("import", file, "--merge")
	if r.code != 0 {
		t.Fatalf("import --merge of a scoped export: %s", r)
	}
	if after, _ := storeContent(t, c); !reflect.DeepEqual(after, before) {
		t.Fatalf("import --merge of a scoped export of the same store: %q, want %q", after, before)
	}
}

// TestE2E_ImportOfAnEmptyFileSaysSo: import of an empty file or stdin said only
// `not an export ({"keys":{…},"omitted":[…]}): EOF`; it now says that the input is empty, as
// appliance apply, txn and schema set do, and writes nothing.
func TestE2E_ImportOfAnEmptyFileSaysSo(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	empty := filepath.Join(t.TempDir(), "all.json")
	writeFile(t, empty, "\n")
	for _, r := range []result{c.runStdin(nil, "import", "-"), c.run("import", empty)} {
		if r.code != exitError || r.stdout != "" || !strings.Contains(r.stderr, "is empty") || strings.Contains(r.stderr, "EOF") {
			t.Errorf("import of nothing: %s; want exit %d saying the input is empty", r, exitError)
		}
	}
}
