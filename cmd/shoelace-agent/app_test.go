//go:build !windows

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestMoveCommonFlags(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"a", "once", "--config", "x"}, []string{"a", "once", "--config", "x"}},
		{[]string{"a", "--config", "x", "once", "--stage", "system"}, []string{"a", "once", "--config", "x", "--stage", "system"}},
		{[]string{"a", "--config=x", "--log-level", "debug", "run"}, []string{"a", "run", "--config=x", "--log-level", "debug"}},
		{[]string{"a", "-c", "x", "validate"}, []string{"a", "validate", "-c", "x"}},
		{[]string{"a", "--help"}, []string{"a", "--help"}},
		{[]string{"a"}, []string{"a"}},
	}
	for _, c := range cases {
		if got := moveCommonFlags(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("moveCommonFlags(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func runCLI(t *testing.T, args ...string) (error, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"shoelace-agent"}, args...), &stdout, &stderr)
	return err, stdout.String(), stderr.String()
}

func TestCLI_UsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"once", "--stage", "bake", "--config", "/nonexistent"}, `--stage "bake": use system or application`},
		// Which command, and where its flags are, as shoelace says them (it said the flag alone).
		{[]string{"once", "--frobnicate"}, "once: flag provided but not defined: -frobnicate (see shoelace-agent once --help)"},
		{[]string{"status", "--jsn"}, "status: flag provided but not defined: -jsn (see shoelace-agent status --help)"},
		{[]string{"validate", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"render", "--dry=false"}, "render only prints"},
		// A stray argument is refused: "once system" must not render every stage.
		{[]string{"once", "system", "--config", "/nonexistent"}, `once takes no arguments, got "system --config /nonexistent"`},
		{[]string{"validate", "--config", "/nonexistent", "extra"}, `validate takes no arguments, got "extra"`},
		// The config given as an argument, as nginx -t -c takes it, is shown how to give it; the
		// example flag is one the command takes (validate has no --stage).
		{[]string{"validate", "/etc/shoelace/agent.yaml"}, `validate takes no arguments, got "/etc/shoelace/agent.yaml": give the config with --config /etc/shoelace/agent.yaml`},
		{[]string{"status", "extra"}, `status takes no arguments, got "extra" (options are flags, such as --config FILE;`},
		{[]string{"render", "system", "--config", "/nonexistent"}, `(options are flags, such as --stage system;`},
		{[]string{"validate", "--config", ""}, "--config is empty (or SHOELACE_AGENT_CONFIG is set but empty)"},
		{[]string{"status", "-c="}, "--config is empty"},
		// Exit 1 before, where shoelace completion says 2.
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh": bash, zsh or fish`},
		{[]string{"completion"}, "name one shell"},
		// Printed nothing and exited 0 before.
		{[]string{"help", "bogus"}, `unknown command "bogus" (see shoelace-agent --help)`},
	}
	for _, c := range cases {
		err, _, _ := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != 2 {
			t.Errorf("%q: err = %v (exit %d), want a usage error with %q", c.args, err, exitCode(err), c.want)
		}
	}
}

// TestCLI_CompletionHelpSaysWhatItCompletes: the agent's completion script completes commands
// and flags (DESIGN.md: appliance names are shoelace's); its --help said "and, where the server
// is reachable, appliance names", which it never completes. A missing command lists every one.
func TestCLI_CompletionHelpSaysWhatItCompletes(t *testing.T) {
	err, stdout, _ := runCLI(t, "completion", "--help")
	if err != nil || !strings.Contains(stdout, "complete shoelace-agent's commands and flags.") || strings.Contains(stdout, "appliance names") {
		t.Fatalf("completion --help: %v\n%s", err, stdout)
	}
	err, _, _ = runCLI(t)
	for _, c := range []string{"convert-confd", "completion"} {
		if err == nil || !strings.Contains(err.Error(), c) {
			t.Errorf("no command: %v, want it to name %s", err, c)
		}
	}
}

