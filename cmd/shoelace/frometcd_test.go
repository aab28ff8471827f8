package main

import (
	"bytes"
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// confdEtcd starts an etcd v3 of its own, as a confd user has one, holding keys.
func confdEtcd(t *testing.T, keys map[string]string) (endpoint string, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ee, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ee.Close() })
	cli, err = clientv3.New(clientv3.Config{Endpoints: ee.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	for k, v := range keys {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return ee.Endpoints()[0], cli
}

// TestE2E_ImportFromEtcd copies the keyspace of confd's own etcdv3 integration test (its keys
// under /prefix) from a real etcd into an appliance, with keys no confd user should lose
// silently: each refused one is named with the rule and the name it could have.
func TestE2E_ImportFromEtcd(t *testing.T) {
	good := map[string]string{
		"/prefix/database/host": "127.0.0.1", "/prefix/database/password": "p@sSw0rd", "/prefix/database/port": "3306",
		"/prefix/database/username": "confd", "/prefix/upstream/app1": "10.0.1.10:8080", "/prefix/upstream/app2": "10.0.1.11:8080",
		"/prefix/nginx/secrets/tls.key": "-----BEGIN KEY-----\n",
	}
	bad := map[string]string{
		"/prefix":               "value at the prefix",
		"/prefix/app//port":     "80",
		"/prefix/dir/":          "",
		"/prefix/blob":          "\xff\xfe\x00",
		"/prefix/has space/key": "x",
		"/prefix/.hidden":       "x",
	}
	all := map[string]string{"/key": "foobar", "/prefixed/other": "a sibling", "/other/x": "y"}
	for k, v := range good {
		all[k] = v
	}
	for k, v := range bad {
		all[k] = v
	}
	endpoint, etcd := confdEtcd(t, all)
	srv := freshServer(t)
	c := newCLI(t, srv)
	c.ok("kv", "put", "appliances/other/keep", "x")
	before, rev := storeContent(t, c)
	args := []string{"import", "--from-etcd", endpoint, "--prefix", "/prefix", "--appliance", "web"}

	// Refused keys: each named with its reason, nothing written.
	r := c.run(args...)
	if r.code != 1 || !strings.Contains(r.stderr, "shoelace: import: 6 keys refused (listed above), nothing written") {
		t.Fatalf("import with refused keys: %s", r)
	}
	for _, want := range []string{
		`refused "/prefix": the prefix itself holds a value`,
		`refused "/prefix/app//port": empty segment ('//'): every segment of a key must have a name; rename it so that it becomes appliances/web/app/port`,
		`refused "/prefix/dir/": trailing '/': a key here names a value, never a directory; rename it so that it becomes appliances/web/dir`,
		`refused "/prefix/blob": the value is not UTF-8 text`,
		`refused "/prefix/has space/key": "appliances/web/has space/key": segment 3 "has space" has ' '; only letters, digits, '.', '_' and '-' are allowed; rename it so that it becomes appliances/web/has-space/key`,
		`refused "/prefix/.hidden": "appliances/web/.hidden": segment 3 ".hidden" must start with a letter or digit; rename it so that it becomes appliances/web/x.hidden`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "prefixed") || strings.Contains(r.stderr, "/other/x") {
		t.Errorf("keys outside the prefix mentioned:\n%s", r.stderr)
	}
	assertUnchanged(t, c, before, rev)

	// --dry-run without --skip-refused: the refusals, and the plan of the keys it could
	// write (it printed only the refusals, though the README says a dry run shows what it
	// would write too), then the import's error and exit code; nothing written.
	r = c.run(append(args, "--dry-run")...)
	if r.code != 1 || !strings.Contains(r.stderr, `refused "/prefix/app//port"`) || !strings.Contains(r.stderr, "nothing written, and the import is refused:\n") ||
		!strings.HasSuffix(r.stderr, "shoelace: import: 6 keys refused (listed above), nothing written: rename them in etcd, or give --skip-refused to import the 7 others\n") ||
		!strings.Contains(r.stdout, "+ appliances/web/database/host=127.0.0.1\n") || strings.Count(r.stdout, "\n") != len(good) {
		t.Fatalf("dry run with refused keys: %s", r)
	}
	assertUnchanged(t, c, before, rev)

	// --dry-run --skip-refused: the plan, nothing written.
	r = c.run(append(args, "--skip-refused", "--dry-run")...)
	if r.code != 0 {
		t.Fatalf("dry run: %s", r)
	}
	// Each with its value, as appliance apply --dry-run prints them; a secret's masked.
	var want []string
	for k, v := range good {
		if strings.Contains(k, "/secrets/") {
			v = "(secret)"
		}
		want = append(want, "+ appliances/web"+strings.TrimPrefix(k, "/prefix")+"="+quoteIfNeeded(v))
	}
	if got := strings.Count(r.stdout, "\n"); got != len(want) {
		t.Fatalf("dry run printed:\n%s\nwant %d keys created", r.stdout, len(want))
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w+"\n") {
			t.Errorf("dry run lacks %q:\n%s", w, r.stdout)
		}
	}
	assertUnchanged(t, c, before, rev)

	// The import: one transaction (one revision), every good key, nothing else touched.
	r = c.run(append(args, "--skip-refused")...)
	if r.code != 0 || !strings.Contains(r.stderr, "imported 7 keys from /prefix into appliances/web") {
		t.Fatalf("import: %s", r)
	}
	after, _ := storeContent(t, c)
	if revs := releasesOf(t, c, 2); len(revs) != 2 || revs[0] <= rev || revs[1] != rev {
		t.Errorf("releases %v after the import of the store at release %d: want one more (one transaction)", revs, rev)
	}
	wantStore := map[string]string{"appliances/other/keep": "x"}
	for k, v := range good {
		wantStore["appliances/web"+strings.TrimPrefix(k, "/prefix")] = v
	}
	if !reflect.DeepEqual(after, wantStore) {
		t.Fatalf("store = %q\nwant %q", after, wantStore)
	}

	// Again: nothing to do. A value changed in etcd: a conflict (exit 4) unless --merge.
	if r = c.run(append(args, "--skip-refused")...); r.code != 0 || !strings.Contains(r.stderr, "nothing to import") {
		t.Fatalf("second import: %s", r)
	}
	if _, err := etcd.Put(context.Background(), "/prefix/database/port", "3307"); err != nil {
		t.Fatal(err)
	}
	r = c.run(append(args, "--skip-refused")...)
	if r.code != 4 || !strings.Contains(r.stderr, "1 key of appliances/web already holds other values, nothing written (give --merge to overwrite them): appliances/web/database/port") {
		t.Fatalf("import over a changed key: %s", r)
	}
	// A dry run shows the plan without the conflicting key, and fails as the import does.
	r = c.run(append(args, "--skip-refused", "--dry-run")...)
	if r.code != 4 || r.stdout != "" || !strings.Contains(r.stderr, "would import 0 keys") || !strings.Contains(r.stderr, "1 key of appliances/web already holds other values") {
		t.Fatalf("dry run over a changed key: %s", r)
	}
	r = c.run(append(args, "--skip-refused", "--merge", "--dry-run")...)
	if want := "dry run: would import 1 key from /prefix into appliances/web (6 already there) in one transaction of 1 operation and 1 guard, against revision "; r.code != 0 || !strings.Contains(r.stderr, want) || r.stdout != "~ appliances/web/database/port=3307 (was 3306)\n" {
		t.Fatalf("dry run --merge over a changed key: %s; want %q", r, want)
	}
	if r = c.run(append(args, "--skip-refused", "--merge")...); r.code != 0 {
		t.Fatalf("import --merge: %s", r)
	}
	if got := c.ok("kv", "get", "appliances/web/database/port"); got != "3307" {
		t.Fatalf("port = %q after --merge", got)
	}

	// Flags that need each other.
	c.fails(2, "--from-etcd needs --prefix", "import", "--from-etcd", endpoint, "--appliance", "web")
	c.fails(2, "--from-consul-export needs --prefix (the Consul prefix whose keys are copied; / keeps their whole paths", "import", "--from-consul-export", "-", "--appliance", "web")
	c.fails(2, "--prefix goes with --from-etcd", "import", "f.json", "--prefix", "/p")
	c.fails(2, "--replace does not go with --from-etcd", append(args, "--replace")...)
	c.fails(2, `a confd prefix starts with '/'`, "import", "--from-etcd", endpoint, "--prefix", "prefix", "--appliance", "web")
	c.fails(2, `--prefix "/..": a ".." segment is not allowed`, "import", "--from-etcd", endpoint, "--prefix", "/..", "--appliance", "web")
	c.fails(2, `--prefix "/prefix/./x": a "." segment is not allowed`, "import", "--from-etcd", endpoint, "--prefix", "/prefix/./x", "--appliance", "web")
}

// TestPlanFromEtcd: a key created is guarded to be still absent, a key changed (--merge) to
// hold still what was read, and a key equal is left out of the transaction.
func TestPlanFromEtcd(t *testing.T) {
	keys := map[string]string{"appliances/web/a": "1", "appliances/web/b": "2", "appliances/web/c": "3"}
	current := []api.KV{{Key: "appliances/web/b", Value: "2", ModRevision: 7}, {Key: "appliances/web/c", Value: "old", ModRevision: 9}}
	p, conflicts := planFromEtcd(keys, current, false)
	if !reflect.DeepEqual(conflicts, []string{"appliances/web/c"}) {
		t.Fatalf("conflicts = %q", conflicts)
	}
	p, conflicts = planFromEtcd(keys, current, true)
	wantOps := []api.Op{{Op: api.OpPut, Key: "appliances/web/a", Value: "1"}, {Op: api.OpPut, Key: "appliances/web/c", Value: "3"}}
	wantGuards := []api.Guard{{Key: "appliances/web/a", ModRevision: 0}, {Key: "appliances/web/c", ModRevision: 9}}
	if len(conflicts) != 0 || !reflect.DeepEqual(p.Txn.Ops, wantOps) || !reflect.DeepEqual(p.Txn.Guards, wantGuards) || p.Unchanged != 1 {
		t.Fatalf("plan = %+v, conflicts %q", p, conflicts)
	}
}

// TestKVPut_ConfdPath: a key written the confd way says how to write it here.
func TestKVPut_ConfdPath(t *testing.T) {
	for key, want := range map[string]string{
		"/app/db/host":       `a leading '/' is a confd-style path; keys here have none and live under an appliance or shared/: write appliances/NAME/app/db/host (one appliance's view) or shared/app/db/host (every appliance's)`,
		"/appliances/web/x":  "keys have no leading '/': did you mean appliances/web/x?",
		"/shared/system/ntp": "did you mean shared/system/ntp?",
		"//app/db/host":      "write appliances/NAME/app/db/host",
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"shoelace", "kv", "put", key, "v", "--addr", "http://127.0.0.1:1"}, strings.NewReader(""), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) || exitCode(err) != 1 {
			t.Errorf("kv put %s: %v (exit %d), want exit 1 and %q", key, err, exitCode(err), want)
		}
	}
}

