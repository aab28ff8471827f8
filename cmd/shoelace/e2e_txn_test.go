package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2E_Txn: shoelace txn -f FILE|- writes every op or none, a guard that does not hold is exit 4
// with nothing written, and a file that is not a transaction is refused before any request.
func TestE2E_Txn(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	t.Cleanup(func() { c.run("kv", "rm", "appliances/e2etxn", "--recurse") })
	c.ok("kv", "put", "appliances/e2etxn/old", "x")

	file := filepath.Join(t.TempDir(), "change.json")
	body := `{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "8081"},
	                  {"op": "put", "key": "appliances/e2etxn/host", "value": "web.example"},
	                  {"op": "delete", "key": "appliances/e2etxn/old"}]}`
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	rev := revisionOf(t, c.ok("txn", "-f", file, "-m", "port and host"))
	for k, want := range map[string]string{"port": "8081", "host": "web.example"} {
		if got := c.ok("kv", "get", "appliances/e2etxn/"+k); got != want {
			t.Errorf("%s = %q after the txn, want %q", k, got, want)
		}
	}
	c.fails(exitNotFound, "not found", "kv", "get", "appliances/e2etxn/old")

	// A guard that does not hold: exit 4, and the put beside it is not written.
	stale := `{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "9999"}],
	           "guards": [{"key": "appliances/e2etxn/port", "mod_revision": ` + strconv.FormatInt(rev-1, 10) + `}]}`
	checkFailure(t, c.runStdin([]byte(stale), "txn", "-f", "-"), exitConflict, "appliances/e2etxn/port", []string{"txn", "-f", "-"})
	if got := c.ok("kv", "get", "appliances/e2etxn/port"); got != "8081" {
		t.Errorf("a txn refused by its guard changed port to %q", got)
	}

	// Not a transaction: usage of the file, said before any request; nothing written.
	for _, bad := range []struct{ body, want string }{
		{"", "empty"},
		{`{"ops": []}`, "no ops"},
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "valeu": "1"}]}`, `unknown field "valeu"`},
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "1"}]} {}`, "more than one JSON value"},
		{`port: 1`, "not a transaction"},
		// What the server refuses in a body is refused here too, never rewritten.
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "a\ud800b"}]}`, "is a lone UTF-16 surrogate"},
		{"{\"ops\": [{\"op\": \"put\", \"key\": \"appliances/e2etxn/port\", \"value\": \"\xff\"}]}", "not valid UTF-8"},
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "1", "value": "2"}]}`, `member "value" is given twice`},
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "value": "1"}], "guards": [{"key": "appliances/e2etxn/absent"}]}`, "guard 1: mod_revision is missing"},
		// A member in another case is taken by encoding/json for the field: the server refuses it
		// (400 invalid_body), so the CLI, which decodes and sends the body again, must too.
		{`{"ops": [{"op": "put", "key": "appliances/e2etxn/port", "Key": "appliances/e2etxn/other", "value": "1"}]}`, `member "Key" (at byte 56) is not "key"`},
		{`{"ops": [{"op": "put", "KEY": "appliances/e2etxn/other", "value": "1"}]}`, `is not "key"`},
	} {
		checkFailure(t, c.runStdin([]byte(bad.body), "txn", "-f", "-"), exitError, bad.want, []string{"txn", "-f", "-", bad.body})
	}
	if got := c.ok("kv", "get", "appliances/e2etxn/port"); got != "8081" {
		t.Errorf("a refused txn file changed port to %q", got)
	}
	c.fails(exitUsage, "missing -f FILE", "txn")
	// A message or source the server would refuse (a release keeps it on one line) is a usage
	// error before any request, not "cannot reach the server".
	c.fails(exitUsage, "--message: header X-Shoelace-Message has the control character U+000A", "txn", "-f", file, "-m", "line1\nline2")
	c.fails(exitUsage, "--source: header X-Shoelace-Source has the control character U+0007", "kv", "put", "appliances/e2etxn/port", "1", "--source", "a\x07")
	c.fails(exitUsage, "--step needs --canary", "txn", "-f", file, "--step", "50%")
	// Reads send no message: a pipeline that exports its commit message (several lines) in
	// SHOELACE_MESSAGE can still read; only its writes are refused (its reads were too).
	multi := c.with("SHOELACE_MESSAGE=fix: the port\n\nlonger body")
	if got := multi.ok("kv", "get", "appliances/e2etxn/port"); got != "8081" {
		t.Errorf("kv get with a multi-line SHOELACE_MESSAGE = %q", got)
	}
	multi.ok("appliance", "get", "e2etxn")
	multi.fails(exitUsage, "--message: header X-Shoelace-Message has the control character U+000A", "kv", "put", "appliances/e2etxn/port", "9")
	if got := c.ok("kv", "get", "appliances/e2etxn/port"); got != "8081" {
		t.Errorf("a refused kv put changed port to %q", got)
	}
}

// TestE2E_TxnCanary: shoelace txn --canary starts a rollout of the one appliance its ops are under
// instead of writing its live keys; a txn over two appliances with --canary is refused by the server.
func TestE2E_TxnCanary(t *testing.T) {
	name := fmt.Sprintf("e2etxnc-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	s := sharedServer(t)
	c := newCLI(t, s)
	t.Cleanup(func() {
		c.run("appliance", "rollout", "abort", name)
		c.run("kv", "rm", "appliances/"+name, "--recurse", "--force")
		c.run("kv", "rm", "shared/"+name+"-ntp", "--force")
	})
	c.ok("kv", "put", "appliances/"+name+"/port", "80")
	cl := adminClient(t, s)
	for _, vm := range []string{"vm-1", "vm-2"} {
		if _, err := cl.Enroll(context.Background(), name, vm, ""); err != nil {
			t.Fatal(err)
		}
	}
	change := `{"ops": [{"op": "put", "key": "appliances/` + name + `/port", "value": "8081"}]}`
	r := c.runStdin([]byte(change), "txn", "-f", "-", "--canary", "50%", "--manual")
	if r.code != 0 || !strings.Contains(r.stderr, "rollout ") || !strings.Contains(r.stderr, "1 of 2 instances") {
		t.Fatalf("txn --canary: %s; want a rollout started for 1 of 2 instances", r)
	}
	revisionOf(t, r.stdout)
	if got := c.ok("kv", "get", "appliances/"+name+"/port"); got != "80" {
		t.Errorf("txn --canary changed the live key to %q before any promotion", got)
	}
	if st := c.ok("appliance", "rollout", "status", name, "-o", "json"); !strings.Contains(st, `"state":"running"`) || !strings.Contains(st, `"kind":"txn"`) {
		t.Errorf("rollout status after txn --canary: %s", st)
	}
	// A staged shared/ change while the appliance's rollout runs: refused (one rollout per
	// appliance at a time); once it ended, the txn starts a shared group, nothing is written to
	// shared/ yet, and aborting the appliance's rollout ends the group without writing it.
	shared := `{"ops": [{"op": "put", "key": "shared/` + name + `-ntp", "value": "time.example"}]}`
	checkFailure(t, c.runStdin([]byte(shared), "txn", "-f", "-", "--canary", "50%"), exitUnknown, "rollout", []string{"txn", "--canary", shared})
	c.ok("appliance", "rollout", "abort", name)
	r = c.runStdin([]byte(shared), "txn", "-f", "-", "--canary", "50%", "--manual")
	if r.code != 0 || !strings.Contains(r.stderr, "shared rollout group") || !strings.Contains(r.stderr, "of "+name+" started") {
		t.Fatalf("shared txn --canary: %s; want a shared rollout group with %s in it", r, name)
	}
	revisionOf(t, r.stdout)
	c.fails(exitNotFound, "not found", "kv", "get", "shared/"+name+"-ntp")
	c.ok("appliance", "rollout", "abort", name)
	c.fails(exitNotFound, "not found", "kv", "get", "shared/"+name+"-ntp")
	// --cas beside --canary is a usage error before any request (the server refuses the pair
	// too: TestRollout_BadInput): no group starts.
	c.fails(exitUsage, "--cas and --canary do not go together", "kv", "put", "shared/"+name+"-ntp", "x", "--canary", "50%", "--cas", "0")
	if st := c.ok("appliance", "rollout", "status", name, "-o", "json"); !strings.Contains(st, `"state":"aborted"`) {
		t.Errorf("a refused shared canary with --cas started a rollout: %s", st)
	}

	two := `{"ops": [{"op": "put", "key": "appliances/` + name + `/port", "value": "1"}, {"op": "put", "key": "appliances/other/port", "value": "1"}]}`
	checkFailure(t, c.runStdin([]byte(two), "txn", "-f", "-", "--canary", "50%"), exitError, "one appliance", []string{"txn", "--canary", two})
}

// A txn op or guard key written the confd way (/app/db/host) is refused before any request with
// how to write it here, as kv put refuses it; and a file given without -f (txn FILE, appliance
// apply NAME FILE, schema set NAME FILE) is a usage error that says to give it with -f. Before,
// the txn's key got the server's "segment 1 is empty (no leading, trailing or double '/')", and
// a file without -f only "too many arguments [...] (usage: shoelace txn)".
func TestE2E_TxnConfdKeyAndFileWithoutF(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	for _, body := range []string{
		`{"ops": [{"op": "put", "key": "/app/db/host", "value": "db1"}]}`,
		`{"ops": [{"op": "put", "key": "shared/e2etxn-confd", "value": "1"}], "guards": [{"key": "/app/db/host", "mod_revision": 0}]}`,
	} {
		r := c.runStdin([]byte(body), "txn", "-f", "-")
		checkFailure(t, r, exitError, `invalid key "/app/db/host": a leading '/' is a confd-style path`, []string{"txn", "-f", "-", body})
		if !strings.Contains(r.stderr, "appliances/NAME/app/db/host") || !strings.Contains(r.stderr, "shared/app/db/host") {
			t.Errorf("txn with a confd key: %s; want it to say how to write the key", r)
		}
	}
	c.fails(exitNotFound, "not found", "kv", "get", "shared/e2etxn-confd")

	file := filepath.Join(t.TempDir(), "f.json")
	writeFile(t, file, `{"ops": [{"op": "put", "key": "shared/e2etxn-confd", "value": "1"}]}`)
	for _, args := range [][]string{
		{"txn", file},
		{"appliance", "apply", "e2etxn-confd", file},
		{"appliance", "schema", "set", "e2etxn-confd", file},
	} {
		c.fails(exitUsage, "give the file with -f: -f "+file, args...)
	}
	c.fails(exitNotFound, "not found", "kv", "get", "shared/e2etxn-confd")
}
