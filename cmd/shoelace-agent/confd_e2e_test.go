//go:build !windows

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/testbin"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// copyConfd copies testdata/confd (confd's own integration confdir) into dir, with each
// resource's destination moved from /tmp into out.
func copyConfd(t *testing.T, dir, out string) {
	t.Helper()
	err := filepath.WalkDir("testdata/confd", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/confd", p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".toml") {
			b = bytes.ReplaceAll(b, []byte(`dest = "/tmp/`), []byte(`dest = "`+out+`/`))
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestE2E_ConfdDir points the real agent at confd's own integration confdir, with a confd.toml
// as a confd user has it (an etcd backend and a prefix), after the keys that confd's etcdv3
// test writes under /prefix were stored in the appliance's view (as import --from-etcd
// --prefix /prefix does): once --confdir renders the bytes confd's integration test expects;
// a resource of ours adds uid, gid, mode, check_cmd with {{.src}} and reload_cmd.
func TestE2E_ConfdDir(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	for k, v := range map[string]string{
		"key": "foobar", "database/host": "127.0.0.1", "database/password": "p@sSw0rd", "database/port": "3306",
		"database/username": "confd", "upstream/app1": "10.0.1.10:8080", "upstream/app2": "10.0.1.11:8080",
	} {
		srv.put("appliances/web/"+k, v)
	}
	e := newEnv(t, srv, "", "")
	confd := filepath.Join(e.dir, "confd")
	copyConfd(t, confd, e.path("out"))
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(confd, name), []byte(strings.ReplaceAll(text, "$DIR", e.dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("confd.toml", `backend = "etcdv3"
nodes = ["http://127.0.0.1:2379"]
prefix = "/prefix"
watch = true
log-level = "debug"
`)
	write("conf.d/zz-checked.toml", fmt.Sprintf(`[template]
src = "basic.conf.tmpl"
dest = "$DIR/out/checked.conf"
keys = ["/database"]
uid = %d
gid = %d
mode = "0600"
check_cmd = "grep -q '^host=127.0.0.1$' {{.src}}"
reload_cmd = "echo reloaded >> $DIR/reloads"
`, os.Geteuid(), os.Getegid()))
	// As in confd, a resource sees only the keys at or below its keys: nothing else exists.
	write("conf.d/zz-keys.toml", "[template]\nsrc = \"keys.tmpl\"\ndest = \"$DIR/out/keys.conf\"\nkeys = [\"/database\"]\n")
	write("templates/keys.tmpl", `{{getv "/database/host"}} {{exists "/key"}} {{getv "/upstream/app1" "none"}} {{ls "/"}} {{lsdir "/"}}`+"\n")
	if err := os.MkdirAll(e.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}

	agentCmd := func(args ...string) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace-agent"), append(args, "--config", e.config, "--confdir", confd)...)
		cmd.Env = append(os.Environ(), "HOSTNAME=localhost") // as confd's integration test runs
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), stdout.String(), stderr.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, stdout.String(), stderr.String()
	}

	code, stdout, stderr := agentCmd("validate")
	if code != 0 || !strings.Contains(stdout, "ok, 7 templates") ||
		!strings.Contains(stdout, "warning: "+confd+"/confd.toml: backend, nodes, watch, log-level ignored: the agent reads its keys from the Shoelace server") {
		t.Fatalf("validate --confdir: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = agentCmd("once")
	if code != 0 {
		t.Fatalf("once --confdir: exit %d\n%s", code, stderr)
	}
	for dest, want := range map[string]string{
		"confd-basic-test.conf": "basic.conf", "confd-exists-test.conf": "exists-test.conf",
		"confd-iteration-test.conf": "iteration.conf", "confd-manykeys-test.conf": "basic.conf", "checked.conf": "basic.conf",
	} {
		if got, want := readFile(t, e.path("out/"+dest)), readFile(t, "testdata/confd/expect/"+want); got != want {
			t.Errorf("%s:\n%s\nwant (confd's integration/expect/%s):\n%s", dest, got, want, want)
		}
	}
	if got, want := readFile(t, e.path("out/keys.conf")), "127.0.0.1 false none [] []\n"; got != want {
		t.Errorf("keys.conf = %q, want %q (what confd renders with keys = [\"/database\"])", got, want)
	}
	fi, err := os.Stat(e.path("out/checked.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
		t.Errorf("checked.conf: mode %v owner %d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
	}
	if got := commandLines(t, e.path("reloads")); len(got) != 1 {
		t.Errorf("reload_cmd ran %d times, want once", len(got))
	}

	// A staged file that fails check_cmd is not installed, and reload_cmd does not run.
	srv.put("appliances/web/database/host", "10.9.9.9")
	code, _, stderr = agentCmd("once")
	if code == 0 || !strings.Contains(stderr, "checked.conf") {
		t.Fatalf("once with a failing check_cmd: exit %d\n%s", code, stderr)
	}
	if got := readFile(t, e.path("out/checked.conf")); !strings.Contains(got, "host=127.0.0.1\n") {
		t.Errorf("checked.conf replaced although its check failed:\n%s", got)
	}
	if got := readFile(t, e.path("out/confd-basic-test.conf")); !strings.Contains(got, "host=10.9.9.9\n") {
		t.Errorf("basic: %s", got)
	}
	if got := commandLines(t, e.path("reloads")); len(got) != 1 {
		t.Errorf("reload_cmd ran %d times after a failed check, want still once", len(got))
	}

	// A resource whose template has a syntax error, and one whose src is missing, fail alone, as
	// in confd: validate fails naming both; once renders the others, writes neither, and exits
	// 1. They stopped every resource before.
	srv.put("appliances/web/database/host", "10.8.8.8")
	write("conf.d/zz-broken.toml", "[template]\nsrc = \"broken.tmpl\"\ndest = \"$DIR/out/broken.conf\"\n")
	write("templates/broken.tmpl", "name={{getv \"/key\"}\n")
	write("conf.d/zz-missing.toml", "[template]\nsrc = \"missing.tmpl\"\ndest = \"$DIR/out/missing.conf\"\n")
	code, stdout, stderr = agentCmd("validate")
	if code != 1 || !strings.Contains(stderr, "2 problems") || !strings.Contains(stderr, "broken.tmpl:1") || !strings.Contains(stderr, "missing.tmpl: no such file") {
		t.Fatalf("validate with broken templates: exit %d, want 1 naming both\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = agentCmd("once")
	if code != 1 || !strings.Contains(stderr, "cannot be read or parsed: it fails at every render") {
		t.Fatalf("once with broken templates: exit %d, want 1\n%s", code, stderr)
	}
	if got := readFile(t, e.path("out/confd-basic-test.conf")); !strings.Contains(got, "host=10.8.8.8\n") {
		t.Errorf("basic not rendered beside the broken templates: %s", got)
	}
	for _, f := range []string{"out/broken.conf", "out/missing.conf"} {
		if _, err := os.Stat(e.path(f)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want none", f, err)
		}
	}
	for _, f := range []string{"conf.d/zz-broken.toml", "conf.d/zz-missing.toml", "templates/broken.tmpl"} {
		os.Remove(filepath.Join(confd, f))
	}

	// A field confd does not read is an error naming the file, the line and the field.
	write("conf.d/bad.toml", "[template]\nsrc = \"basic.conf.tmpl\"\ndest = \"$DIR/out/bad.conf\"\nowner_name = \"nginx\"\n")
	code, _, stderr = agentCmd("validate")
	if want := confd + `/conf.d/bad.toml:4: unsupported field "owner_name" in [template]`; code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("validate with a bad resource: exit %d, want 1 and %q:\n%s", code, want, stderr)
	}
}

// TestConvertConfd_Golden: convert-confd of confd's own integration confdir, and of a confdir
// shaped as confd's documentation shows one (confd.toml with an etcd backend and a prefix, uid,
// gid, check_cmd, reload_cmd), prints the agent.yaml entries of the golden file ($CONFD
// standing for the directory).
func TestConvertConfd_Golden(t *testing.T) {
	for _, name := range []string{"confd", "confd-nginx"} {
		t.Run(name, func(t *testing.T) {
			dir, err := filepath.Abs(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", filepath.Join("testdata", name)}, &stdout, &stderr); err != nil {
				t.Fatalf("convert-confd: %v\n%s", err, stderr.String())
			}
			// What it prints is agent.yaml: every field is one the agent knows.
			if _, err := agent.ParseConfig(name+".yaml", stdout.Bytes()); err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			got := strings.ReplaceAll(stdout.String(), dir, "$CONFD")
			golden := filepath.Join("testdata", name+".convert.golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, golden); got != want {
				t.Fatalf("convert-confd printed:\n%s\nwant (%s):\n%s", got, golden, want)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace-agent", "convert-confd"}, &stdout, &stderr); exitCode(err) != 2 {
		t.Fatalf("convert-confd without a directory: %v (exit %d), want a usage error", err, exitCode(err))
	}
}

// TestConvertConfd_FileExists: a resource whose template calls fileExists (which confd always
// allowed, and the agent only with allow_file: true) converts to an entry with allow_file: true,
// which the agent then accepts; the others do not get it.
func TestConvertConfd_FileExists(t *testing.T) {
	dir := t.TempDir()
	testbin.WriteFiles(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/a.conf\"\nkeys = [\"/a\"]\n",
		"conf.d/b.toml":    "[template]\nsrc = \"b.tmpl\"\ndest = \"" + dir + "/b.conf\"\nkeys = [\"/b\"]\n",
		"templates/a.tmpl": "{{ if fileExists \"/etc/hostname\" }}y{{ end }}\n",
		"templates/b.tmpl": "{{ getv \"/b\" }}\n",
	})
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", dir}, &stdout, &stderr); err != nil {
		t.Fatalf("convert-confd: %v\n%s", err, stderr.String())
	}
	if got := strings.Count(stdout.String(), "allow_file: true"); got != 1 {
		t.Fatalf("%d entries with allow_file: true, want 1:\n%s", got, stdout.String())
	}
	cfg := "server: http://h:1\nappliance: a\ntoken: t\ncache_dir: " + filepath.Join(dir, "cache") + "\n" + stdout.String()
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, cfg)
	}
}

// TestE2E_ConfdQuickStartAdvanced runs confd's quick-start guide's "Advanced Example" as the
// guide writes it (two resources, prefixes /myapp and /yourapp, one nginx.tmpl, owner = "nginx",
// mode, check_cmd with {{.src}}, reload_cmd) against its keys as import --from-etcd --prefix /
// leaves them: once --confdir writes the bytes, modes and owners the real confd v0.16.0 wrote
// (which ignores owner: on a host without an nginx user it still renders) and runs each reload once; a change below one prefix
// re-renders and reloads that resource alone.
func TestE2E_ConfdQuickStartAdvanced(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	for k, v := range map[string]string{
		"myapp/subdomain": "myapp", "myapp/upstream/app2": "10.0.1.100:80", "myapp/upstream/app1": "10.0.1.101:80",
		"yourapp/subdomain": "yourapp", "yourapp/upstream/app2": "10.0.1.102:80", "yourapp/upstream/app1": "10.0.1.103:80",
	} {
		srv.put("appliances/web/"+k, v)
	}
	e := newEnv(t, srv, "", "")
	confd := filepath.Join(e.dir, "confd")
	files := map[string]string{"templates/nginx.tmpl": "upstream {{getv \"/subdomain\"}} {\n{{range getvs \"/upstream/*\"}}\n    server {{.}};\n{{end}}\n}\n\nserver {\n    server_name  {{getv \"/subdomain\"}}.example.com;\n}\n"}
	for _, app := range []string{"myapp", "yourapp"} {
		files["conf.d/"+app+"-nginx.toml"] = fmt.Sprintf("[template]\nprefix = \"/%s\"\nsrc = \"nginx.tmpl\"\ndest = \"%s/out/%s.conf\"\nowner = \"nginx\"\nmode = \"0644\"\nkeys = [\n  \"/subdomain\",\n  \"/upstream\",\n]\ncheck_cmd = \"grep -q server_name {{.src}}\"\nreload_cmd = \"echo reload %s >> %s/reloads\"\n",
			app, e.dir, app, app, e.dir)
	}
	testbin.WriteFiles(t, confd, files)
	if err := os.MkdirAll(e.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}
	once := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace-agent"), "once", "--config", e.config, "--confdir", confd).CombinedOutput()
		if err != nil {
			t.Fatalf("once --confdir: %v\n%s", err, out)
		}
	}
	once()
	// What confd v0.16.0 wrote from the same directory and keys (etcd v3 backend).
	want := map[string]string{
		"myapp.conf":   "upstream myapp {\n\n    server 10.0.1.100:80;\n\n    server 10.0.1.101:80;\n\n}\n\nserver {\n    server_name  myapp.example.com;\n}\n",
		"yourapp.conf": "upstream yourapp {\n\n    server 10.0.1.102:80;\n\n    server 10.0.1.103:80;\n\n}\n\nserver {\n    server_name  yourapp.example.com;\n}\n",
	}
	for name, w := range want {
		p := e.path("out/" + name)
		if got := readFile(t, p); got != w {
			t.Errorf("%s: %q, want confd's %q", name, got, w)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o644 || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s: mode %v owner %d, want 0644 and the agent's user %d, as confd left it", name, fi.Mode().Perm(), st.Uid, os.Geteuid())
		}
	}
	if got := readFile(t, e.path("reloads")); got != "reload myapp\nreload yourapp\n" {
		t.Errorf("reloads %q, want each resource's reload_cmd once", got)
	}

	srv.put("appliances/web/yourapp/upstream/app3", "10.0.1.104:80")
	once()
	if got := readFile(t, e.path("reloads")); got != "reload myapp\nreload yourapp\nreload yourapp\n" {
		t.Errorf("after a change below /yourapp, reloads %q, want yourapp's once more", got)
	}
	if got := readFile(t, e.path("out/myapp.conf")); got != want["myapp.conf"] {
		t.Errorf("myapp.conf changed: %q", got)
	}
}

// A confd directory named "help" (or "h") converts like any other: urfave/cli's help subcommand,
// which it gives every command, took the word, and "convert-confd help" printed convert-confd's
// help (exit 0) instead of converting ./help. --help still shows the help.
func TestConvertConfd_DirectoryNamedHelp(t *testing.T) {
	dir := t.TempDir()
	testbin.WriteFiles(t, filepath.Join(dir, "help"), map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/a.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", "help"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "destination: "+dir+"/a.conf") {
		t.Fatalf("convert-confd help: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", "--help"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "convert-confd") || strings.Contains(stdout.String(), "destination:") {
		t.Fatalf("convert-confd --help: %v\n%s", err, stdout.String())
	}
}

// convert-confd of a directory that is not there, or of a file, says so of the directory given,
// not of confd_dir, a setting of agent.yaml that the command line did not use; a flag written
// after the directory is named as misplaced, not counted as a second directory (found by a CLI
// walk: "confd_dir: stat …", and "takes one argument" for "convert-confd DIR --log-level warn").
func TestConvertConfd_ErrorsNameTheArgument(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "confd.toml")
	if err := os.WriteFile(file, []byte("prefix = \"/web\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{filepath.Join(dir, "nope")}, 1, "convert-confd: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{[]string{file}, 1, "convert-confd: " + file + " is not a directory"},
		{[]string{dir, "--log-level", "warn"}, 2, "flags go before the directory"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"shoelace-agent", "convert-confd"}, tc.args...), &stdout, &stderr)
		if exitCode(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "confd_dir") {
			t.Errorf("convert-confd %q: %v (exit %d); want exit %d and %q, without confd_dir", tc.args, err, exitCode(err), tc.code, tc.want)
		}
	}
}

// TestConvertConfd_RelativeDest: confd opens a relative dest ("tmp/app.conf", "./tmp/x.conf" in
// its own tests) from the directory it runs in, / when it runs as a service. convert-confd made
// it absolute from the directory the conversion ran in (an admin's home: /root/tmp/app.conf) and
// said nothing, so that the entry wrote another file than confd did. Now the output says which
// dest was relative, what it became and why to check it, as convert-consul-template says it;
// an absolute dest, even unclean, gets no such note.
func TestConvertConfd_RelativeDest(t *testing.T) {
	dir := t.TempDir()
	testbin.WriteFiles(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"tmp/app.conf\"\nkeys = [\"/a\"]\n",
		"conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "//b.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	cwd := t.TempDir()
	t.Chdir(cwd)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", dir}, &stdout, &stderr); err != nil {
		t.Fatalf("convert-confd: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	abs := filepath.Join(cwd, "tmp/app.conf")
	want := "# note: " + filepath.Join(dir, "conf.d/a.toml") + `:1: dest "tmp/app.conf" is relative: converted to ` + abs + ", from the directory convert-confd ran in;\n" +
		"#   confd took it from the one it ran in (/ as a service): check it, or write it absolute\n"
	if !strings.Contains(out, want) || !strings.Contains(out, "destination: "+abs+"\n") {
		t.Fatalf("convert-confd printed:\n%s\nwant the destination %s and the note\n%s", out, abs, want)
	}
	if strings.Count(out, "is relative") != 1 {
		t.Fatalf("convert-confd printed a note for a dest that is absolute:\n%s", out)
	}
	if _, err := agent.ParseConfig("agent.yaml", stdout.Bytes()); err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, out)
	}
}

// TestConvertConfd_SaysAFailedReloadIsUndone: confd keeps a new file whose reload_cmd failed, the
// agent by default puts the previous one back; convert-confd's notes said nothing of it. They
// say so once, for resources with a reload_cmd, and name on_command_failure: keep, which the
// agent takes on the converted entries.
func TestConvertConfd_SaysAFailedReloadIsUndone(t *testing.T) {
	dir := t.TempDir()
	testbin.WriteFiles(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/a.conf\"\nkeys = [\"/a\"]\nreload_cmd = \"false\"\n",
		"conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/b.conf\"\nkeys = [\"/a\"]\nreload_cmd = \"false\"\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	convert := func(dir string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"shoelace-agent", "convert-confd", dir}, &stdout, &stderr); err != nil {
			t.Fatalf("convert-confd: %v\n%s", err, stderr.String())
		}
		return stdout.String()
	}
	out := convert(dir)
	const want = "# note: when reload_cmd fails, confd keeps the new file; the agent puts the previous one back (on_command_failure:\n" +
		"#   rollback, the default) and runs the command again: add on_command_failure: keep to the entries (all that share\n" +
		"#   a command) to keep the new file as confd did.\n"
	if strings.Count(out, want) != 1 {
		t.Fatalf("convert-confd printed:\n%s\nwant once the note\n%s", out, want)
	}
	kept := strings.ReplaceAll(out, "    command: \"false\"\n", "    command: \"false\"\n    on_command_failure: keep\n")
	if strings.Count(kept, "    on_command_failure: keep\n") != 2 {
		t.Fatalf("no command to add on_command_failure to:\n%s", out)
	}
	cfg, err := agent.ParseConfig("agent.yaml", []byte(kept))
	if err != nil {
		t.Fatalf("the agent refuses the conversion with on_command_failure: keep: %v\n%s", err, kept)
	}
	for _, tm := range cfg.Templates {
		if tm.OnFailure() != agent.OnFailureKeep {
			t.Fatalf("template %s: on_command_failure %q", tm.Destination, tm.OnFailure())
		}
	}

	// Without a reload_cmd there is nothing to undo, and no note.
	plain := t.TempDir()
	testbin.WriteFiles(t, plain, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + plain + "/a.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	if out := convert(plain); strings.Contains(out, "on_command_failure") {
		t.Fatalf("convert-confd of a resource without reload_cmd:\n%s", out)
	}
}