// TestE2E_ImportFromEtcd_LeavesOutTheStore: an import of --prefix / from the etcd a Shoelace
// server uses (here its embedded etcd's --etcd-listen, the server run with --root) copies the
// confd keys beside the store and never the store's own: its tokens, releases and the keys of
// its appliances would otherwise become keys of one appliance, readable by its agents.
func TestE2E_ImportFromEtcd_LeavesOutTheStore(t *testing.T) {
	etcdAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	src, err := startServer(t.TempDir(), nil, "--etcd-listen", etcdAddr, "--root", "/cfg/")
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = src.stop() })
	newCLI(t, src).ok("kv", "put", "appliances/secret/password", "hunter2")
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for k, v := range map[string]string{"/key": "foobar", "/database/host": "127.0.0.1"} {
		if _, err := etcd.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}

	c := newCLI(t, freshServer(t))
	r := c.run("import", "--from-etcd", "http://"+etcdAddr, "--prefix", "/", "--appliance", "emb", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stderr, "left out the keys under /cfg/: a Shoelace store's own keys") {
		t.Fatalf("import: %s", r)
	}
	if want := "+ appliances/emb/database/host=127.0.0.1\n+ appliances/emb/key=foobar\n"; r.stdout != want {
		t.Fatalf("import planned:\n%s\nwant:\n%s", r.stdout, want)
	}
	if strings.Contains(r.stderr, "/cfg/kv") || strings.Contains(r.stderr, "/cfg/sys") {
		t.Fatalf("the store's keys were read as confd keys:\n%s", r.stderr)
	}
}

