//go:build !windows

package main

import (
	"context"
	"strings"
	"testing"
)

// A canary VM forgotten (appliance forget) during a rollout enrolls again: enrolled after the
// start, it is no longer of the cohort, and the server serves it the live view. Its agent kept
// the candidate's file until the live view next changed: nothing woke it.
func TestE2E_RolloutCanaryForgottenEnrollsBackToLive(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 2)
	rendered(t, srv, fleet, "port=80\n")

	code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8080", "--canary", "50%", "--bake", "1h")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	canary, other := canaryOfTwo(fleet, st)
	waitFor(t, "the canary renders the candidate", fileIs(canary.conf(), "port=8080\n"))
	if code, _, errOut := srv.shoelace(t, "appliance", "forget", "web", canary.name); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut)
	}
	waitFor(t, "the canary enrolled again", func() bool { return strings.Count(canary.run.logs.String(), `"msg":"enrolled"`) == 2 })
	waitFor(t, "the canary back on the live view", fileIs(canary.conf(), "port=80\n"))
	// And it stays there: its report with its new token says it applied the live view.
	waitFor(t, "the canary's report of the live view", func() bool {
		l, _, err := srv.client.Instances(context.Background(), "web")
		if err != nil {
			return false
		}
		for _, in := range l.Instances {
			if in.Instance == canary.name {
				return in.Enrolled && in.Applied > 0 && in.Rollout == ""
			}
		}
		return false
	})
	for _, a := range []*fleetAgent{canary, other} {
		if got := readFile(t, a.conf()); got != "port=80\n" {
			t.Fatalf("%s has %q", a.name, got)
		}
	}
}
