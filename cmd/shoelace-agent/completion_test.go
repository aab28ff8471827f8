//go:build !windows

package main

import (
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
	} {
		args := append(append(append([]string{"__complete"}, c.words...), "--"), c.cur)
		err, stdout, _ := runCLI(t, args...)
		if got := strings.Fields(stdout); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shoelace-agent %s %s<TAB> = %q (%v), want %q", strings.Join(c.words, " "), c.cur, got, err, c.want)
		}
	}
}
