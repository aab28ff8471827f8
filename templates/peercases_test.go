package templates

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/sprig/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The peers' own template tests, each rendered in its peer's mode and compared byte for byte with
// what the real tool rendered. testdata/peers/cases/<tool>/<name>.json holds a case (template,
// keys, environment, options; "source" says where it comes from: confd's template_test.go and
// integration/confdir, consul-template's TestTemplate_Execute, or a probe written here for an edge
// the peers' tests miss); <name>.out holds the bytes the real tool wrote, <name>.err what it said
// when it failed or waited. Rewrite them with
//
//	go test ./templates -run TestPeerCases -args -peers DIR
//
// (DIR: bin/peers, from `make peers`); -cases REGEXP rewrites only the cases whose
// tool/name it matches. Cases Shoelace refuses at parse time are not run
// through the peer: nothing can render from them here.

// peerCase is one case file.
type peerCase struct {
	Source            string            `json:"source"`
	Template          string            `json:"template"`
	Keys              map[string]string `json:"keys,omitempty"`
	Env               map[string]string `json:"env,omitempty"`
	ErrorOnMissingKey bool              `json:"error_on_missing_key,omitempty"`
	LeftDelim         string            `json:"left_delim,omitempty"`
	RightDelim        string            `json:"right_delim,omitempty"`
	AllowFile         bool              `json:"allow_file,omitempty"`
	// FunctionDenylist (consul-template) is the template's function_denylist.
	FunctionDenylist []string `json:"function_denylist,omitempty"`
	// ConfdPrefix and ConfdKeys (confd) are the resource's prefix and keys: confd reads the
	// case's keys below the prefix, as the view holds them after an import with --prefix, and
	// loads only those at or below keys (nil: ["/"]).
	ConfdPrefix string   `json:"confd_prefix,omitempty"`
	ConfdKeys   []string `json:"confd_keys,omitempty"`
	// WholeKeys (confd) says the keys are whole etcd paths, the prefix's own value among them:
	// confd reads them alone in its etcd, with the prefix as written (a trailing '/', "//"),
	// and the view holds them as import --from-etcd --prefix / does.
	WholeKeys bool `json:"whole_keys,omitempty"`
	// Other names inputs of the peer's test that are not keys (Consul catalog, Vault, Nomad):
	// the case can only be refused here.
	Other []string `json:"other_inputs,omitempty"`
}

var peerCasesOnly = flag.String("cases", "", "with -peers: rewrite only the cases whose tool/name this regexp matches")

// peerModes maps a peer to its function mode.
var peerModes = map[string]string{"confd": ModeConfd, "consul-template": ModeConsulTemplate}

// failsByDesign are cases the peer renders and Shoelace fails on purpose, with the reason
// (README.md, "Function modes").
var failsByDesign = map[string]string{
	"confd/probe-dot-missing":         "a missing field is an error in confd mode; confd prints <no value>",
	"confd/probe-json-missing-key":    "a missing map key is an error in confd mode; confd prints <no value>",
	"consul-template/probe-pair-json": "a whole key pair encodes the Consul server's indexes, which a view does not have: the render fails",
}

// rendersWherePeerFails are cases the peer fails and Shoelace renders, with the reason.
var rendersWherePeerFails = map[string]string{
	"consul-template/probe-first-pass": "consul-template executes a template once before its keys arrive, and fails when that pass fails (toTOML of a field of parseJSON \"\"); Shoelace renders from the whole view at once",
}

// hostDependent are cases whose bytes depend on the host's resolver (what localhost resolves
// to): the .out holds what confd wrote here, and Shoelace may also render any of the outputs
// confd's own test accepts (template_test.go's "ip lookup test" and "ipv6 lookup test").
var hostDependent = map[string][]string{
	"confd/template_test-ip-lookup-test":   {"\n\nip: 127.0.0.1\n\n", "\n\nip: 127.0.0.1\n\nip: ::1\n\n", "\n\nip: ::1\n\n"},
	"confd/template_test-ipv6-lookup-test": {"\n\n", "\n\nip: ::1\n\n"},
}

// needsDNS are functions no case can show identical to the peer without a DNS server to ask;
// TestConfd_Lookups checks them.
var needsDNS = map[string]bool{"lookupSRV": true}

type namedCase struct {
	name string
	peerCase
}

func loadPeerCases(t *testing.T, tool string) []namedCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "peers", "cases", tool, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var out []namedCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c peerCase
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, namedCase{name: strings.TrimSuffix(filepath.Base(f), ".json"), peerCase: c})
	}
	if len(out) == 0 {
		t.Fatalf("no cases in testdata/peers/cases/%s", tool)
	}
	return out
}

