package templates

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// adviceFuncRE finds the function names a missing-key error advises.
var adviceFuncRE = regexp.MustCompile(`\b(keyOrDefault|keyExists|keyOr|getv|exists)\b`)

// TestMissingKeyError_ByMode: the error of a render that reads a missing key tells how to make
// it optional with functions the template's mode has (a confd template told to use keyOr got
// 'function "keyOr" not defined' for following the advice), and, in confd mode, why a key the
// view holds was not found: a path written otherwise than confd's store has it, a key the
// resource's keys do not load, a path that repeats the prefix. It never says "is not in the
// view" of a key that is.
func TestMissingKeyError_ByMode(t *testing.T) {
	keys := map[string]string{"db/host": "h", "upstream/a": "1"}
	for _, tc := range []struct {
		name, mode, text string
		opts             Options
		key              string   // MissingKeyError.Key
		want             []string // in the message
	}{
		{name: "native", mode: ModeNative, text: `{{key "db/port"}}`, key: "db/port",
			want: []string{`key "db/port" is not in the view`, "keyOr"}},
		{name: "confd absent", mode: ModeConfd, text: `{{getv "/db/port"}}`, key: "db/port",
			want: []string{`key "db/port" is not in the view`, `getv "/db/port" "DEFAULT"`, "exists"}},
		{name: "confd get absent", mode: ModeConfd, text: `{{(get "/db/port").Value}}`, key: "db/port",
			want: []string{`key "db/port" is not in the view`}},
		{name: "confd no leading slash", mode: ModeConfd, text: `{{getv "db/host"}}`, key: "db/host",
			want: []string{`key "db/host" not found`, `write "/db/host"`}},
		{name: "confd trailing slash", mode: ModeConfd, text: `{{getv "/db/host/"}}`, key: "/db/host/",
			want: []string{`key "/db/host/" not found`, `write "/db/host"`}},
		{name: "confd not loaded by keys", mode: ModeConfd, text: `{{getv "/upstream/a"}}`, opts: Options{ConfdKeys: []string{"/db"}}, key: "upstream/a",
			want: []string{`key "upstream/a" not found`, "resource's keys (/db) do not load it", `add "/upstream/a"`}},
		{name: "confd repeats the prefix", mode: ModeConfd, text: `{{getv "/production/web/db/host"}}`, opts: Options{Prefix: "/production/web"}, key: "production/web/db/host",
			want: []string{"relative to the prefix /production/web", "/production/web/production/web/db/host", `write "/db/host"`}},
		{name: "consul-template", mode: ModeConsulTemplate, text: `{{key "db/port"}}`, key: "db/port",
			want: []string{`key "db/port" is not in the view`, "keyOrDefault", "keyExists"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Name, opts.Functions = "t.tmpl", tc.mode
			_, err := mustParse(t, tc.text, opts).Execute(Data{Keys: keys})
			var mk *MissingKeyError
			if !errors.As(err, &mk) {
				t.Fatalf("error %v, want a *MissingKeyError", err)
			}
			if mk.Key != tc.key {
				t.Errorf("Key = %q, want %q", mk.Key, tc.key)
			}
			msg := mk.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not say %q", msg, w)
				}
			}
			if _, inView := keys[mk.Key]; inView && strings.Contains(msg, "is not in the view") {
				t.Errorf("message %q says a key of the view is not in it", msg)
			}
			// Every function the message names is one the mode has.
			for _, fn := range adviceFuncRE.FindAllString(msg, -1) {
				if _, err := Parse(`{{if false}}{{`+fn+`}}{{end}}`, Options{Functions: tc.mode}); err != nil {
					t.Errorf("message %q advises %s, which %s mode does not have: %v", msg, fn, tc.mode, err)
				}
			}
		})
	}
}

