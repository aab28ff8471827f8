package templates

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// mustParse parses text with opts or fails the test.
func mustParse(tb testing.TB, text string, opts Options) *Template {
	tb.Helper()
	tmpl, err := Parse(text, opts)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", text, err)
	}
	return tmpl
}

// render parses and executes text against keys and returns the result.
func render(tb testing.TB, text string, keys map[string]string) *Result {
	tb.Helper()
	res, err := mustParse(tb, text, Options{Name: "test.tmpl"}).Execute(Data{Keys: keys})
	if err != nil {
		tb.Fatalf("Execute(%q): %v", text, err)
	}
	return res
}

func TestExecute_MissingKeyNamesKeyAndTemplate(t *testing.T) {
	view := MustView(t)
	for _, text := range []string{
		"ok\n{{key \"db/pool\"}}",
		"{{getv \"/db/pool\"}}",
		"{{with get \"/db/pool\"}}{{.Value}}{{end}}",
		"{{define \"sub\"}}{{key \"db/pool\"}}{{end}}before {{template \"sub\"}}",
		"{{keyOr \"db/host\" \"x\"}}{{key \"db/pool\" | upper}}",
	} {
		t.Run(text, func(t *testing.T) {
			tmpl := mustParse(t, text, Options{Name: "/etc/shoelace/templates/db.conf.tmpl"})
			res, err := tmpl.Execute(view)
			if err == nil {
				t.Fatalf("Execute succeeded with output %q, want a missing-key error", res.Output)
			}
			if res != nil {
				t.Errorf("Execute returned a result %+v alongside the error", res)
			}
			msg := err.Error()
			for _, want := range []string{`"db/pool"`, "/etc/shoelace/templates/db.conf.tmpl"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %s", msg, want)
				}
			}
			var mk *MissingKeyError
			if !errors.As(err, &mk) || mk.Key != "db/pool" || mk.Template != "/etc/shoelace/templates/db.conf.tmpl" {
				t.Errorf("errors.As(*MissingKeyError) = %+v, want key db/pool in the template", mk)
			}
		})
	}
}

func TestExecute_DefaultsDoNotFail(t *testing.T) {
	res := render(t, `{{keyOr "a/missing" "d1"}} {{getv "/b/missing" "d2"}} {{keyOrDefault "c/missing" "d3"}} {{exists "e/missing"}} {{keyExists "f/missing"}}`, map[string]string{"x": "1"})
	if got, want := string(res.Output), "d1 d2 d3 false false"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	want := []string{"a/missing", "b/missing", "c/missing", "e/missing", "f/missing"}
	if !slices.Equal(res.Keys, want) {
		t.Errorf("Keys = %q, want the missing keys too: %q", res.Keys, want)
	}
}

func TestExecute_InvalidKeyNamesRule(t *testing.T) {
	for text, want := range map[string]string{
		`{{key "a//b"}}`:                  "segment 2 is empty",
		`{{keyOr "a/../b" "x"}}`:          `is ".."`,
		`{{exists "/a/b/"}}`:              "segment 3 is empty",
		`{{ls "a b"}}`:                    `has ' '`,
		`{{getvs "/app/[a-"}}`:            "syntax error in pattern",
		`{{key ""}}`:                      "must not be empty",
		`{{tree "x/" | len}}{{key "-x"}}`: "must start with a letter or digit",
	} {
		t.Run(text, func(t *testing.T) {
			_, err := mustParse(t, text, Options{Name: "bad.tmpl"}).Execute(Data{Keys: map[string]string{"a/b": "1"}})
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "bad.tmpl") {
				t.Errorf("error %v, want one naming the template and containing %q", err, want)
			}
		})
	}
}

