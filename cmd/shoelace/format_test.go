package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

func TestFormatPairs(t *testing.T) {
	got := formatPairs(map[string]string{
		"system/ntp":  "pool.ntp.org",
		"motd":        "line 1\nline 2\n",
		"app/port":    "8080",
		"quoted":      `"already quoted"`,
		"empty":       "",
		"eq":          "a=b",
		"unicode":     "héllo ✓",
		"tab":         "a\tb",
		"linesep":     "a\u2028b",
		"inner-quote": `say "hi"`,
	})
	want := `app/port=8080
empty=
eq=a=b
inner-quote=say "hi"
linesep="a\u2028b"
motd="line 1\nline 2\n"
quoted="\"already quoted\""
system/ntp=pool.ntp.org
tab="a\tb"
unicode=héllo ✓
`
	if got != want {
		t.Errorf("formatPairs:\n got %q\nwant %q", got, want)
	}
}

func TestContentTypeOf(t *testing.T) {
	tests := []struct {
		file, body, want string
	}{
		{"web.yaml", `{"keys":{}}`, api.ContentTypeYAML},
		{"web.YML", "keys: {}", api.ContentTypeYAML},
		{"web.json", "keys: {}", "application/json"},
		{"stdin", "  \n{\"keys\":{}}", "application/json"},
		{"stdin", "\ufeff{\"keys\":{}}", "application/json"},
		{"stdin", "keys:\n  a: b\n", api.ContentTypeYAML},
		{"web.conf", "# comment\nkeys: {}", api.ContentTypeYAML},
		// YAML's flow style, which starts with '{' as JSON does.
		{"stdin", "{keys: {app: {port: 8080}}}", api.ContentTypeYAML},
		{"web.json", "{keys: {app: {port: 8080}}}", "application/json"},
		// Broken JSON stays JSON, for the JSON error.
		{"stdin", `{"keys": {"a": "b",}`, "application/json"},
	}
	for _, tt := range tests {
		if got := contentTypeOf(tt.file, []byte(tt.body)); got != tt.want {
			t.Errorf("contentTypeOf(%q, %q) = %q, want %q", tt.file, tt.body, got, tt.want)
		}
	}
}

func TestExportKeys(t *testing.T) {
	entries := []api.KV{
		{Key: "appliances/web", Value: "the root itself"},
		{Key: "appliances/web/port", Value: "8080"},
		{Key: "appliances/web/secrets/db", Value: "hunter2"},
		{Key: "appliances/web/tls/secrets/key", Value: "PRIVATE"},
		{Key: "appliances/web/secretsauce", Value: "not a secret"},
		{Key: "appliances/web-frontend/port", Value: "9090"},
	}
	keys, rep := exportKeys("appliances/web", entries, false)
	want := map[string]string{"port": "8080", "secretsauce": "not a secret"}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	if got := strings.Join(rep.left, ","); got != "secrets/db,tls/secrets/key" {
		t.Errorf("left out %q, want secrets/db,tls/secrets/key", got)
	}
	if len(rep.included) != 0 {
		t.Errorf("included %q, want none", rep.included)
	}
	for _, v := range keys {
		if v == "hunter2" || v == "PRIVATE" {
			t.Errorf("secret value %q exported without --include-secrets", v)
		}
	}

	keys, rep = exportKeys("appliances/web", entries, true)
	if keys["secrets/db"] != "hunter2" || keys["tls/secrets/key"] != "PRIVATE" || len(keys) != 4 {
		t.Errorf("with secrets: keys = %v", keys)
	}
	if len(rep.left) != 0 || strings.Join(rep.included, ",") != "secrets/db,tls/secrets/key" {
		t.Errorf("with secrets: report %+v", rep)
	}
}

func TestEncodeExport_RoundTrips(t *testing.T) {
	keys := map[string]string{
		"port":        "8080",
		"enabled":     "true",
		"nothing":     "null",
		"empty":       "",
		"motd":        "line 1\nline 2\n",
		"no-newline":  "a\nb",
		"spaces":      "  padded  ",
		"colon":       "a: b",
		"hash":        "# not a comment",
		"unicode":     "héllo ✓ \u0000 nul",
		"html":        "<a href='x'>&</a>",
		"float":       "1.50",
		"octal":       "0644",
		"deep/a/b/c":  "x",
		"yes":         "yes",
		"tilde":       "~",
		"trailing-ws": "x \n",
	}
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			out, err := encodeExport(keys, format)
			if err != nil {
				t.Fatal(err)
			}
			var back api.Apply
			if format == "json" {
				err = json.Unmarshal(out, &back)
			} else {
				err = yaml.Unmarshal(out, &back)
			}
			if err != nil {
				t.Fatalf("decode %s: %v\n%s", format, err, out)
			}
			if len(back.Keys) != len(keys) {
				t.Errorf("%d keys back, want %d", len(back.Keys), len(keys))
			}
			for k, v := range keys {
				if back.Keys[k] != v {
					t.Errorf("%s: %q came back as %q", k, v, back.Keys[k])
				}
			}
		})
	}
}

