//go:build !windows

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/templates"
)

// writeConfd writes files (path relative to a new confd dir -> content; "$DIR" is the dir) and
// returns the dir.
func writeConfd(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	withDir := make(map[string]string, len(files))
	for name, text := range files {
		withDir[name] = strings.ReplaceAll(text, "$DIR", dir)
	}
	testbin.WriteFiles(t, dir, withDir)
	return dir
}

func TestReadConfdDir_Good(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"confd.toml": `backend = "etcdv3"
nodes = ["https://etcd-1:2379", "https://etcd-2:2379"]
client_cert = "/etc/confd/client.crt"
watch = true
interval = 60
confdir = "$DIR"
`,
		"conf.d/nginx.toml": `# a comment
[template]
src = "nginx.conf.tmpl"
dest = "$DIR/out/nginx.conf"
keys = ["/nginx", "/upstream"]
prefix = "production/web/"
uid = 0
gid = 0
mode = "0640"
check_cmd = "/usr/sbin/nginx -t -c {{.src}}"
reload_cmd = "/usr/sbin/service nginx reload"
`,
		"conf.d/sub/quoted.toml": `[template]
src = "/sub/q.tmpl"
dest = "$DIR/out/q.conf"
keys = ["/q"]
check_cmd = "sh -c 'test -s {{ .src }}' && grep -q x \"{{.src}}\""
`,
		"conf.d/notes.txt":          "not a resource",
		"templates/nginx.conf.tmpl": `{{ getv "/nginx/port" }}`,
		"templates/sub/q.tmpl":      `{{ getv "/q" }}`,
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Templates) != 2 {
		t.Fatalf("templates = %+v", r.Templates)
	}
	n := r.Templates[0]
	if n.Source != filepath.Join(dir, "templates/nginx.conf.tmpl") || n.Destination != dir+"/out/nginx.conf" || n.Functions != "confd" ||
		n.Prefix != "/production/web/" || n.Perms != "0640" || n.Owner != "0" || n.Group != "0" ||
		n.Check != `/usr/sbin/nginx -t -c "$SHOELACE_STAGED"` || n.Command != "/usr/sbin/service nginx reload" ||
		n.File != filepath.Join(dir, "conf.d/nginx.toml") || n.Line != 2 {
		t.Fatalf("nginx = %+v", n)
	}
	if got := strings.Join(r.Keys[0], ","); got != "/nginx,/upstream" {
		t.Fatalf("keys = %s", got)
	}
	// The template sees only what confd loads for its keys.
	if got := strings.Join(n.Keys, ","); got != "/nginx,/upstream" {
		t.Fatalf("template keys = %s", got)
	}
	q := r.Templates[1]
	// confd joins src to templates/ even with a leading '/'; inside single quotes the variable
	// is spliced out of the quotes, so that the shell expands it as confd's substitution did.
	if q.Source != filepath.Join(dir, "templates/sub/q.tmpl") || q.Check != `sh -c 'test -s '"$SHOELACE_STAGED"'' && grep -q x "$SHOELACE_STAGED"` ||
		q.Prefix != "" || q.Perms != "" || q.Owner != "" {
		t.Fatalf("quoted = %+v", q)
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "backend, nodes, client_cert, watch, interval ignored: the agent reads its keys from the Shoelace server") {
		t.Fatalf("notes = %q", r.Notes)
	}
}

// TestReadConfdDir_GlobalPrefixAndSyncOnly: confd.toml's prefix wins over a resource's (as in
// confd), and sync-only drops every check_cmd and reload_cmd.
func TestReadConfdDir_GlobalPrefixAndSyncOnly(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"confd.toml":       "prefix = \"/production\"\nsync-only = true\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nprefix = \"/other\"\ncheck_cmd = \"false\"\nreload_cmd = \"false\"\n",
		"templates/a.tmpl": "x",
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := r.Templates[0]
	if a.Prefix != "/production" || a.Check != "" || a.Command != "" {
		t.Fatalf("a = %+v", a)
	}
	if got := strings.Join(r.Notes, "\n"); !strings.Contains(got, "prefix /production applies to every resource") || !strings.Contains(got, "sync-only = true") {
		t.Fatalf("notes = %q", r.Notes)
	}
}

