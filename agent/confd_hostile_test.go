//go:build !windows

package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/templates"
)

// TestReadConfdDir_BrokenResourceLink: a conf.d entry ending in "toml" that is a dangling or
// looping link stops the read, naming it (confd stops on it too), instead of dropping that
// resource and rendering the others with exit 0.
func TestReadConfdDir_BrokenResourceLink(t *testing.T) {
	for _, target := range []string{"/nonexistent/r.toml", "SELF"} {
		dir := writeConfd(t, map[string]string{
			"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n",
			"templates/a.tmpl": "x",
		})
		link := filepath.Join(dir, "conf.d/b.toml")
		if target == "SELF" {
			target = link
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		_, err := agent.ReadConfdDir(dir)
		if err == nil || !strings.Contains(err.Error(), "read "+link) {
			t.Fatalf("link to %s: %v", target, err)
		}
	}
}

// TestReadConfdDir_LargeFile: a resource or confd.toml over 1 MiB (a stray dump named *.toml)
// is refused without being read whole.
func TestReadConfdDir_LargeFile(t *testing.T) {
	big := "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nkeys = [" + strings.Repeat(`"/k",`, 1<<18) + "\"/k\"]\n"
	for _, name := range []string{"conf.d/big.toml", "confd.toml"} {
		dir := writeConfd(t, map[string]string{name: big, "templates/a.tmpl": "x"})
		_, err := agent.ReadConfdDir(dir)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, name)+" is over 1048576 bytes") {
			t.Fatalf("%s of %d bytes: %v", name, len(big), err)
		}
	}
}

// TestReadConfdDir_ModeAdvice: a decimal mode is explained with the octal one to write only when
// that one is accepted ("644" → "0644"; "7777" has special bits either way).
func TestReadConfdDir_ModeAdvice(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\nmode = \"7777\"\n",
		"templates/a.tmpl": "x",
	})
	_, err := agent.ReadConfdDir(dir)
	if err == nil || strings.Contains(err.Error(), `write "07777"`) || !strings.Contains(err.Error(), `mode "7777" is 017141 to confd, beyond a file's mode bits`) {
		t.Fatalf("mode 7777: %v", err)
	}
}

// TestReadConfdDir_CheckQuotesStaged: a bare {{.src}} becomes "$SHOELACE_STAGED", so that a
// staged file whose directory has a space, a '*' or a ';' in its name is one word to the
// check, which a real shell shows. (Inside single quotes, as in sh -c '… {{.src}}', the path
// is spliced in as confd spliced it: TestReadConfdDir_Good.)
func TestReadConfdDir_CheckQuotesStaged(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"conf.d/r.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n" +
			"check_cmd = \"test -f {{.src}} && test -f \\\"{{.src}}\\\"\"\n",
		"templates/a.tmpl": "x",
	})
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	check := r.Templates[0].Check
	if want := `test -f "$SHOELACE_STAGED" && test -f "$SHOELACE_STAGED"`; check != want {
		t.Fatalf("check = %s, want %s", check, want)
	}
	sub := filepath.Join(t.TempDir(), "my app;touch pwned *")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(sub, ".a.shoelace-1")
	if err := os.WriteFile(staged, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", check)
	cmd.Dir = sub
	cmd.Env = append(os.Environ(), "SHOELACE_STAGED="+staged)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("check %s on %q: %v\n%s", check, staged, err, out)
	}
}

// TestLoadConfig_ConfdFileExistsSaysHow: a confd resource whose template calls fileExists (off
// without allow_file, which a resource cannot set) is a problem of the resource alone
// (Unparsed, on which validate fails), with the way to turn it on.
func TestLoadConfig_ConfdFileExistsSaysHow(t *testing.T) {
	confd := writeConfd(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"$DIR/a.conf\"\nkeys = [\"/a\"]\n",
		"templates/a.tmpl": "{{ if fileExists \"/etc/hostname\" }}y{{ end }}\n",
	})
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nconfd_dir: "+confd+"\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil || len(cfg.Unparsed) != 1 || !strings.Contains(cfg.Unparsed[0], `"fileExists" is disabled`) ||
		!strings.Contains(cfg.Unparsed[0], "a confd resource has no allow_file: shoelace-agent convert-confd "+confd+" prints its entry with allow_file: true") {
		t.Fatalf("fileExists in a confd resource: %v, %v", err, cfg)
	}
}

