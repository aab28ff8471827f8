package main

import "testing"

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