// TestReadConfdDir_PrefixAsConfdCutsIt: a resource's prefix reaches its template as confd cuts
// it off the keys it loads, a string: with a trailing '/' ("app/") the prefix's own value stays
// at its whole path ("/app"), and "//app" cuts nothing (whole paths, below /app). The agent
// renders the bytes the real confd v0.16.0 rendered for the same etcd keys (imported with
// --prefix /), stored with the templates' peer cases. Before, every prefix was cleaned
// ("app/" and "//app" were "/app"): a template read the own value at "/" where confd has none,
// and "//app"'s read the keys below the prefix at paths confd does not have.
func TestReadConfdDir_PrefixAsConfdCutsIt(t *testing.T) {
	view := templates.Data{Keys: map[string]string{"app": "own", "app/x": "ax", "app/d/y": "ady", "apple": "apple", "other": "o"}}
	for name, res := range map[string]string{
		"probe-prefix-own-value":               `prefix = "/app"`,
		"probe-prefix-trailing-slash":          `prefix = "/app/"`,
		"probe-prefix-trailing-slash-relative": "prefix = \"app/\"\nkeys = [\"/x\", \"/d\"]",
		"probe-prefix-double-slash":            `prefix = "//"`,
		"probe-prefix-empty-segment":           "prefix = \"//app\"\nkeys = [\"/d\", \"/x\"]",
		"probe-prefix-empty-segment-trailing":  `prefix = "/app//"`,
	} {
		t.Run(name, func(t *testing.T) {
			var c struct{ Template string }
			b, err := os.ReadFile(filepath.Join("..", "templates", "testdata", "peers", "cases", "confd", name+".json"))
			if err == nil {
				err = json.Unmarshal(b, &c)
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("..", "templates", "testdata", "peers", "cases", "confd", name+".out"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(res, "keys") {
				res += "\nkeys = [\"/\"]"
			}
			dir := writeConfd(t, map[string]string{
				"conf.d/r.toml":    "[template]\nsrc = \"r.tmpl\"\ndest = \"$DIR/out/r\"\n" + res + "\n",
				"templates/r.tmpl": c.Template,
			})
			r, err := agent.ReadConfdDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := agent.ParseTemplate(&r.Templates[0])
			if err != nil {
				t.Fatal(err)
			}
			out, err := tmpl.Execute(view)
			if err != nil {
				t.Fatal(err)
			}
			if string(out.Output) != string(want) {
				t.Errorf("%s: rendered\n%s\nconfd rendered\n%s", res, out.Output, want)
			}
		})
	}
}

// TestReadConfdDir_OwnerIgnoredAsConfd: confd's quick-start guide writes owner = "nginx", a field
// confd v0.16.0 does not have: confd loads the resource and leaves the file to its own user.
// So does the agent, saying so, instead of refusing the directory when no such user exists (or
// giving the file an owner confd never gave it); uid still sets the owner, as in confd.
func TestReadConfdDir_OwnerIgnoredAsConfd(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"conf.d/myapp-nginx.toml": "[template]\nprefix = \"/myapp\"\nsrc = \"nginx.tmpl\"\ndest = \"/tmp/myapp.conf\"\nowner = \"no-such-user-shoelace\"\nmode = \"0644\"\nkeys = [\n  \"/subdomain\",\n  \"/upstream\",\n]\n",
		"conf.d/uid.toml":         "[template]\nsrc = \"nginx.tmpl\"\ndest = \"/tmp/uid.conf\"\nuid = 0\nowner = \"nobody\"\n",
		"templates/nginx.tmpl":    "x",
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Templates) != 2 || r.Templates[0].Owner != "" || r.Templates[1].Owner != "0" {
		t.Fatalf("templates = %+v, want myapp-nginx without an owner and uid's owner 0", r.Templates)
	}
	notes := strings.Join(r.Notes, "\n")
	for _, want := range []string{`conf.d/myapp-nginx.toml:5: owner "no-such-user-shoelace" ignored`, `conf.d/uid.toml:5: owner "nobody" ignored`, "uid"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q do not say %q", notes, want)
		}
	}
}

