package templates

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Masterminds/sprig/v3"
)

func TestParse_UnknownFunctionsMode(t *testing.T) {
	_, err := Parse("x", Options{Name: "t", Functions: "jinja"})
	if err == nil || !strings.Contains(err.Error(), `functions "jinja"`) || !strings.Contains(err.Error(), "confd") {
		t.Fatalf("error %v, want one naming the mode and the valid ones", err)
	}
	for _, mode := range []string{"", ModeNative, ModeConfd, ModeConsulTemplate} {
		tmpl := mustParse(t, "x", Options{Functions: mode})
		if want := map[string]string{"": ModeNative}[mode]; tmpl.Mode() != mode && tmpl.Mode() != want {
			t.Errorf("Functions %q: Mode() = %q", mode, tmpl.Mode())
		}
	}
}

// TestParse_RefusedNamesFunctionAndReason: what cannot behave as in the peer fails at parse time
// with the function, the mode and why.
func TestParse_RefusedNamesFunctionAndReason(t *testing.T) {
	for _, tc := range []struct {
		mode, text string
		want       []string
	}{
		{ModeConfd, `{{cget "/a"}}`, []string{`"cget"`, "PGP", "confd functions", "t.tmpl:1"}},
		{ModeConfd, `{{fileExists "/etc/passwd"}}`, []string{`"fileExists" is disabled`, "allow_file"}},
		{ModeConsulTemplate, `{{range service "web"}}{{.Address}}{{end}}`, []string{`"service"`, "consul-template functions", "catalog"}},
		{ModeConsulTemplate, `{{with secret "kv/x"}}{{.Data}}{{end}}`, []string{`"secret"`, "Vault"}},
		{ModeConsulTemplate, `{{nomadVar "x"}}`, []string{`"nomadVar"`, "Nomad"}},
		{ModeConsulTemplate, `{{plugin "/bin/true"}}`, []string{`"plugin"`, "runs a program"}},
		{ModeConsulTemplate, `{{writeToFile "/tmp/x" "" "" "0644" "a"}}`, []string{`"writeToFile"`, "side effect"}},
		{ModeConsulTemplate, `{{spew_sdump 1}}`, []string{`"spew_sdump"`}},
		{ModeConsulTemplate, `{{sockaddr "GetPrivateIP"}}`, []string{`"sockaddr"`, "network interfaces"}},
		{ModeConsulTemplate, `{{file "/etc/passwd"}}`, []string{`"file" is disabled`}},
		{ModeConsulTemplate, `{{range ls "a"}}{{.ModifyIndex}}{{end}}`, []string{"field .ModifyIndex", "Consul indexes"}},
		{ModeConsulTemplate, `{{$p := index (tree "a") 0}}{{$p.Session}}`, []string{"field .Session"}},
		{ModeNative, `{{range service "web"}}{{end}}`, []string{`"service"`, "native functions", "catalog"}},
		{ModeNative, `{{lookupSRV "a" "b" "c"}}`, []string{`"lookupSRV"`, "DNS", "functions: confd"}},
	} {
		t.Run(tc.mode+" "+tc.text, func(t *testing.T) {
			_, err := Parse(tc.text, Options{Name: "t.tmpl", Functions: tc.mode})
			if err == nil {
				t.Fatal("parsed; want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestMissingKeyOrField: a missing map key or field fails the render in native and confd modes;
// consul-template mode prints "<no value>" as consul-template does, unless ErrorOnMissingKey.
func TestMissingKeyOrField(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		text string
		want string // "" means the render must fail
	}{
		{Options{}, `{{$m := dict "a" 1}}{{$m.b}}`, ""},
		{Options{}, `{{.Foo}}`, ""},
		{Options{Functions: ModeConfd}, `{{$j := json "{}"}}{{$j.x}}`, ""},
		{Options{Functions: ModeConfd}, `{{.Foo}}`, ""},
		{Options{Functions: ModeConsulTemplate}, `{{.Data.Foo}} {{$m := sprig_dict "a" 1}}{{$m.b}}`, "<no value> <no value>"},
		{Options{Functions: ModeConsulTemplate, ErrorOnMissingKey: true}, `{{$m := sprig_dict "a" 1}}{{$m.b}}`, ""},
		{Options{Functions: ModeConsulTemplate, ErrorOnMissingKey: true}, `{{.Data.Foo}}`, ""},
	} {
		t.Run(tc.opts.Functions+" "+tc.text, func(t *testing.T) {
			res, err := mustParse(t, tc.text, tc.opts).Execute(Data{})
			switch {
			case tc.want == "" && err == nil:
				t.Errorf("rendered %q; want the render to fail", res.Output)
			case tc.want != "" && err != nil:
				t.Errorf("failed (%v); want %q", err, tc.want)
			case tc.want != "" && string(res.Output) != tc.want:
				t.Errorf("output %q, want %q", res.Output, tc.want)
			}
		})
	}
}

// TestConfd_Prefix: Options.Prefix is confd's prefix, which the view already stands for: the
// template's paths are relative to it as in confd; a path that repeats
// the prefix reads a key below the view's production/web, as confd reads the prefix twice
// (testdata/peers/cases/confd/probe-prefix-* show confd doing so).
func TestConfd_Prefix(t *testing.T) {
	keys := map[string]string{"db/host": "h", "db/port": "5", "upstream/a": "1", "upstream/b": "2"}
	text := `{{getv "/db/host"}} {{exists "/production/web/db/port"}} {{getv "/production/web/db/host" "d"}} ` +
		`{{range gets "/upstream/*"}}{{.Key}}={{.Value}} {{end}}{{gets "/production/web/*/*"}} ` +
		`{{ls "/production/web"}} {{ls "/db"}} {{lsdir "/production/web/"}} {{(get "/db/host").Key}} {{getvs "/*/*"}}`
	want := "h false d /upstream/a=1 /upstream/b=2 [] [] [host port] [] /db/host [1 2 5 h]"
	for _, prefix := range []string{"", "/production/web", "production/web/", "/production/web/"} {
		res, err := mustParse(t, text, Options{Functions: ModeConfd, Prefix: prefix}).Execute(Data{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res.Output); got != want {
			t.Errorf("Prefix %q:\n got %q\nwant %q", prefix, got, want)
		}
	}
	_, err := mustParse(t, `{{getv "/production/web/db/host"}}`, Options{Functions: ModeConfd, Prefix: "/production/web"}).Execute(Data{Keys: keys})
	var mk *MissingKeyError
	if !errors.As(err, &mk) || mk.Key != "production/web/db/host" {
		t.Errorf("error %v, want a MissingKeyError for production/web/db/host", err)
	}
}

// TestConfd_Keys: with Options.ConfdKeys the template sees only the keys confd would load for
// them, and records only those as inputs (a change to another key cannot change its output).
func TestConfd_Keys(t *testing.T) {
	keys := map[string]string{"db/host": "h", "dbx/y": "y", "other": "o"}
	text := `{{getv "/db/host"}} {{exists "/other"}} {{getv "/dbx/y" "d"}} {{ls "/"}} {{gets "/*/*"}}`
	res, err := mustParse(t, text, Options{Functions: ModeConfd, ConfdKeys: []string{"db"}}).Execute(Data{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "h false d [] [{/db/host h}]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	res, err = mustParse(t, `{{getv "/db/host"}} {{exists "/other"}} {{getv "/dbx/y" "d"}}`, Options{Functions: ModeConfd, ConfdKeys: []string{"db"}}).Execute(Data{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Keys, ","); got != "db/host" {
		t.Errorf("Keys = %q, want db/host", got)
	}
	changed := map[string]string{"db/host": "h", "dbx/y": "z", "other": "p", "new": "n"}
	if res.Changed(keys, changed) {
		t.Error("a change to keys the template does not see re-renders it")
	}
	if _, err := mustParse(t, `{{getv "/db/host" "d"}}`, Options{Functions: ModeConfd, ConfdKeys: []string{}}).Execute(Data{Keys: keys}); err != nil {
		t.Error(err)
	}
}

// TestConfd_InputsRecorded: confd mode's listings record what they read, so that the agent
// re-renders when it changes.
func TestConfd_InputsRecorded(t *testing.T) {
	keys := map[string]string{"app/a": "1", "app/b/c": "2", "other": "3"}
	res, err := mustParse(t, `{{ls "/app"}}{{lsdir "/app"}}{{gets "/app/*/c"}}{{getv "/other"}}{{exists "/nope"}}`,
		Options{Functions: ModeConfd}).Execute(Data{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Prefixes, ","); got != "app" {
		t.Errorf("Prefixes = %q, want app", got)
	}
	if got := strings.Join(res.Keys, ","); got != "app,nope,other" {
		t.Errorf("Keys = %q, want app,nope,other", got)
	}
	changed := map[string]string{"app/a": "1", "app/b/c": "2", "other": "3", "app/d/e": "4"}
	if !res.Changed(keys, changed) {
		t.Error("a new key below app does not count as a change")
	}
}

func TestConsulTemplate_DatacenterSelectorFails(t *testing.T) {
	for _, text := range []string{`{{key "a@dc1"}}`, `{{len (ls "a?ns=x")}}`, `{{keyOrDefault "a@dc" "d"}}`} {
		_, err := mustParse(t, text, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: map[string]string{"a": "1"}})
		if err == nil || !strings.Contains(err.Error(), "no equivalent") {
			t.Errorf("%s: error %v, want one saying the selector has no equivalent", text, err)
		}
	}
}

// TestLoop_RangeLeftEarlyLeavesNoGoroutine: loop's feeder ends with the execution, even when
// the range stops early or the render fails inside it.
func TestLoop_RangeLeftEarlyLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, mode := range []string{ModeNative, ModeConsulTemplate} {
		for _, text := range []string{
			`{{range loop 1000000}}{{if eq . 3}}{{break}}{{end}}{{.}}{{end}}`,
			`{{range loop 1000000}}{{if eq . 3}}{{fail}}{{end}}{{end}}`,
		} {
			tmpl, err := Parse(strings.ReplaceAll(text, "{{fail}}", `{{key "missing"}}`), Options{Functions: mode})
			if err != nil {
				t.Fatal(err)
			}
			res, err := tmpl.Execute(Data{})
			if err == nil && string(res.Output) != "012" {
				t.Errorf("%s: output %q", text, res.Output)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left running after the renders (%d before)", runtime.NumGoroutine()-before, before)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExecuteTemplate_NestingBounded(t *testing.T) {
	_, err := mustParse(t, `{{define "r"}}{{executeTemplate "r"}}{{end}}{{executeTemplate "r"}}`,
		Options{Functions: ModeConsulTemplate}).Execute(Data{})
	if err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("error %v, want the nesting bound", err)
	}
}

// TestWarnings_NativeNamesWithConfdMeaning: validate's warnings name each function whose native
// meaning differs from confd's, with both meanings; peer modes have none.
func TestWarnings_NativeNamesWithConfdMeaning(t *testing.T) {
	text := `{{range ls "/a"}}{{.}}{{end}}{{contains "x" "y"}}{{split "," "a,b"}}{{seq 3}}{{trimSuffix "a" "b"}}{{getv "/a" "d"}}` +
		`{{lsdir "/"}}{{get "/a"}}{{gets "/a/*"}}`
	got := mustParse(t, text, Options{}).Warnings()
	wantFns := []string{"contains", "get", "gets", "ls", "lsdir", "seq", "split", "trimSuffix"}
	if len(got) != len(wantFns) {
		t.Fatalf("Warnings = %q, want one for each of %v", got, wantFns)
	}
	for i, fn := range wantFns {
		if !strings.HasPrefix(got[i], fn+": native") || !strings.Contains(got[i], "confd's") || !strings.Contains(got[i], "functions: confd") {
			t.Errorf("warning %d = %q, want %s's native and confd meanings and the way out", i, got[i], fn)
		}
	}
	if w := mustParse(t, `{{getv "/a" "d"}}{{keys "/a"}}`, Options{}).Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q for functions that mean the same", w)
	}
	// A range over ls that reads its items' .Key, .Value or .Path was written for the native
	// ls (confd's gives names): the README's own nginx template warned.
	for _, text := range []string{`{{range ls "app/upstreams"}}server {{.Value}}; # {{.Key}}{{end}}`, `{{range $i, $kv := ls "a"}}{{$kv.Path}}{{end}}`} {
		if w := mustParse(t, text, Options{}).Warnings(); len(w) != 0 {
			t.Errorf("%s: Warnings = %q, want none", text, w)
		}
	}
	// One use without them is enough to warn: a confd template may hold it.
	for _, text := range []string{`{{range ls "a"}}{{.Value}}{{end}}{{range ls "b"}}{{.}}{{end}}`, `{{range ls "a"}}{{.Value}}{{end}}{{len (ls "b")}}`, `{{range ls "a"}}{{getv (printf "/a/%s" .)}}{{end}}`} {
		if w := mustParse(t, text, Options{}).Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "ls: native") {
			t.Errorf("%s: Warnings = %q, want ls's", text, w)
		}
	}
	for _, mode := range []string{ModeConfd, ModeConsulTemplate} {
		if w := mustParse(t, `{{len (ls "/a")}}{{contains "a" "b"}}`, Options{Functions: mode}).Warnings(); w != nil {
			t.Errorf("%s mode: Warnings = %q, want none", mode, w)
		}
	}
}

// TestExecute_ConcurrentHelpers renders consul-template's helpers (toTitle's caser, scratch,
// loop) from many goroutines: each render has its own state (run with -race).
func TestExecute_ConcurrentHelpers(t *testing.T) {
	tmpl := mustParse(t, `{{key "n" | toTitle}} {{scratch.Set "a" (key "n")}}{{scratch.Get "a"}} {{range loop 2}}{{.}}{{end}}`,
		Options{Functions: ModeConsulTemplate})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := fmt.Sprintf("élan %d o'neil", i)
			res, err := tmpl.Execute(Data{Keys: map[string]string{"n": n}})
			if err != nil {
				errs <- err
				return
			}
			if want := fmt.Sprintf("Élan %d O'neil élan %d o'neil 01", i, i); string(res.Output) != want {
				errs <- fmt.Errorf("output %q, want %q", res.Output, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestConsulTemplate_TimestampAsItsTests: consul-template's TestTemplate_Execute cases
// "helper_timestamp" and "helper_helper_timestamp__formatted", with their clock (the Unix epoch):
// the real tool's output is the time of its run, so these two compare with the test's bytes.
func TestConsulTemplate_TimestampAsItsTests(t *testing.T) {
	defer func(f func() time.Time) { ctNow = f }(ctNow)
	ctNow = func() time.Time { return time.Unix(0, 0).UTC() }
	for text, want := range map[string]string{`{{ timestamp }}`: "1970-01-01T00:00:00Z", `{{ timestamp "2006-01-02" }}`: "1970-01-01", `{{ timestamp "unix" }}`: "0"} {
		res, err := mustParse(t, text, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: map[string]string{}})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res.Output); got != want {
			t.Errorf("%s = %q, want %q", text, got, want)
		}
	}
}

// TestConsulTemplate_WholePairsRefused: consul-template prints and encodes a key pair with
// Consul's indexes (and a list of pairs as memory addresses), which a view does not have: those
// templates fail, at parse time where the tree shows it, else when the pair is encoded.
func TestConsulTemplate_WholePairsRefused(t *testing.T) {
	for _, text := range []string{`{{ ls "web" }}`, `{{ range ls "web" }}{{ . }}{{ end }}`, `{{ range $i, $p := tree "web" }}{{ if true }}{{ $p }}{{ end }}{{ end }}`, `{{ tree "web" | byKey }}`} {
		_, err := Parse(text, Options{Functions: ModeConsulTemplate})
		if !isRefusal(err) || !strings.Contains(err.Error(), "print .Key, .Value or .Path") {
			t.Errorf("%s: %v, want a refusal at parse time", text, err)
		}
	}
	keys := map[string]string{"web/a": "1", "web/b/c": "2"}
	for _, text := range []string{`{{ ls "web" | toJSON }}`, `{{ tree "web" | byKey | toYAML }}`, `{{ $l := ls "web" }}{{ index $l 0 | toTOML }}`, `{{ ls "web" | toUnescapedJSONPretty }}`} {
		_, err := mustParse(t, text, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: keys})
		if err == nil || !strings.Contains(err.Error(), "whole Consul key pair is not supported") {
			t.Errorf("%s: %v, want the render to fail", text, err)
		}
	}
	res, err := mustParse(t, `{{ range ls "web" }}{{ .Key }}={{ .Value }};{{ end }}{{ tree "web" | explode | toJSON }}`, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: keys})
	if err != nil || string(res.Output) != `a=1;{"a":"1","b":{"c":"2"}}` {
		t.Errorf("fields and explode: %q, %v", res.Output, err)
	}
}

// TestModes_EveryPeerName: every name of confd v0.16.0's function map (resource/template's
// newFuncMap, memkv's store functions and the cget* of a PGP key) and of consul-template
// v0.41.1's funcMap (template.go, sprig's hermetic set as sprig_*) exists in its mode or is
// refused at parse time naming it, never "not defined".
func TestModes_EveryPeerName(t *testing.T) {
	confd := strings.Fields(`base split json jsonArray dir map getenv join datetime toUpper toLower contains replace
		trimSuffix lookupIP lookupIPV4 lookupIPV6 lookupSRV fileExists base64Encode base64Decode parseBool reverse
		sortByLength sortKVByLength add sub div mod mul seq atoi exists ls lsdir get gets getv getvs cget cgets cgetv cgetvs`)
	ct := strings.Fields(`add base64Decode base64Encode base64URLDecode base64URLEncode byKey byMeta byPort byTag caLeaf
		caRoots connect contains containsAll containsAny containsNone containsNotAll datacenters divide env envOrDefault
		executeTemplate explode explodeMap exportedServices file hmacSHA256Hex in indent join key keyExists keyOrDefault
		loop ls maximum md5sum mergeMap mergeMapWithOverride minimum modulo multiply mustEnv node nodes nomadService
		nomadServices nomadVar nomadVarExists nomadVarList nomadVarListSafe parseBool parseFloat parseInt parseJSON
		parseUint parseYAML partitions peerings pkiCert plugin regexMatch regexReplaceAll replaceAll safeLs safeTree
		scratch secret secrets service services sha256Hex sockaddr spew_dump spew_printf spew_sdump spew_sprintf split
		splitToMap subtract timestamp toJSON toJSONPretty toLower toTOML toTitle toUnescapedJSON toUnescapedJSONPretty
		toUpper toYAML tree trim trimPrefix trimSpace trimSuffix writeToFile`)
	for name := range sprig.HermeticTxtFuncMap() {
		ct = append(ct, "sprig_"+name)
	}
	for mode, names := range map[string][]string{ModeConfd: confd, ModeConsulTemplate: ct} {
		defined, refused := 0, 0
		for _, name := range names {
			_, err := Parse(`{{ if false }}{{ $x := `+name+` }}{{ end }}`, Options{Functions: mode})
			switch {
			case err == nil:
				defined++
			case isRefusal(err) && strings.Contains(err.Error(), name):
				refused++
			default:
				t.Errorf("%s mode: %s: %v", mode, name, err)
			}
		}
		t.Logf("%s mode: %d names: %d defined, %d refused at parse time", mode, len(names), defined, refused)
	}
}

// TestConsulTemplate_FunctionDenylist: consul-template's function_denylist: a denied function
// fails when called ("function is disabled"), globs included, in every execution; the others work.
func TestConsulTemplate_FunctionDenylist(t *testing.T) {
	tmpl := mustParse(t, `{{ if eq (key "on") "1" }}{{ key "a" }}{{ end }}{{ sprig_upper "x" }}`,
		Options{Functions: ModeConsulTemplate, FunctionDenylist: []string{"key", "sprig_*"}})
	for range 2 { // the template's own execution, then a clone's
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := tmpl.Execute(Data{Keys: map[string]string{"on": "1", "a": "A"}})
				if err == nil || !strings.Contains(err.Error(), "function is disabled") {
					t.Errorf("error %v, want function is disabled", err)
				}
			}()
		}
		wg.Wait()
	}
	res, err := mustParse(t, `{{ key "a" }}{{ toUpper "x" }}`, Options{Functions: ModeConsulTemplate, FunctionDenylist: []string{"sprig_*", "plugin"}}).
		Execute(Data{Keys: map[string]string{"a": "A"}})
	if err != nil || string(res.Output) != "AX" {
		t.Errorf("%q, %v", res.Output, err)
	}
	for pat, name := range map[string]string{"sprig_*": "sprig_upper", "*Hex": "sha256Hex", "to*JSON": "toUnescapedJSON", "key": "key"} {
		if !globMatch(pat, name) {
			t.Errorf("%s does not match %s", pat, name)
		}
	}
	for pat, name := range map[string]string{"sprig_*": "split", "key": "keyExists", "to*JSON": "toJSONPretty"} {
		if globMatch(pat, name) {
			t.Errorf("%s matches %s", pat, name)
		}
	}
}

// TestWarnings_RelativeFile: validate warns of a relative path given as it is to file or
// fileExists (as an argument or piped), in every mode: it is read from the agent's working
// directory, / under systemd, not from the template's. Before, it said nothing, and such a
// template rendered from `cd /etc/app && shoelace-agent once` and failed under systemd.
func TestWarnings_RelativeFile(t *testing.T) {
	for _, c := range []struct {
		mode, text string
		want       []string
	}{
		{ModeNative, `{{file "certs/a.pem"}}{{"b.pem" | file}}{{if fileExists "./c"}}{{end}}{{file "certs/a.pem"}}{{file "/etc/x"}}{{file (printf "%s" "d")}}`,
			[]string{`file "certs/a.pem": a relative path is read from the agent's working directory (/ under systemd)`, `file "b.pem": `, `fileExists "./c": `}},
		{ModeConsulTemplate, `{{file "ca.pem"}}{{file "/etc/ca.pem"}}`, []string{`file "ca.pem": `}},
		{ModeConfd, `{{if fileExists "flag"}}{{end}}`, []string{`fileExists "flag": `}},
	} {
		got := mustParse(t, c.text, Options{Functions: c.mode, AllowFile: true}).Warnings()
		if len(got) != len(c.want) {
			t.Errorf("%s: Warnings = %q, want %d", c.mode, got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(got[i], w) || !strings.HasSuffix(got[i], "give it absolute") {
				t.Errorf("%s: warning %d = %q, want %q...", c.mode, i, got[i], w)
			}
		}
	}
	// A confd resource's template that could not be parsed has none (validate panicked).
	if w := Unparsed(Options{Functions: ModeConfd}, errors.New("unreadable")).Warnings(); len(w) != 0 {
		t.Errorf("an unparsed template's Warnings = %q", w)
	}
}

// TestConsulTemplate_FunctionDenylistKeepsTheKeywords: an entry that matches range or template
// ("r*", "t*", "*", "range") denies the functions of those names, but not the keywords {{range}}
// and {{template}}, which are no functions in consul-template: before, Shoelace's own functions
// behind them were denied, and every range or {{template}} failed "function is disabled".
func TestConsulTemplate_FunctionDenylistKeepsTheKeywords(t *testing.T) {
	text := `{{define "a"}}A{{end}}{{ range $i, $k := ls "a" }}{{ $k.Key }}{{ end }}{{ template "a" }}`
	for _, deny := range []string{"r*", "t*", "range", "template"} {
		res, err := mustParse(t, text, Options{Functions: ModeConsulTemplate, FunctionDenylist: []string{deny}}).
			Execute(Data{Keys: map[string]string{"a/b": "1"}})
		if err != nil || string(res.Output) != "bA" {
			t.Errorf("function_denylist [%q]: %v, %v; want bA", deny, res, err)
		}
	}
	if _, err := mustParse(t, `{{ toLower "X" }}`, Options{Functions: ModeConsulTemplate, FunctionDenylist: []string{"*"}}).Execute(Data{}); err == nil || !strings.Contains(err.Error(), "function is disabled") {
		t.Errorf("function_denylist [*]: %v, want toLower disabled", err)
	}
}

// TestWarnings_DenylistMatchingNothing: a function_denylist entry that matches no function of
// consul-template mode (a typo, "fiel"; a built-in of Go's templates; the keyword range)
// denies nothing: validate says so. One that matches a function, plugin among them (which
// fails anyway), says nothing.
func TestWarnings_DenylistMatchingNothing(t *testing.T) {
	deny := []string{"fiel", "file", "sprig_*", "*Hex", "plugin", "printf", "range", "nosuch_*"}
	got := mustParse(t, `{{ key "a" }}`, Options{Functions: ModeConsulTemplate, FunctionDenylist: deny}).Warnings()
	var said []string
	for _, w := range got {
		pat, _, ok := strings.Cut(strings.TrimPrefix(w, "function_denylist entry "), " matches no function of consul-template mode, and denies nothing")
		if !ok {
			t.Errorf("warning %q", w)
			continue
		}
		said = append(said, pat)
	}
	if want := []string{`"fiel"`, `"printf"`, `"range"`, `"nosuch_*"`}; !slices.Equal(said, want) {
		t.Errorf("warned of %v, want %v", said, want)
	}
}
