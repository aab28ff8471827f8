//go:build !windows

package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// An agent whose instance token file was deleted is refused enrollment (409: its name is held,
// by its own enrollment with the same key, as a clone's would be) until the name goes stale or
// an admin forgets it. Its log said "the instance name is held: " and the server's words of a
// clone, and status nothing of it: both say that the server refused to enroll it, that its name
// is held by another enrollment, its own if its agent lost its instance token file, and the
// command that frees the name; once freed and enrolled, status no longer says it.
func TestE2E_EnrollRefusedAsHeldSaysHowToFreeIt(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", "  - contents: \"port={{ key \\\"port\\\" }}\\n\"\n    destination: $DIR/out/app.conf\n")
	ag := e.startAgent()
	enrolled := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool {
			l, _, err := srv.client.Instances(context.Background(), "web")
			return err == nil && len(l.Instances) == 1 && l.Instances[0].Enrolled && l.Instances[0].Applied > 0 &&
				l.Instances[0].LastSeen.After(time.Now().Add(-time.Minute))
		})
	}
	enrolled("the agent enrolled and reported")
	ag.stop(t)

	if err := os.Remove(e.path("cache/web.instance-token")); err != nil {
		t.Fatal(err)
	}
	ag = e.startAgent()
	const free = "shoelace appliance forget web vm-e2e"
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(ag.logs.String(), "not enrolled") })
	var line string
	for _, l := range strings.Split(ag.logs.String(), "\n") {
		if strings.Contains(l, "not enrolled") {
			line = l
		}
	}
	const held = "the server refused to enroll: instance \\\"vm-e2e\\\" of appliance \\\"web\\\" is enrolled already"
	const own = "its name is held by another enrollment. If this machine's agent lost its instance token file (deleted or damaged), that enrollment is its own: free the name with " + free + "."
	if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, held) || !strings.Contains(line, own) {
		t.Errorf("the refusal is logged as:\n%s", line)
	}
	var out string
	waitFor(t, "status to say it", func() bool {
		_, out, _ = e.agentCmd("status")
		return strings.Contains(out, "NOT enrolled")
	})
	if !strings.Contains(out, "\n  NOT enrolled: the server refused to enroll: instance \"vm-e2e\" of appliance \"web\" is enrolled already") || !strings.Contains(out, own) {
		t.Errorf("status:\n%s", out)
	}
	// Freed as it says, the agent enrolls at its next start, and status says nothing more of it.
	ag.stop(t)
	if code, _, errOut := srv.shoelace(t, strings.Fields(free)[1:]...); code != 0 {
		t.Fatalf("%s: exit %d: %s", free, code, errOut)
	}
	ag = e.startAgent()
	waitFor(t, "the agent enrolled again", func() bool { return strings.Contains(ag.logs.String(), `"msg":"enrolled"`) })
	enrolled("the agent reported with its new token")
	waitFor(t, "status to no longer say it", func() bool {
		_, out, _ = e.agentCmd("status")
		return strings.Contains(out, "instance vm-e2e: revision") && !strings.Contains(out, "NOT enrolled")
	})
}

// An agent refused enrollment (its name held) whose name an operator then freed (appliance
// forget) enrolls at a later try, in the background, without a restart. Its status kept saying
// "NOT enrolled: …" until a pass wrote the status again (here the pass of the view asked again
// with the new token, which waits wait.min); it says it is enrolled as soon as it is.
func TestE2E_EnrolledInTheBackgroundStatusSaysSoAtOnce(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "wait: {min: 50s, max: 60s}\n", "  - contents: \"port={{ key \\\"port\\\" }}\\n\"\n    destination: $DIR/out/app.conf\n")
	ag := e.startAgent()
	waitFor(t, "the agent enrolled and reported", func() bool {
		l, _, err := srv.client.Instances(context.Background(), "web")
		return err == nil && len(l.Instances) == 1 && l.Instances[0].Enrolled && l.Instances[0].Applied > 0
	})
	ag.stop(t)
	if err := os.Remove(e.path("cache/web.instance-token")); err != nil {
		t.Fatal(err)
	}
	ag = e.startAgent()
	var out string
	waitFor(t, "status to say it is not enrolled", func() bool {
		_, out, _ = e.agentCmd("status")
		return strings.Contains(out, "NOT enrolled")
	})
	if code, _, errOut := srv.shoelace(t, "appliance", "forget", "web", "vm-e2e"); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut)
	}
	// The agent tries again a minute after its last try, its stream still open.
	deadline := time.Now().Add(100 * time.Second)
	for !strings.Contains(ag.logs.String(), `"msg":"enrolled"`) {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not enroll again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	enrolled := time.Now()
	for {
		_, out, _ = e.agentCmd("status")
		if strings.Contains(out, "instance vm-e2e: revision") && !strings.Contains(out, "NOT enrolled") {
			break
		}
		if time.Since(enrolled) > 10*time.Second {
			t.Fatalf("status 10 s after the enrollment:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