func TestParse_ErrorNamesTemplateAndLine(t *testing.T) {
	for text, want := range map[string]string{
		"line 1\nline 2\n{{ if }}\n":              "nginx.conf.tmpl:3:",
		"line 1\n{{ nosuchfunc \"x\" }}\n":        `nginx.conf.tmpl:2: function "nosuchfunc" not defined`,
		"{{ range ls \"x\" }}\nno end\n":          "nginx.conf.tmpl:",
		"a\nb\nc\n{{ lookupIP \"db.internal\" }}": `nginx.conf.tmpl:4:3: function "lookupIP" is not supported`,
		"{{ cgetv \"/secret\" }}":                 `function "cgetv" is not supported`,
		// An undefined function met before a syntax error is the one named, as text/template does.
		"{{ nosuchfunc }}\n{{ if }}\n": `nginx.conf.tmpl:1: function "nosuchfunc" not defined`,
		"{{ if }}\n{{ nosuchfunc }}\n": `nginx.conf.tmpl:1: missing value for if`,
	} {
		t.Run(text, func(t *testing.T) {
			_, err := Parse(text, Options{Name: "nginx.conf.tmpl"})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Parse error %v, want one containing %q", err, want)
			}
		})
	}
}

func TestParse_FileRefusedUnlessAllowed(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "shadow")
	if err := os.WriteFile(secret, []byte("root:x:0:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"file", "fileExists"} {
		text := fmt.Sprintf("head\n{{ %s %q }}", fn, secret)
		_, err := Parse(text, Options{Name: "motd.tmpl"})
		if err == nil {
			t.Fatalf("%s: Parse succeeded without AllowFile", fn)
		}
		for _, want := range []string{"motd.tmpl:2:", fmt.Sprintf("%q is disabled", fn), "allow_file: true"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not contain %q", fn, err, want)
			}
		}
		// A template that does not call file parses fine either way.
		mustParse(t, "{{ key \"a\" }}", Options{})
	}
	res, err := mustParse(t, fmt.Sprintf("{{ file %q }}{{ fileExists %q }}", secret, secret+".nope"), Options{AllowFile: true}).Execute(Data{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "root:x:0:0\nfalse"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if want := []string{secret, secret + ".nope"}; !slices.Equal(res.Files, want) {
		t.Errorf("Files = %q, want %q", res.Files, want)
	}
	// The function refuses at run time too, should a template slip through Parse.
	st := newState(&Template{name: "x", opts: Options{}}, Data{})
	if _, err := st.file(secret); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("file without AllowFile: %v, want refusal", err)
	}
	if _, err := mustParse(t, `{{file "/does/not/exist"}}`, Options{AllowFile: true}).Execute(Data{}); err == nil {
		t.Error("file of a missing path succeeded")
	}
}

func TestResult_KeysAndPrefixes(t *testing.T) {
	text := `{{key "b"}}{{key "/a"}}{{key "a"}}{{keyOr "z/missing" ""}}{{exists "y"}}` +
		`{{range ls "web/"}}{{end}}{{keys "/web"}}{{tree "cache"}}{{lsdir "/"}}` +
		`{{getvs "/app/upstream/*"}}{{gets "/haproxy/backends/*/servers/*"}}{{getvs "/exact/key"}}`
	res := render(t, text, map[string]string{"a": "1", "b": "2", "exact/key": "v"})
	wantKeys := []string{"a", "b", "exact/key", "y", "z/missing"}
	wantPrefixes := []string{"", "app/upstream", "cache", "haproxy/backends", "web"}
	if !slices.Equal(res.Keys, wantKeys) {
		t.Errorf("Keys = %q, want %q", res.Keys, wantKeys)
	}
	if !slices.Equal(res.Prefixes, wantPrefixes) {
		t.Errorf("Prefixes = %q, want %q", res.Prefixes, wantPrefixes)
	}
	if res.Secret || res.Revision {
		t.Errorf("Secret=%v Revision=%v, want both false", res.Secret, res.Revision)
	}
}

