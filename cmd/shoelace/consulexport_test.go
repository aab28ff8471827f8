package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A consul-template user's keys come from `consul kv export web`: import --from-consul-export
// copies them into the appliance in one transaction, naming the keys it refuses.
func TestE2E_ImportFromConsulExport(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	b64 := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	export := fmt.Sprintf(`[
 {"key":"web/db/host","flags":0,"value":%q},
 {"key":"web/db/port","flags":0,"value":%q},
 {"key":"web/bad key","flags":0,"value":%q},
 {"key":"webx/other","flags":0,"value":%q}
]`, b64("db.internal"), b64("5432"), b64("x"), b64("y"))
	file := filepath.Join(t.TempDir(), "web.json")
	if err := os.WriteFile(file, []byte(export), 0o644); err != nil {
		t.Fatal(err)
	}
	res := c.run("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-web")
	// The key as Consul has it, to rename there: it read "/web/bad key", a name Consul does not have.
	if res.code == 0 || !strings.Contains(res.stderr, `refused "web/bad key"`) {
		t.Fatalf("a refused key: %s", res)
	}
	c.ok("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-web", "--skip-refused")
	if v := c.ok("kv", "get", "appliances/consul-web/db/host"); v != "db.internal" {
		t.Fatalf("db/host = %q", v)
	}
	if out := c.ok("kv", "ls", "appliances/consul-web"); strings.Contains(out, "other") || !strings.Contains(out, "db/port") {
		t.Fatalf("keys: %s", out)
	}
	// --prefix / keeps every key's Consul path, which a template reading key "web/db/host" needs.
	c.ok("import", "--from-consul-export", file, "--prefix", "/", "--appliance", "consul-paths", "--skip-refused")
	if v := c.ok("kv", "get", "appliances/consul-paths/web/db/host"); v != "db.internal" {
		t.Fatalf("web/db/host = %q", v)
	}
	if v := c.ok("kv", "get", "appliances/consul-paths/webx/other"); v != "y" {
		t.Fatalf("webx/other = %q", v)
	}
	c.fails(exitUsage, "not both", "import", "--from-consul-export", file, "--from-etcd", "http://127.0.0.1:1", "--prefix", "web", "--appliance", "x")
	if err := os.WriteFile(file, []byte(`{"not":"a list"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.fails(exitError, "consul kv export", "import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-web")
}

// A key given twice, or an entry naming its value twice, is refused and nothing is written:
// the import took whichever came last (two exports joined into one file, a hand edit).
func TestE2E_ImportFromConsulExportRefusesDuplicates(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	b64 := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	twice := writeTemp(t, fmt.Sprintf(`[{"key":"web/a","flags":0,"value":%q},{"key":"web/b","flags":0,"value":%q},{"key":"web/a","flags":0,"value":%q}]`, b64("old"), b64("b"), b64("new")))
	c.fails(exitError, `entries 1 and 3 are both the key "web/a": give each key once`,
		"import", "--from-consul-export", twice, "--prefix", "web", "--appliance", "consul-twice")
	valueTwice := writeTemp(t, fmt.Sprintf(`[{"key":"web/a","flags":0,"value":%q,"value":%q}]`, b64("old"), b64("new")))
	c.fails(exitError, `member "value" is given twice in one object`,
		"import", "--from-consul-export", valueTwice, "--prefix", "web", "--appliance", "consul-twice")
	// A member named in another case is taken by encoding/json for the field: "Key" after
	// "key" imported web/b where the entry says web/a.
	keyCase := writeTemp(t, fmt.Sprintf(`[{"key":"web/a","Key":"web/b","flags":0,"value":%q}]`, b64("v")))
	c.fails(exitError, `member "Key" (at byte 16) is not "key"`,
		"import", "--from-consul-export", keyCase, "--prefix", "web", "--appliance", "consul-twice")
	c.fails(exitNotFound, "no keys", "appliance", "get", "consul-twice")
}

// TestReadConsulExport_Bounded: an export over the bound fails with a message before it is read
// whole (a file or stdin).
func TestReadConsulExport_Bounded(t *testing.T) {
	old := maxConsulExportBytes
	maxConsulExportBytes = 100
	defer func() { maxConsulExportBytes = old }()
	file := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(file, []byte(`[{"key":"web/a","flags":0,"value":"`+strings.Repeat("QUFB", 30)+`"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readConsulExport(context.Background(), &cliEnv{}, file); err == nil || !strings.Contains(err.Error(), file+" is over 100 bytes") {
		t.Fatalf("export of 140 bytes under a bound of 100: %v", err)
	}
	maxConsulExportBytes = 200
	kvs, _, err := readConsulExport(context.Background(), &cliEnv{}, file)
	if err != nil || len(kvs) != 1 || len(kvs[0].Value) != 90 {
		t.Fatalf("within the bound: %v, %v", kvs, err)
	}
}

// TestE2E_ImportFromConsulExportFolders: the folders of Consul's KV (keys ending in / with no
// value, which its UI creates and consul kv export lists) are left out with one line naming
// them, with --prefix web (the prefix's own folder) and with --prefix /. They were refused as
// keys, with a rename "in etcd" that no Consul user could make, so that every export holding
// a folder needed --skip-refused, which also hid the keys really refused.
func TestE2E_ImportFromConsulExportFolders(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	b64 := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	file := writeTemp(t, fmt.Sprintf(`[
 {"key":"web/","flags":0,"value":""},
 {"key":"web/db/","flags":0,"value":""},
 {"key":"web/db/host","flags":0,"value":%q},
 {"key":"web/port","flags":0,"value":%q}
]`, b64("db.internal"), b64("8080")))
	for _, tc := range []struct{ prefix, appliance, key string }{
		{"web", "consul-folders", "appliances/consul-folders/db/host"},
		{"/", "consul-folders-paths", "appliances/consul-folders-paths/web/db/host"},
	} {
		r := c.run("import", "--from-consul-export", file, "--prefix", tc.prefix, "--appliance", tc.appliance)
		if r.code != 0 || !strings.Contains(r.stderr, "left out 2 Consul folders") || !strings.Contains(r.stderr, "web/, web/db/") {
			t.Fatalf("import --prefix %s: %s", tc.prefix, r)
		}
		if v := c.ok("kv", "get", tc.key); v != "db.internal" {
			t.Fatalf("%s = %q", tc.key, v)
		}
		if out := c.ok("kv", "ls", "appliances/"+tc.appliance); strings.Count(out, "\n") != 2 {
			t.Fatalf("--prefix %s imported:\n%s", tc.prefix, out)
		}
	}
	// A key that ends in / and holds a value is no folder: refused, with the rename to make in Consul.
	withValue := writeTemp(t, fmt.Sprintf(`[{"key":"web/dir/","flags":0,"value":%q},{"key":"web/a","flags":0,"value":%q}]`, b64("x"), b64("a")))
	r := c.run("import", "--from-consul-export", withValue, "--prefix", "web", "--appliance", "consul-folders-value")
	if r.code != 1 || !strings.Contains(r.stderr, `refused "web/dir/"`) || !strings.Contains(r.stderr, "rename them in Consul, or give --skip-refused") {
		t.Fatalf("a key ending in / with a value: %s", r)
	}
}

// TestE2E_ImportFromConsulExportAllRefused: when every key read is refused and --skip-refused
// leaves them all out, the import says so; it said the appliance "holds every key already",
// of an appliance that holds none.
func TestE2E_ImportFromConsulExportAllRefused(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	file := writeTemp(t, `[{"key":"web/bad key","flags":0,"value":"eA=="}]`)
	r := c.run("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-all-refused", "--skip-refused")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing to import: every key under web was refused (listed above) and --skip-refused left it out") ||
		strings.Contains(r.stderr, "holds every key already") {
		t.Fatalf("import: %s", r)
	}
}

// TestE2E_ImportValueOverServerLimit: a value over the server's --max-value-bytes (1 MiB by
// default; etcd and Consul hold larger ones) is listed as refused, with the limit, as a key
// outside the rules is: the dry run fails as the import does, and --skip-refused imports the
// others. Before, the dry run planned it (exit 0), the import failed on the server with nothing
// to do but delete the key in the source, and --skip-refused did not help.
func TestE2E_ImportValueOverServerLimit(t *testing.T) {
	name := fmt.Sprintf("consul-big-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	c := newCLI(t, sharedServer(t))
	b64 := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	big := strings.Repeat("x", 1<<20+1)
	file := writeTemp(t, fmt.Sprintf(`[{"key":"web/cert","flags":0,"value":%q},{"key":"web/host","flags":0,"value":%q}]`, b64(big), b64("db")))
	args := []string{"import", "--from-consul-export", file, "--prefix", "web", "--appliance", name}
	want := `refused "web/cert": the value is 1048577 bytes, over the server's limit of 1048576 bytes (--max-value-bytes)`
	for _, extra := range [][]string{{"--dry-run"}, nil} {
		r := c.run(append(args, extra...)...)
		if r.code != exitError || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "give --skip-refused to import the 1 others") || strings.Contains(r.stdout, "xxxx") {
			t.Fatalf("import %q of a value over the limit: %s", extra, r)
		}
	}
	c.fails(exitNotFound, "no keys", "appliance", "get", name)
	r := c.run(append(args, "--skip-refused")...)
	if r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("import --skip-refused: %s", r)
	}
	if v := c.ok("kv", "get", "appliances/"+name+"/host"); v != "db" {
		t.Fatalf("host = %q", v)
	}
	c.fails(exitNotFound, "", "kv", "get", "appliances/"+name+"/cert")
}

// TestE2E_ImportFromConsulExportOutsidePrefix: consul kv export web lists every key that starts
// with "web" (webx/other too: Consul's prefixes are raw strings), and an export may hold more
// than the prefix given to the import. The keys of the file outside PREFIX/ were left out
// without a word; now one line names them.
func TestE2E_ImportFromConsulExportOutsidePrefix(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	file := writeTemp(t, `[{"key":"other/x","flags":0,"value":"eA=="},{"key":"web/a","flags":0,"value":"YQ=="},{"key":"webx/other","flags":0,"value":"eQ=="}]`)
	r := c.run("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-outside")
	if r.code != 0 || !strings.Contains(r.stderr, "left out 2 keys of "+file+" outside web/") || !strings.Contains(r.stderr, ": other/x, webx/other\n") {
		t.Fatalf("import --prefix web: %s", r)
	}
	if v := c.ok("kv", "get", "appliances/consul-outside/a"); v != "a" {
		t.Fatalf("a = %q", v)
	}
	// --prefix / takes every key: no such line.
	if r := c.run("import", "--from-consul-export", file, "--prefix", "/", "--appliance", "consul-outside-all"); r.code != 0 || strings.Contains(r.stderr, "left out") {
		t.Fatalf("import --prefix /: %s", r)
	}
}

// TestE2E_ImportRefusedInJSON: with --output json, the keys an import refuses (and, with
// --skip-refused, leaves out) are in the answer as {"key","reason","rename"}: a pipeline that
// reads the JSON could not tell that keys were left out, which only stderr's text said.
func TestE2E_ImportRefusedInJSON(t *testing.T) {
	name := fmt.Sprintf("consul-json-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	c := newCLI(t, sharedServer(t))
	file := writeTemp(t, `[{"key":"web/a","flags":0,"value":"YQ=="},{"key":"web/bad key","flags":0,"value":"eA=="}]`)
	for _, extra := range [][]string{{"--dry-run"}, nil} {
		out := c.ok(append([]string{"import", "--from-consul-export", file, "--prefix", "web", "--appliance", name, "--skip-refused", "--output", "json"}, extra...)...)
		var res struct {
			Put     int `json:"put"`
			Refused []struct {
				Key, Reason, Rename string
			} `json:"refused"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%q: %v\n%s", extra, err, out)
		}
		if res.Put != 1 || len(res.Refused) != 1 || res.Refused[0].Key != "web/bad key" || !strings.Contains(res.Refused[0].Reason, "only letters, digits") ||
			res.Refused[0].Rename != "appliances/"+name+"/bad-key" {
			t.Fatalf("%q: %s", extra, out)
		}
	}
}

// TestE2E_ImportFromConsulExportFlags: Consul's flags (a number an application keeps beside a
// value: consul lock marks its lock keys with one) have no place in a Shoelace key. The import
// names the keys whose flags it does not keep, and imports their values; it dropped them
// without a word.
func TestE2E_ImportFromConsulExportFlags(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	b64 := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	file := writeTemp(t, fmt.Sprintf(`[
 {"key":"web/a","flags":0,"value":%q},
 {"key":"web/b","flags":42,"value":%q},
 {"key":"web/lock","flags":3304740253564472344,"value":""},
 {"key":"webx/c","flags":7,"value":%q}
]`, b64("a"), b64("b"), b64("c")))
	r := c.run("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-flags")
	if r.code != 0 || !strings.Contains(r.stderr, "2 keys have Consul flags, which a Shoelace key does not keep") ||
		!strings.Contains(r.stderr, "web/b (flags 42), web/lock (flags 3304740253564472344)") || strings.Contains(r.stderr, "webx/c (flags") {
		t.Fatalf("import: %s", r)
	}
	if v := c.ok("kv", "get", "appliances/consul-flags/b"); v != "b" {
		t.Fatalf("b = %q", v)
	}
	// Said with --dry-run too, before anything is written.
	r = c.run("import", "--from-consul-export", file, "--prefix", "web", "--appliance", "consul-flags-dry", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stderr, "2 keys have Consul flags") {
		t.Fatalf("import --dry-run: %s", r)
	}
}

// TestE2E_ImportFromConsulExportSaysThePrefixAsGiven: the import of --prefix web said it read
// the keys "under /web" and imported them "from /web", a prefix Consul has no key under (its
// keys have no leading '/'); it names the prefix as Consul does, as it was given. --prefix /
// (every key) stays /.
func TestE2E_ImportFromConsulExportSaysThePrefixAsGiven(t *testing.T) {
	name := fmt.Sprintf("consul-shown-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	c := newCLI(t, sharedServer(t))
	file := writeTemp(t, `[{"key":"web/a","flags":0,"value":"YQ=="},{"key":"web/b","flags":0,"value":"Yg=="}]`)
	for _, tc := range []struct{ prefix, appliance, read, imported string }{
		{"web", name, ": 2 keys under web, 0 refused\n", "imported 2 keys from web into appliances/" + name + " "},
		{"web/", name + "-slash", ": 2 keys under web, 0 refused\n", "imported 2 keys from web into appliances/" + name + "-slash "},
		{"/", name + "-all", ": 2 keys under /, 0 refused\n", "imported 2 keys from / into appliances/" + name + "-all "},
	} {
		r := c.run("import", "--from-consul-export", file, "--prefix", tc.prefix, "--appliance", tc.appliance)
		if r.code != 0 || !strings.Contains(r.stderr, "consul export "+file+tc.read) || !strings.Contains(r.stderr, tc.imported) || strings.Contains(r.stderr, "/web") {
			t.Errorf("import --prefix %s: %s", tc.prefix, r)
		}
	}
	if r := c.run("import", "--from-consul-export", file, "--prefix", "api", "--appliance", name+"-none"); r.code != exitNotFound ||
		!strings.Contains(r.stderr, "import: no key under api in the consul export "+file) {
		t.Errorf("import --prefix api: %s", r)
	}
}
