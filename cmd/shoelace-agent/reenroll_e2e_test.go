//go:build !windows

package main

import (
	"context"
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

	setServer := func(addr string) {
		b, err := os.ReadFile(vm.env.config)
		if err != nil {
			t.Fatal(err)
		}
		b = regexp.MustCompile(`(?m)^server: .*$`).ReplaceAll(b, []byte("server: "+addr))
		if err := os.WriteFile(vm.env.config, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(s *server, rev int64) func() bool {
		return func() bool {
			l, _, err := s.client.Instances(context.Background(), "web")
			if err != nil {
				return false
			}
			for _, in := range l.Instances {
				if in.Instance == vm.name {
					return in.Enrolled && in.Applied >= rev
				}
			}
			return false
		}
	}

	_, port, _ := strings.Cut(srv.addr, ":")
	setServer("http://localhost:" + port)
	vm.run = vm.env.startAgent()
	rev := srv.put("appliances/web/port", "81")
	waitFor(t, "the agent renders through the other address", fileIs(vm.conf(), "port=81\n"))
	waitFor(t, "its report of the change taken (its instance token kept)", applied(srv, rev))
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
	setServer("http://" + other.addr)
	vm.run = vm.env.startAgent()
	waitFor(t, "the agent renders from the other store", fileIs(vm.conf(), "port=82\n"))
	waitFor(t, "it enrolled there", applied(other, rev))
}
