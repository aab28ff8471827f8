package main

import (
	"strings"
	"testing"
)

// An --addr that can only be a mistake is a usage error that says what to give instead, and no
// request goes out. Before, a query went out with every request (exit 1, "unknown query parameter
// x", as if the command were wrong), a port over 65535 failed as "cannot reach the server" (exit 6:
// retry, which never helps), and a user and password were taken without a word and printed in
// every error after.
func TestE2E_MalformedAddrIsAUsageError(t *testing.T) {
	c := &runner{t: t, env: []string{"SHOELACE_TOKEN=sl_not-sent"}}
	for addr, want := range map[string]string{
		"http://127.0.0.1:7400?x=1":         `has a query (?x=1)`,
		"http://127.0.0.1:7400/?":           `has a query (?)`,
		"http://127.0.0.1:7400#top":         `has a fragment (#top)`,
		"http://ci:hunter2@127.0.0.1:7400":  `"http://ci:xxxxx@127.0.0.1:7400" holds a user or password: give the token with --token-file`,
		"http://127.0.0.1:99999":            `port 99999 is not a port (1 to 65535)`,
		"127.0.0.1:0":                       `port 0 is not a port (1 to 65535)`,
		"https://shoelace.example:70000/v2": `port 70000 is not a port`,
	} {
		r := c.fails(exitUsage, want, "kv", "get", "shared/x", "--addr", addr)
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("--addr %s: the password is in the error: %s", addr, r.stderr)
		}
		c.with("SHOELACE_ADDR="+addr).fails(exitUsage, want, "health")
	}
}
