package templates

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var ctDiffSeed = flag.Int64("ct-diff-seed", 1, "with -peers: the seed of TestConsulTemplateDifferential's random cases")

// TestConsulTemplateDifferential renders random consul-template-mode templates of its KV and
// plain helpers and of sprig_* (odd strings, mixed number types, JSON/YAML/TOML round trips,
// raw prefixes) with the real consul-template (a process per case, against a Consul KV API) and
// with Shoelace, and fails on output that differs, or on a Shoelace failure that is not a
// refusal naming itself "not supported in Shoelace". Where consul-template fails and Shoelace
// renders, it logs the case: consul-template runs a template once before its keys arrive
// (divide by a key not read yet). It needs the real tools:
//
//	go test ./templates -run TestConsulTemplateDifferential -args -peers DIR [-ct-diff-seed N]
func TestConsulTemplateDifferential(t *testing.T) {
	dir := *peersDir
	if dir == "" {
		t.Skip("needs the real consul-template: -args -peers DIR")
	}
	keys := map[string]string{"web/a": "1", "web/b/c": "2.5", "webx": "x", "csv": " a, b ,c ", "empty": "", "json": `{"a":{"b":[1,2.5,"x"]},"h":"<&>","n":null,"t":true,"s":"x\ny"}`,
		"yaml": "a:\n  b: [1, 2]\nc: x\n", "pem": "-----BEGIN-----\nA\n\nB\n-----END-----\n", "num": "42", "neg": "-3", "f": "1.5", "big": "99999999999999999999", "uni": "ǆemo ñandú straße", "re": "foo-bar_baz 12"}
	strs := []string{`"a,b,c"`, `""`, `" x "`, `(key "csv")`, `(key "uni")`, `(key "pem")`, `(key "re")`, `"héllo wörld"`, `"a\nb\n"`, `(key "empty")`, `"1,2,,3"`, `"ǆ"`}
	nums := []string{`1`, `2.5`, `-3`, `0`, `(key "num" | parseInt)`, `(key "f" | parseFloat)`, `"4"`, `(key "neg" | parseInt)`, `(parseUint "7")`, `1e3`}
	exprs := []func(r *rand.Rand) string{
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | split "," | toJSON }}`, strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | split "," | join ";" }}`, strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string { return fmt.Sprintf(`{{ %s | toTitle }}`, strs[r.Intn(len(strs))]) },
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | toUpper }}{{ %s | toLower }}`, strs[r.Intn(len(strs))], strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`[{{ %s | indent %d }}]`, strs[r.Intn(len(strs))], r.Intn(4))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | trimSpace }}|{{ %s | trim " ," }}`, strs[r.Intn(len(strs))], strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | regexReplaceAll "(\\w+)" "<$1>" }}`, strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | regexReplaceAll "[aeiou]" "" }}{{ %s | regexMatch "^a" }}`, strs[r.Intn(len(strs))], strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | replaceAll "a" "X" }}`, strs[r.Intn(len(strs))])
		},
		func(r *rand.Rand) string {
			ops := []string{"add", "subtract", "multiply", "divide", "modulo", "minimum", "maximum"}
			return fmt.Sprintf(`{{ %s %s %s }}`, ops[r.Intn(len(ops))], nums[r.Intn(len(nums))], nums[r.Intn(len(nums))])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | parseInt }}{{ %s | parseFloat }}{{ %s | parseBool }}`, []string{`"42"`, `"-1"`, `(key "big")`, `"x"`, `"0x10"`}[r.Intn(5)], []string{`"1.5"`, `"1e3"`, `"NaN"`, `"x"`}[r.Intn(4)], []string{`"true"`, `"1"`, `"T"`, `"yes"`}[r.Intn(4)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | parseJSON | %s }}`, []string{`(key "json")`, `"[1,2]"`, `"\"s\""`, `"{}"`, `"null"`, `"1e30"`}[r.Intn(6)], []string{"toJSON", "toYAML", "toTOML", "toJSONPretty", "toUnescapedJSON", "toUnescapedJSONPretty"}[r.Intn(6)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | parseYAML | %s }}`, []string{`(key "yaml")`, `"a: 1"`, `"- x\n- 2"`}[r.Intn(3)], []string{"toJSON", "toYAML", "toTOML"}[r.Intn(3)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ range $i := loop %s }}{{ $i }},{{ end }}`, []string{"3", "1 4", "(key \"num\" | parseInt | minimum 5)", "0", "2 2"}[r.Intn(5)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | splitToMap "," "=" | toJSON }}`, []string{`"a=1,b=2"`, `"a=1,,b"`, `""`, `"a==b"`}[r.Intn(4)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | %s }}`, strs[r.Intn(len(strs))], []string{"base64Encode", "base64URLEncode", "sha256Hex", "md5sum", "toJSON"}[r.Intn(5)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s }}`, []string{`tree "web" | explode | toJSON`, `ls "web" | toJSON`, `tree "" | len`, `keyOrDefault "empty" "d"`, `keyOrDefault "nope" "d"`, `keyExists "web"`, `keyExists "web/a"`, `tree "web/" | byKey | toJSON`, `key "json" | parseJSON | explodeMap | toJSON`}[r.Intn(9)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | contains %s }}{{ %s | in %s }}`, `(split "," "a,b")`, []string{`"a"`, `"c"`, `1`}[r.Intn(3)], `"abc"`, []string{`"b"`, `"x"`}[r.Intn(2)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s | containsAny (%s) }}{{ %s | containsAll (%s) }}`, `(split "," "a,b")`, `split "," "b,x"`, `(split "," "a,b")`, `split "," "a"`)
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ $m := key "json" | parseJSON }}{{ mergeMap $m (%s) | toJSON }}`, []string{`"{\"t\":false}" | parseJSON`, `"{\"z\":1}" | parseJSON`}[r.Intn(2)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ sprig_%s }}`, []string{`upper "a"`, `trimSuffix "c" "abc"`, `splitList "," "a,b"`, `indent 2 "x\n"`, `add 1 2`, `toString 1.5`, `list 1 "a" | toJson`, `dict "a" 1 | toJson`, `regexReplaceAll "a" "banana" "X"`, `title "hi there"`, `int64 "7"`, `semver "1.2.3" | toJson`, `b64enc "x"`, `sha1sum "x"`, `default "d" ""`, `ternary 1 2 true`, `until 3 | toJson`}[r.Intn(17)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ range %s }}{{ .Key }}={{ .Value }}/{{ .Path }};{{ end }}`, []string{`ls "web"`, `ls "web/"`, `ls "/web"`, `tree "web"`, `tree "/"`, `tree "web/b"`, `ls "nope"`, `safeLs "web"`, `tree "we"`, `ls "web/b/"`}[r.Intn(10)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ %s }}`, []string{`keyExists "/web/a"`, `keyOrDefault "/web/a" "d"`, `key "/web/a"`, `keyExists "web/"`, `keyOrDefault "web/b" "d"`, `key "web/b/c"`, `keyExists ""`}[r.Intn(7)])
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf(`{{ sprig_%s }}`, []string{`trunc 3 "abcdef"`, `abbrev 5 "hello world"`, `wrap 5 "a b c d e f g"`, `nospace " a b "`, `camelcase "a_b_c"`, `snakecase "AbcDef"`, `kebabcase "AbcDef"`, `plural "one" "many" 2`, `toDate "2006-01-02" "2020-05-06" | sprig_date "02/01"`, `sortAlpha (list "b" "a" "C")`, `uniq (list 1 1 2)`, `join "," (list 1 "a" 2.5)`, `splitn "," 2 "a,b,c" | sprig_toJson`, `regexFindAll "[0-9]+" "a1b22c333" -1`, `substr 1 3 "abcd"`, `atoi "12x"`, `float64 "1.5x"`, `int "1.9"`, `toString (list 1 2)`, `mul 2 3 4`, `div 7 2`, `mod -7 3`, `max 1 5 3`, `floor 1.7`, `round 2.555 2`, `b64dec "aGk="`, `sha256sum "x"`, `adler32sum "x"`, `quote 1 "a"`, `squote "a"`, `cat "a" nil "b"`, `indent 2 ""`, `nindent 2 "x"`, `replace "a" "b" "aaa"`, `contains "b" "abc"`, `hasPrefix "a" "abc"`, `repeat 3 "ab"`, `initials "hello world"`, `compact (list "" "a" nil)`, `first (list)`, `last (list 1 2)`, `rest (list 1 2 3)`, `dig "a" "b" "d" (dict "a" (dict "b" 1))`, `pluck "a" (dict "a" 1) (dict "a" 2)`, `keys (dict "b" 1 "a" 2) | sprig_sortAlpha`, `hasKey (dict "a" 1) "a"`, `pick (dict "a" 1 "b" 2) "a" | sprig_toJson`, `toPrettyJson (dict "a" (list 1))`, `toRawJson (dict "h" "<&>")`, `fromJson "{\"a\":1}" | sprig_toJson`, `semverCompare "^1.0" "1.2.3"`, `urlParse "http://u:p@h:1/p?q=1#f" | sprig_toJson`, `urlJoin (dict "host" "h" "scheme" "https")`, `osBase "/a/b.c"`, `ext "a.tar.gz"`, `clean "a//b/../c"`, `isAbs "/a"`, `typeOf 1.5`, `kindIs "int" 1`, `deepEqual (list 1) (list 1)`, `coalesce "" nil "x"`, `all 1 "" true`, `any 0 "" "x"`, `fromJsonArray "[1,2]" | sprig_toJson`, `seq 1 2 7`, `until 3`, `untilStep 0 10 3`, `duration 95`, `durationRound "2h10m"`, `htmlDate "2020-05-06"`}[r.Intn(70)])
		},
	}
	r := rand.New(rand.NewSource(*ctDiffSeed))
	var tmpls []string
	for i := 0; i < 300; i++ {
		var b strings.Builder
		for j := 0; j < 3; j++ {
			b.WriteString(exprs[r.Intn(len(exprs))](r) + "|")
		}
		tmpls = append(tmpls, b.String()+"\n")
	}
	consul := httptest.NewServer(consulKV(keys))
	defer consul.Close()
	type res struct {
		out []byte
		err error
	}
	results := make([]res, len(tmpls))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, text := range tmpls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tmp := t.TempDir()
			src, dst := filepath.Join(tmp, "t.tmpl"), filepath.Join(tmp, "out")
			cfg := fmt.Sprintf("template {\n  source = %q\n  destination = %q\n}\n", src, dst)
			if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
				results[i] = res{err: err}
				return
			}
			if err := os.WriteFile(filepath.Join(tmp, "ct.hcl"), []byte(cfg), 0o644); err != nil {
				results[i] = res{err: err}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(dir, "consul-template"), "-once", "-config", filepath.Join(tmp, "ct.hcl"), "-consul-addr", strings.TrimPrefix(consul.URL, "http://"), "-log-level", "err")
			cmd.Env = peerEnv()
			out, err := cmd.CombinedOutput()
			if err != nil {
				results[i] = res{err: fmt.Errorf("%v: %s", err, out)}
				return
			}
			b, err := os.ReadFile(dst)
			results[i] = res{out: b, err: err}
		}()
	}
	wg.Wait()
	d := Data{Keys: keys, Env: func(string) string { return "" }, LookupEnv: func(string) (string, bool) { return "", false }}
	bad := 0
	for i, text := range tmpls {
		tm, err := Parse(text, Options{Functions: ModeConsulTemplate})
		var got []byte
		if err == nil {
			var rr *Result
			rr, err = tm.Execute(d)
			if err == nil {
				got = rr.Output
			}
		}
		pr := results[i]
		switch {
		case pr.err != nil && err != nil:
		case pr.err != nil:
			t.Logf("case %d: ct failed (%v), shoelace rendered %q\n  %s", i, lastLine([]byte(pr.err.Error())), got, text)
		case err != nil && strings.Contains(err.Error(), "not supported in Shoelace"):
		case err != nil:
			bad++
			t.Errorf("case %d: shoelace failed %v, ct %q\n  %s", i, err, pr.out, text)
		case string(got) != string(pr.out):
			bad++
			t.Errorf("case %d DIFFERS:\n shoelace %q\n ct       %q\n  %s", i, got, pr.out, text)
		}
	}
	t.Logf("%d cases, %d bad", len(tmpls), bad)
}