// TestCLI_EmptyConfigEnv: SHOELACE_AGENT_CONFIG set but empty is a usage error saying so (it
// read "open : no such file or directory", exit 1).
func TestCLI_EmptyConfigEnv(t *testing.T) {
	t.Setenv("SHOELACE_AGENT_CONFIG", "")
	err, _, _ := runCLI(t, "once")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "SHOELACE_AGENT_CONFIG is set but empty") {
		t.Fatalf("err = %v (exit %d)", err, exitCode(err))
	}
	if err, _, _ := runCLI(t, "version"); err != nil {
		t.Fatalf("version: %v", err)
	}
}

func TestCLI_ConfigErrors(t *testing.T) {
	err, _, _ := runCLI(t, "validate", "--config", "/nonexistent/agent.yaml")
	if err == nil || exitCode(err) != 1 || !strings.Contains(errorLine(err), "shoelace-agent: read config") {
		t.Fatalf("err = %v", err)
	}
	// The config path also comes from $SHOELACE_AGENT_CONFIG, and works before the command.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates:\n  - contents: x\n    destination: "+dir+"/x\n"), 0o644)
	t.Setenv("SHOELACE_AGENT_CONFIG", cfg)
	err, stdout, _ := runCLI(t, "validate")
	if err != nil || !strings.Contains(stdout, cfg+": ok, 1 template") {
		t.Fatalf("validate with $SHOELACE_AGENT_CONFIG: %v %q", err, stdout)
	}
	err, stdout, _ = runCLI(t, "--config", cfg, "validate")
	if err != nil || !strings.Contains(stdout, "ok, 1 template") {
		t.Fatalf("--config before the command: %v %q", err, stdout)
	}
}

func TestCLI_Version(t *testing.T) {
	err, stdout, _ := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(stdout, "shoelace-agent dev go") {
		t.Fatalf("version: %v %q", err, stdout)
	}
	// DESIGN.md's synopsis gives every command --config FILE, version included.
	for _, args := range [][]string{{"version", "--config", "/etc/shoelace/agent.yaml"}, {"--config", "x.yaml", "version"}} {
		err, stdout, _ = runCLI(t, args...)
		if err != nil || !strings.HasPrefix(stdout, "shoelace-agent dev go") {
			t.Errorf("%q: %v %q", args, err, stdout)
		}
	}
	err, stdout, _ = runCLI(t, "--version")
	if err != nil || !strings.Contains(stdout, "shoelace-agent version dev") {
		t.Errorf("--version: %v %q", err, stdout)
	}
}

// TestCLI_ValidateWarnings: validate points out an inline token that others can read (token_file
// must be 0600 or stricter; an inline token deserves the same), a destination that is not a
// regular file, and a config without templates.
func TestCLI_ValidateWarnings(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	text := "server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates:\n  - contents: x\n    destination: " + dir + "/x\n"
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	err, stdout, _ := runCLI(t, "validate", "--config", cfg)
	if err != nil || !strings.Contains(stdout, "warning: "+cfg+": the token is inline in a file of mode 0644") || !strings.Contains(stdout, "chmod 600 "+cfg) {
		t.Fatalf("validate of a 0644 config with an inline token: %v %q", err, stdout)
	}
	os.Chmod(cfg, 0o600)
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || strings.Contains(stdout, "warning") {
		t.Fatalf("validate of a 0600 config: %v %q", err, stdout)
	}
	// A destination that is a directory: once and run would fail on it at every pass.
	if err := os.Mkdir(dir+"/x", 0o755); err != nil {
		t.Fatal(err)
	}
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || !strings.Contains(stdout, "destination "+dir+"/x is a directory, not a regular file") {
		t.Fatalf("validate of a destination that is a directory: %v %q", err, stdout)
	}
	os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\nappliance: web\ntoken: t\n"), 0o600)
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || !strings.Contains(stdout, "warning: "+cfg+": no templates configured") {
		t.Fatalf("validate without templates: %v %q", err, stdout)
	}
	// A check that names the staged file as cmd does (copied from a Windows config): sh hands
	// %SHOELACE_STAGED% on as it is.
	os.WriteFile(cfg, []byte(text+"    check: nginx -t -c %SHOELACE_STAGED%\n"), 0o600)
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || !strings.Contains(stdout, `check: %SHOELACE_STAGED% is how cmd names a variable, which sh does not expand: write "$SHOELACE_STAGED"`) {
		t.Fatalf("validate of a check written for cmd: %v %q", err, stdout)
	}
}