func (c namedCase) options(tool string) Options {
	return Options{Name: c.name, Functions: peerModes[tool], ErrorOnMissingKey: c.ErrorOnMissingKey,
		LeftDelim: c.LeftDelim, RightDelim: c.RightDelim, AllowFile: c.AllowFile, Prefix: c.ConfdPrefix, ConfdKeys: c.ConfdKeys, FunctionDenylist: c.FunctionDenylist}
}

// data is the view Shoelace renders the case from: the case's keys as view paths. A key the
// import would refuse (a trailing '/', an empty segment) is not in it, as after an import.
func (c namedCase) data() Data {
	keys := map[string]string{}
	for k, v := range c.Keys {
		k = strings.TrimPrefix(k, "/")
		if api.ValidateKey(k) == nil {
			keys[k] = v
		}
	}
	return Data{Appliance: "app", Keys: keys,
		Env:       func(k string) string { return c.Env[k] },
		LookupEnv: func(k string) (string, bool) { v, ok := c.Env[k]; return v, ok }}
}

func casePath(tool, name, ext string) string {
	return filepath.Join("testdata", "peers", "cases", tool, name+ext)
}

// caseOutcome is what Shoelace did with a case.
type caseOutcome int

const (
	outcomeIdentical             caseOutcome = iota // rendered the peer's bytes
	outcomeRefused                                  // refused at parse time
	outcomeBothFail                                 // the peer failed or waited, Shoelace failed
	outcomeByDesign                                 // the peer rendered, Shoelace failed on purpose
	outcomeRendersWherePeerFails                    // the peer failed, Shoelace rendered (rendersWherePeerFails)
)

// TestPeerCases renders every case in its peer's mode and checks it against the peer's result:
// the same bytes, a refusal at parse time, a failure where the peer failed (or waited), or a
// failure listed in failsByDesign. Never output that differs with success.
func TestPeerCases(t *testing.T) {
	for _, tool := range []string{"confd", "consul-template"} {
		cases := loadPeerCases(t, tool)
		if *peersDir != "" {
			writePeerCaseResults(t, tool, cases)
		}
		counts := map[caseOutcome]int{}
		for _, c := range cases {
			t.Run(tool+"/"+c.name, func(t *testing.T) {
				counts[checkPeerCase(t, tool, c)]++
			})
		}
		t.Logf("%s: %d cases: %d identical, %d refused at parse time, %d fail as the peer does, %d fail by design, %d render where the peer fails",
			tool, len(cases), counts[outcomeIdentical], counts[outcomeRefused], counts[outcomeBothFail], counts[outcomeByDesign], counts[outcomeRendersWherePeerFails])
	}
}

func checkPeerCase(t *testing.T, tool string, c namedCase) caseOutcome {
	want, errOut := os.ReadFile(casePath(tool, c.name, ".out"))
	peerErr, errErr := os.ReadFile(casePath(tool, c.name, ".err"))
	hasOut, hasErr := errOut == nil, errErr == nil
	tmpl, err := Parse(c.Template, c.options(tool))
	if isRefusal(err) {
		// Not run through the peer: a stored result would be one that nothing compares.
		if hasOut || hasErr {
			t.Errorf("Shoelace refuses it at parse time (%v), yet %s's result is stored, unchecked: make the case one Shoelace renders, or remove its .out/.err", err, tool)
		}
		return outcomeRefused
	}
	if err != nil {
		// Not a refusal (a syntax error, an undefined function): the peer must fail too.
		if !hasErr {
			t.Errorf("Shoelace fails to parse (%v), %s did not fail", err, tool)
		}
		return outcomeBothFail
	}
	if len(c.Other) > 0 {
		t.Errorf("the case needs %v, yet Shoelace parses it", c.Other)
	}
	if !hasOut && !hasErr {
		t.Fatalf("no %s.out or .err: rewrite them (go test ./templates -run TestPeerCases -args -peers DIR)", c.name)
	}
	res, err := tmpl.Execute(c.data())
	switch {
	case hasErr && err == nil:
		if why, ok := rendersWherePeerFails[tool+"/"+c.name]; ok {
			t.Logf("renders where %s fails (%s)", tool, why)
			return outcomeRendersWherePeerFails
		}
		t.Errorf("%s failed (%s), Shoelace rendered %q", tool, strings.TrimSpace(string(peerErr)), res.Output)
		return outcomeIdentical
	case hasErr:
		return outcomeBothFail
	case err != nil:
		if why, ok := failsByDesign[tool+"/"+c.name]; ok {
			t.Logf("fails by design (%s): %v", why, err)
			return outcomeByDesign
		}
		t.Errorf("%s rendered %q, Shoelace failed: %v", tool, want, err)
		return outcomeByDesign
	}
	if got := string(res.Output); got != string(want) && !slices.Contains(hostDependent[tool+"/"+c.name], got) {
		t.Errorf("output differs from %s's\n--- shoelace\n%q\n--- %s\n%q", tool, got, tool, want)
	} else if why, ok := failsByDesign[tool+"/"+c.name]; ok {
		t.Errorf("listed in failsByDesign (%s), yet Shoelace renders %s's bytes: remove the entry", why, tool)
	}
	return outcomeIdentical
}

