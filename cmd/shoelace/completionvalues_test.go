package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// A flag with fixed choices completes them (`shoelace appliance export web --format <TAB>`);
// another flag's value completes nothing of shoelace's, so that the shell completes a file
// (`shoelace --addr <TAB>` offered the commands).
func TestCLI_CompletionOffersFlagValues(t *testing.T) {
	for _, c := range []struct {
		words []string
		cur   string
		want  []string
	}{
		{[]string{"appliance", "export", "web", "--format"}, "", []string{"json", "yaml"}},
		{[]string{"appliance", "export", "--format"}, "y", []string{"yaml"}},
		{[]string{"server", "--log-level"}, "", []string{"debug", "info", "warn", "error"}},
		{[]string{"--addr"}, "", nil},
		{[]string{"appliance", "schema", "set", "-f"}, "", nil},
		{[]string{"appliance", "schema", "set", "-f", "x.json"}, "", nil},
	} {
		var stdout, stderr bytes.Buffer
		args := append(append(append([]string{"shoelace", "__complete"}, c.words...), "--"), c.cur)
		err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
		if got := strings.Fields(stdout.String()); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shoelace %s %s<TAB> = %q (%v, %s), want %q", strings.Join(c.words, " "), c.cur, got, err, stderr.String(), c.want)
		}
	}
}
