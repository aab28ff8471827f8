package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestConvertConsulTemplate_Golden converts consul-template's own documented configuration
// (every HCL block of its docs/configuration.md) and ours, in HCL and JSON: stdout and stderr
// are compared with the golden files. The documentation's template block lists every field,
// source and contents both, which consul-template refuses in one template ("cannot specify both
// 'source' and 'contents'"), and so does the conversion: it is converted with its contents line
// commented out (the lines stay where they are).
func TestConvertConsulTemplate_Golden(t *testing.T) {
	dir, err := filepath.Abs("testdata/consul-template")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"example.hcl", "configuration.hcl", "web.hcl", "web.json"} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, name)
			if name == "configuration.hcl" {
				file = configurationWithoutContents(t, file)
			}
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", file}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template %s: %v\n%s", name, err, stderr.String())
			}
			// What it prints is agent.yaml: every field is one the agent knows.
			if _, err := agent.ParseConfig(name+".yaml", stdout.Bytes()); err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			got := strings.ReplaceAll(stdout.String()+"---- stderr ----\n"+stderr.String(), filepath.Dir(file), "$DIR")
			golden := filepath.Join("testdata/consul-template", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("convert-consul-template %s printed:\n%s\nwant (%s):\n%s", name, got, golden, want)
			}
		})
	}
}

// configurationWithoutContents copies consul-template's documented configuration into a
// temporary directory with the template's contents line commented out, and checks that the
// file as documented (source and contents both) is refused as consul-template refuses it.
func configurationWithoutContents(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const line = "\n  contents = "
	if bytes.Count(b, []byte(line)) != 1 {
		t.Fatalf("%s: want one %q line", file, strings.TrimSpace(line))
	}
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"shoelace", "convert-consul-template", file}, strings.NewReader(""), &stdout, &stderr)
	if want := file + ":343: template: both source and contents: give one (consul-template v0.41.1 refuses it too: \"cannot specify both 'source' and 'contents'\")"; exitCode(err) != 1 || !strings.Contains(err.Error(), want) || stdout.Len() > 0 {
		t.Fatalf("convert-consul-template of the documented configuration: %v (exit %d), want exit 1 and %q, nothing printed\n%s", err, exitCode(err), want, stdout.String())
	}
	p := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(p, bytes.Replace(b, []byte(line), []byte("\n  # contents = "), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConvertConsulTemplate_ImpliedMaxCapped: wait = "5m" (or a block with min alone) is, in
// consul-template, min 5m and max 4 × 5m = 20m, over the agent's 10m; the conversion refused it,
// where the agent itself takes wait: {min: 5m} and caps its 4 × min at 10m. It converts now,
// with max 10m and a note that says so; an explicit max over 10m is still refused, as the agent
// refuses it.
func TestConvertConsulTemplate_ImpliedMaxCapped(t *testing.T) {
	for _, text := range []string{"wait = \"5m\"\n", "wait {\n  min = \"5m\"\n}\n", `{"wait": "5m",` + "\n"} {
		p := filepath.Join(t.TempDir(), "c.hcl")
		body := "template {\n  destination = \"/a\"\n  contents = \"x\"\n}\n"
		if strings.HasPrefix(text, "{") {
			p = strings.TrimSuffix(p, ".hcl") + ".json"
			body = `"template": {"destination": "/a", "contents": "x"}}` + "\n"
		}
		if err := os.WriteFile(p, []byte(text+body), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("%q: %v\n%s", text, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "wait: {min: 5m0s, max: 10m0s}\n") {
			t.Errorf("%q printed:\n%s\nwant wait: {min: 5m0s, max: 10m0s}", text, stdout.String())
		}
		at := p + ":1"
		if strings.HasSuffix(p, ".json") {
			at = p // HCL's JSON parser gives no line
		}
		if want := at + ": wait: consul-template's max is 4 × min, 20m0s, when not given; the agent lets a change wait at most 10m0s (as it caps 4 × min): max 10m0s here\n"; !strings.Contains(stderr.String(), want) {
			t.Errorf("%q: stderr:\n%s\nwant %q", text, stderr.String(), want)
		}
		cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if time.Duration(cfg.Wait.Min) != 5*time.Minute || time.Duration(cfg.Wait.Max) != agent.MaxWait {
			t.Errorf("%q: the agent reads wait %+v", text, cfg.Wait)
		}
	}
}

// TestConvertConsulTemplate_Invalid: what cannot be converted is an error naming the file, the
// line and the rule.
func TestConvertConsulTemplate_Invalid(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"syntax", "template {\n  source = \n}\n", "c.hcl: At 3:1"},
		{"unknown setting", "colour = \"blue\"\ntemplate {\n destination = \"/a\"\n}\n", `c.hcl:1: unknown setting "colour" (consul-template v0.41.1 refuses it too)`},
		{"unknown template field", "template {\n  destination = \"/a\"\n  destnation = \"/b\"\n}\n", `c.hcl:3: template: unknown field "destnation"`},
		{"no template", "consul {\n}\n", "c.hcl: no template stanza to convert"},
		{"bad perms", "template {\n  destination = \"/a\"\n  perms = \"rw\"\n}\n", `c.hcl:3: template: perms: "rw" is not an octal mode`},
		{"setuid perms with no permission bit", "template {\n  destination = \"/a\"\n  perms = \"04000\"\n}\n", "c.hcl:3: template: perms: mode 04000: consul-template drops its setuid, setgid and sticky bits and installs the file with mode 0000"},
		{"perms over 07777", "template {\n  destination = \"/a\"\n  perms = \"010000\"\n}\n", `c.hcl:3: template: perms: "010000" is not an octal mode`},
		{"decimal perms", "template {\n  destination = \"/a\"\n  perms = 640\n}\n", "c.hcl:3: template: perms: perms = 640 is the decimal number 640, mode 01200 (consul-template installs such a file with mode 0200): write perms = 0640 (HCL's octal) or \"0640\""},
		{"bad wait", "wait = \"5s:1s\"\ntemplate {\n  destination = \"/a\"\n  contents = \"x\"\n}\n", "c.hcl:1: wait: min 5s and max 1s: want 0 ≤ min ≤ max"},
		// The agent refuses a wait over 10m: the conversion printed one that validate then refused.
		{"wait over the agent's bound", "wait = \"1m:1h\"\ntemplate {\n  destination = \"/a\"\n  contents = \"x\"\n}\n", "c.hcl:1: wait: max 1h0m0s is over 10m0s, the longest the agent lets a change wait to be rendered"},
		{"min over the agent's bound", "wait = \"15m\"\ntemplate {\n  destination = \"/a\"\n  contents = \"x\"\n}\n", "c.hcl:1: wait: min 15m0s is over 10m0s, the longest the agent lets a change wait to be rendered"},
		{"bad timeout", "template {\n  destination = \"/a\"\n  command_timeout = \"soon\"\n}\n", `c.hcl:3: template: command_timeout "soon" is not a duration`},
		{"command not strings", "template {\n  destination = \"/a\"\n  command = [1, 2]\n}\n", "c.hcl:3: template: command: want a string or a list of strings"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if msg := convertFails(t, tc.text); !strings.Contains(msg, tc.want) {
				t.Fatalf("convert-consul-template: %s, want %q", msg, tc.want)
			}
		})
	}
}

// convertFails converts text, as the file c.hcl of a temporary directory, and returns the
// error, without the directory and the command's name; it fails the test unless the conversion
// exits 1 with nothing printed.
func convertFails(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.hcl")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr)
	if exitCode(err) != 1 || stdout.Len() > 0 {
		t.Fatalf("convert-consul-template: %v (exit %d), want exit 1 and nothing printed\n%s", err, exitCode(err), stdout.String())
	}
	msg := strings.ReplaceAll(err.Error(), filepath.Dir(p)+string(filepath.Separator), "")
	return strings.TrimPrefix(msg, "convert-consul-template: ")
}