func TestResult_Changed(t *testing.T) {
	base := map[string]string{
		"a": "1", "b": "2",
		"web":        "root-value",
		"web/listen": "0.0.0.0:80", "web/tls/cert": "/c.pem",
		"web-frontend/x": "1", "webx": "1",
		"app/upstream/app1": "10.0.0.1", "app/other": "x",
	}
	with := func(edits map[string]*string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range edits {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = *v
			}
		}
		return m
	}
	s := func(v string) *string { return &v }
	tests := []struct {
		name  string
		text  string
		edits map[string]*string
		want  bool
	}{
		{"reads a, b written", `{{key "a"}}`, map[string]*string{"b": s("3")}, false},
		{"reads a, a written", `{{key "a"}}`, map[string]*string{"a": s("9")}, true},
		{"reads a, a rewritten same value", `{{key "a"}}`, map[string]*string{"a": s("1")}, false},
		{"reads a, a deleted", `{{key "a"}}`, map[string]*string{"a": nil}, true},
		{"keyOr missing, key added", `{{keyOr "c" "d"}}`, map[string]*string{"c": s("now")}, true},
		{"exists missing, other added", `{{exists "c"}}`, map[string]*string{"cc": s("x")}, false},
		{"lists web/, new key under it", `{{ls "web/"}}`, map[string]*string{"web/new": s("x")}, true},
		{"lists web/, deep key changed", `{{ls "web"}}`, map[string]*string{"web/tls/cert": s("/d.pem")}, true},
		{"lists web/, key deleted", `{{keys "web"}}`, map[string]*string{"web/listen": nil}, true},
		{"lists web/, web-frontend/x written", `{{ls "web/"}}`, map[string]*string{"web-frontend/x": s("2"), "web-frontend/y": s("3")}, false},
		{"lists web/, webx written", `{{tree "web"}}`, map[string]*string{"webx": s("2")}, false},
		{"lists web/, web itself written", `{{tree "web"}}`, map[string]*string{"web": s("other")}, false},
		{"lists root, anything written", `{{keys ""}}`, map[string]*string{"zzz": s("1")}, true},
		{"glob app/upstream/*, sibling dir written", `{{getvs "/app/upstream/*"}}`, map[string]*string{"app/other": s("y")}, false},
		{"glob app/upstream/*, new server", `{{getvs "/app/upstream/*"}}`, map[string]*string{"app/upstream/app2": s("10.0.0.2")}, true},
		{"nothing read", `static`, map[string]*string{"a": nil, "new": s("x")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := render(t, tt.text, base)
			next := with(tt.edits)
			if got := res.Changed(base, next); got != tt.want {
				t.Errorf("Changed = %v, want %v (keys %q, prefixes %q)", got, tt.want, res.Keys, res.Prefixes)
			}
			if res.Changed(base, base) {
				t.Error("Changed(v, v) = true")
			}
			// Changed is symmetric: undoing the edit is a change as well.
			if got := res.Changed(next, base); got != tt.want {
				t.Errorf("Changed(reverse) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResult_NeedsRenderRevision(t *testing.T) {
	keys := map[string]string{"a": "1"}
	old := Data{Appliance: "web", Instance: "i1", Revision: 5, Keys: keys}
	next := old
	next.Revision = 6
	plain := render(t, `{{key "a"}}`, keys)
	if plain.Revision || plain.needsRender(old, next) {
		t.Errorf("template without revision: Revision=%v NeedsRender=%v, want false", plain.Revision, plain.needsRender(old, next))
	}
	withRev, err := mustParse(t, `{{key "a"}} at {{revision}}`, Options{}).Execute(old)
	if err != nil {
		t.Fatal(err)
	}
	if string(withRev.Output) != "1 at 5" || !withRev.Revision || !withRev.needsRender(old, next) {
		t.Errorf("template with revision: output %q Revision=%v NeedsRender=%v", withRev.Output, withRev.Revision, withRev.needsRender(old, next))
	}
	if withRev.needsRender(old, old) {
		t.Error("needsRender(old, old) = true")
	}
}

func TestResult_Secret(t *testing.T) {
	view := MustView(t).Keys
	for text, want := range map[string]bool{
		`{{key "db/secrets/password"}}`:           true,
		`{{keyOr "app/secrets/token" "none"}}`:    true, // missing, but read
		`{{exists "db/secrets/password"}}`:        true,
		`{{range tree ""}}{{end}}`:                true,
		`{{range tree "db"}}{{end}}`:              true,
		`{{keys "db"}}`:                           true, // lists the child "secrets"
		`{{ls "db/secrets"}}`:                     true,
		`{{getvs "/db/*/password"}}`:              true,
		`{{key "db/host"}} {{key "db/user"}}`:     false,
		`{{range ls "db"}}{{.Value}}{{end}}`:      false, // secrets/ is a directory: not listed
		`{{lsdir "/"}} {{keys ""}}`:               false,
		`{{range gets "/db/*"}}{{.Value}}{{end}}`: false,
		`{{keyOr "secretsanta/x" "no"}}`:          false,
	} {
		res := render(t, text, view)
		if res.Secret != want {
			t.Errorf("%s: Secret = %v, want %v", text, res.Secret, want)
		}
	}
}

func TestNondeterministic(t *testing.T) {
	tmpl := mustParse(t, `{{define "x"}}{{uuidv4}}{{end}}{{now | date "2006"}} {{randAlpha 4}} {{ if true }}{{datetime}}{{ end }} {{now}} {{key "a"}}`, Options{})
	want := []string{"datetime", "now", "randAlpha", "uuidv4"}
	if got := tmpl.Nondeterministic(); !slices.Equal(got, want) {
		t.Errorf("Nondeterministic = %q, want %q", got, want)
	}
	if got := mustParse(t, `{{key "a" | upper}} {{range ls "x"}}{{.Key}}{{end}}`, Options{}).Nondeterministic(); len(got) != 0 {
		t.Errorf("Nondeterministic of a deterministic template = %q", got)
	}
}

func TestNameClashes(t *testing.T) {
	keys := map[string]string{"d/a": "1", "d/b": "2", "host": "example.com"}
	for text, want := range map[string]string{
		// join: sprig's (sep, list) and confd's (list, sep) by argument types.
		`{{join (keys "d") ","}}`:   "a,b",
		`{{keys "d" | join ","}}`:   "a,b",
		`{{join "," (list 1 2)}}`:   "1,2",
		`{{join (list "x" 3) "-"}}`: "x-3",
		// replace: sprig's three arguments, confd's four.
		`{{replace "." "_" (key "host")}}`:    "example_com",
		`{{replace (key "host") "e" "E" 1}}`:  "Example.com",
		`{{replace (key "host") "e" "E" -1}}`: "ExamplE.com",
		// get: confd's one argument, sprig's two.
		`{{(get "/host").Key}} {{(get "host").Value}}`: "/host example.com",
		`{{get (dict "k" "v") "k"}}`:                   "v",
		// keys: Shoelace's prefix, sprig's dicts.
		`{{keys "/d" | join " "}}`:                                  "a b",
		`{{keys (dict "y" 1) (dict "x" 2) | sortAlpha | join " "}}`: "x y",
		// consul-template wins where the arguments cannot tell the origins apart (issue 17), else sprig.
		`{{contains "ample" (key "host")}} {{contains (key "host") "ample"}}`:            "true false",
		`{{index (split "." (key "host")) 1}} {{split "," " a,b\n"}}`:                    "com [a b]",
		`{{"foo" | regexReplaceAll "\\w" "x"}} {{regexReplaceAll "(a)(b)" "$2$1" "ab"}}`: "xxx ba",
		"{{indent 2 \"a\\n\\nb\\n\"}}":                                                   "  a\n\n  b\n",
		`{{toTitle "hello wORLD élan"}}`:                                                 "Hello WORLD Élan",
		`{{add 1 2}} {{1.5 | add 1}} {{add "1" 2}} {{add 1 2 3}}`:                        "3 2.5 3 6",
		`{{trim " x "}}|{{trim "-" "-x-"}}`:                                              "x|x",
		`{{toJSON (dict "a" "<b>")}}`:                                                    `{"a":"\u003cb\u003e"}`,
		`{{trimSuffix ".com" (key "host")}}`:                                             "example",
		`{{seq 3}}`:                                                                      "1 2 3",
		`{{atoi "12"}} {{atoi "x"}}`:                                                     "12 0",
		`{{base "/a/b"}} {{dir "/a/b"}}`:                                                 "b /a",
	} {
		t.Run(text, func(t *testing.T) {
			if got := string(render(t, text, keys).Output); got != want {
				t.Errorf("output %q, want %q", got, want)
			}
		})
	}
	for text, want := range map[string]string{
		`{{get "a" "b" "c"}}`:         "want 1 argument",
		`{{get 1}}`:                   "want a key string",
		`{{join 1 2}}`:                "want a separator and a list",
		`{{replace "a" "b"}}`:         "want 3 arguments",
		`{{replace "a" "b" "c" "d"}}`: "not an integer",
		`{{keys 1}}`:                  "want one prefix string, or dicts",
	} {
		t.Run(text, func(t *testing.T) {
			_, err := mustParse(t, text, Options{Name: "clash.tmpl"}).Execute(Data{Keys: keys})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want one containing %q", err, want)
			}
		})
	}
}

func TestExecute_EnvDefaultsToProcess(t *testing.T) {
	t.Setenv("SHOELACE_TEMPLATES_TEST", "from-process")
	res := render(t, `{{env "SHOELACE_TEMPLATES_TEST"}} {{getenv "SHOELACE_TEMPLATES_TEST"}}`, nil)
	if got, want := string(res.Output), "from-process from-process"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	res, err := mustParse(t, `{{env "SHOELACE_TEMPLATES_TEST"}}`, Options{}).Execute(Data{Env: func(string) string { return "injected" }})
	if err != nil || string(res.Output) != "injected" {
		t.Errorf("with Data.Env: %q, %v; want injected", res.Output, err)
	}
}

func TestExecute_OutputLimit(t *testing.T) {
	tmpl := mustParse(t, `{{range 100}}0123456789{{end}}`, Options{MaxOutputBytes: 500})
	_, err := tmpl.Execute(Data{})
	if !errors.Is(err, ErrOutputTooLarge) {
		t.Fatalf("error %v, want ErrOutputTooLarge", err)
	}
	res, err := mustParse(t, `{{range 100}}0123456789{{end}}`, Options{MaxOutputBytes: -1}).Execute(Data{})
	if err != nil || len(res.Output) != 1000 {
		t.Fatalf("no limit: %d bytes, %v", len(res.Output), err)
	}
}

func TestParse_DelimsAndName(t *testing.T) {
	tmpl := mustParse(t, `<% key "a" %> {{ not a template }}`, Options{LeftDelim: "<%", RightDelim: "%>"})
	if tmpl.Name() != "template" {
		t.Errorf("Name() = %q, want the default %q", tmpl.Name(), "template")
	}
	res, err := tmpl.Execute(Data{Keys: map[string]string{"a": "A"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "A {{ not a template }}"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if _, err := Parse(`{{ key "a" }} <% if %>`, Options{Name: "d.tmpl", LeftDelim: "<%", RightDelim: "%>"}); err == nil || !strings.Contains(err.Error(), "d.tmpl:1") {
		t.Errorf("parse error with custom delims: %v", err)
	}
}

// TestExecute_Concurrent renders one template from many goroutines with different views:
// each result must hold its own view's output and inputs.
func TestExecute_Concurrent(t *testing.T) {
	tmpl := mustParse(t, `{{key "n"}}{{range ls "l"}},{{.Value}}{{end}}{{keyOr (printf "only/%s" (key "n")) ""}}`, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := fmt.Sprint(i)
			res, err := tmpl.Execute(Data{Keys: map[string]string{"n": n, "l/x": n}})
			if err != nil {
				errs <- err
				return
			}
			if want := n + "," + n; string(res.Output) != want {
				errs <- fmt.Errorf("output %q, want %q", res.Output, want)
			}
			if want := []string{"n", "only/" + n}; !slices.Equal(res.Keys, want) {
				errs <- fmt.Errorf("keys %q, want %q", res.Keys, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFunctions(t *testing.T) {
	tmpl := mustParse(t, `{{define "x"}}{{tree "a"}}{{end}}{{key "a" | upper}}{{with ls "b"}}{{len .}}{{end}}`, Options{})
	want := []string{"key", "len", "ls", "tree", "upper"}
	if got := tmpl.Functions(); !slices.Equal(got, want) {
		t.Errorf("Functions = %q, want %q", got, want)
	}
}

func TestExecute_FailingHelpers(t *testing.T) {
	view := MustView(t)
	for text, want := range map[string]string{
		`{{safeLs "nothing"}}`:                `safeLs: no keys directly below "nothing"`,
		`{{safeLs "haproxy/backends"}}`:       `safeLs: no keys directly below`, // only directories there
		`{{safeTree "nothing/here"}}`:         `safeTree: no keys below "nothing/here"`,
		`{{tree "" | explode}}`:               `explode: not a map: "cache/cluster/node-a": "cache" already has value "redis"`,
		`{{json (key "features/list")}}`:      "json: ",
		`{{jsonArray (key "features/json")}}`: "jsonArray: ",
		`{{fromJSON "{"}}`:                    "fromJSON: ",
		`{{fromYAML "a: [1"}}`:                "fromYAML: ",
		`{{base64Decode "%%"}}`:               "base64Decode: ",
		`{{map "a"}}`:                         "map: want key/value pairs",
		`{{map 1 2}}`:                         "map: key 1 is int",
	} {
		t.Run(text, func(t *testing.T) {
			_, err := mustParse(t, text, Options{Name: "helpers.tmpl"}).Execute(view)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "helpers.tmpl") {
				t.Errorf("error %v, want one naming the template and containing %q", err, want)
			}
		})
	}
}

// BenchmarkExecute renders a confd-style template from a view of 10,000 keys.
// bigView is a view of 10,003 keys, and a template that lists three prefixes of it.
func bigView(tb testing.TB) (map[string]string, *Template) {
	keys := map[string]string{}
	for i := range 10000 {
		keys[fmt.Sprintf("group%02d/item%04d/value", i%50, i)] = fmt.Sprint(i)
	}
	keys["app/upstream/a"] = "10.0.0.1:80"
	keys["app/upstream/b"] = "10.0.0.2:80"
	keys["nginx/port"] = "80"
	return keys, mustParse(tb, `listen {{getv "/nginx/port"}};
{{range getvs "/app/upstream/*"}}server {{.}};
{{end}}{{range ls "group07/item0007"}}{{.Key}}={{.Value}}{{end}}{{len (tree "group08")}}`, Options{})
}

func BenchmarkExecute(b *testing.B) {
	keys, tmpl := bigView(b)
	data := Data{Keys: keys}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tmpl.Execute(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteTenTemplates is one render pass of ten listing templates over the 10,003-key
// view: each sorting the keys itself (the baseline), or sharing one Sorted, as the agent does.
func BenchmarkExecuteTenTemplates(b *testing.B) {
	keys, tmpl := bigView(b)
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("shared-sorted=%v", shared), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data := Data{Keys: keys}
				if shared {
					data.Sorted = NewSorted(keys)
				}
				for range 10 {
					if _, err := tmpl.Execute(data); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// A shared Sorted gives the same output as none; one that does not fit Keys is not used.
func TestExecuteSharedSorted(t *testing.T) {
	keys, tmpl := bigView(t)
	plain, err := tmpl.Execute(Data{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	sorted := NewSorted(keys)
	for range 2 {
		shared, err := tmpl.Execute(Data{Keys: keys, Sorted: sorted})
		if err != nil || string(shared.Output) != string(plain.Output) {
			t.Fatalf("with a shared Sorted: %q, %v; want %q", shared.Output, err, plain.Output)
		}
	}
	other := NewSorted(map[string]string{"group07/item0007/value": "stale"})
	got, err := tmpl.Execute(Data{Keys: keys, Sorted: other})
	if err != nil || string(got.Output) != string(plain.Output) {
		t.Fatalf("with a Sorted of other keys: %q, %v; want %q", got.Output, err, plain.Output)
	}
}

// NeedsRender (and NeedsRenderChanged, given the views' Diff) answers as Changed does, case by
// case, whether or not the views' names were sorted by earlier renders.
func TestResult_NeedsRenderSorted(t *testing.T) {
	base := map[string]string{"a": "1", "list/x": "1", "list/y": "2", "listing/z": "3", "other/q": "4"}
	with := func(change func(m map[string]string)) map[string]string {
		m := maps.Clone(base)
		change(m)
		return m
	}
	for _, tc := range []struct {
		name, tmpl string
		next       map[string]string
		want       bool
	}{
		{"unrelated key changed", `{{range ls "list"}}{{.Value}}{{end}}`, with(func(m map[string]string) { m["other/q"] = "5" }), false},
		{"a sibling prefix's key changed (whole segments)", `{{range ls "list"}}{{.Value}}{{end}}`, with(func(m map[string]string) { m["listing/z"] = "9" }), false},
		{"a listed value changed", `{{range ls "list"}}{{.Value}}{{end}}`, with(func(m map[string]string) { m["list/y"] = "9" }), true},
		{"a key added under the prefix", `{{range ls "list"}}{{.Value}}{{end}}`, with(func(m map[string]string) { m["list/w"] = "0" }), true},
		{"a key removed under the prefix", `{{range ls "list"}}{{.Value}}{{end}}`, with(func(m map[string]string) { delete(m, "list/x") }), true},
		{"a key deeper under the prefix", `{{len (tree "list")}}`, with(func(m map[string]string) { m["list/d/e"] = "0" }), true},
		{"the whole view listed", `{{len (tree "")}}`, with(func(m map[string]string) { m["other/q"] = "5" }), true},
		{"a read key changed", `{{key "a"}}{{range ls "list"}}{{end}}`, with(func(m map[string]string) { m["a"] = "2" }), true},
		{"nothing changed", `{{key "a"}}{{range ls "list"}}{{end}}`, with(func(map[string]string) {}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := mustParse(t, tc.tmpl, Options{})
			old := Data{Keys: base, Sorted: NewSorted(base)}
			r, err := tmpl.Execute(old)
			if err != nil {
				t.Fatal(err)
			}
			next := Data{Keys: tc.next, Sorted: NewSorted(tc.next)}
			next.Sorted.names() // as a render from the new view would have sorted them
			if got := r.needsRender(old, next); got != tc.want {
				t.Errorf("NeedsRender with sorted views = %v, want %v", got, tc.want)
			}
			if got := r.NeedsRenderChanged(old, next, Diff(base, tc.next)); got != tc.want {
				t.Errorf("NeedsRenderChanged = %v, want %v", got, tc.want)
			}
			if got := r.Changed(base, tc.next); got != tc.want {
				t.Errorf("Changed = %v, want %v", got, tc.want)
			}
		})
	}
}

// BenchmarkNeedsRenderTenTemplates is the agent's check, for ten templates listing one prefix
// each, of whether a change of an unrelated key of the 10,003-key view needs a render: scanning
// both views per template (the baseline), or comparing each prefix's run in the sorted names
// (when renders from both views sorted them already).
func BenchmarkNeedsRenderTenTemplates(b *testing.B) {
	keys, _ := bigView(b)
	next := maps.Clone(keys)
	next["nginx/port"] = "81"
	var results []*Result
	for i := range 10 {
		r, err := mustParse(b, fmt.Sprintf(`{{len (tree "group%02d")}}`, i), Options{}).Execute(Data{Keys: keys})
		if err != nil {
			b.Fatal(err)
		}
		results = append(results, r)
	}
	old, nd := Data{Keys: keys}, Data{Keys: next}
	// Each template compares the two views itself (NeedsRender), or the views are compared once
	// per pass and each template checks the changed keys (Diff, NeedsRenderChanged: the agent).
	for _, once := range []bool{false, true} {
		b.Run(fmt.Sprintf("diff-once=%v", once), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var changed []string
				if once {
					changed = Diff(old.Keys, nd.Keys)
				}
				for _, r := range results {
					needs := false
					if once {
						needs = r.NeedsRenderChanged(old, nd, changed)
					} else {
						needs = r.needsRender(old, nd)
					}
					if needs {
						b.Fatal("an unrelated change needs a render")
					}
				}
			}
		})
	}
}

// Every key of an appliance named "secrets" is a secret (its whole path has a secrets segment):
// what a template of it reads is marked secret, so that the agent neither logs nor shows it.
func TestExecute_ApplianceNamedSecretsIsSecret(t *testing.T) {
	tmpl := mustParse(t, `{{ key "db/password" }}`, Options{})
	for _, tc := range []struct {
		appliance string
		want      bool
	}{{"secrets", true}, {"web", false}} {
		res, err := tmpl.Execute(Data{Appliance: tc.appliance, Keys: map[string]string{"db/password": "hunter2"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Secret != tc.want {
			t.Errorf("appliance %s: Secret = %v, want %v", tc.appliance, res.Secret, tc.want)
		}
	}
}

// Diff, NewSortedFrom and ReadAny agree with brute force over random views and changes: the
// keys that differ, the next view's names in order, and whether a result read any of them.
func TestDiffSortedFrom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string {
		segs := []string{"a", "b", "ab", "a-b", "c"}
		n := 1 + rng.IntN(3)
		var parts []string
		for range n {
			parts = append(parts, segs[rng.IntN(len(segs))])
		}
		return strings.Join(parts, "/")
	}
	prev := map[string]string{}
	for range 40 {
		prev[name()] = fmt.Sprint(rng.IntN(3))
	}
	prevSorted := NewSorted(prev)
	prevSorted.names()
	for round := range 300 {
		next := maps.Clone(prev)
		for range rng.IntN(6) {
			switch k := name(); rng.IntN(3) {
			case 0:
				delete(next, k)
			default:
				next[k] = fmt.Sprint(rng.IntN(3))
			}
		}
		var want []string
		for k := range prev {
			if v, ok := next[k]; !ok || v != prev[k] {
				want = append(want, k)
			}
		}
		for k := range next {
			if _, ok := prev[k]; !ok {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		got := Diff(prev, next)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: Diff = %q, want %q", round, got, want)
		}
		s := NewSortedFrom(prevSorted, next, got)
		wantNames := slices.Sorted(maps.Keys(next))
		if n := s.names(); !slices.Equal(n, wantNames) {
			t.Fatalf("round %d: NewSortedFrom names = %q, want %q", round, n, wantNames)
		}
		r := &Result{Keys: []string{name()}, Prefixes: []string{name()}}
		if rng.IntN(8) == 0 {
			r.Prefixes = []string{""}
		}
		brute := false
		for _, k := range want {
			if k == r.Keys[0] || api.Under(k, r.Prefixes[0]) {
				brute = true
			}
		}
		if r.ReadAny(got) != brute {
			t.Fatalf("round %d: ReadAny(%q) of %+v = %v, want %v", round, got, r, !brute, brute)
		}
		prev, prevSorted = next, s
	}
}

// A parsed template holds the functions it calls, not its mode's whole map: an agent keeps one
// per template for as long as it runs (the whole map cost ~40 KB each).
func TestParse_KeepsOnlyTheFunctionsItCalls(t *testing.T) {
	for mode, fn := range map[string]string{ModeNative: "upper", ModeConfd: "toUpper", ModeConsulTemplate: "toUpper"} {
		const n = 50
		keep := make([]*Template, 0, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			tmpl, err := Parse(fmt.Sprintf(`listen {{ %d }}{{ "x" | %s }}`, i, fn), Options{Name: "t", Functions: mode})
			if err != nil {
				t.Fatal(err)
			}
			keep = append(keep, tmpl)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
		t.Logf("%s: %d bytes held per parsed template", mode, per)
		if per > 10<<10 {
			t.Errorf("%s: %d bytes held per parsed template", mode, per)
		}
		runtime.KeepAlive(keep)
	}
}

// BenchmarkParse parses a small listing template, as an agent does for each of its templates at
// start and on every config reload.
func BenchmarkParse(b *testing.B) {
	const text = `listen {{ getv "/svc/port" }}
{{- range ls "/svc/backends" }}
server {{ .Key }} {{ .Value | upper }}
{{- end }}
`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(text, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// needsRender is NeedsRenderChanged of the two views' difference.
func (r *Result) needsRender(old, new Data) bool {
	return r.NeedsRenderChanged(old, new, Diff(old.Keys, new.Keys))
}
