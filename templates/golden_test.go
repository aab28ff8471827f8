package templates

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// goldenSep separates a golden file's template from its expected output.
const goldenSep = "\n----------\n"

// goldenCase holds what a golden file needs beyond its text.
type goldenCase struct {
	opts       Options
	wantSecret bool
}

// goldenCases lists the golden files that need options or expect Result.Secret; every other
// golden file renders with default options and must not be secret.
var goldenCases = map[string]goldenCase{
	"custom-delims":   {opts: Options{LeftDelim: "[[", RightDelim: "]]"}},
	"file":            {opts: Options{AllowFile: true}},
	"confd-helpers":   {opts: Options{AllowFile: true}},
	"secrets":         {wantSecret: true},
	"secrets-listing": {wantSecret: true},
	// The edges list db, which holds db/secrets/password.
	"confd-edges":           {wantSecret: true},
	"consul-template-edges": {wantSecret: true},
}

type viewFixture struct {
	Appliance string            `json:"appliance"`
	Instance  string            `json:"instance"`
	Revision  int64             `json:"revision"`
	Env       map[string]string `json:"env"`
	Keys      map[string]string `json:"keys"`
}

// MustView loads the shared view fixture testdata/view.json.
func MustView(tb testing.TB) Data {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "view.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v viewFixture
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("testdata/view.json: %v", err)
	}
	return Data{
		Appliance: v.Appliance,
		Instance:  v.Instance,
		Revision:  v.Revision,
		Keys:      v.Keys,
		Env:       func(k string) string { return v.Env[k] },
	}
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.golden files")
	}
	view := MustView(t)
	seen := map[string]bool{}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".golden")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := strings.Cut(string(raw), goldenSep)
			if !ok {
				t.Fatalf("%s: no %q line between template and output", file, strings.TrimSpace(goldenSep))
			}
			gc := goldenCases[name]
			opts := gc.opts
			opts.Name = filepath.Base(file)
			tmpl, err := Parse(input, opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			res, err := tmpl.Execute(view)
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if *update {
				var b bytes.Buffer
				b.WriteString(input)
				b.WriteString(goldenSep)
				b.Write(res.Output)
				if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := string(res.Output); got != want {
				t.Errorf("output differs (run go test ./templates -update to accept)\n--- got\n%s\n--- want\n%s", got, want)
			}
			if res.Secret != gc.wantSecret {
				t.Errorf("Result.Secret = %v, want %v (keys %q, prefixes %q)", res.Secret, gc.wantSecret, res.Keys, res.Prefixes)
			}
		})
	}
	for name := range goldenCases {
		if !seen[name] {
			t.Errorf("goldenCases names %q, but testdata/%s.golden does not exist", name, name)
		}
	}
}
