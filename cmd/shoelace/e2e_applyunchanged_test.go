package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An apply of the keys the appliance holds already writes nothing, prints the store's
// revision as any apply does, and says so on stderr (-o json: "unchanged": true). Before,
// every pipeline run put every key again: a release and a revision for nothing.
func TestE2E_ApplyUnchanged(t *testing.T) {
	name := fmt.Sprintf("sameapp-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	s := sharedServer(t)
	c := newCLI(t, s)
	file := filepath.Join(t.TempDir(), "same.yaml")
	writeFile(t, file, "keys:\n  app:\n    port: 8080\n")
	first := revisionOf(t, c.ok("appliance", "apply", name, "-f", file))

	r := c.run("appliance", "apply", name, "-f", file)
	if r.code != 0 || !strings.Contains(r.stderr, "appliance "+name+" already holds exactly these keys: nothing written") {
		t.Fatalf("apply of the same keys: %s", r)
	}
	same := revisionOf(t, r.stdout)
	if same < first {
		t.Fatalf("apply of the same keys printed revision %d, before the first apply's %d", same, first)
	}
	// The revision is the appliance's view's, which its agents report (appliance wait
	// --revision): a write elsewhere does not move it.
	c.ok("kv", "put", "appliances/"+name+"-other/x", "1")
	if again := revisionOf(t, c.ok("appliance", "apply", name, "-f", file)); again != same {
		t.Fatalf("apply of the same keys after a write to another appliance printed revision %d, %d before", again, same)
	}
	var w struct {
		Revision  int64 `json:"revision"`
		Unchanged bool  `json:"unchanged"`
	}
	out := c.ok("appliance", "apply", name, "-f", file, "-o", "json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || !w.Unchanged || w.Revision < first {
		t.Fatalf("-o json: %q (%v)", out, err)
	}
	if got := c.ok("appliance", "history", name); strings.Count(got, "apply") != 1 {
		t.Fatalf("history after one apply and two of the same keys:\n%s", got)
	}
	// A rollback to the keys the appliance holds: the API's answer under -o json, as apply's
	// (it printed {"revision":R} alone, and the stderr text besides).
	rb := c.run("appliance", "rollback", name, "--to", strconv.FormatInt(first, 10), "-o", "json")
	w = struct {
		Revision  int64 `json:"revision"`
		Unchanged bool  `json:"unchanged"`
	}{}
	if err := json.Unmarshal([]byte(rb.stdout), &w); rb.code != 0 || err != nil || !w.Unchanged || w.Revision < first || rb.stderr != "" {
		t.Fatalf("rollback -o json to the keys held: %s (%v)", rb, err)
	}
	if r := c.run("appliance", "rollback", name, "--to", strconv.FormatInt(first, 10)); r.code != 0 ||
		!strings.Contains(r.stderr, "appliance "+name+" already holds exactly its 1 keys of revision") || revisionOf(t, r.stdout) < first {
		t.Fatalf("rollback to the keys held: %s", r)
	}

	writeFile(t, file, "keys:\n  app:\n    port: 8081\n")
	r = c.run("appliance", "apply", name, "-f", file)
	if r.code != 0 || r.stderr != "" || revisionOf(t, r.stdout) <= first {
		t.Fatalf("apply of a change: %s", r)
	}
}

// appliance apply --canary (and rollback --canary) of the keys the appliance holds already
// starts no rollout: it prints the revision and says on stderr that nothing was written and no
// rollout started. Before, it started a rollout of the live tree, which held the appliance's
// other writes (exit 7) until every instance had re-rendered it, or halted at its deadline.
func TestE2E_ApplyUnchangedWithCanary(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	file := filepath.Join(t.TempDir(), "same.yaml")
	writeFile(t, file, "keys:\n  port: \"8080\"\n")
	first := revisionOf(t, c.ok("appliance", "apply", "samecanary", "-f", file))
	enrollOne(t, s, c, "samecanary")

	r := c.run("appliance", "apply", "samecanary", "-f", file, "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "already holds exactly these keys: nothing written, no release recorded, no rollout started") || revisionOf(t, r.stdout) < first {
		t.Fatalf("apply --canary of the same keys: %s", r)
	}
	r = c.run("appliance", "rollback", "samecanary", "--to", strconv.FormatInt(first, 10), "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing written, no release recorded, no rollout started") {
		t.Fatalf("rollback --canary to the state the appliance holds: %s", r)
	}
	if r := c.run("appliance", "rollout", "status", "samecanary"); r.code != 3 {
		t.Fatalf("rollout status after the unchanged applies with --canary: %s, want exit 3 (none)", r)
	}
	// Plain writes go on at once: no rollout holds them.
	c.ok("kv", "put", "appliances/samecanary/port", "8081")
}

// kv put --canary and txn --canary of values an appliance holds already start no rollout, as
// apply --canary does: the revision is printed, stderr says that nothing was written, and the
// other keys keep their mod_revision (a pipeline's --cas on them still holds). Before, each run
// of such a pipeline step started a rollout that changed nothing: it held the appliance's other
// writes (exit 7) until every instance had re-rendered the same view, and its promotion put
// every key of the appliance again.
func TestE2E_KVPutAndTxnUnchangedWithCanary(t *testing.T) {
	name := fmt.Sprintf("samekvcanary-%d", time.Now().UnixNano()) // each run its own: go test -count runs it again on the same server
	s := sharedServer(t)
	c := newCLI(t, s)
	file := filepath.Join(t.TempDir(), "same.yaml")
	writeFile(t, file, "keys:\n  port: \"8080\"\n  color: blue\n")
	first := revisionOf(t, c.ok("appliance", "apply", name, "-f", file))
	enrollOne(t, s, c, name)
	portRev := func() int64 {
		t.Helper()
		var kv struct {
			ModRevision int64 `json:"mod_revision"`
		}
		if out := c.ok("kv", "get", "appliances/"+name+"/port", "-o", "json"); json.Unmarshal([]byte(out), &kv) != nil {
			t.Fatalf("kv get -o json: %q", out)
		}
		return kv.ModRevision
	}
	before := portRev()

	r := c.run("kv", "put", "appliances/"+name+"/color", "blue", "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing written, no release recorded, no rollout started") || revisionOf(t, r.stdout) < first {
		t.Fatalf("kv put --canary of the value the key holds: %s", r)
	}
	txn := filepath.Join(t.TempDir(), "txn.json")
	writeFile(t, txn, `{"ops":[{"op":"put","key":"appliances/`+name+`/port","value":"8080"},{"op":"delete","key":"appliances/`+name+`/gone"}]}`)
	r = c.run("txn", "-f", txn, "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing written, no release recorded, no rollout started") || revisionOf(t, r.stdout) < first {
		t.Fatalf("txn --canary that changes nothing: %s", r)
	}
	var w struct {
		Revision  int64 `json:"revision"`
		Unchanged bool  `json:"unchanged"`
	}
	out := c.ok("kv", "put", "appliances/"+name+"/color", "blue", "--canary", "50%", "-o", "json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || !w.Unchanged || w.Revision < first {
		t.Fatalf("kv put --canary -o json of the value the key holds: %q (%v)", out, err)
	}
	if r := c.run("appliance", "rollout", "status", name); r.code != 3 {
		t.Fatalf("rollout status after the unchanged writes with --canary: %s, want exit 3 (none)", r)
	}
	if got := c.ok("appliance", "history", name); strings.Count(got, "\n") != 2 {
		t.Fatalf("history after one apply and unchanged writes with --canary:\n%s", got)
	}
	if now := portRev(); now != before {
		t.Fatalf("port's mod_revision went from %d to %d: a write that changed nothing put it again", before, now)
	}
	// Plain writes go on at once: no rollout holds them.
	c.ok("kv", "put", "appliances/"+name+"/color", "green")
}

// kv put --canary and txn --canary of shared/ values held already start no shared rollout
// group: the revision is printed and stderr says that nothing was written. Before, each run
// started a group over every appliance with enrolled instances that changed nothing, and held
// every write to those appliances' keys (exit 7) until all of them had re-rendered the same
// views.
func TestE2E_SharedPutUnchangedWithCanary(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/sharedsame/port", "80")
	first := revisionOf(t, c.ok("kv", "put", "shared/ntp", "pool.example"))
	enrollOne(t, s, c, "sharedsame")

	r := c.run("kv", "put", "shared/ntp", "pool.example", "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing written, no release recorded, no rollout started") || revisionOf(t, r.stdout) < first {
		t.Fatalf("kv put shared/ntp --canary of the value it holds: %s", r)
	}
	txn := filepath.Join(t.TempDir(), "txn.json")
	writeFile(t, txn, `{"ops":[{"op":"put","key":"shared/ntp","value":"pool.example"},{"op":"delete","key":"shared/gone"}]}`)
	r = c.run("txn", "-f", txn, "--canary", "50%")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing written, no release recorded, no rollout started") || revisionOf(t, r.stdout) < first {
		t.Fatalf("txn --canary of shared/ that changes nothing: %s", r)
	}
	var w struct {
		Revision  int64 `json:"revision"`
		Unchanged bool  `json:"unchanged"`
	}
	out := c.ok("kv", "put", "shared/ntp", "pool.example", "--canary", "50%", "-o", "json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || !w.Unchanged || w.Revision < first {
		t.Fatalf("kv put shared/ntp --canary -o json of the value it holds: %q (%v)", out, err)
	}
	if r := c.run("appliance", "rollout", "status", "sharedsame"); r.code != 3 {
		t.Fatalf("rollout status after the unchanged shared writes with --canary: %s, want exit 3 (none)", r)
	}
	// Writes go on at once: no group holds them.
	c.ok("kv", "put", "appliances/sharedsame/port", "81")
	// A change still starts a group.
	if r := c.run("kv", "put", "shared/ntp", "pool2.example", "--canary", "50%"); r.code != 0 || !strings.Contains(r.stderr, "shared rollout group") {
		t.Fatalf("kv put shared/ntp --canary of a new value: %s", r)
	}
}

