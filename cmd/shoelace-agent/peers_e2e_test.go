//go:build !windows

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/templates"
)

// peerCase is a case of ../../templates/testdata/peers/cases/<tool>: a template of the peer's
// own tests (confd's template_test.go and integration templates; consul-template's
// TestTemplate_Execute and funcs_test.go) or a probe, its keys, environment and options, and (in
// <name>.out) the bytes the real confd v0.16.0 or consul-template v0.41.1 rendered.
type peerCase struct {
	name              string
	out               []byte
	Template          string            `json:"template"`
	Keys              map[string]string `json:"keys"`
	Env               map[string]string `json:"env"`
	ErrorOnMissingKey bool              `json:"error_on_missing_key"`
	LeftDelim         string            `json:"left_delim"`
	RightDelim        string            `json:"right_delim"`
	AllowFile         bool              `json:"allow_file"`
	FunctionDenylist  []string          `json:"function_denylist"`
	ConfdPrefix       string            `json:"confd_prefix"`
	ConfdKeys         []string          `json:"confd_keys"`
}

const peerCasesDir = "../../templates/testdata/peers/cases"

// TestE2E_ConsulTemplateMigration takes consul-template's test cases through a migration as a
// user makes it, and compares the files with what consul-template rendered: the keys of each
// case as `consul kv export` writes them, imported with shoelace import --from-consul-export
// --prefix /, and the cases' templates as inline contents of a consul-template configuration
// (JSON), converted with shoelace convert-consul-template and rendered by shoelace-agent once.
func TestE2E_ConsulTemplateMigration(t *testing.T) { migratePeerCases(t, "consul-template") }

// TestE2E_ConfdMigration does the same with confd's cases: the keys imported as import
// --from-etcd --prefix PREFIX leaves them (PREFIX/a/b is the view's a/b), each template a
// resource of a confd directory (src, dest, the case's keys and prefix) that shoelace-agent once
// --confdir renders. Each of confd's template_test.go templates starts with a newline.
func TestE2E_ConfdMigration(t *testing.T) { migratePeerCases(t, "confd") }