func TestCLI_Help(t *testing.T) {
	err, stdout, _ := runCLI(t, "--help")
	if err != nil || !strings.Contains(stdout, "/etc/shoelace/agent.yaml") || !strings.Contains(stdout, "once --stage system") {
		t.Errorf("--help does not say where the config is read from, or how to bake: %v\n%s", err, stdout)
	}
	err, stdout, _ = runCLI(t, "help", "once")
	if err != nil || !strings.Contains(stdout, "--no-commands") {
		t.Errorf("help once: %v %q", err, stdout)
	}
	// The value is named (it read "--stage value").
	if !strings.Contains(stdout, "--stage STAGE") {
		t.Errorf("help once does not name --stage's value:\n%s", stdout)
	}
}

func TestCLI_StatusJSON(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	config := "server: http://127.0.0.1:1\ntoken: t\nappliance: web\ncache_dir: " + cache +
		"\ntemplates:\n  - contents: x\n    destination: " + filepath.Join(dir, "out") + "\n"
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	// Before any sync: the agent part says so, and with no service state either it fails.
	err, stdout, _ := runCLI(t, "status", "--json", "--config", cfg)
	var got statusJSON
	if jerr := json.Unmarshal([]byte(stdout), &got); jerr != nil {
		t.Fatalf("status --json printed %q: %v", stdout, jerr)
	}
	if got.Agent != nil || !strings.Contains(got.AgentError, "has not run") {
		t.Errorf("before a sync: agent %+v, error %q", got.Agent, got.AgentError)
	}
	if got.Service == nil && err == nil {
		t.Error("neither the service nor the agent could be read, yet status --json exited 0")
	}

	status := `{"appliance":"web","instance":"vm1","store":"s1","revision":42,"applied":41,` +
		`"last_error":"render /x: key \"a\" is not in the view","templates":[{"destination":"/x","in_place":false,"error":"missing key a"}]}`
	if err := os.WriteFile(filepath.Join(cache, "web.status.json"), []byte(status), 0o600); err != nil {
		t.Fatal(err)
	}
	err, stdout, _ = runCLI(t, "status", "--json", "--config", cfg)
	if err != nil {
		t.Fatalf("status --json with a recorded status: %v", err)
	}
	got = statusJSON{}
	if jerr := json.Unmarshal([]byte(stdout), &got); jerr != nil {
		t.Fatalf("status --json printed %q: %v", stdout, jerr)
	}
	if got.Agent == nil || got.Agent.Revision != 42 || got.Agent.Applied != 41 || got.Agent.LastError == "" ||
		len(got.Agent.Templates) != 1 || got.Agent.Templates[0].InPlace {
		t.Errorf("agent status = %+v", got.Agent)
	}
	if got.Service == nil && got.ServiceError == "" {
		t.Error("the service state is neither reported nor explained")
	}

	// The text form shows what the JSON shows, and exits 0 without systemd too.
	err, stdout, _ = runCLI(t, "status", "--config", cfg)
	if err != nil {
		t.Fatalf("status with a recorded status: %v\n%s", err, stdout)
	}
	wants := []string{"appliance web, instance vm1: revision 42", "applied 41", `last error: render /x: key "a" is not in the view`, "/x: NOT in place: missing key a"}
	if got.Service == nil {
		// Said as what it is (the state could not be read), once, without the command's name.
		wants = append(wants, "service: state unknown: ")
		if strings.Contains(stdout, "not installed") || strings.Contains(stdout, "shoelace-agent status:") {
			t.Errorf("status without a readable service state printed:\n%s", stdout)
		}
	}
	for _, want := range wants {
		if !strings.Contains(stdout, want) {
			t.Errorf("status printed:\n%s\nwant a line with %q", stdout, want)
		}
	}
}