// TestE2E_ImportFromEtcd_NoKeyUnderPrefix: a prefix under which the source holds nothing (a
// typo, /prod/web for /production/web) exits 3 naming it, for etcd and for a Consul export,
// with or without --dry-run. It exited 0 saying the appliance "holds every key already",
// which a pipeline took for a finished migration. For etcd, it also says that confd's default
// backend (-backend etcd) keeps its keys in etcd's v2 keyspace, which the import's v3 read does
// not see: the hint only said to check the prefix, and etcdctl get --prefix, which it named,
// lists nothing of v2 either, so that a right prefix looked wrong.
func TestE2E_ImportFromEtcd_NoKeyUnderPrefix(t *testing.T) {
	endpoint, _ := confdEtcd(t, map[string]string{"/production/web/db/host": "db1"})
	consul := writeTemp(t, `[{"key":"web/db/host","flags":0,"value":"ZGIx"},{"key":"other","flags":0,"value":"eA=="}]`)
	c := newCLI(t, freshServer(t))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"etcd", []string{"--from-etcd", endpoint, "--prefix", "/prod/web"}, "shoelace: import: no key under /prod/web in the etcd " + endpoint},
		{"etcd v2", []string{"--from-etcd", endpoint, "--prefix", "/prod/web"}, "if confd ran with -backend etcd, its default, its keys are in etcd's v2 keyspace"},
		{"consul", []string{"--from-consul-export", consul, "--prefix", "wbe"}, "the file's keys start with other, web/"},
	} {
		for _, dry := range []bool{false, true} {
			args := append([]string{"import", "--appliance", "web"}, tc.args...)
			if dry {
				args = append(args, "--dry-run")
			}
			r := c.run(args...)
			if r.code != exitNotFound || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing written") {
				t.Errorf("%s (dry run %t): %s; want exit %d saying %q", tc.name, dry, r, exitNotFound, tc.want)
			}
		}
	}
	c.fails(exitNotFound, "no keys", "appliance", "get", "web")
	// The right prefix imports.
	c.ok("import", "--appliance", "web", "--from-etcd", endpoint, "--prefix", "/production/web")
	if v := c.ok("kv", "get", "appliances/web/db/host"); v != "db1" {
		t.Fatalf("db/host = %q", v)
	}
}

