package main

import (
	"strings"
	"testing"
)

// A flag given a value of the wrong kind is a usage error that names the flag as the user wrote
// it and what it takes: the flag package said `invalid value "5" for flag -interval: parse
// error`, naming neither (found by a CLI walk: "appliance wait --interval 5" wants 5s).
func TestE2E_FlagValueErrorsNameWhatTheFlagTakes(t *testing.T) {
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=http://127.0.0.1:1", "SHOELACE_TOKEN=x"}}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"appliance", "wait", "web", "--interval", "5"}, `appliance wait: --interval "5" is not a duration: give its unit, such as 30s or 5m (see shoelace appliance wait --help)`},
		{[]string{"kv", "put", "shared/a", "1", "--cas", "abc"}, `kv put: --cas "abc" is not a whole number (see shoelace kv put --help)`},
		{[]string{"appliance", "history", "web", "--before=x"}, `appliance history: --before "x" is not a whole number`},
		{[]string{"kv", "put", "shared/a", "1", "--cas", "99999999999999999999999"}, `kv put: --cas "99999999999999999999999" is out of range`},
		{[]string{"kv", "rm", "shared/a", "--recurse=maybe"}, `kv rm: --recurse "maybe" is not true or false`},
		{[]string{"--timeout", "5", "kv", "get", "shared/a"}, `--timeout "5" is not a duration`},
	} {
		c.fails(2, tc.want, tc.args...)
	}
}

// A kv put VALUE that starts with '-' and is no flag name (JVM options, a command line) is told
// where it goes, as a negative number is: "-Xmx512m" got only "flag provided but not defined"
// (found by a CLI walk). A misspelt flag is not taken for a value.
func TestE2E_KvPutDashValueSaysWhereItGoes(t *testing.T) {
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=http://127.0.0.1:1", "SHOELACE_TOKEN=x"}}
	const hint = `(a VALUE that starts with '-' goes after "--": shoelace kv put KEY -- VALUE)`
	c.fails(2, "flag provided but not defined: -Xmx512m "+hint, "kv", "put", "appliances/web/jvm", "-Xmx512m")
	c.fails(2, hint, "kv", "put", "appliances/web/args", "--verbose --port 80")
	// A word quoted whole with a space in it is a value, not a short flag glued to its value:
	// "-m x" was told to go as "-m  x".
	c.fails(2, "flag provided but not defined: -m x "+hint, "kv", "put", "appliances/web/args", "-m x")
	c.fails(2, "flag provided but not defined: -o\tjson "+hint, "kv", "put", "appliances/web/args", "-o\tjson")
	c.fails(2, "flag provided but not defined: -Djava.awt.headless "+hint, "kv", "put", "appliances/web/jvm", "-Djava.awt.headless=true")
	if r := c.run("kv", "put", "appliances/web/port", "1", "--cass", "0"); r.code != 2 || strings.Contains(r.stderr, "goes after") {
		t.Errorf("kv put … --cass 0: %s; want exit 2 without the VALUE hint", r)
	}
}

// A flag that takes a value given none, as the last word, points to the command's help as the
// other usage errors do: "flag needs a value: --cas" said neither the command nor where to look
// (found by a CLI walk).
func TestE2E_FlagWithoutValueSaysSeeHelp(t *testing.T) {
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=http://127.0.0.1:1", "SHOELACE_TOKEN=x"}}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kv", "put", "shared/a", "1", "--cas"}, "shoelace: kv put: flag needs a value: --cas (see shoelace kv put --help)\n"},
		{[]string{"kv", "get", "shared/a", "--addr"}, "shoelace: kv get: flag needs a value: --addr (see shoelace kv get --help)\n"},
		{[]string{"appliance", "--output"}, "shoelace: appliance: flag needs a value: --output (see shoelace appliance --help)\n"},
		{[]string{"-o"}, "shoelace: flag needs a value: -o (see shoelace --help)\n"},
	} {
		if r := c.run(tc.args...); r.code != 2 || r.stderr != tc.want {
			t.Errorf("%q: %s; want exit 2 and stderr %q", tc.args, r, tc.want)
		}
	}
}
