package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// The import tests start their own servers: they need stores whose whole content they know.

// freshServer starts a server on its own data dir, stopped when the test ends.
func freshServer(t *testing.T) *testServer {
	t.Helper()
	s, err := startServer(t.TempDir(), nil)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop server: %v", err)
		}
	})
	return s
}

// exportFile mirrors the JSON that "shoelace export" prints.
type exportFile struct {
	Revision int64             `json:"revision"`
	Store    string            `json:"store"`
	Exported string            `json:"exported"`
	Omitted  []string          `json:"omitted"`
	Keys     map[string]string `json:"keys"`
}

// exportOf runs export (with extra args) and decodes it.
func exportOf(t *testing.T, c *runner, args ...string) (exportFile, result) {
	t.Helper()
	r := c.run(append([]string{"export"}, args...)...)
	if r.code != 0 {
		t.Fatalf("export %q: %s", args, r)
	}
	var f exportFile
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil {
		t.Fatalf("export %q printed no export: %v: %s", args, err, r.stdout)
	}
	return f, r
}

// storeContent is every key of the store with its value, and the revision of its newest
// release (0 if none). A store's own revision is no witness of user writes: every replica
// announces itself with a write every 15 seconds.
func storeContent(t *testing.T, c *runner) (map[string]string, int64) {
	t.Helper()
	f, _ := exportOf(t, c, "--include-secrets")
	rels := releasesOf(t, c, 1)
	if len(rels) == 0 {
		return f.Keys, 0
	}
	return f.Keys, rels[0]
}

// modRevision is key's mod_revision, by kv get -o json.
func modRevision(t *testing.T, c *runner, key string) int64 {
	t.Helper()
	var kv api.KV
	if out := c.ok("kv", "get", key, "-o", "json"); json.Unmarshal([]byte(out), &kv) != nil || kv.ModRevision <= 0 {
		t.Fatalf("kv get %s -o json = %q: no mod_revision", key, out)
	}
	return kv.ModRevision
}

// releasesOf is the revisions of the store's newest releases (at most limit), newest first,
// by GET /v1/releases with the runner's address and token.
func releasesOf(t *testing.T, c *runner, limit int) []int64 {
	t.Helper()
	var addr, tokenFile string
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, "SHOELACE_ADDR="); ok {
			addr = v
		} else if v, ok := strings.CutPrefix(kv, "SHOELACE_TOKEN_FILE="); ok {
			tokenFile = v
		}
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/releases?limit=%d", addr, limit), nil)
	if err != nil {
		t.Fatal(err)
	}
	if tokenFile != "" {
		secret, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(secret)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page api.Releases
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/releases: %d %v", resp.StatusCode, err)
	}
	revs := make([]int64, len(page.Releases))
	for i, r := range page.Releases {
		revs[i] = r.Revision
	}
	return revs
}

// assertUnchanged fails unless the store holds exactly want, and its newest release is still
// the one at rev (nothing written).
func assertUnchanged(t *testing.T, c *runner, want map[string]string, rev int64) {
	t.Helper()
	got, gotRev := storeContent(t, c)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("store = %q, want it unchanged: %q", got, want)
	}
	if gotRev != rev {
		t.Errorf("newest release at revision %d, want %d: something was written", gotRev, rev)
	}
}