// TestE2E_ImportFromEtcd_TLSFlagsUsage: --etcd-cert without --etcd-key (or the other way round)
// is a usage error naming both flags, and the --etcd-* flags given with --from-consul-export,
// which reads no etcd, are refused instead of ignored. The first failed with exit 1 and
// "etcd client cert and key must be given together"; the second imported as if they were not
// there.
func TestE2E_ImportFromEtcd_TLSFlagsUsage(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	c.fails(exitUsage, "--etcd-cert and --etcd-key must be given together",
		"import", "--from-etcd", "https://127.0.0.1:1", "--prefix", "/p", "--appliance", "tls-usage", "--etcd-cert", "client.pem")
	c.fails(exitUsage, "--etcd-cert and --etcd-key must be given together",
		"import", "--from-etcd", "https://127.0.0.1:1", "--prefix", "/p", "--appliance", "tls-usage", "--etcd-key", "client.key")
	file := writeTemp(t, `[{"key":"web/a","flags":0,"value":"YQ=="}]`)
	c.fails(exitUsage, "--etcd-cacert goes with --from-etcd",
		"import", "--from-consul-export", file, "--prefix", "web", "--appliance", "tls-usage", "--etcd-cacert", "ca.pem")
	c.fails(exitNotFound, "no keys", "appliance", "get", "tls-usage")
}