// TestConvertConsulTemplate_IncompleteTemplate: consul-template's own config tests parse
// template {} (TestParse "template", "template_multi"), a template with contents and no
// destination ("template_contents"), one with a destination alone ("template_destination"), and
// its template tests refuse source and contents both (TestNewTemplate "source_and_contents").
// consul-template v0.41.1 takes those files and then fails to run them (exit 14: "template: must
// specify exactly one of 'source' or 'contents'", "cannot specify both 'source' and 'contents'",
// "failed writing file: missing destination"). The conversion printed each as agent.yaml
// (destination: "", or source and contents both), which shoelace-agent validate then refused;
// now it fails, naming the stanza's line and the rule.
func TestConvertConsulTemplate_IncompleteTemplate(t *testing.T) {
	neither := `template: neither source nor contents: give one (consul-template v0.41.1 refuses it too: "must specify exactly one of 'source' or 'contents'")`
	both := `template: both source and contents: give one (consul-template v0.41.1 refuses it too: "cannot specify both 'source' and 'contents'")`
	noDest := `template: no destination: give the file to render (consul-template v0.41.1 fails too: "missing destination")`
	cases := []struct {
		name, text string
		want       []string
	}{
		{"TestParse template", "template {}", []string{"c.hcl:1: " + neither, "c.hcl:1: " + noDest}},
		{"TestParse template_multi", "template {}\n\t\t\ttemplate {}", []string{"c.hcl:1: " + neither, "c.hcl:1: " + noDest, "c.hcl:2: " + neither, "c.hcl:2: " + noDest}},
		{"TestParse template_contents", "template {\n\t\t\t\tcontents = \"contents\"\n\t\t\t}", []string{"c.hcl:1: " + noDest}},
		{"TestParse template_destination", "template {\n\t\t\t\tdestination = \"destination\"\n\t\t\t}", []string{"c.hcl:1: " + neither}},
		{"TestNewTemplate source_and_contents", "template {\n  source = \"source\"\n  contents = \"contents\"\n  destination = \"/a\"\n}", []string{"c.hcl:1: " + both}},
		{"JSON, neither", `{"template": [{"destination": "/a"}, {"destination": "/b", "contents": "x"}]}`, []string{"c.hcl: " + neither}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Split(convertFails(t, tc.text), "\n"); !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestConvertConsulTemplate_ContentsAsWritten: every template of the peers' own tests
// (../../templates/testdata/peers/cases: confd's template_test.go and integration templates,
// consul-template's TestTemplate_Execute, and the probes), given as a template's contents in a
// consul-template configuration, converts to an agent.yaml whose contents the agent reads back
// byte for byte, and so do a few of ours. Before, yaml.v3 printed contents of several lines as a
// block that dropped its leading blank lines (each of confd's template_test.go templates starts
// with a newline: the rendered file lost its first line), and a conversion whose contents began
// with a tab failed ("found a tab character where an indentation space is expected").
func TestConvertConsulTemplate_ContentsAsWritten(t *testing.T) {
	files, err := filepath.Glob("../../templates/testdata/peers/cases/*/*.json")
	if err != nil || len(files) < 100 {
		t.Fatalf("the peers' cases: %d files, %v", len(files), err)
	}
	texts := map[string]string{
		"leading tab": "\tindented {{ key \"a\" }}\n", "blank lines first": "\n\n\nx\n", "CRLF": "a\r\nb\r\n",
		"spaces first and last": "  x\n  ", "no trailing newline": "a\nb", "blank lines last": "a\n\n\n",
		"document markers": "---\na\n...\n", "unicode line separators": "a\u2028b\u0085c\n", "tab after a newline": "a\n\tb\n",
	}
	for _, f := range files {
		var c struct{ Template string }
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		texts[strings.TrimPrefix(f, "../../templates/testdata/peers/cases/")] = c.Template
	}
	for name, text := range texts {
		// JSON, which consul-template reads as it reads HCL, holds any bytes as they are.
		conf, err := json.Marshal(map[string]any{"template": []map[string]string{{"destination": "/a", "contents": text}}})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "c.json")
		if err := os.WriteFile(p, conf, 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Errorf("%s: convert-consul-template: %v", name, err)
			continue
		}
		cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
		if err != nil {
			t.Errorf("%s: the agent refuses the conversion: %v\n%s", name, err, stdout.String())
			continue
		}
		if got := cfg.Templates[0].Contents; got != text {
			t.Errorf("%s: contents %q, the agent reads %q from\n%s", name, text, got, stdout.String())
		}
	}
}

// TestConvertConsulTemplate_Directory: consul-template -config DIR reads every file below DIR
// and merges them (its TestFromPath "config_dir": one file's consul { address }, another's
// consul { token }); the conversion refused a directory ("read DIR: is a directory"). Now it
// converts every file in lexical order, subdirectories included: the templates of all, the last
// wait, and the last default_delimiters applied to the templates of every file, as
// consul-template applies them once merged. A directory without templates, or one that does
// not exist, is an error.
func TestConvertConsulTemplate_Directory(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a.hcl":     "consul {\n  address = \"1.2.3.4\"\n}\nwait = \"1s:2s\"\ntemplate {\n  contents = \"a\"\n  destination = \"/a\"\n}\n",
		"b":         "consul {\n  token = \"token\"\n}\n",
		"c/d.json":  `{"wait": "3s:4s", "default_delimiters": {"left": "[[", "right": "]]"}, "template": [{"contents": "d", "destination": "/d", "left_delimiter": "<<"}]}`,
		"e/f/g.hcl": "template {\n  contents = \"g\"\n  destination = \"/g\"\n}\n",
	}
	testbin.WriteFiles(t, dir, files)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace", "convert-consul-template", dir}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("convert-consul-template DIR: %v\n%s", err, stderr.String())
	}
	cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	if time.Duration(cfg.Wait.Min) != 3*time.Second || time.Duration(cfg.Wait.Max) != 4*time.Second {
		t.Errorf("wait %+v, want the last file's, 3s:4s", cfg.Wait)
	}
	var got []string
	for _, tm := range cfg.Templates {
		got = append(got, tm.Destination+" "+tm.LeftDelimiter+" "+tm.RightDelimiter)
	}
	if want := []string{"/a [[ ]]", "/d << ]]", "/g [[ ]]"}; !slices.Equal(got, want) {
		t.Errorf("templates (destination, delimiters): %q, want %q\n%s", got, want, stdout.String())
	}
	for _, want := range []string{dir + "/a.hcl:1: consul has no equivalent here", dir + "/b:1: consul has no equivalent here"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}

	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "consul.hcl"), []byte("consul {\n  token = \"t\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, filepath.Join(empty, "nope")} {
		stdout.Reset()
		err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr)
		if exitCode(err) != 1 || stdout.Len() > 0 {
			t.Errorf("convert-consul-template %s: %v (exit %d), want exit 1 and nothing printed", p, err, exitCode(err))
		}
	}
}

