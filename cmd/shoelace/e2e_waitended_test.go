package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// appliance wait --revision R, R printed by a write made after a rollout ended, waits for the
// agents to apply R: the ended rollout started before R and is not this wait's. Before, an apply
// that changed nothing right after a rollout was aborted (whose revision, the view's last change,
// is the rollout's end) or a write followed by a report racing the end (which writes the ended
// record again) had its wait exit 7, "rollout … aborted", for that older rollout.
func TestE2E_WaitRevisionAfterAnEndedRollout(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	const name = "wait-after-end"
	file := filepath.Join(t.TempDir(), "web.yaml")
	writeFile(t, file, "keys:\n  port: \"80\"\n")
	c.ok("appliance", "apply", name, "-f", file)
	en, err := adminClient(t, s).Enroll(context.Background(), name, "vm-1", "")
	if err != nil {
		t.Fatal(err)
	}
	start := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/port", "81", "--canary", "100%", "--manual"))
	c.ok("appliance", "rollout", "abort", name)

	r := c.run("appliance", "apply", name, "-f", file) // the live keys: nothing written
	rev := revisionOf(t, r.stdout)
	// vm-1 (its agent back on the live view) reports that it applied rev.
	req, err := http.NewRequest(http.MethodGet, s.url()+"/v1/appliances/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+en.Token)
	req.Header.Set(api.HeaderInstance, "vm-1")
	req.Header.Set(api.HeaderApplied, strconv.FormatInt(rev, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vm-1's view: %s", resp.Status)
	}
	w := c.run("appliance", "wait", name, "--revision", strconv.FormatInt(rev, 10), "--for", "30s", "--interval", "100ms")
	if want := "1 agent applied revision " + strconv.FormatInt(rev, 10) + "\n"; w.code != 0 || w.stdout != want {
		t.Fatalf("wait --revision %d (printed by the apply after the abort): %s; want exit 0 and %q", rev, w, want)
	}
	// The rollout is still what a wait from its start follows.
	c.fails(exitUnknown, "rollout", "appliance", "wait", name, "--revision", strconv.FormatInt(start, 10), "--for", "30s")
}

// appliance wait --revision R, R printed by a plain write of shared/ made while a rollout of the
// appliance runs (shared/ writes go on then), waits for the agents to apply R, not for that
// rollout, which started before R. Before, a running rollout was followed whatever --revision
// said: the wait exited 1 after --for (a --manual rollout) or 7 when the rollout halted, though
// every agent had applied R.
func TestE2E_WaitRevisionDuringAnOlderRollout(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	const name = "wait-during-rollout"
	file := filepath.Join(t.TempDir(), "web.yaml")
	writeFile(t, file, "keys:\n  port: \"80\"\n")
	c.ok("appliance", "apply", name, "-f", file)
	en, err := adminClient(t, s).Enroll(context.Background(), name, "vm-1", "")
	if err != nil {
		t.Fatal(err)
	}
	start := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/port", "81", "--canary", "100%", "--manual"))
	rev := revisionOf(t, c.ok("kv", "put", "shared/ntp", "pool.example"))
	if rev <= start {
		t.Fatalf("the shared/ write's revision %d is not after the rollout's start %d", rev, start)
	}
	// vm-1, the rollout's canary, reports that it applied rev (its view: shared/ now, and the candidate).
	req, err := http.NewRequest(http.MethodGet, s.url()+"/v1/appliances/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+en.Token)
	req.Header.Set(api.HeaderInstance, "vm-1")
	req.Header.Set(api.HeaderApplied, strconv.FormatInt(rev, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vm-1's view: %s", resp.Status)
	}
	w := c.run("appliance", "wait", name, "--revision", strconv.FormatInt(rev, 10), "--for", "20s", "--interval", "100ms")
	if want := "1 agent applied revision " + strconv.FormatInt(rev, 10) + "\n"; w.code != 0 || w.stdout != want {
		t.Fatalf("wait --revision %d (printed by a shared/ write during the rollout): %s; want exit 0 and %q", rev, w, want)
	}
	// A wait from the rollout's own start, or without --revision, still follows it.
	c.fails(1, "the rollout has not ended", "appliance", "wait", name, "--revision", strconv.FormatInt(start, 10), "--for", "1s", "--interval", "100ms")
	c.ok("appliance", "rollout", "abort", name)
	c.fails(exitUnknown, "rollout", "appliance", "wait", name, "--revision", strconv.FormatInt(start, 10), "--for", "30s")
}