// TestMissingKeyError_ConfdAdviceFollowed: the getv a confd template is told to write makes the
// key optional and still reads it where it is. In a view imported with --prefix / (confd's
// quick-start: resources with the prefixes /myapp and /yourapp, one template), the advice named
// the view's key, getv "/yourapp/subdomain" "DEFAULT": written in the shared template, both
// resources then rendered DEFAULT, myapp's subdomain never read, as that path is read below the
// prefix (yourapp/yourapp/subdomain). It names the template's own path, getv "/subdomain".
func TestMissingKeyError_ConfdAdviceFollowed(t *testing.T) {
	view := Data{Keys: map[string]string{"myapp/subdomain": "my", "myapp/db": "a", "yourapp/db": "b"}}
	opts := func(prefix string) Options {
		return Options{Name: "t.tmpl", Functions: ModeConfd, Prefix: prefix, ConfdKeys: []string{"/db", "/subdomain"}}
	}
	_, err := mustParse(t, `{{getv "/subdomain"}}`, opts("/yourapp")).Execute(view)
	var mk *MissingKeyError
	if !errors.As(err, &mk) {
		t.Fatalf("error %v, want a *MissingKeyError", err)
	}
	advised := regexp.MustCompile(`\(getv "[^"]*" "DEFAULT"\)`).FindString(mk.Error())
	if advised == "" {
		t.Fatalf("message %q advises no getv with a default", mk.Error())
	}
	text := "{{" + strings.Trim(advised, "()") + "}}"
	for prefix, want := range map[string]string{"/myapp": "my", "/yourapp": "DEFAULT"} {
		res, err := mustParse(t, text, opts(prefix)).Execute(view)
		if err != nil {
			t.Errorf("the advice %s with prefix %s: %v", advised, prefix, err)
		} else if got := string(res.Output); got != want {
			t.Errorf("the advice %s with prefix %s renders %q, want %q", advised, prefix, got, want)
		}
	}
}

// TestMissingKeyError_ConfdWords: in confd mode a render that reads a missing key fails with
// confd's own words, so that what watched confd's logs still finds them: for every confd case
// that confd v0.16.0 failed with "key does not exist", Shoelace's error holds confd's message
// from the template's name on, byte for byte (testdata/peers/cases/confd/*.err).
func TestMissingKeyError_ConfdWords(t *testing.T) {
	checked := 0
	for _, c := range loadPeerCases(t, "confd") {
		b, err := os.ReadFile(casePath("confd", c.name, ".err"))
		if err != nil || !strings.Contains(string(b), "key does not exist") {
			continue
		}
		_, want, ok := strings.Cut(strings.TrimSpace(string(b)), "FATAL ")
		if !ok {
			t.Fatalf("%s.err: no FATAL line: %s", c.name, b)
		}
		t.Run(c.name, func(t *testing.T) {
			opts := c.options("confd")
			opts.Name = "t.tmpl" // the name confd's run gave it
			tmpl, err := Parse(c.Template, opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tmpl.Execute(c.data())
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v\ndoes not hold confd's %q", err, want)
			}
		})
		checked++
	}
	if checked < 4 {
		t.Fatalf("%d confd cases fail with \"key does not exist\": the cases are not where they were", checked)
	}
}