// TestConvertConsulTemplate_WaitAsConsulTemplate: the wait of each case is the one consul-template
// v0.41.1 ran with (its final config, printed by -dry -log-level=debug without -once, for the
// same files): a wait is enabled when its block's bool says so (consul-template's WaitConfig
// names its switch bool, and refuses enabled), else when its min is given and not 0; "MIN" sets
// max to 4 × min. The files of a directory set the fields they give over the earlier files'
// (WaitConfig.Merge). Before, the conversion took enabled for the switch and refused bool, and
// took a later file's wait whole: {min: 5s} after {min: 2s, max: 10s} was max 20s, not 10s. A
// template's wait that is not enabled gets no note (consul-template takes the global wait for it).
func TestConvertConsulTemplate_WaitAsConsulTemplate(t *testing.T) {
	tmpl := "template {\n  contents = \"x\"\n  destination = \"/a\"\n%s}\n"
	cases := []struct {
		name       string
		top        []string // the directory's files, in order; the last one holds the template
		inTemplate string
		want       string // the wait line, or the error
	}{
		{"MIN", []string{`wait = "5s"`}, "", "wait: {min: 5s, max: 20s}\n"},
		{"MIN:MAX", []string{`wait = "5s:7s"`}, "", "wait: {min: 5s, max: 7s}\n"},
		{"block", []string{"wait {\n  min = \"5s\"\n  max = \"9s\"\n}"}, "", "wait: {min: 5s, max: 9s}\n"},
		{"TestWaitConfig_Finalize with_min", []string{"wait {\n  min = \"10s\"\n}"}, "", "wait: {min: 10s, max: 40s}\n"},
		{"TestWaitConfig_Finalize empty", []string{"wait {\n}"}, "", ""},
		{"bool = false", []string{"wait {\n  min = \"5s\"\n  bool = false\n}"}, "", ""},
		{"bool = true without min", []string{"wait {\n  bool = true\n}"}, "", ""},
		{"max without min", []string{"wait {\n  max = \"9s\"\n}"}, "", ""},
		{"min 0", []string{`wait = "0s:10s"`}, "", ""},
		{"enabled refused", []string{"wait {\n  min = \"5s\"\n  enabled = false\n}"}, "",
			`c.hcl:1: wait: unknown field "enabled" (consul-template v0.41.1 refuses it too: its switch is bool = true or false)`},
		{"a later file's min over an earlier max", []string{"wait {\n  min = \"2s\"\n  max = \"10s\"\n}", "wait {\n  min = \"5s\"\n}"}, "", "wait: {min: 5s, max: 10s}\n"},
		{"a later file's bool", []string{"wait {\n  min = \"2s\"\n  max = \"10s\"\n}", "wait {\n  bool = false\n}"}, "", ""},
		{"a later file's MIN", []string{"wait {\n  min = \"2s\"\n  max = \"10s\"\n}", `wait = "3s"`}, "", "wait: {min: 3s, max: 12s}\n"},
		{"a template's wait not enabled", []string{`wait = "1s:2s"`}, "  wait {\n    min = \"3s\"\n    bool = false\n  }\n", "wait: {min: 1s, max: 2s}\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{}
			for i, top := range tc.top {
				files[fmt.Sprintf("%c.hcl", 'a'+i)] = top + "\n"
			}
			last := fmt.Sprintf("%c.hcl", 'a'+len(tc.top)-1)
			files[last] += fmt.Sprintf(tmpl, tc.inTemplate)
			testbin.WriteFiles(t, dir, files)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"shoelace", "convert-consul-template", dir}, strings.NewReader(""), &stdout, &stderr)
			if strings.HasPrefix(tc.want, "c.hcl") {
				if want := filepath.Join(dir, "a.hcl") + tc.want[len("c.hcl"):]; exitCode(err) != 1 || !strings.Contains(fmt.Sprint(err), want) || stdout.Len() > 0 {
					t.Fatalf("convert-consul-template: %v (exit %d), want exit 1 saying %q and nothing printed\n%s%s", err, exitCode(err), want, stderr.String(), stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
			}
			var got string
			for _, line := range strings.SplitAfter(stdout.String(), "\n") {
				if strings.HasPrefix(line, "wait:") {
					got = line
				}
			}
			if got != tc.want {
				t.Errorf("wait line %q, want %q\n%s", got, tc.want, stdout.String())
			}
			if strings.Contains(stderr.String(), "template wait") {
				t.Errorf("a note on a template's wait that is not enabled: %s", stderr.String())
			}
		})
	}
}

// TestConvertConsulTemplate_Large: a configuration over 4 MiB is refused before the HCL parser,
// which takes about a hundred times a file's size in memory, sees it.
func TestConvertConsulTemplate_Large(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.hcl")
	text := "template {\n  destination = \"/a\"\n  contents = \"" + strings.Repeat("x", 4<<20) + "\"\n}\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr)
	if err == nil || !strings.Contains(stderr.String()+err.Error(), p+" is over 4194304 bytes") {
		t.Fatalf("convert-consul-template of %d bytes: %v\n%s", len(text), err, stderr.String())
	}
}

// TestConvertConsulTemplate_CommandLineFlags: consul-template is often run with its templates on
// the command line (consul-template -template "in:out:cmd" -wait 5s:10s, its
// TestParseTemplateConfig's forms), which the conversion could not take. --template and --wait
// (also written -template and -wait, as consul-template spells them) now convert as
// consul-template reads them: after the configuration's templates, the flag's wait over the
// configuration's; the command is all that follows the second colon, a drive letter is part of
// its path; relative paths are taken from the current directory.
func TestConvertConsulTemplate_CommandLineFlags(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, "wait = \"1s:2s\"\ntemplate {\n  contents = \"a\"\n  destination = \"/a\"\n}\n")
	convert := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"shoelace", "convert-consul-template"}, args...), strings.NewReader(""), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	out, stderr, err := convert(conf, "-template", "/etc/ct/nginx.ctmpl:/etc/nginx/nginx.conf:systemctl reload nginx",
		"--template", "in.tmpl:out.conf:sh -c 'echo a:b,c'", "-template", `C:\ct\in.tmpl:C:\out\x.conf`, "-wait", "5s:10s")
	if err != nil {
		t.Fatalf("convert-consul-template FILE with flags: %v\n%s", err, stderr)
	}
	cfg, err := agent.ParseConfig("agent.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, out)
	}
	if time.Duration(cfg.Wait.Min) != 5*time.Second || time.Duration(cfg.Wait.Max) != 10*time.Second {
		t.Errorf("wait %+v, want the flag's 5s:10s over the file's", cfg.Wait)
	}
	var got []string
	for _, tm := range cfg.Templates {
		got = append(got, tm.Source+"|"+tm.Destination+"|"+tm.Command)
	}
	want := []string{"|/a|", "/etc/ct/nginx.ctmpl|/etc/nginx/nginx.conf|systemctl reload nginx",
		filepath.Join(dir, "in.tmpl") + "|" + filepath.Join(dir, "out.conf") + "|sh -c 'echo a:b,c'"}
	if !slices.Equal(got[:3], want) || len(got) != 4 || !strings.HasSuffix(got[3], `C:\ct\in.tmpl|`+filepath.Join(dir, `C:\out\x.conf`)+"|") {
		t.Errorf("templates (source|destination|command):\n%q\nwant\n%q and the drive-letter one\n%s", got, want, out)
	}
	if !strings.Contains(out, "and command-line flags") || !strings.Contains(out, `# from -template "in.tmpl:out.conf:sh -c 'echo a:b,c'"`+"\n") {
		t.Errorf("the output does not say where each template came from:\n%s", out)
	}
	if !strings.Contains(stderr, `-template "in.tmpl:out.conf:sh -c 'echo a:b,c'": template source "in.tmpl" is relative: converted to `+filepath.Join(dir, "in.tmpl")+", from the current directory") {
		t.Errorf("stderr does not say where a relative path was taken from:\n%s", stderr)
	}

	// Flags alone.
	if out, _, err := convert("-template", "/in:/out"); err != nil || !strings.Contains(out, "destination: /out") || strings.Contains(out, "wait:") {
		t.Errorf("--template alone: %v\n%s", err, out)
	}
	// What consul-template refuses, refused, naming the flag; nothing printed.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-template", "/in"}, `-template "/in": template: no destination`},
		{[]string{"-template", " "}, `-template " ": empty`},
		{[]string{"-template", "/in:/out", "-wait", "5s:1s"}, `-wait "5s:1s": wait:`},
		{[]string{"-wait", "5s"}, "no template to convert"},
	} {
		out, _, err := convert(c.args...)
		if exitCode(err) != 1 || out != "" || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v (exit %d), stdout %q; want exit 1 naming %q", c.args, err, exitCode(err), out, c.want)
		}
	}
	if _, _, err := convert(); exitCode(err) != exitUsage {
		t.Errorf("no FILE and no --template: %v (exit %d), want a usage error", err, exitCode(err))
	}
}