// TestReadConfdDir_Invalid: every problem names the file, the line and the field or rule.
func TestReadConfdDir_Invalid(t *testing.T) {
	res := func(body string) map[string]string {
		return map[string]string{"conf.d/r.toml": body, "templates/a.tmpl": "x"}
	}
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"unknown field", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n\nowner_name = \"nginx\"\n"),
			[]string{"conf.d/r.toml:5: unsupported field \"owner_name\" in [template]: a confd resource has src, dest, keys"}},
		{"dotted unknown field", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nx.y = 1\n"), []string{"conf.d/r.toml:4: unsupported field \"x.y\" in [template]"}},
		{"unknown table", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n[vault]\naddr = \"x\"\n"),
			[]string{"conf.d/r.toml:5: unsupported field \"vault.addr\": a confd resource holds one [template] table"}},
		{"no template table", res("src = \"a.tmpl\"\n"), []string{"conf.d/r.toml:1: unsupported field \"src\""}},
		{"empty file", res(""), []string{"conf.d/r.toml: no [template] table"}},
		{"no src", res("[template]\ndest = \"/tmp/a\"\n"), []string{"conf.d/r.toml:1: src is required"}},
		{"decimal mode", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nmode = \"644\"\n"), []string{`conf.d/r.toml:4: mode "644" is decimal to confd (mode 01204`, `write "0644"`}},
		{"mode beyond a file's", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nmode = \"0100644\"\n"), []string{`conf.d/r.toml:4: mode "0100644" is 0100644 to confd, beyond a file's mode bits`}},
		{"mode not a number", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nmode = \"rw\"\n"), []string{`conf.d/r.toml:4: mode "rw" is not a number`}},
		{"uid a string", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nuid = \"0\"\n"), []string{"conf.d/r.toml:4: incompatible types"}},
		{"syntax error", res("[template]\nsrc = \"a.tmpl\ndest = \"/tmp/a\"\n"), []string{"conf.d/r.toml:2: strings cannot contain newlines"}},
		{"check_cmd other field", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\ncheck_cmd = \"test {{.dest}}\"\n"),
			[]string{"conf.d/r.toml:4: check_cmd: {{.dest}}: only {{.src}}, the staged file, is supported"}},
		{"check_cmd loop", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\ncheck_cmd = \"{{range 100000000000}}{{end}}\"\n"),
			[]string{"conf.d/r.toml:4: check_cmd: {{range 100000000000}}{{end}}: only {{.src}}"}},
		{"bad prefix", res("[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nprefix = \"/a/../b\"\n"), []string{`conf.d/r.toml:4: prefix: "/a/../b" must not have a ".." segment`}},
		{"confd.toml unknown", map[string]string{"confd.toml": "backend = \"etcd\"\nprefx = \"/p\"\n"}, []string{`confd.toml:2: unsupported setting "prefx"`}},
		{"confd.toml noop", map[string]string{"confd.toml": "noop = true\n"}, []string{"confd.toml:1: noop = true is not supported: run shoelace-agent render --dry"}},
		{"confd.toml other confdir", map[string]string{"confd.toml": "\nconfdir = \"/etc/elsewhere\"\n"}, []string{`confd.toml:2: confdir = "/etc/elsewhere", but the agent reads`, "point confd_dir (or --confdir) at /etc/elsewhere"}},
		{"two files, both reported", map[string]string{"conf.d/a.toml": "[template]\nsrc = \"a\"\nfoo = 1\n", "conf.d/b.toml": "[template]\nsrc = \"b\"\nbar = 2\n"},
			[]string{"2 problems", "a.toml:3: unsupported field \"foo\"", "b.toml:3: unsupported field \"bar\""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeConfd(t, tc.files)
			_, err := agent.ReadConfdDir(dir)
			if err == nil {
				t.Fatalf("ReadConfdDir accepted %v", tc.files)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := agent.ReadConfdDir("etc/confd"); err == nil || !strings.Contains(err.Error(), `confd_dir "etc/confd" must be an absolute path`) {
		t.Errorf("relative dir: %v", err)
	}
}

// TestLoadConfig_ConfdDir: confd_dir's resources join the config's templates, --confdir
// (Overrides) replaces it, and the agent's own checks (destination rules, template parsing)
// apply to them with the resource's file and line.
func TestLoadConfig_ConfdDir(t *testing.T) {
	confd := writeConfd(t, map[string]string{
		"confd.toml":       "backend = \"etcdv3\"\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/a.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\ntemplates:\n  - {contents: x, destination: /tmp/own}\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Templates) != 2 || cfg.Templates[1].Destination != confd+"/a.conf" || cfg.Templates[1].Functions != "confd" {
		t.Fatalf("templates = %+v", cfg.Templates)
	}
	if len(cfg.Notes) != 1 || !strings.Contains(cfg.Notes[0], "backend ignored") {
		t.Fatalf("notes = %q", cfg.Notes)
	}

	other := writeConfd(t, map[string]string{
		"conf.d/b.toml":    "[template]\nsrc = \"b.tmpl\"\ndest = \"b.conf\"\n",
		"templates/b.tmpl": "{{ getv \"/b\" }}\n",
	})
	// A relative dest is relative to the directory the agent runs in, as it is to confd
	// (confd's own resource tests write dest = "./tmp/test.conf").
	cfg, err = agent.LoadConfigWith(path, agent.Overrides{ConfdDir: other})
	if err != nil {
		t.Fatalf("--confdir with a relative dest: %v", err)
	}
	wd, _ := os.Getwd()
	if got := cfg.Templates[len(cfg.Templates)-1].Destination; got != filepath.Join(wd, "b.conf") {
		t.Fatalf("--confdir with a relative dest: destination %q, want %q", got, filepath.Join(wd, "b.conf"))
	}
	for dest, want := range map[string]string{"./tmp/test.conf": filepath.Join(wd, "tmp/test.conf"), "/etc//c.conf": "/etc/c.conf", "/etc/x/../c.conf": "/etc/c.conf"} {
		dir := writeConfd(t, map[string]string{
			"conf.d/c.toml":    fmt.Sprintf("[template]\nsrc = \"c.tmpl\"\ndest = %q\nkeys = [\"/\"]\n", dest),
			"templates/c.tmpl": "{{ getv \"/c\" }}\n",
		})
		cfg, err := agent.LoadConfigWith(path, agent.Overrides{ConfdDir: dir})
		if err != nil {
			t.Fatalf("dest %q: %v", dest, err)
		}
		if got := cfg.Templates[len(cfg.Templates)-1].Destination; got != want {
			t.Fatalf("dest %q: destination %q, want %q", dest, got, want)
		}
	}
	if _, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: /nonexistent/confd\n"); true {
		if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "confd_dir: stat /nonexistent/confd: no such file") ||
			strings.Contains(err.Error(), "confd_dir: confd_dir") {
			t.Fatalf("missing confd_dir: %v", err)
		}
	}
}

// TestReadConfdDir_CommandsWaitAsConfd: confd waits for a resource's check_cmd and reload_cmd
// without a bound, so a reload such as `systemctl restart` of a slow service (90 s to stop and
// 90 s to start by default) worked under confd; the agent's 30 s default killed it, failed the
// reload and rolled the file back. A resource's commands run with ConfdCommandTimeout; a
// resource without commands, or under sync-only, keeps the default.
func TestReadConfdDir_CommandsWaitAsConfd(t *testing.T) {
	for _, tc := range []struct {
		name, confd, fields string
		want                time.Duration
	}{
		{name: "reload_cmd", fields: "reload_cmd = \"systemctl restart app\"\n", want: agent.ConfdCommandTimeout},
		{name: "check_cmd", fields: "check_cmd = \"app --check {{.src}}\"\n", want: agent.ConfdCommandTimeout},
		{name: "none", want: agent.DefaultCommandTimeout},
		{name: "sync-only", confd: "sync-only = true\n", fields: "reload_cmd = \"systemctl restart app\"\n", want: agent.DefaultCommandTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{
				"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"$DIR/out/app.conf\"\nkeys = [\"/app\"]\n" + tc.fields,
				"templates/app.tmpl": `{{getv "/app/port"}}`,
			}
			if tc.confd != "" {
				files["confd.toml"] = tc.confd
			}
			dir := writeConfd(t, files)
			r, err := agent.ReadConfdDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Templates[0].Timeout(); got != tc.want {
				t.Errorf("Timeout() = %v, want %v", got, tc.want)
			}
			// As the agent loads it (confd_dir in agent.yaml).
			cfg := filepath.Join(dir, "agent.yaml")
			if err := os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\ntoken: t\nappliance: app\ncache_dir: "+filepath.Join(dir, "cache")+"\nconfd_dir: "+dir+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := agent.LoadConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Templates[0].Timeout(); got != tc.want {
				t.Errorf("loaded: Timeout() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadConfdDir_SettingsConfdReads: confd v0.16.0 decodes confd.toml into its Config, whose
// untagged fields (OneTime, KeepStageFile, Role, …) its TOML decoder matches by name regardless
// of case, as it does the tagged ones (Backend = "etcdv3"). A confd.toml confd runs with was
// refused whole ("unsupported setting \"onetime\""), so that no resource rendered; these are
// ignored with the connection settings now, onetime with how to run one pass. A name confd
// does not read stays an error.
func TestReadConfdDir_SettingsConfdReads(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"confd.toml": `Backend = "etcdv3"
NODES = ["http://127.0.0.1:2379"]
onetime = true
keepstagefile = true
role = "confd"
Watch = false
Prefix = "/production/web"
`,
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"$DIR/out/app.conf\"\nkeys = [\"/app\"]\n",
		"templates/app.tmpl": `{{getv "/app/port"}}`,
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(r.Notes, "\n")
	for _, want := range []string{
		"Backend, NODES, onetime, keepstagefile, role, Watch ignored",
		"confd.toml:3: onetime: for one pass, run shoelace-agent once --confdir " + dir,
		"prefix /production/web applies to every resource",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes do not say %q:\n%s", want, notes)
		}
	}
	if len(r.Templates) != 1 || r.Templates[0].Prefix != "/production/web" {
		t.Fatalf("templates = %+v", r.Templates)
	}

	bad := writeConfd(t, map[string]string{"confd.toml": "onetime = true\nbogus = 1\n"})
	_, err = agent.ReadConfdDir(bad)
	if err == nil || !strings.Contains(err.Error(), `confd.toml:2: unsupported setting "bogus"`) || strings.Contains(err.Error(), "onetime\"") {
		t.Fatalf("error %v, want bogus (and only it) refused", err)
	}
}

// TestReadConfdDir_ConfdirByAnotherName: confd.toml's confdir and confd_dir may name the same
// directory by different paths (/etc/confd a link to /opt/app/confd, as configuration
// management lays it out): confd read the same files, so the agent reads them too. It refused
// them ("confdir = ..., but the agent reads ..."), pointing at the directory it was reading.
func TestReadConfdDir_ConfdirByAnotherName(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	link := filepath.Join(t.TempDir(), "confd")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ confdir, read string }{{dir, link}, {link, dir}, {link + "/", link}} {
		if err := os.WriteFile(filepath.Join(dir, "confd.toml"), []byte(fmt.Sprintf("confdir = %q\n", tc.confdir)), 0o644); err != nil {
			t.Fatal(err)
		}
		if r, err := agent.ReadConfdDir(tc.read); err != nil || len(r.Templates) != 1 {
			t.Errorf("confdir %s, confd_dir %s: %v", tc.confdir, tc.read, err)
		}
	}
	// Another directory is still refused.
	if err := os.WriteFile(filepath.Join(dir, "confd.toml"), []byte(fmt.Sprintf("confdir = %q\n", t.TempDir())), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.ReadConfdDir(link); err == nil || !strings.Contains(err.Error(), "but the agent reads") {
		t.Errorf("another confdir: %v", err)
	}
}

// A confd resource's template is named by its file's name, as confd names it: one that executes
// itself by that name renders what confd renders. It was named by its whole path: "template
// \"r.tmpl\" not defined".
func TestConfd_TemplateNamedByItsFileName(t *testing.T) {
	confd := writeConfd(t, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"r.tmpl\"\ndest = \"$DIR/r.conf\"\nkeys = [\"/app\"]\n",
		"templates/r.tmpl": "{{- if not . -}}top {{template \"r.tmpl\" (getv \"/app/name\")}}{{- else -}} inner {{.}}{{- end}}",
	})
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.RenderView(context.Background(), 1, map[string]string{"app/name": "web"}); st.Failed != 0 || st.Rendered != 1 {
		t.Fatalf("render: %+v", st)
	}
	if b, err := os.ReadFile(confd + "/r.conf"); err != nil || string(b) != "top inner web" {
		t.Fatalf("r.conf: %q, %v; want confd's \"top inner web\"", b, err)
	}
}

// A mode with setuid, setgid or sticky bits ("04755") is installed with its permission bits, as
// confd installs it (it hands the number to os.FileMode, whose special bits are elsewhere), with
// a note: it was refused, and with it the whole directory.
func TestReadConfdDir_SpecialModeBitsDroppedAsConfd(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nmode = \"04755\"\n",
		"templates/a.tmpl": "x",
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Templates) != 1 || r.Templates[0].Perms != "0755" {
		t.Fatalf("templates = %+v, want perms 0755", r.Templates)
	}
	if notes := strings.Join(r.Notes, "\n"); !strings.Contains(notes, `conf.d/r.toml:4: mode "04755": setuid, setgid and sticky bits dropped, as confd drops them`) {
		t.Fatalf("notes %q", notes)
	}
}

// TestLoadConfig_ConfdOwnerAsConfd: a confd resource without uid (gid) is installed owned by
// the user (group) the agent runs as, since confd v0.16.0 sets them to its os.Geteuid() and
// os.Getegid() and chowns every file it installs to them, an existing file of another owner
// too (and installs again a file whose owner alone changed). The agent kept an existing
// file's owner instead. A native template without owner still keeps it.
func TestLoadConfig_ConfdOwnerAsConfd(t *testing.T) {
	confd := writeConfd(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/a.conf\"\nkeys = [\"/a\"]\n",
		"conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/b.conf\"\nuid = 7\nkeys = [\"/a\"]\n",
		"conf.d/c.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/c.conf\"\ngid = 8\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\ntemplates:\n  - {contents: x, destination: /tmp/own}\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Templates) != 4 {
		t.Fatalf("templates = %+v", cfg.Templates)
	}
	euid, egid := os.Geteuid(), os.Getegid()
	for i, want := range [][2]int{{-1, -1}, {euid, egid}, {7, egid}, {euid, 8}} {
		tc := &cfg.Templates[i]
		if tc.UID() != want[0] || tc.GID() != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", tc.Destination, tc.UID(), tc.GID(), want[0], want[1])
		}
	}
}

// TestLoadConfig_ConfdUnsetIDsAsConfd: confd starts a resource's uid and gid at -1 and takes -1
// after decoding as "not set" (the file gets confd's own user and group), so uid = -1 and
// gid = -1 written out render as if left out. The agent refused them ("id -1 is negative"), and
// with them the whole confd_dir. Now -1 is not set, as in confd; another negative id is still
// refused.
func TestLoadConfig_ConfdUnsetIDsAsConfd(t *testing.T) {
	confd := writeConfd(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/a.conf\"\nuid = -1\ngid = -1\nkeys = [\"/a\"]\n",
		"conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/b.conf\"\nuid = -1\ngid = 8\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ getv \"/a\" }}\n",
	})
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Templates) != 2 {
		t.Fatalf("templates = %+v", cfg.Templates)
	}
	euid, egid := os.Geteuid(), os.Getegid()
	for i, want := range [][2]int{{euid, egid}, {euid, 8}} {
		tc := &cfg.Templates[i]
		if tc.UID() != want[0] || tc.GID() != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", tc.Destination, tc.UID(), tc.GID(), want[0], want[1])
		}
	}
	bad := writeConfd(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/a.conf\"\nuid = -2\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "x\n",
	})
	_, path = writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+bad+"\n")
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "-2 is negative") {
		t.Fatalf("uid = -2: %v, want it refused", err)
	}
}