// TestLoadConfig_FileDeniesTokenAndCache: with allow_file, file and fileExists still refuse the
// agent's token file and cache dir (through a link too), so that a path taken from a key cannot
// copy the token or the cached view into a rendered file; other files read as before.
func TestLoadConfig_FileDeniesTokenAndCache(t *testing.T) {
	for mode, text := range map[string]string{
		"native":          `{{ if fileExists (getenv "P") }}{{ end }}`,
		"consul-template": `{{ file (env "P") }}`,
		"confd":           `{{ if fileExists (getenv "P") }}{{ end }}`,
	} {
		dir, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\ntemplates:\n"+
			"  - destination: $DIR/out\n    allow_file: true\n    functions: "+mode+"\n    contents: '"+text+"'\n"+
			"  - destination: $DIR/out2\n    allow_file: true\n    contents: '{{ file (env \"P\") }}'\n")
		if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cache", "view.json"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(dir, "token"), filepath.Join(dir, "innocent")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "other"), []byte("fine"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range cfg.Templates {
			tm, err := agent.ParseTemplate(&cfg.Templates[i])
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"token", "innocent", "cache", "cache/view.json"} {
				p = filepath.Join(dir, p)
				_, err := tm.Execute(templates.Data{Env: func(string) string { return p }, LookupEnv: func(string) (string, bool) { return p, true }})
				if err == nil || !strings.Contains(err.Error(), "the agent's own token and cache are not for templates") {
					t.Errorf("%s: template %d of %s: %v, want a refusal", mode, i, p, err)
				}
			}
			other := filepath.Join(dir, "other")
			if _, err := tm.Execute(templates.Data{Env: func(string) string { return other }, LookupEnv: func(string) (string, bool) { return other, true }}); err != nil {
				t.Errorf("%s: template %d of another file: %v", mode, i, err)
			}
		}
	}
}

// TestLoadConfig_FileDeniesConfigWithInlineToken: a config that holds the token inline (token:)
// is refused to file and fileExists as token_file is, by its path or a link to it: a path taken
// from a key copied the config, token and all, into a rendered file. A config without one
// (token_file:) is a file like others.
func TestLoadConfig_FileDeniesConfigWithInlineToken(t *testing.T) {
	for _, inline := range []bool{true, false} {
		tok := "token_file: $DIR/token\n"
		if inline {
			tok = "token: sl_inline-secret\n"
		}
		dir, path := writeConfig(t, "server: http://h:1\nappliance: a\n"+tok+"cache_dir: $DIR/cache\ntemplates:\n"+
			"  - destination: $DIR/out\n    allow_file: true\n    contents: '{{ file (env \"P\") }}'\n")
		if err := os.Symlink(path, filepath.Join(dir, "innocent")); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		tm, err := agent.ParseTemplate(&cfg.Templates[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, filepath.Join(dir, "innocent")} {
			res, err := tm.Execute(templates.Data{Env: func(string) string { return p }, LookupEnv: func(string) (string, bool) { return p, true }})
			refused := err != nil && strings.Contains(err.Error(), "the agent's own token and cache are not for templates")
			if inline && !refused {
				t.Errorf("file %s, the config that holds the token: %q, %v; want a refusal", p, res.Output, err)
			}
			if !inline && (err != nil || !strings.Contains(string(res.Output), "token_file:")) {
				t.Errorf("file %s, a config without a token: %v", p, err)
			}
		}
	}
}

// TestReadConfdDir_LinkedConfD: a conf.d that is a symbolic link gives no resources, as in confd
// (which does not follow it), and a note says why instead of silence.
func TestReadConfdDir_LinkedConfD(t *testing.T) {
	real := writeConfd(t, map[string]string{"conf.d/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n"})
	dir := writeConfd(t, map[string]string{"templates/a.tmpl": "x"})
	if err := os.Symlink(filepath.Join(real, "conf.d"), filepath.Join(dir, "conf.d")); err != nil {
		t.Fatal(err)
	}
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Templates) != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "conf.d: no resources (*toml files): it is a symbolic link, which confd does not follow either") {
		t.Fatalf("templates %d, notes %q", len(r.Templates), r.Notes)
	}
}

// TestReadConfdDir_TrailingSlash: confd_dir: /etc/confd/ names the directory that confd.toml's
// confdir = "/etc/confd" names.
func TestReadConfdDir_TrailingSlash(t *testing.T) {
	dir := writeConfd(t, map[string]string{
		"confd.toml":       "confdir = \"$DIR\"\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"/tmp/a\"\n",
		"templates/a.tmpl": "x",
	})
	r, err := agent.ReadConfdDir(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	if r.Dir != dir || r.Templates[0].Source != filepath.Join(dir, "templates/a.tmpl") {
		t.Fatalf("dir %s, source %s", r.Dir, r.Templates[0].Source)
	}
}