func TestE2E_ImportRoundTrip(t *testing.T) {
	src, dst := freshServer(t), freshServer(t)
	cs, cd := newCLI(t, src), newCLI(t, dst)
	values := map[string]string{
		"shared/system/ntp":               "pool.ntp.org",
		"shared/motd":                     "line 1\r\nline 2\n\ttab, trailing space \n",
		"shared/html":                     `<a href="x">&amp;</a>`,
		"shared/unicode":                  "héllo wörld ✓ 😀",
		"shared/empty":                    "",
		"appliances/web/nginx/port":       "8080",
		"appliances/web/secrets/tls.key":  "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
		"appliances/db/secrets/password":  "hunter2",
		"appliances/db/postgres/max_conn": "100",
	}
	for k, v := range values {
		if r := cs.runStdin([]byte(v), "kv", "put", k, "-"); r.code != 0 {
			t.Fatalf("kv put %s: %s", k, r)
		}
	}

	// Without --include-secrets: the secrets are left out, listed in the file and on stderr.
	partial, r := exportOf(t, cs)
	wantOmitted := []string{"appliances/db/secrets/password", "appliances/web/secrets/tls.key"}
	if !reflect.DeepEqual(partial.Omitted, wantOmitted) {
		t.Errorf("export omitted %q, want %q", partial.Omitted, wantOmitted)
	}
	if strings.Contains(r.stdout, "hunter2") || strings.Contains(r.stdout, "BEGIN KEY") || len(partial.Keys) != len(values)-2 {
		t.Errorf("export without --include-secrets leaks a secret or misses keys: %s", r.stdout)
	}
	for _, k := range wantOmitted {
		if !strings.Contains(r.stderr, k) {
			t.Errorf("export stderr %q does not list omitted %s", r.stderr, k)
		}
	}
	if partial.Revision <= 0 || partial.Store == "" {
		t.Errorf("export revision %d, store %q", partial.Revision, partial.Store)
	}
	if _, err := time.Parse(time.RFC3339, partial.Exported); err != nil {
		t.Errorf("export exported %q: %v", partial.Exported, err)
	}

	// With --include-secrets: everything, and stderr says which secrets are in the file.
	whole, r := exportOf(t, cs, "--include-secrets")
	if len(whole.Omitted) != 0 || !reflect.DeepEqual(whole.Keys, values) {
		t.Fatalf("export --include-secrets = %+v, want every key", whole)
	}
	if !strings.Contains(r.stderr, "included 2 secret keys") || !strings.Contains(r.stderr, "appliances/db/secrets/password") {
		t.Errorf("export --include-secrets stderr %q does not list the included secrets", r.stderr)
	}
	file := filepath.Join(t.TempDir(), "all.json")
	writeFile(t, file, r.stdout)

	// Into the empty store of another server: no flag needed, every value byte for byte.
	r = cd.run("import", file)
	if r.code != 0 {
		t.Fatalf("import into an empty store: %s", r)
	}
	revisionOf(t, r.stdout)
	if want := "imported 9 keys (9 put, 0 deleted, 0 omitted secrets kept)"; !strings.Contains(r.stderr, want) {
		t.Errorf("import stderr %q, want %q", r.stderr, want)
	}
	if strings.Contains(r.stderr, "partial") {
		t.Errorf("a whole export was reported partial: %q", r.stderr)
	}
	for k, want := range values {
		if got := cd.ok("kv", "get", k); got != want {
			t.Errorf("after import %s = %q, want %q", k, got, want)
		}
	}
	copied, _ := exportOf(t, cd, "--include-secrets")
	if !reflect.DeepEqual(copied.Keys, values) || copied.Store == whole.Store {
		t.Errorf("export of the copy = %+v, want the same keys from another store", copied)
	}

	// A token that may read only part of the store exports only that part, and is warned.
	out := strings.Split(strings.TrimSpace(cs.ok("token", "create", "--name", "reader", "--read", "shared")), "\n")
	tokFile := filepath.Join(t.TempDir(), "reader.token")
	writeFile(t, tokFile, out[len(out)-1]+"\n")
	narrow, r := exportOf(t, cs.with("SHOELACE_TOKEN_FILE="+tokFile))
	if !strings.Contains(r.stderr, "warning: not an admin token") || len(narrow.Keys) != 5 {
		t.Errorf("export with a shared-only token: %d keys, stderr %q; want the 5 shared keys and a warning", len(narrow.Keys), r.stderr)
	}
	// Secrets in an export need an admin token, whatever the token may read.
	for _, args := range [][]string{{"export", "--include-secrets"}, {"appliance", "export", "web", "--include-secrets"}} {
		r := cs.with("SHOELACE_TOKEN_FILE=" + tokFile).run(args...)
		if r.code != 5 || r.stdout != "" || !strings.Contains(r.stderr, "needs an admin token") {
			t.Errorf("%v with a non-admin token: exit %d, stdout %q, stderr %q; want exit 5, nothing printed", args, r.code, r.stdout, r.stderr)
		}
	}
	if _, r := exportOf(t, cs); strings.Contains(r.stderr, "warning") {
		t.Errorf("export with the admin token warned: %q", r.stderr)
	}

	// A partial export into an empty store: written, and stderr says it is not a whole copy.
	dst2 := freshServer(t)
	c2 := newCLI(t, dst2)
	pfile := filepath.Join(t.TempDir(), "partial.json")
	writeFile(t, pfile, cs.ok("export"))
	r = c2.run("import", pfile, "--output", "json")
	if r.code != 0 {
		t.Fatalf("import of a partial export: %s", r)
	}
	if !strings.Contains(r.stderr, "partial") || !strings.Contains(r.stderr, "appliances/db/secrets/password") ||
		!strings.Contains(r.stderr, "not in this store") {
		t.Errorf("import of a partial export: stderr %q does not say it is partial and list the omitted keys", r.stderr)
	}
	var res struct {
		Revision int64    `json:"revision"`
		Mode     string   `json:"mode"`
		Put      int      `json:"put"`
		Deleted  int      `json:"deleted"`
		Kept     int      `json:"kept"`
		Omitted  []string `json:"omitted"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Revision <= 0 || res.Mode != "empty" ||
		res.Put != 7 || res.Deleted != 0 || res.Kept != 0 || !reflect.DeepEqual(res.Omitted, wantOmitted) {
		t.Errorf("import --output json = %s (%v)", r.stdout, err)
	}
	got, _ := storeContent(t, c2)
	if !reflect.DeepEqual(got, partial.Keys) {
		t.Errorf("after a partial import the store = %q, want %q", got, partial.Keys)
	}
}

func TestE2E_ImportModes(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	initial := map[string]string{
		"shared/a":                   "old",
		"other/x":                    "keep me?",
		"secrets/pw":                 "target secret",
		"appliances/web/secrets/tls": "tls",
	}
	for k, v := range initial {
		c.ok("kv", "put", k, v)
	}
	dir := t.TempDir()
	// A partial export from elsewhere: it omitted secrets/pw and secrets/absent.
	file := filepath.Join(dir, "partial.json")
	writeFile(t, file, `{"revision":9,"store":"elsewhere","exported":"2026-11-26T00:00:00Z",
		"omitted":["secrets/pw","secrets/absent"],
		"keys":{"shared/a":"new","shared/b":"2\n"}}`)

	before, rev := storeContent(t, c)
	if !reflect.DeepEqual(before, initial) {
		t.Fatalf("store = %q, want %q", before, initial)
	}

	t.Run("both flags are a usage error", func(t *testing.T) {
		c.fails(exitUsage, "--merge and --replace exclude each other", "import", file, "--merge", "--replace")
		assertUnchanged(t, c, initial, rev)
	})

	t.Run("a bad key changes nothing", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.json")
		writeFile(t, bad, `{"keys":{"shared/new":"x","shared/bad key":"y"},"omitted":[]}`)
		c.fails(exitError, `invalid key "shared/bad key"`, "import", bad, "--replace")
		c.fails(exitError, `invalid key "shared/bad key"`, "import", bad, "--merge")
		assertUnchanged(t, c, initial, rev)
	})

	t.Run("dry run writes nothing", func(t *testing.T) {
		r := c.run("import", file, "--replace", "--dry-run")
		if r.code != 0 {
			t.Fatalf("dry run: %s", r)
		}
		// Each key with its value, as appliance apply --dry-run prints them: it printed
		// the names alone, though its help says "as appliance apply --dry-run does".
		want := "+ shared/b=\"2\\n\"\n~ shared/a=new (was old)\n- appliances/web/secrets/tls=(secret)\n- other/x=keep me?\n= secrets/pw\n"
		if r.stdout != want {
			t.Errorf("dry run printed %q, want %q", r.stdout, want)
		}
		if !strings.Contains(r.stderr, "2 put, 2 deleted, 1 omitted secrets kept") || !strings.Contains(r.stderr, "nothing written") {
			t.Errorf("dry run stderr %q", r.stderr)
		}
		// A key that already holds the file's value is counted, not listed.
		same := filepath.Join(dir, "same.json")
		writeFile(t, same, `{"omitted":["secrets/pw"],"keys":{"shared/a":"new","shared/b":"2\n","other/x":"keep me?"}}`)
		r = c.run("import", same, "--replace", "--dry-run")
		if want := "+ shared/b=\"2\\n\"\n~ shared/a=new (was old)\n- appliances/web/secrets/tls=(secret)\n= secrets/pw\n"; r.code != 0 || r.stdout != want {
			t.Errorf("dry run printed %q (%s), want %q", r.stdout, r, want)
		}
		// One line, which reads as it says: "…: not written in one transaction of 3 operations"
		// said the keys left as they are were what the transaction would not write.
		if want := "dry run: would import 3 keys (2 put, 1 deleted, 1 omitted secrets kept) in one transaction of 3 operations and 5 guards, against revision "; !strings.Contains(r.stderr, want) ||
			!strings.Contains(r.stderr, "create 1, change 1, delete 1, leave 1 as they are; nothing written\n") {
			t.Errorf("dry run stderr %q, want %q…", r.stderr, want)
		}
		assertUnchanged(t, c, initial, rev)
	})

	t.Run("over the transaction limit is refused, not split", func(t *testing.T) {
		keys := make(map[string]string, 10001)
		for i := range 10001 {
			keys[fmt.Sprintf("bulk/k%05d", i)] = "v"
		}
		data, err := json.Marshal(map[string]any{"keys": keys, "omitted": []string{}})
		if err != nil {
			t.Fatal(err)
		}
		big := filepath.Join(dir, "big.json")
		if err := os.WriteFile(big, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r := c.fails(exitError, "import cannot be atomic", "import", big, "--merge")
		if !strings.Contains(r.stderr, "10001 operations") || !strings.Contains(r.stderr, "not split") || !strings.Contains(r.stderr, "10000") {
			t.Errorf("over-limit refusal %q does not say why", r.stderr)
		}
		assertUnchanged(t, c, initial, rev)
	})

	t.Run("merge (the default) puts the file's keys and leaves the others", func(t *testing.T) {
		r := c.run("import", file)
		if r.code != 0 {
			t.Fatalf("import: %s", r)
		}
		revisionOf(t, r.stdout)
		if !strings.Contains(r.stderr, "imported 2 keys (2 put, 0 deleted, 1 omitted secrets kept)") ||
			!strings.Contains(r.stderr, "partial") || !strings.Contains(r.stderr, "secrets/absent") {
			t.Errorf("import --merge stderr %q", r.stderr)
		}
		want := map[string]string{
			"shared/a": "new", "shared/b": "2\n",
			"other/x": "keep me?", "secrets/pw": "target secret", "appliances/web/secrets/tls": "tls",
		}
		if got, _ := storeContent(t, c); !reflect.DeepEqual(got, want) {
			t.Errorf("after the import store = %q, want %q", got, want)
		}
		// Again, with --merge said: the store holds the file's values already, so nothing is
		// written (no revision moves, no agent wakes) and the store stays as it is.
		_, relBefore := storeContent(t, c)
		aBefore := modRevision(t, c, "shared/a")
		r = c.run("import", file, "--merge")
		if r.code != 0 || !strings.Contains(r.stderr, "nothing to import: the store holds the file's 2 keys with the file's values already") {
			t.Fatalf("import --merge of what the store holds: %s", r)
		}
		if got := revisionOf(t, r.stdout); got < aBefore {
			t.Errorf("an import that wrote nothing printed revision %d, before the store's %d", got, aBefore)
		}
		if got, relAfter := storeContent(t, c); !reflect.DeepEqual(got, want) || relAfter != relBefore {
			t.Errorf("after import --merge store = %q with newest release %d, want %q and %d (no write)", got, relAfter, want, relBefore)
		}
		// One key changed meanwhile: only it is written; the other keeps its revision.
		c.ok("kv", "put", "shared/b", "drifted")
		r = c.run("import", file, "-o", "json")
		if r.code != 0 || !strings.Contains(r.stderr, "imported 2 keys (1 put, 0 deleted, 1 omitted secrets kept); 1 already held the file's value: not written") {
			t.Fatalf("import over one changed key: %s", r)
		}
		var res struct {
			Put       int `json:"put"`
			Unchanged int `json:"unchanged"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Put != 1 || res.Unchanged != 1 {
			t.Errorf("import -o json = %s (%v), want put 1, unchanged 1", r.stdout, err)
		}
		if got := modRevision(t, c, "shared/a"); got != aBefore {
			t.Errorf("shared/a, which held the file's value, was written again: mod revision %d, was %d", got, aBefore)
		}
		if got, _ := storeContent(t, c); !reflect.DeepEqual(got, want) {
			t.Errorf("after the import store = %q, want %q", got, want)
		}
	})

	t.Run("replace deletes the others but keeps omitted secrets", func(t *testing.T) {
		c.ok("kv", "put", "shared/a", "changed again")
		r := c.run("import", file, "--replace", "-o", "json")
		if r.code != 0 {
			t.Fatalf("import --replace: %s", r)
		}
		var res struct {
			Revision  int64  `json:"revision"`
			Mode      string `json:"mode"`
			Put       int    `json:"put"`
			Deleted   int    `json:"deleted"`
			Kept      int    `json:"kept"`
			Unchanged int    `json:"unchanged"`
		}
		// shared/a changed again is put; shared/b holds the file's value: guarded, not put.
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Revision <= 0 || res.Mode != "replace" ||
			res.Put != 1 || res.Unchanged != 1 || res.Deleted != 2 || res.Kept != 1 {
			t.Errorf("import --replace -o json = %s (%v)", r.stdout, err)
		}
		if !strings.Contains(r.stderr, "kept 1 secret key of this store that the file omitted: secrets/pw") ||
			!strings.Contains(r.stderr, "not a whole copy") {
			t.Errorf("import --replace stderr %q does not say which omitted secrets were kept", r.stderr)
		}
		if strings.Contains(r.stderr, "warning") {
			t.Errorf("import --replace warned with no other writer: %q", r.stderr)
		}
		want := map[string]string{"shared/a": "new", "shared/b": "2\n", "secrets/pw": "target secret"}
		got, gotRev := storeContent(t, c)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("after --replace store = %q, want %q", got, want)
		}
		if gotRev != res.Revision {
			t.Errorf("store revision %d after the import, want the import's %d: one transaction", gotRev, res.Revision)
		}
	})
}