// TestConvertConsulTemplate_ConfigFlag: consul-template's service runs it as consul-template
// -config /etc/consul-template.d (repeatable: -config base.hcl -config web.hcl, merged left to
// right), and the README says to copy its flags from the unit. The conversion refused -config
// ("flag provided but not defined"). Now --config (-config, -config=PATH) is read as the FILE|DIR
// argument is, each in the order given, merged as consul-template merges them: the templates of
// all, the last wait and default_delimiters over every file's templates; -template after them.
func TestConvertConsulTemplate_ConfigFlag(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	base := filepath.Join(dir, "base.hcl")
	writeFile(t, base, "wait = \"1s:2s\"\ndefault_delimiters {\n  left = \"[[\"\n  right = \"]]\"\n}\ntemplate {\n  contents = \"a\"\n  destination = \"/a\"\n}\n")
	confd := filepath.Join(dir, "ct.d")
	if err := os.Mkdir(confd, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(confd, "web.hcl"), "wait = \"3s:4s\"\ntemplate {\n  contents = \"b\"\n  destination = \"/b\"\n}\n")
	convert := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"shoelace", "convert-consul-template"}, args...), strings.NewReader(""), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	for _, args := range [][]string{
		{"-config", base, "-config=" + confd, "-template", "/in:/c"},
		{base, "--config", confd, "-template", "/in:/c"},
	} {
		out, stderr, err := convert(args...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, stderr)
		}
		cfg, err := agent.ParseConfig("agent.yaml", []byte(out))
		if err != nil {
			t.Fatalf("%q: the agent refuses the conversion: %v\n%s", args, err, out)
		}
		if time.Duration(cfg.Wait.Min) != 3*time.Second || time.Duration(cfg.Wait.Max) != 4*time.Second {
			t.Errorf("%q: wait %+v, want the last file's 3s:4s", args, cfg.Wait)
		}
		var got []string
		for _, tm := range cfg.Templates {
			got = append(got, tm.Destination+"|"+tm.LeftDelimiter+tm.RightDelimiter)
		}
		// default_delimiters reach the -template flag's template too: consul-template's runner
		// gives them to every template that sets none (TestConvertConsulTemplate_FlagsWithTemplatelessConfig).
		if want := []string{"/a|[[]]", "/b|[[]]", "/c|[[]]"}; !slices.Equal(got, want) {
			t.Errorf("%q: templates (destination|delimiters) %q, want %q\n%s", args, got, want, out)
		}
		if !strings.Contains(out, base+", "+confd+" and command-line flags") {
			t.Errorf("%q: the head does not name both configurations:\n%s", args, out)
		}
	}
	// A -config that cannot be read fails as the argument does, naming it; nothing printed.
	if out, _, err := convert("-config", base, "-config", filepath.Join(dir, "nope.hcl")); exitCode(err) != 1 || out != "" || !strings.Contains(err.Error(), "nope.hcl") {
		t.Errorf("-config of a missing file: %v (exit %d), stdout %q", err, exitCode(err), out)
	}
}

