package templates

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// fuzzExpensive are functions that can burn minutes or gigabytes from a short text
// (huge repeats and ranges, RSA keys, bcrypt) or reach the network: fuzzing skips them.
var fuzzExpensive = []string{
	"repeat", "until", "untilStep", "seq", "mul", "mulf", "randBytes", "bcrypt", "htpasswd",
	"derivePassword", "genPrivateKey", "genCA", "genSelfSigned", "genSignedCert", "buildCustomCert",
	"encryptAES", "decryptAES", "getHostByName", "loop", "executeTemplate", "'",
}

// fuzzBigNumber finds number literals that could drive a long loop: 4+ digits, exponents,
// hex, octal, binary, underscores.
var fuzzBigNumber = regexp.MustCompile(`[0-9]{4}|[0-9][eExXoObBpP_]`)

func fuzzTooCostly(text string) bool {
	if len(text) > 2048 || strings.Count(text, "range") > 2 || fuzzBigNumber.MatchString(text) {
		return true
	}
	for _, fn := range fuzzExpensive {
		if strings.Contains(text, fn) {
			return true
		}
	}
	return false
}

// FuzzParseExecute parses and renders arbitrary template text against a small view that
// also holds the fuzzed key: nothing may panic, errors must name the template, and a
// successful render's Result must be well-formed.
func FuzzParseExecute(f *testing.F) {
	goldens, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	for _, g := range goldens {
		if raw, err := os.ReadFile(g); err == nil {
			input, _, _ := strings.Cut(string(raw), goldenSep)
			f.Add(input, "nginx/domain")
		}
	}
	f.Add(`{{key "a/b"}}`, "a/b")
	f.Add(`{{range ls "/a/"}}{{.Key}}={{.Value}}{{end}}`, "a/secrets/x")
	f.Add(`{{getvs "/a/*"}}{{gets "/*/b"}}{{lsdir "/"}}`, "/a/c")
	f.Add(`{{keyOr "x" "y"}}{{exists "//x"}}`, "x")
	f.Add(`{{ls "/app/a"}}{{lsdir "/a/../a"}}{{gets "[/]a/*"}}{{getv "/app/a/b"}}`, "/a/d")
	f.Add(`{{range tree "a"}}{{.Key}}{{end}}{{keyOrDefault "a/b" "d"}}{{safeLs "a-"}}{{toTOML (parseJSON "{}")}}`, "a/x")

	// The cost filter keeps fuzzing fast; the seeds (the goldens among them) always run.
	fuzzing := flag.Lookup("test.fuzz").Value.String() != ""
	f.Fuzz(func(t *testing.T, text, key string) {
		if fuzzing && fuzzTooCostly(text) {
			t.Skip()
		}
		view := map[string]string{
			"a/b":            "1",
			"a/secrets/c":    "s",
			"a-b/c":          "2",
			"cache":          "redis",
			"cache/size":     "64m",
			"json":           `{"x": [1, 2]}`,
			"nginx/domain":   "example.com",
			"web-frontend/x": "no",
		}
		nkey := strings.TrimPrefix(key, "/")
		keyValid := api.ValidateKey(nkey) == nil
		if keyValid {
			view[nkey] = "fuzzed value"
		}
		data := Data{Appliance: "app", Instance: "i", Revision: 7, Keys: view, Env: func(string) string { return "env" }}

		for _, mode := range []string{ModeNative, ModeConfd, ModeConsulTemplate} {
			tmpl, err := Parse(text, Options{Name: "fuzz.tmpl", MaxOutputBytes: 1 << 20, Functions: mode, Prefix: "/app"})
			if err != nil {
				if !strings.Contains(err.Error(), "fuzz.tmpl") {
					t.Fatalf("%s mode: parse error does not name the template: %v", mode, err)
				}
			} else {
				checkRender(t, tmpl, data)
			}
		}

		// The key functions on the fuzzed key itself.
		for _, text := range []string{`{{key .}}`, `{{keyOr . "dflt"}}`, `{{ls .}}{{keys .}}{{tree .}}`} {
			text = strings.ReplaceAll(text, ".", strconv.Quote(key))
			tmpl, err := Parse(text, Options{Name: "key.tmpl"})
			if err != nil {
				t.Fatalf("Parse(%q): %v", text, err)
			}
			res, err := tmpl.Execute(data)
			switch {
			case !keyValid && !strings.HasPrefix(text, "{{ls") && err == nil:
				t.Fatalf("%s: invalid key %q accepted: %q", text, key, res.Output)
			case keyValid && err != nil:
				t.Fatalf("%s: valid key %q: %v", text, key, err)
			case keyValid && !strings.HasPrefix(text, "{{ls"):
				if string(res.Output) != "fuzzed value" {
					t.Fatalf("%s: output %q, want the key's value", text, res.Output)
				}
				if !slices.Equal(res.Keys, []string{nkey}) || len(res.Prefixes) != 0 {
					t.Fatalf("%s: Keys %q Prefixes %q, want exactly [%q]", text, res.Keys, res.Prefixes, nkey)
				}
			}
			if err == nil {
				checkResult(t, res, data)
			}
		}
	})
}

func checkRender(t *testing.T, tmpl *Template, data Data) {
	res, err := tmpl.Execute(data)
	if err != nil {
		if !strings.Contains(err.Error(), "fuzz.tmpl") {
			t.Fatalf("render error does not name the template: %v", err)
		}
		return
	}
	checkResult(t, res, data)
	if len(tmpl.Nondeterministic()) == 0 {
		again, err := tmpl.Execute(data)
		if err != nil {
			t.Fatalf("second render failed: %v", err)
		}
		if !bytes.Equal(again.Output, res.Output) || !slices.Equal(again.Keys, res.Keys) || !slices.Equal(again.Prefixes, res.Prefixes) {
			t.Fatalf("deterministic template rendered differently: %q then %q", res.Output, again.Output)
		}
	}
}

func checkResult(t *testing.T, res *Result, data Data) {
	if !slices.IsSorted(res.Keys) || len(slices.Compact(slices.Clone(res.Keys))) != len(res.Keys) {
		t.Fatalf("Keys not sorted and unique: %q", res.Keys)
	}
	if !slices.IsSorted(res.Prefixes) || len(slices.Compact(slices.Clone(res.Prefixes))) != len(res.Prefixes) {
		t.Fatalf("Prefixes not sorted and unique: %q", res.Prefixes)
	}
	secret := false
	for _, k := range res.Keys {
		if err := api.ValidateKey(k); err != nil {
			t.Fatalf("recorded an invalid key: %v", err)
		}
		secret = secret || api.IsSecret(k)
	}
	for _, p := range res.Prefixes {
		if q, err := api.ValidatePrefix(p); err != nil || q != p {
			t.Fatalf("recorded an invalid prefix %q: %v", p, err)
		}
		secret = secret || api.IsSecret(p)
	}
	if secret && !res.Secret {
		t.Fatalf("Keys %q / Prefixes %q hold a secret, but Secret is false", res.Keys, res.Prefixes)
	}
	if res.Changed(data.Keys, data.Keys) {
		t.Fatal("Changed(v, v) = true")
	}
}
