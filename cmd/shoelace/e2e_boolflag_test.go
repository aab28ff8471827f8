package main

import "testing"

// "--ui false" (a value given to an on/off flag with a space, as other flags take theirs) is a
// usage error that shows how to write it; it said only "too many arguments [\"false\"]".
func TestE2E_BoolFlagValueWithASpaceShowsHow(t *testing.T) {
	c := &runner{t: t}
	c.fails(exitUsage, `too many arguments ["false"] (usage: shoelace server [flags]); "false" is not the value of the flag before it: write --ui=false`,
		"server", "--data-dir", t.TempDir(), "--ui", "false")
	s := sharedServer(t)
	cli := newCLI(t, s)
	cli.fails(exitUsage, `"true" is not the value of the flag before it: write --recurse=true`, "kv", "rm", "shared/boolflag", "--recurse", "true")
	// No flag before it: no hint.
	r := cli.fails(exitUsage, `kv get: too many arguments ["true"] (usage: shoelace kv get KEY)`, "kv", "get", "shared/boolflag", "true")
	if r.stderr != "shoelace: kv get: too many arguments [\"true\"] (usage: shoelace kv get KEY)\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}