// TestE2E_ImportFromEtcd_URLWithPassword: an --from-etcd URL with a user and password (how some
// tools take etcd's credentials) is a usage error that names the URL without its password; the
// import sent neither, failed with etcd's "user name is empty" and printed the URL whole,
// password included, on stderr (a terminal, a CI log).
func TestE2E_ImportFromEtcd_URLWithPassword(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	r := c.fails(exitUsage, "has a user or password", "import", "--from-etcd", "http://127.0.0.1:1,http://root:s3cret@127.0.0.1:2", "--prefix", "/p", "--appliance", "url-password")
	if strings.Contains(r.stderr, "s3cret") || !strings.Contains(r.stderr, "--etcd-cert") {
		t.Fatalf("the refusal shows the password or no way on: %s", r)
	}
}

// TestE2E_ImportFromEtcd_URLWithPasswordNotParsed: an endpoint with a user and password that
// url.Parse does not read as a URL with a user (no scheme, as etcdctl's endpoints are often
// written; a password with a '%' or a '/' not escaped) is refused as well, without the password.
// Those passed the check, the read failed, and its error printed the endpoint whole.
func TestE2E_ImportFromEtcd_URLWithPasswordNotParsed(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	for _, ep := range []string{"root:s3cret@127.0.0.1:1", "http://root:s3%cret@127.0.0.1:1", "http://root:s3/cret@127.0.0.1:1"} {
		r := c.fails(exitUsage, "has a user or password", "import", "--from-etcd", ep, "--prefix", "/p", "--appliance", "url-password")
		if strings.Contains(r.stderr, "cret") || !strings.Contains(r.stderr, "127.0.0.1:1") {
			t.Errorf("--from-etcd %s: the refusal shows the password, or not the host: %s", ep, r)
		}
	}
}

