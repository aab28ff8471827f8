//go:build !windows

package main

import (
	"strings"
	"testing"
)

// shoelace-agent status on a VM of a rollout's cohort says that it runs the rollout's
// candidate, naming the rollout; once the rollout ended it says so no more. Before, status
// showed the revision and "applied" only: the same numbers as on the VMs of the live view, so
// an operator on the VM could not tell that it ran a canary (the status file kept the id).
func TestE2E_StatusNamesTheRolloutOfACanary(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 2)
	rendered(t, srv, fleet, "port=80\n")
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "81", "--canary", "50%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	if len(st.Cohort) != 1 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	var canary, other *fleetAgent
	for _, a := range fleet {
		if a.name == st.Cohort[0] {
			canary = a
		} else {
			other = a
		}
	}
	waitFor(t, canary.name+" renders the candidate", fileIs(canary.conf(), "port=81\n"))
	want := "rollout " + st.ID
	waitFor(t, canary.name+"'s status names the rollout", func() bool {
		_, out, _ := canary.env.agentCmd("status")
		return strings.Contains(out, want)
	})
	if _, out, _ := other.env.agentCmd("status"); strings.Contains(out, "rollout") {
		t.Fatalf("status of %s, on the live view, names a rollout:\n%s", other.name, out)
	}
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	waitFor(t, canary.name+" back on the live view", fileIs(canary.conf(), "port=80\n"))
	waitFor(t, canary.name+"'s status names no rollout", func() bool {
		_, out, _ := canary.env.agentCmd("status")
		return strings.Contains(out, "applied") && !strings.Contains(out, "rollout")
	})
}
