//go:build !windows

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCLI_CompletionOffersFlagValues: `shoelace-agent once --stage <TAB>` offered nothing (and
// `--config <TAB>` offered the commands, as if the file were one). A flag with fixed choices
// offers them; another flag's value offers nothing, so that the shell completes a file.
func TestCLI_CompletionOffersFlagValues(t *testing.T) {
	for _, c := range []struct {
		words []string
		cur   string
		want  []string
	}{
		{[]string{"once", "--stage"}, "", []string{"system", "application"}},
		{[]string{"once", "--stage"}, "s", []string{"system"}},
		{[]string{"once", "--no-commands", "--stage"}, "app", []string{"application"}},
		{[]string{"render", "--stage"}, "", []string{"system", "application"}},
		{[]string{"--config", "x", "once", "--stage"}, "", []string{"system", "application"}},
		{[]string{"once", "--log-level"}, "", []string{"debug", "info", "warn", "error"}},
		{[]string{"--log-level"}, "w", []string{"warn"}},
		{[]string{"once", "--stage"}, "bake", nil},
		{[]string{"--config"}, "", nil},
		{[]string{"once", "-c"}, "", nil},
		// The value given, the next word is what it was.
		{[]string{"once", "--stage", "system"}, "--no", []string{"--no-commands"}},
		{[]string{"--config", "x"}, "on", []string{"once"}},
		// The value written in the flag's word: offered in that form (nothing was).
		{[]string{"once"}, "--stage=", []string{"--stage=system", "--stage=application"}},
		{[]string{"render", "--dry"}, "--stage=a", []string{"--stage=application"}},
		{nil, "--log-level=w", []string{"--log-level=warn"}},
		{[]string{"once"}, "--config=", nil},
		{[]string{"once"}, "--stage=bake", nil},
	} {
		args := append(append(append([]string{"__complete"}, c.words...), "--"), c.cur)
		err, stdout, _ := runCLI(t, args...)
		if got := strings.Fields(stdout); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shoelace-agent %s %s<TAB> = %q (%v), want %q", strings.Join(c.words, " "), c.cur, got, err, c.want)
		}
	}
}

// TestE2E_CompletionBashFlagValueInItsWord: in a real bash, `once --stage=s<TAB>` completes to
// system, which bash puts after the = (COMP_WORDBREAKS holds it): the script offered nothing,
// and bash offered the files of the directory instead.
func TestE2E_CompletionBashFlagValueInItsWord(t *testing.T) {
	needBinaries(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here: the completion script cannot be run")
	}
	err, script, _ := runCLI(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "agent.bash"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := `source "$1"; COMP_LINE=$2; COMP_POINT=${#COMP_LINE}; _shoelace_agent_complete; printf '%s\n' "${COMPREPLY[@]}"`
	for line, want := range map[string][]string{
		"shoelace-agent once --stage=s":     {"system"},
		"shoelace-agent once --stage=":      {"system", "application"},
		"shoelace-agent once --log-level=w": {"warn"},
		"shoelace-agent once --st":          {"--stage"},
		"shoelace-agent once --config=/":    nil,
	} {
		cmd := exec.Command(bash, "-c", prog, "bash", filepath.Join(dir, "agent.bash"), line)
		cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		if got := strings.Fields(string(out)); !slices.Equal(got, want) {
			t.Errorf("%s<TAB> = %q, want %q", line, got, want)
		}
	}
}