// TestE2E_ImportFromEtcd_RenameNotTaken: a refused key's rename could name a key that the
// import takes ("/p/a b" told to become appliances/web/a-b, which "/p/a-b" becomes), or the
// rename of another refused key ("/p/a#b" told the same): renamed in etcd as told, it would
// overwrite that key's value. Each rename now names a key no other has.
func TestE2E_ImportFromEtcd_RenameNotTaken(t *testing.T) {
	endpoint, _ := confdEtcd(t, map[string]string{"/p/a b": "1", "/p/a#b": "3", "/p/a-b": "2", "/p/a-b-2": "4", "/p/c d": "5"})
	c := newCLI(t, freshServer(t))
	r := c.run("import", "--from-etcd", endpoint, "--prefix", "/p", "--appliance", "web", "--dry-run")
	if r.code != 1 {
		t.Fatalf("import with refused keys: %s", r)
	}
	for _, want := range []string{
		`refused "/p/a b": "appliances/web/a b": segment 3 "a b" has ' '; only letters, digits, '.', '_' and '-' are allowed; rename it so that it becomes appliances/web/a-b-3` + "\n",
		`refused "/p/a#b": "appliances/web/a#b": segment 3 "a#b" has '#'; only letters, digits, '.', '_' and '-' are allowed; rename it so that it becomes appliances/web/a-b-4` + "\n",
		`refused "/p/c d": "appliances/web/c d": segment 3 "c d" has ' '; only letters, digits, '.', '_' and '-' are allowed; rename it so that it becomes appliances/web/c-d` + "\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestE2E_ImportFromEtcd_UserPassword: an etcd with authentication on, whose users log in with
// a password (as most confd setups give confd's -username and -password), could only be read
// with a client certificate: the import had no user or password to give, and failed with
// etcd's "user name is empty". --etcd-user USER[:PASSWORD] and --etcd-password (or
// SHOELACE_ETCD_PASSWORD) read it as etcdctl's --user and --password do; a wrong password, or a
// user who may not read the prefix, is an error naming the user and what to change, and the
// password is never printed.
func TestE2E_ImportFromEtcd_UserPassword(t *testing.T) {
	const secret = "s3cr3t:pw"
	endpoint, etcd := confdEtcd(t, map[string]string{"/p/db/host": "10.0.0.1", "/p/db/port": "5432", "/other/x": "y"})
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := etcd.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := etcd.RoleAdd(ctx, "confd-reader"); return err },
		func() error {
			_, err := etcd.RoleGrantPermission(ctx, "confd-reader", "/p", clientv3.GetPrefixRangeEnd("/p"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := etcd.UserAdd(ctx, "confd", secret); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "confd", "confd-reader"); return err },
		func() error { _, err := etcd.UserAdd(ctx, "nobody", "nobodypw"); return err },
		func() error { _, err := etcd.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	c := newCLI(t, freshServer(t))
	args := []string{"import", "--from-etcd", endpoint, "--prefix", "/p", "--appliance", "web"}
	noSecret := func(r result) {
		t.Helper()
		if strings.Contains(r.stdout+r.stderr, "s3cr3t") {
			t.Errorf("the password is printed: %s", r)
		}
	}

	// Without a user: etcd's refusal, with the flags that read it.
	r := c.fails(1, "user name is empty", args...)
	if !strings.Contains(r.stderr, "--etcd-user USER[:PASSWORD]") {
		t.Errorf("the refusal does not name --etcd-user: %s", r)
	}
	// A wrong password, a user who may not read the prefix.
	r = c.fails(1, `user "confd": etcdserver: authentication failed`, append(args, "--etcd-user", "confd:wrong")...)
	noSecret(r)
	// USER:PASSWORD with a password given apart too (SHOELACE_ETCD_PASSWORD left set) is a user
	// named "confd:PASSWORD", as etcdctl reads it: the error does not print that name whole.
	noSecret(c.with("SHOELACE_ETCD_PASSWORD=other").fails(1, `user "confd:…": etcdserver: authentication failed`, append(args, "--etcd-user", "confd:"+secret)...))
	r = c.fails(1, `as user "nobody": etcdserver: permission denied`, append(args, "--etcd-user", "nobody:nobodypw")...)
	if !strings.Contains(r.stderr, "etcdctl role grant-permission ROLE --prefix read /p") {
		t.Errorf("the refusal does not say how to grant the read: %s", r)
	}
	// Usage errors.
	noSecret(c.fails(2, `--etcd-user "confd" has no password`, append(args, "--etcd-user", "confd")...))
	noSecret(c.fails(2, "--etcd-password goes with --etcd-user", append(args, "--etcd-password", secret)...))
	noSecret(c.fails(2, "--etcd-user goes with --from-etcd", "import", "f.json", "--etcd-user", "confd:"+secret))
	noSecret(c.fails(2, "--etcd-password goes with --from-etcd", "import", "--from-consul-export", "-", "--prefix", "/", "--appliance", "web", "--etcd-password", secret))

	// USER:PASSWORD, the password split at its first colon as etcdctl splits it.
	r = c.run(append(args, "--etcd-user", "confd:"+secret, "--dry-run")...)
	noSecret(r)
	if r.code != 0 || !strings.Contains(r.stdout, "+ appliances/web/db/host=10.0.0.1\n") {
		t.Fatalf("import --etcd-user confd:PASSWORD --dry-run: %s", r)
	}
	// The password from the environment, off the command line; --etcd-user is then the name whole.
	r = c.with("SHOELACE_ETCD_PASSWORD=" + secret).run(append(args, "--etcd-user", "confd")...)
	noSecret(r)
	if r.code != 0 || !strings.Contains(r.stderr, "imported 2 keys from /p into appliances/web") {
		t.Fatalf("import --etcd-user confd with SHOELACE_ETCD_PASSWORD: %s", r)
	}
	if got := c.ok("kv", "get", "appliances/web/db/port"); got != "5432" {
		t.Fatalf("port = %q after the import", got)
	}
	// SHOELACE_ETCD_PASSWORD left set does not stop an import of a file.
	if r = c.with("SHOELACE_ETCD_PASSWORD="+secret, "SHOELACE_ETCD_USER=confd").run("import", "--dry-run", writeTemp(t, `{"keys":{}}`)); strings.Contains(r.stderr, "goes with") {
		t.Fatalf("import FILE with SHOELACE_ETCD_USER and SHOELACE_ETCD_PASSWORD set: %s", r)
	}
}

// TestE2E_ImportFromEtcd_RoleOnTheDirectory: a confd user whose role grants its prefix as a
// directory (etcdctl role grant-permission ROLE --prefix read /p/, all that confd needs, as it
// reads PREFIX/KEY ranges) was refused the import ("permission denied", told to grant the wider
// --prefix read /p): the import read the prefix as a string, /p itself and siblings such as
// /p-old/… included. It reads the keys below /p/ then, and /p's own value where the role allows.
func TestE2E_ImportFromEtcd_RoleOnTheDirectory(t *testing.T) {
	endpoint, etcd := confdEtcd(t, map[string]string{"/p": "own", "/p/db/host": "10.0.0.1", "/p/db/port": "5432", "/p-old/x": "y"})
	ctx := context.Background()
	read := clientv3.PermissionType(clientv3.PermRead)
	for _, step := range []func() error{
		func() error { _, err := etcd.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := etcd.RoleAdd(ctx, "confd-dir"); return err },
		func() error {
			_, err := etcd.RoleGrantPermission(ctx, "confd-dir", "/p/", clientv3.GetPrefixRangeEnd("/p/"), read)
			return err
		},
		func() error { _, err := etcd.UserAdd(ctx, "confd", "confdpw"); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "confd", "confd-dir"); return err },
		// One that may read /p's own value too, but not its siblings.
		func() error { _, err := etcd.RoleAdd(ctx, "confd-own"); return err },
		func() error { _, err := etcd.RoleGrantPermission(ctx, "confd-own", "/p", "", read); return err },
		func() error { _, err := etcd.UserAdd(ctx, "confd2", "confd2pw"); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "confd2", "confd-dir"); return err },
		func() error { _, err := etcd.UserGrantRole(ctx, "confd2", "confd-own"); return err },
		func() error { _, err := etcd.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	c := newCLI(t, freshServer(t))
	args := []string{"import", "--from-etcd", endpoint, "--prefix", "/p", "--appliance", "web"}
	r := c.run(append(args, "--etcd-user", "confd:confdpw")...)
	if r.code != 0 || !strings.Contains(r.stderr, "imported 2 keys from /p into appliances/web") {
		t.Fatalf("import as a user whose role grants /p/: %s", r)
	}
	if got := c.ok("kv", "get", "appliances/web/db/port"); got != "5432" {
		t.Fatalf("port = %q after the import", got)
	}
	// /p's own value, which the role of confd2 lets it read, is refused as from a user who may
	// read everything.
	r = c.run(append(args, "--etcd-user", "confd2:confd2pw", "--dry-run")...)
	if r.code != 1 || !strings.Contains(r.stderr, `refused "/p": the prefix itself holds a value`) {
		t.Fatalf("import as a user who may read /p itself: %s", r)
	}
}
