package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The bash script, loaded in a real bash, completes commands, flags and — from the server —
// appliance names: `shoelace appliance get w<TAB>`.
func TestE2E_CompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here: the completion script cannot be run")
	}
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/web-compl/port", "80")
	script := c.ok("completion", "bash")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "shoelace.bash"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	// The script calls shoelace by name: put the binary first on PATH.
	if err := os.Symlink(binPath, filepath.Join(dir, "shoelace")); err != nil {
		t.Fatal(err)
	}
	// As bash calls it: COMP_LINE and COMP_POINT (and COMP_WORDS, split at : and = too, which
	// the script does not use).
	completeEnv := func(line string, env []string) []string {
		t.Helper()
		prog := `source "$1"; COMP_LINE=$2; COMP_POINT=${#COMP_LINE}; _shoelace_complete; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", prog, "bash", filepath.Join(dir, "shoelace.bash"), line)
		cmd.Env = append(env, "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	complete := func(line string) []string { return completeEnv(line, append(cleanEnv(), c.env...)) }
	// --addr and --token-file typed on the line, none in the environment: the names come from
	// that server.
	typed := "shoelace --addr " + s.url() + " appliance get --token-file " + s.adminTokenFile() + " web-c"
	if got := completeEnv(typed, cleanEnv()); !slices.Equal(got, []string{"web-compl"}) {
		t.Fatalf("%s<TAB> = %v", typed, got)
	}
	if got := complete("shoelace app"); !slices.Equal(got, []string{"appliance"}) {
		t.Fatalf("shoelace app<TAB> = %v", got)
	}
	if got := complete("shoelace appliance roll"); !slices.Equal(got, []string{"rollout", "rollback"}) {
		t.Fatalf("shoelace appliance roll<TAB> = %v", got)
	}
	if got := complete("shoelace appliance get web-c"); !slices.Equal(got, []string{"web-compl"}) {
		t.Fatalf("shoelace appliance get web-c<TAB> = %v", got)
	}
	if got := complete("shoelace kv put --ca"); !slices.Contains(got, "--canary") || !slices.Contains(got, "--cas") {
		t.Fatalf("shoelace kv put --ca<TAB> = %v", got)
	}
	for _, sh := range []string{"zsh", "fish"} {
		if out := c.ok("completion", sh); !strings.Contains(out, "shoelace __complete") {
			t.Fatalf("completion %s: %s", sh, out)
		}
	}
	c.fails(exitUsage, "bash, zsh or fish", "completion", "tcsh")
}

func itoa(n int) string { return strconv.Itoa(n) }

// The zsh script, installed as the packages install it (a file _shoelace in $fpath, autoloaded
// at the first TAB), completes on that first call, and the fish script completes through fish's
// own `complete -C`: appliance names from the server, commands, and files where nothing else
// fits.
func TestE2E_CompletionZshFish(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/web-zf/port", "80")
	dir := t.TempDir()
	if err := os.Symlink(binPath, filepath.Join(dir, "shoelace")); err != nil {
		t.Fatal(err)
	}
	env := append(append(cleanEnv(), c.env...), "PATH="+dir+":"+os.Getenv("PATH"))
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(shell string, args ...string) []string {
		t.Helper()
		cmd := exec.Command(shell, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", shell, err, out)
		}
		return strings.Fields(string(out))
	}
	t.Run("zsh", func(t *testing.T) {
		zsh, err := exec.LookPath("zsh")
		if err != nil {
			t.Skip("no zsh here (.ci/run installs it): the zsh script cannot be run")
		}
		fpath := filepath.Join(dir, "zfunc")
		if err := os.Mkdir(fpath, 0o755); err != nil {
			t.Fatal(err)
		}
		write("zfunc/_shoelace", c.ok("completion", "zsh"))
		// compadd and _files exist only inside a completion widget: these stand-ins print what
		// they are given. The first call of the autoloaded _shoelace is the first TAB.
		complete := func(line string) []string {
			words := strings.Fields(line)
			if strings.HasSuffix(line, " ") {
				words = append(words, "")
			}
			prog := `fpath=(` + fpath + ` $fpath); autoload -Uz _shoelace
compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }
_files() { print FILES }
compdef() { print compdef $* }
words=(` + quoteAll(words) + `); CURRENT=` + itoa(len(words)) + `; _shoelace`
			return run(zsh, "-f", "-c", prog)
		}
		if got := complete("shoelace appliance get web-z"); !slices.Equal(got, []string{"web-zf"}) {
			t.Fatalf("zsh, first TAB: shoelace appliance get web-z<TAB> = %v", got)
		}
		if got := complete("shoelace appl"); !slices.Equal(got, []string{"appliance"}) {
			t.Fatalf("zsh: shoelace appl<TAB> = %v", got)
		}
		if got := complete("shoelace appliance apply web-zf -f "); !slices.Equal(got, []string{"FILES"}) {
			t.Fatalf("zsh: shoelace appliance apply web-zf -f <TAB> = %v, want files", got)
		}
		// Sourced (source <(shoelace completion zsh)), it registers itself.
		if got := run(zsh, "-f", "-c", `compdef() { print compdef $* }; source `+write("shoelace.zsh", c.ok("completion", "zsh"))); !slices.Equal(got, []string{"compdef", "_shoelace", "shoelace"}) {
			t.Fatalf("zsh, sourced: %v", got)
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish, err := exec.LookPath("fish")
		if err != nil {
			t.Skip("no fish here (.ci/run installs it): the fish script cannot be run")
		}
		script := write("shoelace.fish", c.ok("completion", "fish"))
		write("web-zf.yaml", "keys: {}\n")
		complete := func(line string) []string {
			return run(fish, "--no-config", "-c", "source "+script+"; complete -C'"+line+"'")
		}
		if got := complete("shoelace appliance get web-z"); !slices.Equal(got, []string{"web-zf"}) {
			t.Fatalf("fish: shoelace appliance get web-z<TAB> = %v", got)
		}
		if got := complete("shoelace kv put --ca"); !slices.Contains(got, "--canary") || !slices.Contains(got, "--cas") {
			t.Fatalf("fish: shoelace kv put --ca<TAB> = %v", got)
		}
		if got := complete("shoelace appliance apply web-zf -f " + dir + "/web-"); !slices.Equal(got, []string{dir + "/web-zf.yaml"}) {
			t.Fatalf("fish: a file after -f = %v", got)
		}
	})
}

func quoteAll(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + w + "'"
	}
	return strings.Join(q, " ")
}