// TestConvertConsulTemplate_PermsZero: consul-template reads perms = 0 as not set (its renderer
// gives the file the existing file's mode, 0644 for a new one). The conversion printed
// perms: "0000", which the agent refuses ("would make the file unreadable even by its owner"),
// so that the converted config did not run. Now it prints no perms, the agent's default, which
// is consul-template's.
func TestConvertConsulTemplate_PermsZero(t *testing.T) {
	dir := t.TempDir()
	for name, conf := range map[string]string{
		"c.hcl":        "template {\n  contents = \"x\"\n  destination = \"/a\"\n  perms = 0\n}\n",
		"string.hcl":   "template {\n  contents = \"x\"\n  destination = \"/a\"\n  perms = \"0\"\n}\n",
		"octal.hcl":    "template {\n  contents = \"x\"\n  destination = \"/a\"\n  perms = \"0000\"\n}\n",
		"c.json":       `{"template": [{"contents": "x", "destination": "/a", "perms": 0}]}`,
		"string.json":  `{"template": [{"contents": "x", "destination": "/a", "perms": "0"}]}`,
		"not-set.json": `{"template": [{"contents": "x", "destination": "/a"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			writeFile(t, p, conf)
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
			}
			head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
			cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
			if err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			if got := cfg.Templates[0].Perms; got != "" {
				t.Errorf("perms %q, want none (consul-template's 0: the existing file's mode, or 0644)\n%s", got, stdout.String())
			}
		})
	}
}

// TestConvertConsulTemplate_SetuidPermsDropped: consul-template v0.41.1 installs a file whose
// perms holds setuid, setgid or sticky bits ("04755", 02750) with the permission bits alone (0755,
// 0750): its os.FileMode goes to os.Chmod, which keeps only those. The conversion refused such a
// configuration ("setuid, setgid and sticky bits are not supported"), so that it converted
// nothing; now it converts the mode consul-template installs, with a note naming the line.
func TestConvertConsulTemplate_SetuidPermsDropped(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, conf, want, note string }{
		{"string.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  perms = \"04755\"\n}\n", "0755", ":4: template perms 04755: setuid, setgid and sticky bits dropped, converted to 0755"},
		{"octal.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  perms = 02750\n}\n", "0750", ":4: template perms 02750: setuid, setgid and sticky bits dropped, converted to 0750"},
		{"sticky.json", `{"template": [{"contents": "x", "destination": "/a", "perms": "1644"}]}`, "0644", ": template perms 01644: setuid, setgid and sticky bits dropped, converted to 0644"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			writeFile(t, p, tc.conf)
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
			}
			head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
			cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			if got := cfg.Templates[0].Perms; got != tc.want {
				t.Errorf("perms %q, want %q (the mode consul-template installs)\n%s", got, tc.want, stdout.String())
			}
			if !strings.Contains(stderr.String(), p+tc.note) {
				t.Errorf("notes:\n%s\nwant one holding %q", stderr.String(), p+tc.note)
			}
		})
	}
}

// TestConvertConsulTemplate_CommandCommas: consul-template v0.41.1 decodes a command string as a
// list split at its commas (mapstructure's StringToSliceHookFunc(",")), then runs the first item
// as the program and the others as its arguments, without a shell: command = "touch,A,B" touches
// A and B. The conversion ran the whole string under sh -c ("touch,A,B": not found), and gave
// "sh -c 'echo a,b'", which consul-template fails to run (the program "sh -c 'echo a"), as a
// command that runs. Now the first converts to "touch A B" and the second is an error saying how
// consul-template reads it; a list, and -template's command, which consul-template takes whole,
// are as before.
func TestConvertConsulTemplate_CommandCommas(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	convert := func(t *testing.T, name, conf string, args ...string) ([]agent.Template, error) {
		t.Helper()
		var argv []string
		if conf != "" {
			p := filepath.Join(dir, name)
			writeFile(t, p, conf)
			argv = append(argv, p)
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append(append([]string{"shoelace", "convert-consul-template"}, argv...), args...), strings.NewReader(""), &stdout, &stderr)
		if err != nil {
			return nil, err
		}
		head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
		cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
		if err != nil {
			t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
		}
		return cfg.Templates, nil
	}
	for _, tc := range []struct{ name, conf, want string }{
		{"string.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  command = \"touch," + a + "," + b + "\"\n}\n", "touch " + a + " " + b},
		{"exec.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  exec {\n    command = \"touch," + a + "," + b + "\"\n  }\n}\n", "touch " + a + " " + b},
		{"string.json", `{"template": [{"contents": "x", "destination": "/a", "command": "touch,` + a + `,` + b + `"}]}`, "touch " + a + " " + b},
		{"no comma.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  command = \"touch " + a + " " + b + "\"\n}\n", "touch " + a + " " + b},
		{"list.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  command = [\"sh\", \"-c\", \"touch " + a + "," + b + "\"]\n}\n", "sh -c 'touch " + a + "," + b + "'"},
		{"first empty.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  command = \",touch\"\n}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpls, err := convert(t, tc.name, tc.conf)
			if err != nil {
				t.Fatalf("convert-consul-template: %v", err)
			}
			if got := tmpls[0].Command; got != tc.want {
				t.Fatalf("command %q, want %q", got, tc.want)
			}
			if tc.want == "" || !strings.HasPrefix(tc.want, "touch") || runtime.GOOS == "windows" {
				return
			}
			// Run as the agent runs it: both files touched, as consul-template touches them.
			_ = os.Remove(a)
			_ = os.Remove(b)
			if _, err := agent.RunCommand(context.Background(), tc.want, time.Minute, nil); err != nil {
				t.Fatalf("the converted command: %v", err)
			}
			for _, f := range []string{a, b} {
				if _, err := os.Stat(f); err != nil {
					t.Errorf("the converted command did not touch %s: %v", f, err)
				}
			}
		})
	}
	t.Run("program with spaces", func(t *testing.T) {
		_, err := convert(t, "spaces.hcl", "template {\n  contents = \"x\"\n  destination = \"/a\"\n  command = \"sh -c 'echo a,b'\"\n}\n")
		want := `spaces.hcl:4: template: command: "sh -c 'echo a,b'": consul-template splits a command string at its commas and runs "sh -c 'echo a" as a program`
		if exitCode(err) != 1 || !strings.Contains(fmt.Sprint(err), want) {
			t.Fatalf("convert-consul-template: %v (exit %d), want exit 1 and %q", err, exitCode(err), want)
		}
	})
	t.Run("template flag", func(t *testing.T) {
		tmpls, err := convert(t, "", "", "-template", "in.tmpl:"+filepath.Join(dir, "out")+":sh -c 'echo a,b'")
		if err != nil {
			t.Fatalf("convert-consul-template: %v", err)
		}
		if got, want := tmpls[0].Command, "sh -c 'echo a,b'"; got != want {
			t.Errorf("command %q, want %q (consul-template takes -template's command whole)", got, want)
		}
	})
}

// TestConvertConsulTemplate_FileAllowed: consul-template's file reads a local file without being
// asked to; the agent's only with allow_file: true. The conversion left it out, so that a template
// calling file (a certificate read from disk) was refused by the agent ("function "file" is
// disabled"): the converted config did not run. Now a template whose source or contents call
// file gets allow_file: true, as convert-confd gives it to the templates calling fileExists;
// the others do not.
func TestConvertConsulTemplate_FileAllowed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "cert.pem"), "PEM\n")
	writeFile(t, filepath.Join(dir, "cert.ctmpl"), `{{ file "`+filepath.Join(dir, "cert.pem")+`" }}{{ key "web/a" }}`)
	writeFile(t, filepath.Join(dir, "plain.ctmpl"), `{{ key "web/a" }}`)
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, `template {
  source = "cert.ctmpl"
  destination = "/etc/app/cert.conf"
}
template {
  contents = "[[ file \"/etc/hostname\" ]]"
  destination = "/etc/app/host.conf"
  left_delimiter = "[["
  right_delimiter = "]]"
}
template {
  contents = "{{ file \"/etc/hostname\" }}"
  destination = "/etc/app/denied.conf"
  function_denylist = ["file"]
}
template {
  source = "plain.ctmpl"
  destination = "/etc/app/plain.conf"
}
`)
	cfg, stdout, _ := convertCT(t, conf)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	if len(cfg.Unparsed) > 0 {
		t.Fatalf("the agent cannot parse the converted templates: %q\n%s", cfg.Unparsed, stdout.String())
	}
	want := map[string]bool{"/etc/app/cert.conf": true, "/etc/app/host.conf": true, "/etc/app/denied.conf": true, "/etc/app/plain.conf": false}
	for _, tm := range cfg.Templates {
		if tm.AllowFile != want[tm.Destination] {
			t.Errorf("%s: allow_file %v, want %v\n%s", tm.Destination, tm.AllowFile, want[tm.Destination], stdout.String())
		}
	}
}

// TestConvertConsulTemplate_BackgroundCommand: consul-template's command_timeout (or exec's
// timeout) of 0 runs the command in the background: it neither waits for it nor looks at how
// it exited (its docs say so; consul-template -once returns before the command ends). The
// conversion dropped the 0 without a word, and the agent then waited for the command for its
// default 30 s and failed (and undid) a reload that ran longer or failed. Now stderr says so,
// naming the line; a timeout of 0 without a command says nothing, nor does one with an empty
// command (command = "", exec { command = [] }), which consul-template does not run.
func TestConvertConsulTemplate_BackgroundCommand(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, `template {
  contents = "a"
  destination = "/a"
  command = "systemctl restart app"
  command_timeout = "0s"
}
template {
  contents = "b"
  destination = "/b"
  exec {
    command = ["/usr/local/bin/reload", "b"]
    timeout = "0"
  }
}
template {
  contents = "c"
  destination = "/c"
  command_timeout = "0s"
}
template {
  contents = "d"
  destination = "/d"
  command = ""
  command_timeout = "0s"
}
template {
  contents = "e"
  destination = "/e"
  exec {
    command = []
    timeout = "0s"
  }
}
`)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace", "convert-consul-template", conf}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		conf + `:5: template command_timeout "0s" has no equivalent here: consul-template ran the command in the background`,
		conf + `:12: template exec timeout "0" has no equivalent here: consul-template ran the command in the background`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if n := strings.Count(stderr.String(), "in the background"); n != 2 {
		t.Errorf("%d notes of a command run in the background, want 2:\n%s", n, stderr.String())
	}
	cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	for _, tm := range cfg.Templates {
		if tm.CommandTimeout != 0 {
			t.Errorf("%s: command_timeout %s, want the agent's default", tm.Destination, time.Duration(tm.CommandTimeout))
		}
	}
}

// TestConvertConsulTemplate_FlagsWithTemplatelessConfig: a service that runs
// consul-template -config consul.hcl -template "in:out:cmd" keeps only its consul { } (and
// default_delimiters) in the file, and consul-template takes it: the conversion refused it
// ("no template stanza to convert"), though the README says to copy the unit's flags. And
// consul-template gives default_delimiters to the -template flags' templates too, which the
// conversion did not (their [[ ]] printed as text, their {{ }} read as actions). Now such a file
// converts with the flags, and its delimiters reach their templates; a file without templates
// and without flags is refused as before.
func TestConvertConsulTemplate_FlagsWithTemplatelessConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "consul.hcl")
	writeFile(t, conf, "consul {\n  address = \"127.0.0.1:8500\"\n}\ndefault_delimiters {\n  left = \"[[\"\n  right = \"]]\"\n}\n")
	for _, args := range [][]string{
		{conf, "-template", "/etc/ct/in.tmpl:/etc/app.conf:systemctl reload app"},
		{"-config", conf, "-template", "/etc/ct/in.tmpl:/etc/app.conf:systemctl reload app"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), append([]string{"shoelace", "convert-consul-template"}, args...), strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("convert-consul-template %q: %v\n%s", args, err, stderr.String())
		}
		cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
		if err != nil {
			t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
		}
		if len(cfg.Templates) != 1 {
			t.Fatalf("%d templates, want the flag's\n%s", len(cfg.Templates), stdout.String())
		}
		tm := cfg.Templates[0]
		if tm.Destination != "/etc/app.conf" || tm.Command != "systemctl reload app" || tm.LeftDelimiter != "[[" || tm.RightDelimiter != "]]" {
			t.Errorf("%q: template %+v, want /etc/app.conf reloaded by systemctl reload app, with the file's [[ ]]\n%s", args, tm, stdout.String())
		}
	}
	if msg := convertFails(t, "consul {\n}\n"); !strings.Contains(msg, "c.hcl: no template stanza to convert") {
		t.Errorf("a file without templates, without flags: %s", msg)
	}
}

// TestConvertConsulTemplate_DelimiterFlags: consul-template's -default-left-delimiter and
// -default-right-delimiter (a unit's flags, which the README says to copy) set the delimiters of
// every template that sets none, over the configuration's default_delimiters. The conversion
// did not know them ("flag provided but not defined"), and without them its templates read
// {{ }}. Now they are read as consul-template reads them.
func TestConvertConsulTemplate_DelimiterFlags(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, "default_delimiters {\n  left = \"[[\"\n  right = \"]]\"\n}\ntemplate {\n  contents = \"a\"\n  destination = \"/a\"\n}\n"+
		"template {\n  contents = \"b\"\n  destination = \"/b\"\n  left_delimiter = \"((\"\n  right_delimiter = \"))\"\n}\n")
	var stdout, stderr bytes.Buffer
	args := []string{"shoelace", "convert-consul-template", conf, "-default-left-delimiter", "<<", "--default-right-delimiter", ">>", "-template", "/in:/c"}
	if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	cfg, err := agent.ParseConfig("agent.yaml", stdout.Bytes())
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	var got []string
	for _, tm := range cfg.Templates {
		got = append(got, tm.Destination+"|"+tm.LeftDelimiter+tm.RightDelimiter)
	}
	if want := []string{"/a|<<>>", "/b|(())", "/c|<<>>"}; !slices.Equal(got, want) {
		t.Errorf("templates (destination|delimiters) %q, want %q\n%s", got, want, stdout.String())
	}
}

// TestConvertConsulTemplate_UnsetOwner: consul-template hands uid = -1 (user = "-1") and
// gid = -1 to os.Chown, which leaves the owner or group as it is: the same as none. The
// conversion printed owner: "-1" and group: "-1", which the agent refuses ("id -1 is
// negative"). Now they convert to no owner or group, which the agent keeps as they are too.
func TestConvertConsulTemplate_UnsetOwner(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, "template {\n  contents = \"a\"\n  destination = \"/a\"\n  uid = -1\n  gid = -1\n}\n"+
		"template {\n  contents = \"b\"\n  destination = \"/b\"\n  user = \"-1\"\n  group = \"0\"\n}\n")
	cfg, stdout, _ := convertCT(t, conf)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	var got []string
	for _, tm := range cfg.Templates {
		got = append(got, tm.Destination+"|"+tm.Owner+":"+tm.Group)
	}
	if want := []string{"/a|:", "/b|:0"}; !slices.Equal(got, want) {
		t.Errorf("templates (destination|owner:group) %q, want %q\n%s", got, want, stdout.String())
	}
}

// TestConvertConsulTemplate_ExecEnv: consul-template v0.41.1 runs a template's command (exec's,
// or the older command) with exec's env { custom = ["NAME=VALUE", …] } set over its own
// environment; the conversion dropped it with a note that named no reason ("the template's
// command runs once per change, under /bin/sh -c"), and the converted command ran without the
// variables (APP_ENV empty where consul-template gave it prod). The custom variables are
// exported before the command now, and the command the agent runs writes what consul-template's
// wrote (the bytes below, from consul-template v0.41.1 -once with this configuration); pristine
// and the allow and deny lists, which the agent's small environment has no use for, are notes,
// and an unknown field of env is an error, as consul-template refuses it.
func TestConvertConsulTemplate_ExecEnv(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("consul-template's commands converted for /bin/sh")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "cmds")
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, `template {
  contents = "x"
  destination = "/etc/app/a.conf"
  exec {
    command = "echo \"a app=$APP_ENV b=$B\" >> `+out+`"
    env {
      custom = ["APP_ENV=prod it's", "B=2"]
    }
  }
}
template {
  contents = "y"
  destination = "/etc/app/b.conf"
  command = "echo \"b app=$APP_ENV c=$C\" >> `+out+`"
  exec {
    env {
      pristine = true
      custom = "APP_ENV=x,C=3"
      denylist = ["AWS_*"]
    }
  }
}
`)
	cfg, stdout, stderr := convertCT(t, conf)
	for _, tm := range cfg.Templates {
		if _, err := agent.RunCommand(context.Background(), tm.Command, time.Minute, nil); err != nil {
			t.Fatalf("the converted command %q: %v", tm.Command, err)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a app=prod it's b=2\nb app=x c=3\n"; string(got) != want {
		t.Errorf("the converted commands wrote %q, want %q, as consul-template's\n%s", got, want, stdout.String())
	}
	for _, want := range []string{
		conf + ":16: template exec env pristine = true has no equivalent here",
		conf + ":16: template exec env denylist has no equivalent here",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), ":6: template exec env") {
		t.Errorf("stderr has a note on custom, which converts:\n%s", stderr.String())
	}

	bad := filepath.Join(dir, "bad.hcl")
	writeFile(t, bad, "template {\n  contents = \"x\"\n  destination = \"/a\"\n  exec {\n    command = \"true\"\n    env {\n      extra = [\"A=1\"]\n    }\n  }\n}\n")
	stdout.Reset()
	err = run(context.Background(), []string{"shoelace", "convert-consul-template", bad}, strings.NewReader(""), stdout, stderr)
	if want := bad + `:6: template: exec env: unknown field "extra"`; exitCode(err) != 1 || !strings.Contains(fmt.Sprint(err), want) || stdout.Len() > 0 {
		t.Fatalf("convert-consul-template of an unknown env field: %v (exit %d), want exit 1 and %q, nothing printed", err, exitCode(err), want)
	}
}

// TestConvertConsulTemplate_FunctionDenylistString: consul-template v0.41.1 takes
// function_denylist = "env,file" (or function_blacklist) as the list [env, file], its decoder
// splitting a string at its commas, and its template fails at env ("error calling env: function
// is disabled"); the conversion refused the configuration ("want a list of function names").
// It converts now, split as consul-template splits it, and the converted template fails at env
// as consul-template's did; "" denies nothing.
func TestConvertConsulTemplate_FunctionDenylistString(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"string.hcl", "template {\n  contents = \"{{ env \\\"HOME\\\" }}\"\n  destination = \"/a\"\n  function_denylist = \"env,file\"\n}\n", []string{"env", "file"}},
		{"blacklist.json", `{"template": [{"contents": "{{ env \"HOME\" }}", "destination": "/a", "function_blacklist": "env"}]}`, []string{"env"}},
		{"list.hcl", "template {\n  contents = \"{{ env \\\"HOME\\\" }}\"\n  destination = \"/a\"\n  function_denylist = [\"env\", \"file\"]\n}\n", []string{"env", "file"}},
		{"empty.hcl", "template {\n  contents = \"{{ env \\\"HOME\\\" }}\"\n  destination = \"/a\"\n  function_denylist = \"\"\n}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			writeFile(t, p, tc.conf)
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
			}
			head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
			cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
			if err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			tm := cfg.Templates[0]
			if !slices.Equal(tm.FunctionDenylist, tc.want) {
				t.Fatalf("function_denylist %q, want %q\n%s", tm.FunctionDenylist, tc.want, stdout.String())
			}
			parsed, err := templates.Parse(tm.Contents, templates.Options{Name: tm.Destination, Functions: tm.Functions, FunctionDenylist: tm.FunctionDenylist})
			if err != nil {
				t.Fatal(err)
			}
			_, err = parsed.Execute(templates.Data{})
			if denied := err != nil && strings.Contains(err.Error(), "error calling env: function is disabled"); denied != (tc.want != nil) {
				t.Errorf("render: %v; want env denied: %v, as consul-template", err, tc.want != nil)
			}
		})
	}
}

// TestConvertConsulTemplate_FieldSetTwice: consul-template v0.41.1 reads its configuration with
// hcl.Decode, which takes a field set twice in a stanza (destination = "a", then destination =
// "b"; template = { … } twice): the last value counts, and a list set twice counts whole. The
// conversion parsed it with hcl.ParseBytes, which refuses it ("The argument "destination" at
// 4:3 was already set"), and converted nothing. It converts now as consul-template reads it:
// consul-template -once with this configuration rendered y with mode 0640, ran "echo second",
// kept no .bak, rendered both template = { } stanzas, and denied env and file.
func TestConvertConsulTemplate_FieldSetTwice(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ct.hcl")
	writeFile(t, conf, `template {
  contents = "{{ env \"HOME\" }}"
  destination = "/etc/app/x"
  destination = "/etc/app/y"
  perms = "0600"
  perms = "0640"
  command = "echo first"
  command = "echo second"
  backup = true
  backup = false
  function_denylist = ["env"]
  function_denylist = ["file"]
}
template = {
  contents = "b"
  destination = "/etc/app/b"
}
template = {
  contents = "c"
  destination = "/etc/app/c"
}
`)
	cfg, stdout, _ := convertCT(t, conf)
	if len(cfg.Templates) != 3 {
		t.Fatalf("%d templates, want 3:\n%s", len(cfg.Templates), stdout.String())
	}
	a := cfg.Templates[0]
	if !strings.HasSuffix(filepath.ToSlash(a.Destination), "/etc/app/y") || a.Perms != "0640" || a.Command != "echo second" || a.Backup || !slices.Equal(a.FunctionDenylist, []string{"env", "file"}) {
		t.Errorf("template %+v, want destination /etc/app/y, perms 0640, command echo second, no backup, function_denylist [env file]", a)
	}
	if b, c := cfg.Templates[1], cfg.Templates[2]; !strings.HasSuffix(filepath.ToSlash(b.Destination), "/etc/app/b") || !strings.HasSuffix(filepath.ToSlash(c.Destination), "/etc/app/c") {
		t.Errorf("templates %s and %s, want /etc/app/b and /etc/app/c", b.Destination, c.Destination)
	}
}

// TestConvertConsulTemplate_FieldsInAnyCase: consul-template v0.41.1's decoder (mapstructure)
// takes a setting or a template's field in any case: consul-template -once with the
// configurations below rendered /etc/app/o with mode 0600 (and ran its command), and
// /etc/app/p with mode 0640. The conversion refused them, saying that consul-template refuses
// them too ("unknown setting \"Template\" (consul-template v0.41.1 refuses it too)"). They
// convert now as consul-template read them.
func TestConvertConsulTemplate_FieldsInAnyCase(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf string
		want       agent.Template
		wait       agent.Wait
	}{
		{"upper.hcl", "Wait = \"2s\"\nTemplate {\n  Contents = \"x\"\n  Destination = \"/etc/app/o\"\n  PERMS = \"0600\"\n  Command = \"systemctl reload app\"\n  Backup = true\n}\n",
			agent.Template{Contents: "x", Destination: "/etc/app/o", Perms: "0600", Command: "systemctl reload app", Backup: true},
			agent.Wait{Min: agent.Duration(2 * time.Second), Max: agent.Duration(8 * time.Second)}},
		{"upper.json", `{"TEMPLATE": [{"Contents": "y", "Destination": "/etc/app/p", "Perms": "0640"}]}`,
			agent.Template{Contents: "y", Destination: "/etc/app/p", Perms: "0640"}, agent.Wait{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			writeFile(t, p, tc.conf)
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
			}
			head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
			cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
			if err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			got := cfg.Templates[0]
			if got.Contents != tc.want.Contents || !strings.HasSuffix(filepath.ToSlash(got.Destination), tc.want.Destination) || got.Perms != tc.want.Perms || got.Command != tc.want.Command || got.Backup != tc.want.Backup {
				t.Errorf("template %+v, want %+v\n%s", got, tc.want, stdout.String())
			}
			if cfg.Wait.Min != tc.wait.Min || cfg.Wait.Max != tc.wait.Max {
				t.Errorf("wait %+v, want %+v", cfg.Wait, tc.wait)
			}
		})
	}
}

// TestConvertConsulTemplate_UserAndUid: consul-template v0.41.1 takes a template's uid (gid) only
// when its user (group) is not set, uid being user's older name: consul-template -once with
// user = "nobody" and uid = 0 rendered a file owned by nobody. The conversion refused such a
// template ("set user or uid, not both"), and nothing converted. It converts now as
// consul-template ran it, user (group) given, with a note that uid (gid) is ignored.
func TestConvertConsulTemplate_UserAndUid(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ct.hcl")
	writeFile(t, p, "template {\n  contents = \"x\"\n  destination = \"/etc/app/a\"\n  user = \"nobody\"\n  uid = 0\n  gid = 0\n  group = \"nogroup\"\n}\n")
	cfg, _, stderr := convertCT(t, p)
	if tm := cfg.Templates[0]; tm.Owner != "nobody" || tm.Group != "nogroup" {
		t.Errorf("owner %q, group %q; want nobody and nogroup, as consul-template gives them", tm.Owner, tm.Group)
	}
	for _, want := range []string{
		p + ":5: template uid is ignored, as consul-template ignores it when user is set",
		p + ":6: template gid is ignored, as consul-template ignores it when group is set",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestConvertConsulTemplate_OtherFlags: a consul-template service's unit gives -template and
// -config beside flags that have no equivalent here (-consul-addr, -log-level, -once, …); the
// README says to copy its flags, and the conversion stopped at the first of the others ("flag
// provided but not defined: -consul-addr"), converting nothing. Each of consul-template
// v0.41.1's flags is taken now, as consul-template takes it (a bool one alone), with a note that
// says why it has no equivalent, as the configuration's settings get; a flag consul-template does
// not have is still a usage error.
func TestConvertConsulTemplate_OtherFlags(t *testing.T) {
	for _, f := range ctFlagsWithoutEquivalent {
		if ctFlagWhy(f.name) == "" {
			t.Errorf("-%s: no reason given", f.name)
		}
	}
	out := filepath.Join(t.TempDir(), "app.conf")
	var stdout, stderr bytes.Buffer
	args := []string{"shoelace", "convert-consul-template", "-consul-addr", "127.0.0.1:8500", "-once", "-log-level", "info",
		"-template", "/etc/ct/app.ctmpl:" + out + ":systemctl reload app", "-vault-renew-token=false", "-exec-kill-timeout", "30s"}
	if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
	cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	if tm := cfg.Templates[0]; tm.Destination != out || tm.Command != "systemctl reload app" {
		t.Errorf("template %s, command %q; want %s, systemctl reload app", tm.Destination, tm.Command, out)
	}
	for _, want := range []string{
		"shoelace: -consul-addr has no equivalent here: the agent reads its keys from the Shoelace server",
		"shoelace: -once has no equivalent here: run shoelace-agent once instead",
		"shoelace: -log-level has no equivalent here: give the agent --log-level",
		"shoelace: -vault-renew-token has no equivalent here: there is no Vault source here",
		"shoelace: -exec-kill-timeout has no equivalent here: the agent supervises no child process",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	stdout.Reset()
	err = run(context.Background(), []string{"shoelace", "convert-consul-template", "-consul-adr", "x", "-template", "a:b"}, strings.NewReader(""), &stdout, &stderr)
	if exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), "flag provided but not defined: -consul-adr") {
		t.Errorf("an unknown flag: %v (exit %d), want exit 2, flag provided but not defined", err, exitCode(err))
	}
}

// TestConvertConsulTemplate_TemplateWarnings: a template that gives file a relative path
// (consul-template read it from its working directory, the agent reads it from /) or whose
// function_denylist names no function converted without a word: only the agent's validate
// said so, later. The conversion notes both, naming the stanza.
func TestConvertConsulTemplate_TemplateWarnings(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ct.hcl")
	writeFile(t, p, "template {\n  contents = \"{{ file \\\"certs/ca.pem\\\" }}\"\n  destination = \"/etc/app/a\"\n  function_denylist = [\"fiel\"]\n}\n")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"shoelace: " + p + `:1: file "certs/ca.pem": a relative path is read from the agent's working directory`,
		"shoelace: " + p + `:1: function_denylist entry "fiel" matches no function of consul-template mode`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if !strings.Contains(stdout.String(), "allow_file: true") {
		t.Errorf("allow_file not set:\n%s", stdout.String())
	}
}

// convertCT runs convert-consul-template with args, and returns the agent config that its
// output makes (after the settings a packaged agent.yaml holds), its output and its notes.
func convertCT(t *testing.T, args ...string) (cfg *agent.Config, stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	if err := run(context.Background(), append([]string{"shoelace", "convert-consul-template"}, args...), strings.NewReader(""), stdout, stderr); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	head := "server: http://127.0.0.1:7400\nappliance: web\ntoken: t0ken\ncache_dir: " + filepath.Join(t.TempDir(), "cache") + "\n"
	cfg, err := agent.ParseConfig("agent.yaml", []byte(head+stdout.String()))
	if err != nil {
		t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
	}
	return cfg, stdout, stderr
}

// TestConvertConsulTemplate_SharedCommandWithDifferentEnv: consul-template v0.41.1 runs a command
// that several templates share once per pass, however their exec env differ (its runner's
// findCommand compares exec's command alone), with the env of the first of them, in the
// configuration's order, that changed. The conversion exported each template's variables before
// its command, which made two commands of one: when both files changed, the agent ran the
// command twice, once with each env. The templates that share a command get one command now,
// which the agent runs once, choosing the env of the first changed file in $SHOELACE_DESTINATIONS.
func TestConvertConsulTemplate_SharedCommandWithDifferentEnv(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("consul-template's commands converted for /bin/sh")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "cmds")
	conf := filepath.Join(dir, "ct.hcl")
	cmd := `echo \"app=$APP_ENV\" >> ` + out
	writeFile(t, conf, `template {
  contents = "x"
  destination = "/etc/app/a.conf"
  exec {
    command = "`+cmd+`"
    env { custom = ["APP_ENV=a it's"] }
  }
}
template {
  contents = "y"
  destination = "/etc/app/b c.conf"
  command = "`+cmd+`"
  exec {
    env { custom = ["APP_ENV=b"] }
  }
}
template {
  contents = "z"
  destination = "/etc/app/c.conf"
  command = "`+cmd+`"
}
template {
  contents = "w"
  destination = "/etc/app/d.conf"
  exec {
    command = "echo other"
    env { custom = ["APP_ENV=d"] }
  }
}
`)
	cfg, stdout, stderr := convertCT(t, conf)
	ts := cfg.Templates
	if len(ts) != 4 || ts[0].Command != ts[1].Command || ts[1].Command != ts[2].Command {
		t.Fatalf("the templates sharing a command got different ones, which the agent runs once each:\n%s", stdout.String())
	}
	if ts[3].Command != "export APP_ENV=d; echo other" {
		t.Errorf("a command of its own: %q", ts[3].Command)
	}
	for _, c := range []struct{ changed, want string }{
		{"/etc/app/a.conf /etc/app/b c.conf /etc/app/c.conf", "app=a it's"},
		{"/etc/app/b c.conf /etc/app/c.conf", "app=b"},
		{"/etc/app/c.conf", "app="},
	} {
		os.Remove(out)
		if _, err := agent.RunCommand(context.Background(), ts[0].Command, time.Minute, []string{"SHOELACE_DESTINATIONS=" + c.changed}); err != nil {
			t.Fatalf("the converted command %q: %v", ts[0].Command, err)
		}
		if got, _ := os.ReadFile(out); string(got) != c.want+"\n" {
			t.Errorf("changed %s: the command wrote %q, want consul-template's %q", c.changed, got, c.want+"\n")
		}
	}
	if !strings.Contains(stderr.String(), "share the command") {
		t.Errorf("no note on the shared command:\n%s", stderr.String())
	}
}