// TestAgent_ConfdEmptyPrefixBesideOthers: one appliance's view imported with --prefix / (whole
// paths) for a confd directory whose resources have different prefixes, one of which holds no
// key yet (/theirapp). confd renders it from nothing under its prefix: getv's default, an empty
// ls. The agent read the view as one imported with --prefix /theirapp and rendered the view's
// root (subdomain, myapp) into it. It renders from nothing now, and validate says so, from the
// view the agent cached.
func TestAgent_ConfdEmptyPrefixBesideOthers(t *testing.T) {
	srv := newViewServer(t, map[string]string{"myapp/subdomain": "myapp", "subdomain": "root"})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testbin.WriteFiles(t, dir, map[string]string{
		"confd/templates/a.tmpl":  `{{getv "/subdomain" "none"}} {{ls "/"}}`,
		"confd/conf.d/my.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/my.conf\"\nprefix = \"/myapp\"\nkeys = [\"/\"]\n",
		"confd/conf.d/their.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/their.conf\"\nprefix = \"/theirapp\"\nkeys = [\"/\"]\n",
	})
	a, _, _ := testAgentIn(t, srv, dir, header+"confd_dir: $DIR/confd\n")
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"my.conf": "myapp [subdomain]", "their.conf": "none []"} {
		if got := read(t, dir+"/"+file); got != want {
			t.Errorf("%s = %q, want confd's %q", file, got, want)
		}
	}
	// validate reads the view that run last cached.
	if err := agent.SaveCache(dir+"/cache", agent.Cached{Appliance: "web", Store: "store-1", Revision: 10, Keys: srv.keys}); err != nil {
		t.Fatal(err)
	}
	w := strings.Join(a.Warnings(), "\n")
	if !strings.Contains(w, "their.toml") || !strings.Contains(w, "prefix /theirapp holds none of the resource's keys in the view cached at revision 10") || strings.Contains(w, "prefix /myapp") {
		t.Errorf("warnings %q do not name /theirapp alone", w)
	}
}