// migratePeerCases runs a tool's cases through the migration: cases that share keys and
// environment share an appliance. The cases are those the templates package renders as the
// peer did (TestPeerCases), without allow_file.
func migratePeerCases(t *testing.T, tool string) {
	srv := startServer(t, "", t.TempDir())
	groups := map[string][]peerCase{}
	for _, c := range loadPeerCases(t, tool) {
		k, err := json.Marshal([]any{c.Keys, c.Env})
		if err != nil {
			t.Fatal(err)
		}
		groups[string(k)] = append(groups[string(k)], c)
	}
	names := make([]string, 0, len(groups))
	for k := range groups {
		names = append(names, k)
	}
	sort.Strings(names)
	dir := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		args = append(args, "--addr", "http://"+srv.addr)
		if srv.token != "" {
			args = append(args, "--token-file", filepath.Join(srv.dataDir, "admin.token"))
		}
		out, err := exec.Command(filepath.Join(binDir, "shoelace"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("shoelace %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	checked := 0
	for i, k := range names {
		cases := groups[k]
		appliance := fmt.Sprintf("peer%02d", i)
		gdir := filepath.Join(dir, appliance)
		if err := os.MkdirAll(filepath.Join(gdir, "out"), 0o755); err != nil {
			t.Fatal(err)
		}
		// The keys, as consul kv export writes them (a confd key without its leading '/'); an
		// appliance without any holds one that no case reads.
		type pair struct {
			Key   string `json:"key"`
			Flags int    `json:"flags"`
			Value string `json:"value"`
		}
		export := []pair{}
		for k, v := range cases[0].Keys {
			export = append(export, pair{strings.TrimPrefix(k, "/"), 0, base64.StdEncoding.EncodeToString([]byte(v))})
		}
		if len(export) == 0 {
			export = append(export, pair{"unread/by-any-case", 0, "eA=="})
		}
		writeJSON(t, filepath.Join(gdir, "export.json"), export)
		cli("import", "--from-consul-export", filepath.Join(gdir, "export.json"), "--prefix", "/", "--appliance", appliance, "--skip-refused")

		cfg := fmt.Sprintf("server: http://%s\nappliance: %s\ninstance: vm-e2e\ncache_dir: %s\n", srv.addr, appliance, filepath.Join(gdir, "cache"))
		if srv.token != "" {
			tok := lastLine(cli("token", "create", "--name", appliance+"-agent", "--appliance", appliance))
			if err := os.WriteFile(filepath.Join(gdir, "token"), []byte(tok+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg += "token_file: " + filepath.Join(gdir, "token") + "\n"
		}
		if tool == "confd" {
			cfg += "confd_dir: " + writeConfdDir(t, gdir, cases) + "\n"
		} else {
			cfg += convertConsulTemplate(t, gdir, cases)
		}
		if err := os.WriteFile(filepath.Join(gdir, "agent.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		agent := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace-agent"), "once", "--config", filepath.Join(gdir, "agent.yaml"))
		agent.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
		for k, v := range cases[0].Env {
			agent.Env = append(agent.Env, k+"="+v)
		}
		out, err := agent.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: shoelace-agent once: %v\n%s", appliance, err, out)
		}
		for _, c := range cases {
			got, err := os.ReadFile(filepath.Join(gdir, "out", c.name))
			switch {
			case err != nil:
				t.Errorf("%s: %v", c.name, err)
			case !bytes.Equal(got, c.out):
				t.Errorf("%s: the agent wrote %q, %s %q", c.name, got, tool, c.out)
			default:
				checked++
			}
		}
	}
	t.Logf("%d cases in %d appliances rendered as %s rendered them", checked, len(groups), tool)
}

// convertConsulTemplate writes the cases' templates as a consul-template configuration in dir
// and returns what shoelace convert-consul-template prints for it.
func convertConsulTemplate(t *testing.T, dir string, cases []peerCase) string {
	t.Helper()
	var stanzas []map[string]any
	for _, c := range cases {
		s := map[string]any{"contents": c.Template, "destination": filepath.Join(dir, "out", c.name), "error_on_missing_key": c.ErrorOnMissingKey}
		if c.LeftDelim != "" {
			s["left_delimiter"] = c.LeftDelim
		}
		if c.RightDelim != "" {
			s["right_delimiter"] = c.RightDelim
		}
		if c.FunctionDenylist != nil {
			s["function_denylist"] = c.FunctionDenylist
		}
		stanzas = append(stanzas, s)
	}
	writeJSON(t, filepath.Join(dir, "ct.json"), map[string]any{"template": stanzas})
	var stdout, stderr bytes.Buffer
	conv := exec.Command(filepath.Join(binDir, "shoelace"), "convert-consul-template", filepath.Join(dir, "ct.json"))
	conv.Stdout, conv.Stderr = &stdout, &stderr
	if err := conv.Run(); err != nil {
		t.Fatalf("convert-consul-template: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}

// writeConfdDir writes the cases as the resources of a confd directory in dir and returns it.
func writeConfdDir(t *testing.T, dir string, cases []peerCase) string {
	t.Helper()
	confd := filepath.Join(dir, "confd")
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.MkdirAll(filepath.Join(confd, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cases {
		keys := c.ConfdKeys
		if keys == nil {
			keys = []string{"/"}
		}
		q := make([]string, len(keys))
		for i, k := range keys {
			q[i] = strconv.Quote(k)
		}
		toml := fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nprefix = %q\nkeys = [%s]\n", c.name+".tmpl", filepath.Join(dir, "out", c.name), c.ConfdPrefix, strings.Join(q, ", "))
		if err := os.WriteFile(filepath.Join(confd, "conf.d", c.name+".toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(confd, "templates", c.name+".tmpl"), []byte(c.Template), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return confd
}

// loadPeerCases returns the tool's cases that the templates package renders, in the tool's
// mode, as the tool rendered them, without allow_file.
func loadPeerCases(t *testing.T, tool string) []peerCase {
	t.Helper()
	mode := map[string]string{"confd": templates.ModeConfd, "consul-template": templates.ModeConsulTemplate}[tool]
	files, err := filepath.Glob(filepath.Join(peerCasesDir, tool, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []peerCase
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		want, err := os.ReadFile(filepath.Join(peerCasesDir, tool, name+".out"))
		if err != nil {
			continue // the tool failed or waited
		}
		c := peerCase{name: name, out: want}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.AllowFile {
			continue
		}
		tmpl, err := templates.Parse(c.Template, templates.Options{Functions: mode, ErrorOnMissingKey: c.ErrorOnMissingKey,
			LeftDelim: c.LeftDelim, RightDelim: c.RightDelim, FunctionDenylist: c.FunctionDenylist, Prefix: c.ConfdPrefix, ConfdKeys: c.ConfdKeys})
		if err != nil {
			continue
		}
		keys := map[string]string{}
		for k, v := range c.Keys {
			if k = strings.TrimPrefix(k, "/"); api.ValidateKey(k) == nil { // the keys the import takes
				keys[k] = v
			}
		}
		res, err := tmpl.Execute(templates.Data{Appliance: "app", Keys: keys, Env: func(k string) string { return c.Env[k] },
			LookupEnv: func(k string) (string, bool) { v, ok := c.Env[k]; return v, ok }})
		if err == nil && bytes.Equal(res.Output, want) {
			out = append(out, c)
		}
	}
	if len(out) < 50 {
		t.Fatalf("%d %s cases that render as %s did: the cases are not where they were", len(out), tool, tool)
	}
	return out
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