// TestConfd_MissingKeyTested: in confd mode a missing map key that is only tested (if, with,
// not, and, or, a variable, a range, a sub-template's condition) behaves as in confd, the idiom
// of optional JSON fields; only printing one (or a JSON null) fails the render, naming the
// action, instead of writing confd's "<no value>". The expected bytes are what the real confd
// v0.16.0 rendered from the same template and value.
func TestConfd_MissingKeyTested(t *testing.T) {
	view := Data{Keys: map[string]string{"s": `{"host":"a","n":null,"w":0}`}}
	text := `{{$d := json (getv "/s")}}server {{$d.host}}{{if $d.backup}} backup{{end}}{{with $d.weight}} weight={{.}}{{end}}{{if not $d.down}} up{{end}}{{if and $d.host $d.x}}!{{end}}{{if or $d.x $d.host}} or{{end}};
{{$x := $d.nope}}{{if $x}}y{{else}}n{{end}} {{if eq (printf "%v" $d.nope) "<nil>"}}nil{{end}} {{range $d.list}}{{.}}{{else}}empty{{end}} {{if $d.n}}{{else}}null{{end}} {{if $d.w}}{{else}}zero{{end}}
{{define "sub"}}[{{if .missing}}m{{else}}-{{end}}]{{end}}{{template "sub" $d}}
`
	res, err := mustParse(t, text, Options{Name: "t.tmpl", Functions: ModeConfd}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "server a up or;\nn nil empty null zero\n[-]\n"; got != want {
		t.Errorf("got %q, want confd's %q", got, want)
	}

	for _, text := range []string{
		`{{$d := json (getv "/s")}}port {{$d.port}}`,
		`{{$d := json (getv "/s")}}{{$p := $d.port}}port {{$p}}`,
		`{{define "sub"}}{{.port}}{{end}}{{template "sub" json (getv "/s")}}`,
		`{{.Foo}}`,
		`{{$d := json (getv "/s")}}n={{$d.n}}`,
		`{{$d := json (getv "/s")}}{{index $d "port"}}`,
	} {
		_, err := mustParse(t, text, Options{Name: "t.tmpl", Functions: ModeConfd}).Execute(view)
		if err == nil || !strings.Contains(err.Error(), "t.tmpl:1:") || !strings.Contains(err.Error(), "<no value>") {
			t.Errorf("%s: error %v, want the render to fail at the action, saying confd would write <no value>", text, err)
		}
	}
}

// TestNative_NoValueFailsTheRender: native mode fails a render that reads a missing map key,
// also through index, and one that prints a JSON null, instead of writing "<no value>" into the
// file (DESIGN.md: a missing map key fails the render in native mode). Before, {{ .x }} and
// {{ $m.x }} failed but {{ index $m "x" }} and a JSON null printed "<no value>". What tests a
// value, or prints one through printf or a default, renders as before.
func TestNative_NoValueFailsTheRender(t *testing.T) {
	data := Data{Appliance: "web", Keys: map[string]string{"cfg": `{"a":null,"b":"x","l":[null]}`, "lit": "<no value>"}}
	for _, text := range []string{
		`{{ index (fromJSON (key "cfg")) "port" }}`,
		`{{ $m := fromJSON (key "cfg") }}{{ $m.a }}`,
		`{{ range (fromJSON (key "cfg")).l }}{{ . }}{{ end }}`,
		`{{ index (fromJSON (key "cfg")).l 0 }}`,
		`{{ define "inner" }}{{ index . "port" }}{{ end }}{{ template "inner" (fromJSON (key "cfg")) }}`,
	} {
		tm, err := Parse(text, Options{Name: "t"})
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		res, err := tm.Execute(data)
		if err == nil {
			t.Errorf("%s rendered %q, want an error", text, res.Output)
			continue
		}
		if !strings.Contains(err.Error(), "prints no value") {
			t.Errorf("%s: error %q does not say why", text, err)
		}
	}
	for text, want := range map[string]string{
		`{{ with index (fromJSON (key "cfg")) "port" }}{{ . }}{{ else }}none{{ end }}`:  "none",
		`{{ if (fromJSON (key "cfg")).a }}y{{ else }}n{{ end }}`:                        "n",
		`{{ index (fromJSON (key "cfg")) "port" | default "80" }}`:                      "80",
		`{{ printf "%v" (index (fromJSON (key "cfg")) "a") }}`:                          "<nil>",
		`{{ $p := index (fromJSON (key "cfg")) "port" }}{{ (fromJSON (key "cfg")).b }}`: "x",
		`[{{ index (dict "a" "") "a" }}]`:                                               "[]",
		// A value that holds the text is no missing value: the output that has it stands.
		`{{ key "lit" }}`: "<no value>",
	} {
		tm, err := Parse(text, Options{Name: "t"})
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		res, err := tm.Execute(data)
		if err != nil || string(res.Output) != want {
			t.Errorf("%s = %q, %v; want %q", text, res.Output, err, want)
		}
	}
}
