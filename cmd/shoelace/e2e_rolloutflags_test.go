package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A --rollout that no rollout id can be (a mistyped or unset variable) is a usage error found
// before any request, as --step 0 is (exit 2), and nothing is promoted or aborted: --rollout
// nope passed the server's 400 through (exit 1), and --rollout "" promoted whatever rollout ran,
// without the guard it was given for.
func TestE2E_RolloutFlagValuesAreUsageErrors(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("rollout-flags-%d", time.Now().UnixNano())
	c.ok("kv", "put", "appliances/"+name+"/port", "80")
	enrollOne(t, s, c, name)
	c.ok("kv", "put", "appliances/"+name+"/port", "81", "--canary", "100%", "--manual")
	t.Cleanup(func() { c.run("appliance", "rollout", "abort", name) })

	for _, args := range [][]string{
		{"appliance", "rollout", "promote", name, "--step", "0"},
		{"appliance", "rollout", "promote", name, "--rollout", "nope"},
		{"appliance", "rollout", "abort", name, "--rollout", "nope"},
		{"appliance", "rollout", "promote", name, "--rollout", ""},
		{"appliance", "rollout", "abort", name, "--rollout", ""},
	} {
		c.fails(exitUsage, "appliance rollout "+args[2]+": --", args...)
	}
	var st api.RolloutStatus
	if err := json.Unmarshal([]byte(c.ok("appliance", "rollout", "status", name, "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.State != api.RolloutRunning || st.Step != 0 {
		t.Fatalf("after refused flags the rollout is %s at step %d, want running at the canary", st.State, st.Step)
	}
}