// TestE2E_ImportGuards checks against a real server that the planned transaction fails with
// 409, writing nothing, when another writer changes the store between the listing and the commit.
func TestE2E_ImportGuards(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	tok, err := readTokenFile(s.adminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(s.url(), client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := dump{Keys: keyMap{"shared/a": "new", "shared/b": "new"}, Omitted: []string{"secrets/pw"}}

	// No mode, empty store: a key of the file created meanwhile is not overwritten.
	empty, _, err := cl.List(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planImport(file, empty.Entries, "")
	if err != nil {
		t.Fatal(err)
	}
	c.ok("kv", "put", "shared/b", "theirs")
	want, rev := storeContent(t, c)
	if _, err := cl.Txn(ctx, p.Txn); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "shared/b") {
		t.Errorf("empty-store import after a concurrent write: %v, want a conflict naming shared/b", err)
	}
	assertUnchanged(t, c, want, rev)

	// Merge: a key that held the file's value is not written but guarded; changed or deleted
	// since the listing, it makes the whole transaction fail (the file's other key is not
	// written either), and the import run again writes it.
	c.ok("kv", "rm", "shared/b")
	for _, change := range [][]string{{"kv", "put", "shared/a", "theirs"}, {"kv", "rm", "shared/a"}} {
		c.ok("kv", "put", "shared/a", "new")
		c.ok("kv", "put", "shared/b", "old")
		l, _, err := cl.List(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		p, err := planImport(file, l.Entries, modeMerge)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Txn.Ops) != 1 || p.Txn.Ops[0].Key != "shared/b" || len(p.Txn.Guards) != 1 || p.Txn.Guards[0].Key != "shared/a" {
			t.Fatalf("merge plan = %+v, want shared/b put and shared/a guarded", p.Txn)
		}
		c.ok(change...)
		want, rev := storeContent(t, c)
		if _, err = cl.Txn(ctx, p.Txn); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "shared/a") {
			t.Errorf("merge after %q: %v, want a conflict naming shared/a", change, err)
		}
		assertUnchanged(t, c, want, rev)
		f := writeTemp(t, `{"keys":{"shared/a":"new","shared/b":"new"}}`)
		if r := c.run("import", f); r.code != 0 || !strings.Contains(r.stderr, "imported 2 keys (2 put") {
			t.Errorf("merge run again after %q: %s", change, r)
		}
		if got, _ := storeContent(t, c); got["shared/a"] != "new" || got["shared/b"] != "new" {
			t.Errorf("after the merge run again: %q", got)
		}
	}

	// --replace: a change to a key it would delete, to a kept omitted secret, or a new key of
	// the file, each makes it fail.
	c.ok("kv", "put", "other/x", "1")
	c.ok("kv", "put", "secrets/pw", "1")
	for _, change := range [][]string{
		{"kv", "put", "other/x", "2"},
		{"kv", "put", "secrets/pw", "2"},
		{"kv", "rm", "shared/b"},
		{"kv", "put", "shared/a", "theirs"},
	} {
		l, _, err := cl.List(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		p, err := planImport(file, l.Entries, modeReplace)
		if err != nil {
			t.Fatal(err)
		}
		c.ok(change...)
		want, rev := storeContent(t, c)
		_, err = cl.Txn(ctx, p.Txn)
		if !errors.Is(err, api.ErrConflict) {
			t.Errorf("replace after %q: %v, want a conflict", change, err)
		}
		if msg := importTxnError(p, err).Error(); !strings.Contains(msg, "the store changed while importing, nothing was written") {
			t.Errorf("conflict explained as %q", msg)
		}
		assertUnchanged(t, c, want, rev)
	}
}

// A file that names "keys" twice is refused and nothing is written: encoding/json kept the
// last one, and the import wrote its keys alone, dropping the first one's without a word.
func TestE2E_ImportRefusesAMemberGivenTwice(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	f := writeTemp(t, `{"keys":{"shared/twice/a":"1"},"keys":{"shared/twice/b":"2"}}`)
	c.fails(exitError, `member "keys" is given twice in one object`, "import", f)
	c.fails(exitNotFound, "not found", "kv", "get", "shared/twice/b")
}

// A file that names "keys" in another case ("Keys") is refused and nothing is written:
// encoding/json took it for "keys", the last one winning, so {"keys":{…},"Keys":{}} imported no
// key, and with --replace deleted every key of the store. A key named so inside "keys" is a key.
func TestE2E_ImportRefusesAMemberInAnotherCase(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	t.Cleanup(func() { c.run("kv", "rm", "shared/casefold", "--recurse") })
	c.ok("kv", "put", "shared/casefold/keep", "1")
	f := writeTemp(t, `{"keys":{"shared/casefold/keep":"1"},"Keys":{"shared/casefold/new":"2"}}`)
	for _, args := range [][]string{{"import", f}, {"import", f, "--replace"}, {"import", f, "--dry-run"}} {
		c.fails(exitError, `member "Keys" is not "keys"`, args...)
	}
	c.fails(exitNotFound, "not found", "kv", "get", "shared/casefold/new")
	if got := c.ok("kv", "get", "shared/casefold/keep"); got != "1" {
		t.Errorf("shared/casefold/keep = %q after refused imports", got)
	}
	c.ok("import", writeTemp(t, `{"keys":{"shared/casefold/keep":"1","shared/casefold/Keys":"3"}}`))
	if got := c.ok("kv", "get", "shared/casefold/Keys"); got != "3" {
		t.Errorf("shared/casefold/Keys = %q", got)
	}
}

// A file whose keys are confd's paths (/app/db/host) is refused with where such keys go here,
// as kv and txn say it, and nothing is written. Before, import said only "segment 1 is empty".
func TestE2E_ImportConfdKeyNamesWhereItGoes(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	f := writeTemp(t, `{"keys":{"shared/confd/ok":"1","/app/db/host":"db1"}}`)
	c.fails(exitError, `a leading '/' is a confd-style path; keys here have none and live under an appliance or shared/: write appliances/NAME/app/db/host (one appliance's view) or shared/app/db/host`, "import", f)
	c.fails(exitError, `keys have no leading '/': did you mean shared/x?`, "import", writeTemp(t, `{"keys":{"/shared/x":"1"}}`))
	c.fails(exitNotFound, "not found", "kv", "get", "shared/confd/ok")
}

// An appliance's export (shoelace appliance export NAME: its keys relative to the appliance,
// {"keys":{"app/port":…}}) given to import --replace is not taken for an export of the store:
// it is refused, saying how to apply it, and nothing is deleted. Before, "import web.json
// --replace" deleted every key of the store but app/port, which it wrote at the top of the key
// space, where no appliance sees it, and exited 0.
func TestE2E_ImportOfAnApplianceExport(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/web/app/port", "8080")
	c.ok("kv", "put", "shared/ntp", "pool")
	web := writeTemp(t, c.ok("appliance", "export", "web"))
	r := c.fails(exitError, "it looks like an appliance's export (shoelace appliance export NAME)", "import", web, "--replace")
	if !strings.Contains(r.stderr, "shoelace appliance apply NAME -f "+web) {
		t.Errorf("the refusal does not say how to apply the file: %s", r)
	}
	c.fails(exitError, "it looks like an appliance's export", "import", web, "--replace", "--dry-run")
	for k, want := range map[string]string{"appliances/web/app/port": "8080", "shared/ntp": "pool"} {
		if got := c.ok("kv", "get", k); got != want {
			t.Errorf("after the refused import, %s = %q, want %q", k, got, want)
		}
	}
	c.fails(exitNotFound, "not found", "kv", "get", "app/port")

	// Merged, its keys are written where the file says (keys outside shared/ and appliances/ are
	// keys too), and an export of the store holding only such keys replaces it as before.
	r = c.run("import", web)
	if r.code != 0 || !strings.Contains(r.stderr, "warning: no key of "+web+" is under shared/ or appliances/, so no appliance sees them") ||
		!strings.Contains(r.stderr, "apply it with shoelace appliance apply NAME -f "+web) {
		t.Errorf("a merge of an appliance's export: %s; want exit 0 and a warning saying where its keys go and how to apply it", r)
	}
	if got := c.ok("kv", "get", "app/port"); got != "8080" {
		t.Errorf("after the merge, app/port = %q, want 8080", got)
	}
	c.ok("kv", "rm", "appliances", "--recurse")
	c.ok("kv", "rm", "shared", "--recurse")
	all := writeTemp(t, c.ok("export"))
	if r := c.run("import", all, "--replace"); r.code != 0 || strings.Contains(r.stderr, "appliance export") {
		t.Errorf("import of the store's export: %s", r)
	}
}

// An import of an appliance's keys while a rollout of it runs is refused (exit 7), its message
// saying that --force aborts the rollout and writes; import --force does, as DESIGN's "unless
// sent with force (CLI --force)" says of imports too. Before, import had no --force: the
// suggested command failed with a usage error (exit 2).
func TestE2E_ImportForceAbortsTheRollout(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("import-force-%d", time.Now().UnixNano())
	key := "appliances/" + name + "/port"
	c.ok("kv", "put", key, "80")
	enrollOne(t, s, c, name)
	c.ok("kv", "put", key, "81", "--canary", "100%", "--manual")
	file := filepath.Join(t.TempDir(), "import.json")
	writeFile(t, file, fmt.Sprintf(`{"keys":{%q:"82"}}`, key))

	c.fails(exitUnknown, "--force", "import", file)
	if got := c.ok("kv", "get", key); got != "80" {
		t.Fatalf("%s after the refused import = %q, want 80", key, got)
	}
	c.ok("import", file, "--force")
	if got := c.ok("kv", "get", key); got != "82" {
		t.Errorf("%s after import --force = %q, want 82", key, got)
	}
	var st api.RolloutStatus
	if err := json.Unmarshal([]byte(c.ok("appliance", "rollout", "status", name, "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.State != api.RolloutAborted {
		t.Errorf("rollout after import --force: %s, want aborted", st.State)
	}
}
