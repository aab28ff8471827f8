package main

import (
	"strconv"
	"strings"
	"testing"
)

// appliance history, diff, instances and wait --revision of a mistyped name exited 0 with an
// empty answer ("no release of NAME is kept", "0 added, 0 changed, 0 removed", "no agent has
// reported yet") or waited for agents that never come. They exit 3 now, naming the appliance;
// an appliance whose keys were all deleted, or one without agents, answers as before.
func TestE2E_ApplianceUnknownNameNotFound(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	const typo = "e2e-unk-webb"
	want := `appliance "` + typo + `" not found`
	c.fails(exitNotFound, want, "appliance", "history", typo)
	c.fails(exitNotFound, want, "appliance", "diff", typo, "--from", "1")
	c.fails(exitNotFound, want, "appliance", "instances", typo)
	c.fails(exitNotFound, want, "appliance", "wait", typo, "--revision", "1", "--for", "30s")

	rev := revisionOf(t, c.ok("kv", "put", "appliances/e2e-unk-web/port", "80"))
	if out := c.ok("appliance", "history", "e2e-unk-web"); !strings.Contains(out, strconv.FormatInt(rev, 10)+"\t") {
		t.Errorf("history of e2e-unk-web:\n%s", out)
	}
	c.ok("appliance", "instances", "e2e-unk-web") // keys, no agent yet: an empty list
	if out := c.ok("appliance", "diff", "e2e-unk-web", "--from", strconv.FormatInt(rev-1, 10)); out != "+ port=80\n" {
		t.Errorf("diff of e2e-unk-web = %q", out)
	}

	// Every key deleted: the appliance has its releases still.
	del := revisionOf(t, c.ok("kv", "rm", "appliances/e2e-unk-web", "--recurse"))
	if out := c.ok("appliance", "history", "e2e-unk-web"); !strings.Contains(out, strconv.FormatInt(del, 10)+"\t") {
		t.Errorf("history of e2e-unk-web after its keys were deleted:\n%s", out)
	}
	c.ok("appliance", "instances", "e2e-unk-web")
	if out := c.ok("appliance", "diff", "e2e-unk-web", "--from", strconv.FormatInt(rev, 10)); out != "- port=80\n" {
		t.Errorf("diff of e2e-unk-web after its keys were deleted = %q", out)
	}
	if out := c.ok("appliance", "diff", "e2e-unk-web", "--from", strconv.FormatInt(rev-1, 10)); out != "" {
		t.Errorf("diff of e2e-unk-web from before its keys to after = %q", out)
	}
}

// appliance rollout promote|abort of a mistyped name exited 4 ("no rollout running"), and
// appliance wait of one without --revision exited 2 (asking for --revision): both exit 3 now,
// naming the appliance. An appliance that exists answers as before.
func TestE2E_RolloutOfUnknownApplianceNotFound(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	const typo = "e2e-unk-dbb"
	want := `appliance "` + typo + `" not found`
	c.fails(exitNotFound, want, "appliance", "rollout", "promote", typo)
	c.fails(exitNotFound, want, "appliance", "rollout", "abort", typo)
	c.fails(exitNotFound, want, "appliance", "wait", typo, "--for", "30s")

	c.ok("kv", "put", "appliances/e2e-unk-db/port", "5432")
	c.fails(exitConflict, "has no rollout running", "appliance", "rollout", "abort", "e2e-unk-db")
	c.fails(exitUsage, "--revision REV is required", "appliance", "wait", "e2e-unk-db", "--for", "30s")
}
