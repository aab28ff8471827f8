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
	canary, other := canaryOfTwo(fleet, st)
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

// shoelace-agent render --dry on a VM that runs a rollout's candidate says so above the diff:
// render fetches the live view (it sends no instance token), whose diff against the
// candidate's files is not a change `run` would make. Before, it printed "would change" and
// the commands that would run, with nothing to tell that the files hold a canary's change.
func TestE2E_RenderDryOnACanarySaysItRunsTheCandidate(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 1)
	rendered(t, srv, fleet, "port=80\n")
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "81", "--canary", "100%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	vm := fleet[0]
	waitFor(t, vm.name+" renders the candidate", fileIs(vm.conf(), "port=81\n"))
	want := "runs the candidate of rollout " + st.ID
	waitFor(t, vm.name+"'s render --dry names the rollout", func() bool {
		_, out, _ := vm.env.agentCmd("render", "--dry")
		return strings.Contains(out, want)
	})
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	waitFor(t, vm.name+" back on the live view", fileIs(vm.conf(), "port=80\n"))
	waitFor(t, vm.name+"'s render --dry names no rollout", func() bool {
		code, out, _ := vm.env.agentCmd("render", "--dry")
		return code == 0 && strings.Contains(out, "# appliance web") && !strings.Contains(out, "rollout")
	})
}

// shoelace-agent once on a VM that runs a rollout's candidate says, in its log, that it puts
// the live view's files over the candidate's, naming the rollout: once fetches the live view
// (it sends no instance token), while the rollout's gates still count the VM as running the
// candidate. Before, it installed the live view and reloaded without a word, and its status
// write hid the rollout from status and render --dry until run's next pass.
func TestE2E_OnceOnACanarySaysItInstallsTheLiveView(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 1)
	rendered(t, srv, fleet, "port=80\n")
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "81", "--canary", "100%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	vm := fleet[0]
	waitFor(t, vm.name+" renders the candidate", fileIs(vm.conf(), "port=81\n"))
	waitFor(t, vm.name+"'s status names the rollout", func() bool {
		_, out, _ := vm.env.agentCmd("status")
		return strings.Contains(out, "rollout "+st.ID)
	})
	code, _, errOut := vm.env.agentCmd("once")
	if code != 0 {
		t.Fatalf("once: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "runs the candidate of a rollout") || !strings.Contains(errOut, st.ID) {
		t.Fatalf("once on a canary does not say that it installs the live view over the candidate of %s:\n%s", st.ID, errOut)
	}
	if got := readFile(t, vm.conf()); got != "port=80\n" {
		t.Fatalf("once installed %q, want the live view's port=80", got)
	}
}