// The shared command chose a template's env when " DEST " was in " $SHOELACE_DESTINATIONS ",
// which the destinations join with spaces: /etc/app/b was found in "/etc/app/b c.conf" too, and
// when only that file changed, the command ran with /etc/app/b's env, where consul-template
// uses the env of the one that changed. A destination that holds another, spaces around it,
// is taken out of the list before the other is looked for.
func TestConvertConsulTemplate_SharedCommandDestinationsWithSpaces(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("consul-template's commands converted for /bin/sh")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "cmds")
	conf := filepath.Join(dir, "ct.hcl")
	cmd := `echo \"app=$APP_ENV\" >> ` + out
	var b strings.Builder
	for _, d := range []struct{ dest, env string }{
		{"/etc/app/b", "b"}, {"/etc/app/b c.conf", "bc"}, {"/etc/app/b c.conf d", "bcd"}, {"/etc/app/x", "x"},
	} {
		fmt.Fprintf(&b, "template {\n  contents = \"x\"\n  destination = %q\n  exec {\n    command = %q\n    env { custom = [\"APP_ENV=%s\"] }\n  }\n}\n", d.dest, strings.ReplaceAll(cmd, `\"`, `"`), d.env)
	}
	writeFile(t, conf, b.String())
	cfg, stdout, _ := convertCT(t, conf)
	ts := cfg.Templates
	if len(ts) != 4 || ts[0].Command != ts[3].Command {
		t.Fatalf("the templates sharing a command got different ones:\n%s", stdout.String())
	}
	for _, c := range []struct{ changed, want string }{
		{"/etc/app/b c.conf", "app=bc"},
		{"/etc/app/b c.conf d", "app=bcd"},
		{"/etc/app/b c.conf /etc/app/x", "app=bc"},
		{"/etc/app/x /etc/app/b c.conf d", "app=bcd"},
		{"/etc/app/b /etc/app/b c.conf", "app=b"},
		{"/etc/app/b c.conf /etc/app/b c.conf d", "app=bc"},
		{"/etc/app/x", "app=x"},
		{"/etc/app/b", "app=b"},
	} {
		os.Remove(out)
		if _, err := agent.RunCommand(context.Background(), ts[0].Command, time.Minute, []string{"SHOELACE_DESTINATIONS=" + c.changed}); err != nil {
			t.Fatalf("the converted command %q: %v", ts[0].Command, err)
		}
		if got, _ := os.ReadFile(out); string(got) != c.want+"\n" {
			t.Errorf("changed %s: the command wrote %q, want consul-template's %q", c.changed, got, c.want+"\n")
		}
	}
}
