//go:build !windows

package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
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

// An agent whose server: names another address of the same store (here localhost for
// 127.0.0.1; a load balancer for a replica's own address, https:// once TLS is on) keeps its
// instance token there. It took the token for another server's and enrolled again: the store
// refused it (409, its name held by this same enrollment key, as a clone's), and until
// --instance-stale (1 h) its reports were not taken, so appliance wait and rollouts saw it
// behind. Pointed at another store, which refuses the token, it drops it and enrolls there.
func TestE2E_RunKeepsItsInstanceTokenAtAnotherAddressOfTheStore(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	vm := startFleet(t, srv, 1)[0]
	waitEnrolled(t, srv, []*fleetAgent{vm})
	vm.run.stop(t)

	_, port, _ := strings.Cut(srv.addr, ":")
	vm.setServer(t, "http://localhost:"+port)
	vm.run = vm.env.startAgent()
	rev := srv.put("appliances/web/port", "81")
	waitFor(t, "the agent renders through the other address", fileIs(vm.conf(), "port=81\n"))
	waitFor(t, "its report of the change taken (its instance token kept)", vm.appliedAt(srv, rev))
	if l := vm.run.logs.String(); strings.Contains(l, "not enrolled") || strings.Contains(l, `"msg":"enrolled"`) {
		t.Fatalf("the agent enrolled again:\n%s", l)
	}
	vm.run.stop(t)

	// Another store: the saved token is refused there, and the agent enrolls.
	other := startServer(t, "", t.TempDir())
	rev = other.put("appliances/web/port", "82")
	if err := os.WriteFile(vm.env.path("token"), []byte(other.agentTokenFor(t, "web")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vm.setServer(t, "http://"+other.addr)
	vm.run = vm.env.startAgent()
	waitFor(t, "the agent renders from the other store", fileIs(vm.conf(), "port=82\n"))
	waitFor(t, "it enrolled there", vm.appliedAt(other, rev))
}

// An agent whose instance: was changed (vm-e2e to vm-2) and then changed back enrolled under
// each name, but kept only the last one's token: back under vm-e2e, it asked to enroll it
// again, and the store refused it as a clone ("enrolled already, by another machine with this
// same enrollment key") until --instance-stale (1 h), its reports not taken meanwhile. It keeps
// the token of each name it enrolled under, and back under one it uses its token again; a
// token refused (its name forgotten) is dropped alone.
func TestE2E_RunBackToAnEarlierInstanceNameKeepsItsToken(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	vm := startFleet(t, srv, 1)[0]
	waitEnrolled(t, srv, []*fleetAgent{vm})
	vm.run.stop(t)
	first := vm.name

	setInstance := func(name string) {
		b, err := os.ReadFile(vm.env.config)
		if err != nil {
			t.Fatal(err)
		}
		b = regexp.MustCompile(`(?m)^instance: .*$`).ReplaceAll(b, []byte("instance: "+name))
		if err := os.WriteFile(vm.env.config, b, 0o644); err != nil {
			t.Fatal(err)
		}
		vm.name = name
	}
	applied := func(rev int64) func() bool {
		return func() bool {
			l, _, err := srv.client.Instances(context.Background(), "web")
			if err != nil {
				return false
			}
			for _, in := range l.Instances {
				if in.Instance == vm.name {
					return in.Enrolled && in.Applied >= rev && in.Token == "instance:web:"+vm.name
				}
			}
			return false
		}
	}

	setInstance("vm-2")
	vm.run = vm.env.startAgent()
	rev := srv.put("appliances/web/port", "81")
	waitFor(t, "the agent renders as vm-2", fileIs(vm.conf(), "port=81\n"))
	waitFor(t, "vm-2 enrolled and its report taken", applied(rev))
	vm.run.stop(t)

	for i, name := range []string{first, "vm-2"} {
		setInstance(name)
		vm.run = vm.env.startAgent()
		rev = srv.put("appliances/web/port", fmt.Sprint(82+i))
		waitFor(t, "the agent renders as "+name, fileIs(vm.conf(), fmt.Sprintf("port=%d\n", 82+i)))
		waitFor(t, "the report of "+name+" taken, with its instance token", applied(rev))
		if l := vm.run.logs.String(); strings.Contains(l, "not enrolled") || strings.Contains(l, `"msg":"enrolled"`) {
			t.Fatalf("back under %s, the agent enrolled again:\n%s", name, l)
		}
		vm.run.stop(t)
	}
	// vm-2 forgotten: its token refused, the agent drops it alone and enrolls vm-2 again;
	// vm-e2e's token is still there for it.
	if code, _, errOut := srv.shoelace(t, "appliance", "forget", "web", "vm-2"); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut)
	}
	vm.run = vm.env.startAgent()
	waitFor(t, "vm-2 enrolled again", func() bool { return strings.Contains(vm.run.logs.String(), `"msg":"enrolled"`) })
	waitFor(t, "vm-2's report taken", applied(srv.put("appliances/web/port", "84")))
	vm.run.stop(t)
	setInstance(first)
	vm.run = vm.env.startAgent()
	waitFor(t, "the report of "+first+" taken, with its instance token", applied(srv.put("appliances/web/port", "85")))
	if l := vm.run.logs.String(); strings.Contains(l, "not enrolled") || strings.Contains(l, `"msg":"enrolled"`) {
		t.Fatalf("back under %s after vm-2 was forgotten, the agent enrolled again:\n%s", first, l)
	}
	vm.run.stop(t)
	fi, err := os.Stat(vm.env.path("cache/web.instance-token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("instance token file mode %04o, want 0600", fi.Mode().Perm())
	}
}
