package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// After the last promote by hand of a --manual rollout, rollout status listed every instance
// pending, though each had applied the change before the promote (the gates took no step
// without it) and the promotion made it the live tree. Each is listed applied.
func TestE2E_RolloutPromotedByHandListsItsInstancesApplied(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	const name = "promoted"
	c.ok("kv", "put", "appliances/"+name+"/port", "80")
	tokens := map[string]string{}
	for _, vm := range []string{"vm-1", "vm-2"} {
		en, err := adminClient(t, s).Enroll(context.Background(), name, vm, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[vm] = en.Token
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout starts, by the server's clock
	c.ok("kv", "put", "appliances/"+name+"/port", "81", "--canary", "50%", "--manual")
	status := func() api.RolloutStatus {
		var st api.RolloutStatus
		if err := json.Unmarshal([]byte(c.ok("appliance", "rollout", "status", name, "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	done := map[string]bool{}
	for step := 0; step < 2; step++ {
		deadline := time.Now().Add(30 * time.Second)
		for st := status(); !st.WaitsForPromote(); st = status() {
			for _, vm := range st.Cohort {
				if !done[vm] && st.Step == step {
					applyCandidate(t, s, name, vm, tokens[vm])
					done[vm] = true
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d does not wait for its promote: %+v", step+1, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.ok("appliance", "rollout", "promote", name)
	}
	deadline := time.Now().Add(30 * time.Second)
	for status().State != api.RolloutPromoted {
		if time.Now().After(deadline) {
			t.Fatal("the rollout was not promoted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := c.ok("appliance", "rollout", "status", name)
	for _, vm := range []string{"vm-1", "vm-2"} {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), vm+" ") {
				line = l
			}
		}
		if !strings.Contains(line, " applied ") || strings.Contains(line, "pending") {
			t.Errorf("rollout status of the promoted rollout lists %s as %q, want applied:\n%s", vm, line, out)
		}
	}
}