// TestCLI_TemplatesDirYmlNotRead: templates_dir reads *.yaml files only; an entry list saved as
// b.yml (or B.YAML) was skipped without a word, and validate said "ok" with its templates left
// out. validate now names each such file and the name it would be read under, and once logs it.
func TestCLI_TemplatesDirYmlNotRead(t *testing.T) {
	dir := t.TempDir()
	td := filepath.Join(dir, "templates.d")
	if err := os.Mkdir(td, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := func(name string) string { return "- contents: x\n  destination: " + filepath.Join(dir, name) + "\n" }
	for name, text := range map[string]string{"a.yaml": entry("a"), "b.yml": entry("b"), "C.YAML": entry("c"), "notes.txt": "not a template list\n"} {
		if err := os.WriteFile(filepath.Join(td, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates_dir: "+td+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err, stdout, _ := runCLI(t, "validate", "--config", cfg)
	if err != nil || !strings.Contains(stdout, "ok, 1 template") {
		t.Fatalf("validate: %v %q", err, stdout)
	}
	for _, want := range []string{
		"warning: " + cfg + ": templates_dir: " + filepath.Join(td, "b.yml") + " is not read: only *.yaml files are (rename it b.yaml)",
		"warning: " + cfg + ": templates_dir: " + filepath.Join(td, "C.YAML") + " is not read: only *.yaml files are (rename it C.yaml)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("validate does not say %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "notes.txt") || strings.Contains(stdout, "a.yaml is not read") {
		t.Errorf("validate warns about a file that is no template list, or one that is read:\n%s", stdout)
	}
	// The other commands log it: once fails on the unreachable server, after saying so.
	_, _, stderr := runCLI(t, "once", "--config", cfg)
	if !strings.Contains(stderr, `is not read: only *.yaml files are (rename it b.yaml)`) {
		t.Errorf("once does not log the file it leaves out:\n%s", stderr)
	}
}

// TestCLI_ValidateWarnsUnsetVariable: a check that names a variable the agent does not set
// ("$SHOELACE_STAGE", a typo of SHOELACE_STAGED; or SHOELACE_STAGED in a command, which runs
// once the staged file is in place) got it empty, without a word: `test -s "$SHOELACE_STAGE"`
// passed every file, and `cp "$SHOELACE_STAGED" …` copied nothing. validate now warns, naming
// the variable, where it is written and the variables the agent sets there; the agent's own
// variables, in each shell's syntax, are not warned about.
func TestCLI_ValidateWarnsUnsetVariable(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	head := "server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates:\n  - contents: x\n    destination: " + dir + "/x\n"
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(head+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`    check: test -s "$SHOELACE_STAGE"` + "\n")
	err, stdout, _ := runCLI(t, "validate", "--config", cfg)
	if want := `check: SHOELACE_STAGE is not a variable the agent sets for a check, so it is empty there; the agent sets SHOELACE_STAGED, SHOELACE_DESTINATION, SHOELACE_APPLIANCE, SHOELACE_INSTANCE and SHOELACE_REVISION`; err != nil || !strings.Contains(stdout, "warning: "+cfg+":5: template "+dir+"/x: "+want) {
		t.Errorf("validate of a check naming $SHOELACE_STAGE: %v\n%s\nwant a warning %q", err, stdout, want)
	}
	write(`    command: cp "${SHOELACE_STAGED}" /tmp/copy; systemctl reload x` + "\n    health: test -n \"$SHOELACE_DESTINATION\"\n")
	err, stdout, _ = runCLI(t, "validate", "--config", cfg)
	for _, want := range []string{
		`command: SHOELACE_STAGED is not a variable the agent sets for a command, so it is empty there; the agent sets SHOELACE_APPLIANCE, SHOELACE_INSTANCE, SHOELACE_REVISION and SHOELACE_DESTINATIONS`,
		`health: SHOELACE_DESTINATION is not a variable the agent sets for a health command, so it is empty there; the agent sets SHOELACE_APPLIANCE, SHOELACE_INSTANCE, SHOELACE_REVISION and SHOELACE_DESTINATIONS`,
	} {
		if err != nil || !strings.Contains(stdout, want) {
			t.Errorf("validate: %v\n%s\nwant a warning %q", err, stdout, want)
		}
	}
	// What the agent sets, as sh writes it, is no warning.
	write(`    check: test -s "$SHOELACE_STAGED" && test "${SHOELACE_DESTINATION}" != "" && echo $SHOELACE_APPLIANCE $SHOELACE_INSTANCE $SHOELACE_REVISION` +
		"\n    command: echo $SHOELACE_DESTINATIONS $SHOELACE_REVISION\n    health: echo $SHOELACE_DESTINATIONS; grep SHOELACE_FOO /etc/x\n")
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || strings.Contains(stdout, "warning") {
		t.Errorf("validate of checks and commands naming the agent's variables: %v\n%s", err, stdout)
	}
}

// TestCLI_CompletionOffersOnlyAcceptedFlags: the completion of a command's flags offered
// --version, which only the program takes before a command (`shoelace-agent once --version`
// is a usage error, exit 2). It is offered there only.
func TestCLI_CompletionOffersOnlyAcceptedFlags(t *testing.T) {
	err, stdout, _ := runCLI(t, "__complete", "--", "--")
	if err != nil || !slices.Contains(strings.Fields(stdout), "--version") {
		t.Errorf("shoelace-agent --<TAB>: %v %q; want --version among them", err, stdout)
	}
	for _, words := range [][]string{{"once"}, {"validate", "--config", "x"}, {"--config", "x", "status"}} {
		err, stdout, _ := runCLI(t, append(append([]string{"__complete"}, words...), "--", "--")...)
		got := strings.Fields(stdout)
		if err != nil || slices.Contains(got, "--version") || !slices.Contains(got, "--config") {
			t.Errorf("shoelace-agent %s --<TAB> = %q (%v); want the command's flags, without --version", strings.Join(words, " "), got, err)
		}
		args := append(append([]string{}, words...), "--version")
		if err, _, _ := runCLI(t, args...); err == nil {
			t.Errorf("shoelace-agent %s is taken: complete it", strings.Join(args, " "))
		}
	}
}

// TestCLI_ValidateWarnsParentNotADirectory: a destination below a regular file
// (/etc/app.conf/x, a typo for /etc/app.conf.d/x) failed at every once and run pass ("create
// directory: … not a directory") while validate said ok. It warns now, as about a destination
// that is a directory.
func TestCLI_ValidateWarnsParentNotADirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(filepath.Join(dir, "app.conf"), []byte("a file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	text := "server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates:\n  - contents: x\n    destination: " + dir + "/app.conf/sub/x\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	err, stdout, _ := runCLI(t, "validate", "--config", cfg)
	want := "destination " + dir + "/app.conf/sub/x: " + dir + "/app.conf is a regular file, not a directory: every render of it will fail until it is moved away"
	if err != nil || !strings.Contains(stdout, want) {
		t.Errorf("validate: %v\n%s\nwant a warning %q", err, stdout, want)
	}
	// A directory not made yet is no warning: the install makes it.
	os.WriteFile(cfg, []byte(strings.Replace(text, "/app.conf/sub/x", "/new/sub/x", 1)), 0o600)
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || strings.Contains(stdout, "warning") {
		t.Errorf("validate of a destination whose directory is not made yet: %v\n%s", err, stdout)
	}
}

// validate warns about a backup whose .bak name is a directory: the install renames the
// previous content there, and fails at every pass. Before, validate said ok.
func TestCLI_ValidateWarnsBackupOverADirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.Mkdir(filepath.Join(dir, "app.conf.bak"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := "server: http://127.0.0.1:1\nappliance: web\ntoken: t\ntemplates:\n  - contents: x\n    destination: " + dir + "/app.conf\n    backup: true\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	err, stdout, _ := runCLI(t, "validate", "--config", cfg)
	want := "backup keeps the previous content as " + dir + "/app.conf.bak, which is a directory"
	if err != nil || !strings.Contains(stdout, want) {
		t.Errorf("validate: %v\n%s\nwant a warning %q", err, stdout, want)
	}
	// Without backup, the directory is nobody's business.
	os.WriteFile(cfg, []byte(strings.Replace(text, "    backup: true\n", "", 1)), 0o600)
	if err, stdout, _ = runCLI(t, "validate", "--config", cfg); err != nil || strings.Contains(stdout, "warning") {
		t.Errorf("validate without backup: %v\n%s", err, stdout)
	}
}