func TestFlattenJSON(t *testing.T) {
	got := flattenJSON("", json.RawMessage(`{"status":"ok","revision":42,"embedded":true,"sub":{"a":"x\ny"}}`))
	want := []string{"embedded: true", "revision: 42", "status: ok", `sub.a: "x\ny"`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("flattenJSON = %q, want %q", got, want)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "s3cret\n", 0o600)
	if tok, err := readTokenFile(good); err != nil || tok != "s3cret" {
		t.Errorf("readTokenFile(0600) = %q, %v; want s3cret", tok, err)
	}
	if tok, err := readTokenFile(write("ro", "s3cret", 0o400)); err != nil || tok != "s3cret" {
		t.Errorf("readTokenFile(0400) = %q, %v; want s3cret", tok, err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		p := write(fmt.Sprintf("open%o", mode), "s3cret", mode)
		_, err := readTokenFile(p)
		if err == nil {
			t.Errorf("mode %04o: no error", mode)
			continue
		}
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "chmod 600 "+p) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("mode %04o: error %q (exit %d), want exit 2 naming chmod 600 %s and not the token", mode, err, exitCode(err), p)
		}
	}
	if _, err := readTokenFile(write("empty", " \n", 0o600)); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := readTokenFile(write("two", "a b", 0o600)); err == nil || strings.Contains(err.Error(), "a b") {
		t.Errorf("two words: %v (must fail without echoing the content)", err)
	}
	if _, err := readTokenFile(filepath.Join(dir, "missing")); err == nil || exitCode(err) != exitUsage {
		t.Errorf("missing file: %v", err)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{usagef("bad"), exitUsage},
		{&api.Error{Code: api.CodeNotFound, Status: 404}, exitNotFound},
		{fmt.Errorf("wrapped: %w", &api.Error{Code: api.CodeConflict, Status: 409}), exitConflict},
		{&api.Error{Code: api.CodeUnauthorized, Status: 401}, exitAuth},
		{&api.Error{Code: api.CodeForbidden, Status: 403}, exitAuth},
		{&api.Error{Code: api.CodeMaintenance, Status: 503}, exitUnavailable},
		{&api.Error{Code: api.CodeRateLimited, Status: 429}, exitUnavailable},
		{&api.Error{Code: api.CodeUnavailable, Status: 503}, exitUnavailable},
		{fmt.Errorf("put: %w", &api.Error{Code: api.CodeOutcomeUnknown, Status: 503}), exitUnknown},
		{&api.Error{Code: api.CodeInvalidKey, Status: 400}, exitError},
		{&api.Error{Code: api.CodeInvalidKey}, exitError},
		{&api.Error{Code: api.CodeValueTooLarge, Status: 413}, exitError},
		{&client.TransportError{Op: "GET /health", Err: errors.New("refused")}, exitUnavailable},
		{&client.TransportError{Op: "PUT /v1/kv/k", Err: errors.New("reset"), Sent: true}, exitUnknown},
		{context.Canceled, exitInterrupted},
		{&exitCodeError{code: 9, err: errors.New("x")}, 9},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestErrorLine_OneLine(t *testing.T) {
	got := errorLine(errors.New("first\nsecond\r\nthird"))
	if got != "shoelace: first second third" {
		t.Errorf("errorLine = %q", got)
	}
}

func TestToken_Precedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOELACE_TOKEN_FILE", "")
	t.Setenv("SHOELACE_TOKEN", "")
	tests := []struct {
		name    string
		env     map[string]string
		args    string
		want    string
		wantErr string
	}{
		{"flag file", nil, "--token-file " + file, "from-file", ""},
		{"flag token", nil, "--token from-flag", "from-flag", ""},
		{"env file, flag token", map[string]string{"SHOELACE_TOKEN_FILE": file}, "--token from-flag", "from-flag", ""},
		{"env token, flag file", map[string]string{"SHOELACE_TOKEN": "from-env"}, "--token-file " + file, "from-file", ""},
		{"both flags", nil, "--token x --token-file " + file, "", "both --token-file and --token"},
		{"both env", map[string]string{"SHOELACE_TOKEN": "x", "SHOELACE_TOKEN_FILE": file}, "", "", "both --token-file and --token"},
		{"none", nil, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := tokenFor(t, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("token = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// tokenFor runs a throwaway command with args and returns the token it would send.
func tokenFor(t *testing.T, args string) (string, error) {
	t.Helper()
	var got string
	e := &cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	app := newApp(e)
	cmd := app.Commands[0]
	cmd.Action = func(c *cli.Context) error {
		tok, err := e.token(c)
		got = tok
		return err
	}
	argv, err := reorderArgs(cmdNode{flags: app.Flags, subs: app.Commands}, append([]string{"shoelace", cmd.Name}, strings.Fields(args)...))
	if err != nil {
		return "", err
	}
	e.onCommandLine = flagsOnCommandLine(argv)
	err = app.RunContext(context.Background(), argv)
	return got, err
}

func TestVerifySnapshot(t *testing.T) {
	db := bytes.Repeat([]byte{7}, 4096)
	sum := sha256.Sum256(db)
	write := func(b []byte) *os.File {
		f, err := os.CreateTemp(t.TempDir(), "snap")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		f.Write(b)
		return f
	}
	if err := verifySnapshot(write(append(bytes.Clone(db), sum[:]...))); err != nil {
		t.Fatalf("a whole snapshot was refused: %v", err)
	}
	damaged := append(bytes.Clone(db), sum[:]...)
	damaged[100] ^= 1
	if err := verifySnapshot(write(damaged)); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a damaged snapshot: %v", err)
	}
	if err := verifySnapshot(write(db[:1000])); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("a truncated snapshot: %v", err)
	}
}
