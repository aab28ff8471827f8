package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestConvertConsulTemplate_Golden converts consul-template's own documented configuration
// (every HCL block of its docs/configuration.md) and ours, in HCL and JSON: stdout and stderr
// are compared with the golden files.
func TestConvertConsulTemplate_Golden(t *testing.T) {
	dir, err := filepath.Abs("testdata/consul-template")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"example.hcl", "configuration.hcl", "web.hcl", "web.json"} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"shoelace", "convert-consul-template", filepath.Join(dir, name)}, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("convert-consul-template %s: %v\n%s", name, err, stderr.String())
			}
			// What it prints is agent.yaml: every field is one the agent knows.
			if _, err := agent.ParseConfig(name+".yaml", stdout.Bytes()); err != nil {
				t.Fatalf("the agent refuses the conversion: %v\n%s", err, stdout.String())
			}
			got := strings.ReplaceAll(stdout.String()+"---- stderr ----\n"+stderr.String(), dir, "$DIR")
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

// TestConvertConsulTemplate_ImpliedMaxCapped: wait = "5m" (or a block with min alone) is, in
// consul-template, min 5m and max 4 × 5m = 20m, over the agent's 10m; the conversion refused it,
// where the agent itself takes wait: {min: 5m} and caps its 4 × min at 10m. It converts now,
// with max 10m and a note that says so; an explicit max over 10m is still refused, as the agent
// refuses it.
func TestConvertConsulTemplate_ImpliedMaxCapped(t *testing.T) {
	for _, text := range []string{"wait = \"5m\"\n", "wait {\n  min = \"5m\"\n}\n", `{"wait": "5m",` + "\n"} {
		p := filepath.Join(t.TempDir(), "c.hcl")
		body := "template {\n  destination = \"/a\"\n}\n"
		if strings.HasPrefix(text, "{") {
			p = strings.TrimSuffix(p, ".hcl") + ".json"
			body = `"template": {"destination": "/a"}}` + "\n"
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
		{"setuid perms", "template {\n  destination = \"/a\"\n  perms = \"4755\"\n}\n", "c.hcl:3: template: perms: mode 04755: setuid, setgid and sticky bits are not supported"},
		{"bad wait", "wait = \"5s:1s\"\ntemplate {\n  destination = \"/a\"\n}\n", "c.hcl:1: wait: min 5s and max 1s: want 0 ≤ min ≤ max"},
		// The agent refuses a wait over 10m: the conversion printed one that validate then refused.
		{"wait over the agent's bound", "wait = \"1m:1h\"\ntemplate {\n  destination = \"/a\"\n}\n", "c.hcl:1: wait: max 1h0m0s is over 10m0s, the longest the agent lets a change wait to be rendered"},
		{"min over the agent's bound", "wait = \"15m\"\ntemplate {\n  destination = \"/a\"\n}\n", "c.hcl:1: wait: min 15m0s is over 10m0s, the longest the agent lets a change wait to be rendered"},
		{"bad timeout", "template {\n  destination = \"/a\"\n  command_timeout = \"soon\"\n}\n", `c.hcl:3: template: command_timeout "soon" is not a duration`},
		{"user and uid", "template {\n  destination = \"/a\"\n  user = \"root\"\n  uid = 0\n}\n", "c.hcl:4: template: set user or uid, not both"},
		{"command not strings", "template {\n  destination = \"/a\"\n  command = [1, 2]\n}\n", "c.hcl:3: template: command: want a string or a list of strings"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.hcl")
			if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"shoelace", "convert-consul-template", p}, strings.NewReader(""), &stdout, &stderr)
			if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("convert-consul-template: %v (exit %d), want exit 1 and %q", err, exitCode(err), tc.want)
			}
			if stdout.Len() > 0 {
				t.Fatalf("printed a conversion although it failed:\n%s", stdout.String())
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
