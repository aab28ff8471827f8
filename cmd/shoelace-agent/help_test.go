//go:build !windows

package main

import (
	"regexp"
	"strings"
	"testing"
)

// Every command's --help says what it does and shows it run (an EXAMPLES line that runs that
// very command). Before, only completion's did: "shoelace-agent once --help" gave one line and
// the flags, so a new user learnt from it neither the exit codes bake scripts rely on nor how
// it is run.
func TestHelp_EveryCommandDescribedWithAnExample(t *testing.T) {
	err, top, _ := runCLI(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(top, "COMMANDS:\n")
	if !ok {
		t.Fatalf("--help lists no commands:\n%s", top)
	}
	list, _, _ = strings.Cut(list, "\n\n")
	names := regexp.MustCompile(`(?m)^   ([a-z-]+)`).FindAllStringSubmatch(list, -1)
	if len(names) < 12 {
		t.Fatalf("found %d commands in --help, want every one:\n%s", len(names), list)
	}
	for _, m := range names {
		name := m[1]
		if name == "help" {
			continue
		}
		err, out, _ := runCLI(t, name, "--help")
		if err != nil {
			t.Errorf("%s --help: %v", name, err)
			continue
		}
		i := strings.Index(out, "DESCRIPTION:")
		if i < 0 {
			t.Errorf("%s --help says only its one line and flags:\n%s", name, out)
			continue
		}
		desc := out[i:]
		ran := regexp.MustCompile(`(?m)^\s+(sudo )?shoelace-agent ` + regexp.QuoteMeta(name) + `\b`)
		if !ran.MatchString(desc) {
			t.Errorf("%s --help shows no example of shoelace-agent %s:\n%s", name, name, out)
		}
	}
}