// kv put and txn of what the store holds already write nothing: each prints the revision at
// which the keys got their values and says on stderr that nothing was written (-o json:
// "unchanged": true). A value that differs is written as ever.
func TestE2E_PutAndTxnUnchanged(t *testing.T) {
	name := fmt.Sprintf("sameput-%d", time.Now().UnixNano())
	s := sharedServer(t)
	c := newCLI(t, s)
	key := "appliances/" + name + "/port"
	first := revisionOf(t, c.ok("kv", "put", key, "80"))

	r := c.run("kv", "put", key, "80")
	if r.code != 0 || r.stderr != "key "+key+" already holds this value: nothing written, no release recorded\n" || revisionOf(t, r.stdout) != first {
		t.Fatalf("kv put of the value held (first at %d): %s", first, r)
	}
	var w struct {
		Revision  int64 `json:"revision"`
		Unchanged bool  `json:"unchanged"`
	}
	out := c.ok("kv", "put", key, "80", "-o", "json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || !w.Unchanged || w.Revision != first {
		t.Fatalf("kv put -o json of the value held: %q (%v)", out, err)
	}
	txn := filepath.Join(t.TempDir(), "txn.json")
	writeFile(t, txn, `{"ops":[{"op":"put","key":"`+key+`","value":"80"},{"op":"delete","key":"appliances/`+name+`/gone"}]}`)
	r = c.run("txn", "-f", txn)
	if r.code != 0 || !strings.Contains(r.stderr, "the store already holds what the transaction writes: nothing written") || revisionOf(t, r.stdout) != first {
		t.Fatalf("txn of the value held: %s", r)
	}
	if got := c.ok("appliance", "history", name); strings.Count(got, "put") != 1 || strings.Contains(got, "txn") {
		t.Fatalf("history after one put and three writes of the same value:\n%s", got)
	}

	r = c.run("kv", "put", key, "81")
	if r.code != 0 || r.stderr != "" || revisionOf(t, r.stdout) <= first {
		t.Fatalf("kv put of another value: %s", r)
	}
}