// writePeerCaseResults runs the real tool on every case Shoelace parses and stores its result.
func writePeerCaseResults(t *testing.T, tool string, cases []namedCase) {
	only, err := regexp.Compile(*peerCasesOnly)
	if err != nil {
		t.Fatalf("-cases: %v", err)
	}
	var run []namedCase
	for _, c := range cases {
		if !only.MatchString(tool + "/" + c.name) {
			continue
		}
		_ = os.Remove(casePath(tool, c.name, ".out"))
		_ = os.Remove(casePath(tool, c.name, ".err"))
		if _, err := Parse(c.Template, c.options(tool)); !isRefusal(err) {
			run = append(run, c)
		}
	}
	switch tool {
	case "confd":
		runConfdCases(t, *peersDir, run)
	case "consul-template":
		runConsulTemplateCases(t, *peersDir, run)
	}
}

// isRefusal reports whether a parse error is Shoelace refusing a function it cannot give.
func isRefusal(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "is not supported in Shoelace") || strings.Contains(err.Error(), "is disabled"))
}

func storeCaseResult(t *testing.T, tool, name string, out []byte, runErr error) {
	t.Helper()
	ext, b := ".out", out
	if runErr != nil {
		// Without the log's time, host, process id and temporary paths, so that rewriting the
		// files changes them only when the message does.
		msg := logNoise.ReplaceAllString(runErr.Error(), "")
		ext, b = ".err", []byte(msg+"\n")
	}
	if err := os.WriteFile(casePath(tool, name, ext), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runConfdCases renders each case with the real confd (etcd v3 backend) from a real etcd: the
// case's keys live under /c/NNN, which the case's resource names as its prefix, so that confd
// sees them at their own paths; those of a case with whole_keys are alone in etcd, as written.
func runConfdCases(t *testing.T, dir string, cases []namedCase) {
	ctl, client := startEtcd(t, dir)
	for i, c := range cases {
		prefix := fmt.Sprintf("/c/%03d", i) + strings.TrimSuffix(c.ConfdPrefix, "/")
		at := func(k string) string { return prefix + "/" + strings.TrimPrefix(k, "/") }
		if c.WholeKeys {
			if err := ctl("del", "", "--from-key"); err != nil {
				t.Fatal(err)
			}
			prefix, at = c.ConfdPrefix, func(k string) string { return k }
		}
		for k, v := range c.Keys {
			if err := ctl("put", at(k), "--", v); err != nil {
				t.Fatal(err)
			}
		}
		confdir := t.TempDir()
		for _, d := range []string{"conf.d", "templates"} {
			if err := os.MkdirAll(filepath.Join(confdir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		dest := filepath.Join(confdir, "out")
		if err := os.WriteFile(filepath.Join(confdir, "templates", "t.tmpl"), []byte(c.Template), 0o644); err != nil {
			t.Fatal(err)
		}
		keys := c.ConfdKeys
		if keys == nil {
			keys = []string{"/"}
		}
		quoted := make([]string, len(keys))
		for j, k := range keys {
			quoted[j] = strconv.Quote(k)
		}
		toml := fmt.Sprintf("[template]\nsrc = \"t.tmpl\"\ndest = %q\nprefix = %q\nkeys = [%s]\n", dest, prefix, strings.Join(quoted, ", "))
		if err := os.WriteFile(filepath.Join(confdir, "conf.d", "t.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(dir, "confd"), "-onetime", "-backend", "etcdv3", "-node", client, "-confdir", confdir, "-log-level", "error")
		cmd.Env = caseEnv(c)
		out, err := cmd.CombinedOutput()
		if err != nil {
			storeCaseResult(t, "confd", c.name, nil, fmt.Errorf("confd: %v: %s", err, lastLine(out)))
			continue
		}
		b, err := os.ReadFile(dest)
		if err != nil {
			storeCaseResult(t, "confd", c.name, nil, fmt.Errorf("confd wrote nothing: %s", lastLine(out)))
			continue
		}
		storeCaseResult(t, "confd", c.name, b, nil)
	}
}

// runConsulTemplateCases renders each case with the real consul-template, from a small server
// answering Consul's KV API with the case's keys. A case it has not rendered after a few seconds
// waits for something (a missing key, an empty safeLs): that is stored as its failure.
func runConsulTemplateCases(t *testing.T, dir string, cases []namedCase) {
	for _, c := range cases {
		consul := httptest.NewServer(consulKV(c.Keys))
		tmp := t.TempDir()
		src, dst := filepath.Join(tmp, "t.tmpl"), filepath.Join(tmp, "out")
		if err := os.WriteFile(src, []byte(c.Template), 0o644); err != nil {
			t.Fatal(err)
		}
		deny, _ := json.Marshal(c.FunctionDenylist)
		if c.FunctionDenylist == nil {
			deny = []byte("[]")
		}
		cfg := fmt.Sprintf("template {\n  source = %q\n  destination = %q\n  error_on_missing_key = %v\n  left_delimiter = %q\n  right_delimiter = %q\n  function_denylist = %s\n}\n",
			src, dst, c.ErrorOnMissingKey, c.LeftDelim, c.RightDelim, deny)
		if err := os.WriteFile(filepath.Join(tmp, "ct.hcl"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(dir, "consul-template"), "-once", "-config", filepath.Join(tmp, "ct.hcl"),
			"-consul-addr", strings.TrimPrefix(consul.URL, "http://"), "-log-level", "err")
		cmd.Env = caseEnv(c)
		out, err := cmd.CombinedOutput()
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		consul.Close()
		switch {
		case timedOut:
			storeCaseResult(t, "consul-template", c.name, nil, errors.New("consul-template did not render in 8s: it waits (a missing key, an empty safeLs or safeTree)"))
		case err != nil:
			storeCaseResult(t, "consul-template", c.name, nil, fmt.Errorf("consul-template: %v: %s", err, lastLine(out)))
		default:
			b, err := os.ReadFile(dst)
			if err != nil {
				t.Fatalf("%s: consul-template exited 0 and wrote nothing: %s", c.name, out)
			}
			storeCaseResult(t, "consul-template", c.name, b, nil)
		}
	}
}

var logNoise = regexp.MustCompile(`\d{4}-\d\d-\d\dT[\d:.]+Z \S+ \S+\[\d+\]: |\d{4}-\d\d-\d\dT[\d:.]+Z |/tmp/\S+/`)

func caseEnv(c namedCase) []string {
	env := peerEnv()
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	return env
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TestPeerCases_EveryFunctionCovered: every function a peer's mode defines either renders the
// peer's bytes in at least one case, or is refused at parse time; sprig_* are sprig's own
// hermetic functions, the very ones consul-template calls (same sprig version in go.mod).
func TestPeerCases_EveryFunctionCovered(t *testing.T) {
	hermetic := sprig.HermeticTxtFuncMap()
	for tool, mode := range peerModes {
		covered := map[string]bool{}
		for _, c := range loadPeerCases(t, tool) {
			want, err := os.ReadFile(casePath(tool, c.name, ".out"))
			if err != nil {
				continue
			}
			tmpl, err := Parse(c.Template, c.options(tool))
			if err != nil {
				continue
			}
			if res, err := tmpl.Execute(c.data()); err == nil && string(res.Output) == string(want) {
				for _, fn := range tmpl.Functions() {
					covered[fn] = true
				}
			}
		}
		tmpl := &Template{mode: mode}
		refused := refusedIn(mode)
		var missing []string
		for name, fn := range parseFuncMap(tmpl, &state{t: tmpl}, nil) {
			if _, ok := refused[name]; ok || covered[name] || mode == ModeConfd && needsDNS[name] || name == confdPrintedName || name == rangedName || name == templateName {
				continue
			}
			if s, ok := strings.CutPrefix(name, "sprig_"); ok && mode == ModeConsulTemplate {
				if h, ok := hermetic[s]; ok && reflect.ValueOf(h).Pointer() == reflect.ValueOf(fn).Pointer() {
					continue
				}
				if _, ok := hermetic[s]; ok && slices.Contains(boundedNames, s) {
					continue // sprig's, bounded: TestTemplates_BoundedSprigSameResults
				}
			}
			missing = append(missing, name)
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s mode: functions neither shown identical to %s by a case nor refused: %v", mode, tool, missing)
		}
	}
}
