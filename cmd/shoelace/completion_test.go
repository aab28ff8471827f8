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
	complete := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(quoted, " ") + `); COMP_CWORD=` + itoa(len(words)-1) +
			`; _shoelace_complete; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", prog, "bash", filepath.Join(dir, "shoelace.bash"))
		cmd.Env = append(append(cleanEnv(), c.env...), "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
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
