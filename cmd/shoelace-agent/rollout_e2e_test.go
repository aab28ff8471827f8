//go:build !windows

package main

// End to end: staged rollouts with the built server, CLI and five agents.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// fleetAgent is one VM of the fleet: its own directory, config and running agent.
type fleetAgent struct {
	name string
	env  *env
	run  *runningAgent
}

func (a *fleetAgent) conf() string { return a.env.path("out/app.conf") }

// setServer points a's config at addr (its server: line), for its next start.
func (a *fleetAgent) setServer(t *testing.T, addr string) {
	t.Helper()
	b, err := os.ReadFile(a.env.config)
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`(?m)^server: .*$`).ReplaceAll(b, []byte("server: "+addr))
	if err := os.WriteFile(a.env.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// appliedAt reports whether s records a enrolled, its report of rev or later taken.
func (a *fleetAgent) appliedAt(s *server, rev int64) func() bool {
	return func() bool {
		l, _, err := s.client.Instances(context.Background(), "web")
		if err != nil {
			return false
		}
		for _, in := range l.Instances {
			if in.Instance == a.name {
				return in.Enrolled && in.Applied >= rev
			}
		}
		return false
	}
}

// startFleet starts n agents of appliance web (instances vm-1…vm-n). Each renders
// out/app.conf from the key port; its reload command records the revision and fails while
// the file says port=bad (a change that passes its check but breaks the service on reload).
func startFleet(t *testing.T, srv *server, n int) []*fleetAgent {
	t.Helper()
	return startFleetWith(t, srv, n, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
    check: test -s "$SHOELACE_STAGED"
    command: echo "$SHOELACE_REVISION" >> $DIR/commands; ! grep -q port=bad $DIR/out/app.conf
`)
}

// startFleetWith starts n agents of appliance web (instances vm-1…vm-n) with the templates
// YAML (see newEnv).
func startFleetWith(t *testing.T, srv *server, n int, templates string) []*fleetAgent {
	t.Helper()
	var fleet []*fleetAgent
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("vm-%d", i)
		e := newEnv(t, srv, "", templates)
		// Each VM its own instance name.
		b, err := os.ReadFile(e.config)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(e.config, bytes.Replace(b, []byte("instance: vm-e2e"), []byte("instance: "+name), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, &fleetAgent{name: name, env: e, run: e.startAgent()})
	}
	return fleet
}

// rendered waits until every agent of fleet has rendered want and enrolled; it returns each
// one's file, by name, to compare with later.
func rendered(t *testing.T, srv *server, fleet []*fleetAgent, want string) map[string]string {
	t.Helper()
	waitAll(t, fleet, "renders", want)
	files := map[string]string{}
	for _, a := range fleet {
		files[a.name] = readFile(t, a.conf())
	}
	waitEnrolled(t, srv, fleet)
	return files
}

// waitAll waits until every agent of fleet has want in its file.
func waitAll(t *testing.T, fleet []*fleetAgent, what, want string) {
	t.Helper()
	for _, a := range fleet {
		waitFor(t, a.name+" "+what, fileIs(a.conf(), want))
	}
}

// shoelace runs the CLI against srv with the admin token; it returns the exit code and output.
func (s *server) shoelace(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace"), append(args, "--addr", "http://"+s.addr, "--token-file", filepath.Join(s.dataDir, "admin.token"))...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("shoelace %v: %v", args, err)
	}
	return code, stdout.String(), stderr.String()
}

// canaryHalts writes key=value with --canary share, baking for an hour (only a failure ends
// it), and returns the one instance of its cohort once `appliance wait` exited 7 naming it and
// want.
func (s *server) canaryHalts(t *testing.T, key, value, share, want string) string {
	t.Helper()
	code, out, errOut := s.shoelace(t, "kv", "put", key, value, "--canary", share, "--bake", "1h")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	rev := strings.TrimSpace(strings.TrimPrefix(out, "revision "))
	st := s.rollout(t)
	if len(st.Cohort) != 1 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	canary := st.Cohort[0]
	code, out, errOut = s.shoelace(t, "appliance", "wait", "web", "--revision", rev, "--interval", "200ms", "--for", "2m")
	if code != 7 || !strings.Contains(errOut, canary) || !strings.Contains(errOut, want) {
		t.Fatalf("appliance wait: exit %d\n%s\n%s", code, out, errOut)
	}
	return canary
}

func (s *server) rollout(t *testing.T) api.RolloutStatus {
	t.Helper()
	code, out, errOut := s.shoelace(t, "appliance", "rollout", "status", "web", "-o", "json")
	if code != 0 {
		t.Fatalf("rollout status: exit %d: %s", code, errOut)
	}
	var st api.RolloutStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("rollout status: %v: %s", err, out)
	}
	return st
}

// waitEnrolled waits until every agent of the fleet has enrolled and reported.
func waitEnrolled(t *testing.T, srv *server, fleet []*fleetAgent) {
	t.Helper()
	waitInstances(t, srv, fleet, "every agent enrolled", func(in api.Instance) bool { return in.Enrolled && in.Applied > 0 })
}

// waitInstances waits until as many of web's instances as the fleet has agents are ok.
func waitInstances(t *testing.T, srv *server, fleet []*fleetAgent, what string, ok func(api.Instance) bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		l, _, err := srv.client.Instances(context.Background(), "web")
		if err != nil {
			return false
		}
		n := 0
		for _, in := range l.Instances {
			if ok(in) {
				n++
			}
		}
		return n == len(fleet)
	})
}

// A good change with --canary 20% --step 40% --bake reaches one VM, then three, then five, and
// ends as a release; appliance wait exits 0.
func TestE2E_RolloutGoodChangeStepsThrough(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 5)
	rendered(t, srv, fleet, "port=80\n")

	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte("keys:\n  port: \"8080\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := srv.shoelace(t, "appliance", "apply", "web", "-f", file, "--canary", "20%", "--step", "40%", "--bake", "2s", "-m", "new port")
	if code != 0 || !strings.HasPrefix(out, "revision ") || !strings.Contains(errOut, "rollout") {
		t.Fatalf("appliance apply --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	rev := strings.TrimSpace(strings.TrimPrefix(out, "revision "))
	waited := make(chan string, 1)
	go func() {
		code, out, errOut := srv.shoelace(t, "appliance", "wait", "web", "--revision", rev, "--interval", "200ms", "--for", "2m")
		waited <- fmt.Sprintf("%d|%s|%s", code, out, errOut)
	}()

	// While it runs, every VM with the change is in the cohort the server shows, and the
	// cohort grows 1 → 3 → 5.
	seen := map[int]bool{}
	for {
		var changed []string
		for _, a := range fleet {
			if b, _ := os.ReadFile(a.conf()); string(b) == "port=8080\n" {
				changed = append(changed, a.name)
			}
		}
		st := srv.rollout(t)
		for _, n := range changed {
			if st.State == api.RolloutRunning && !slices.Contains(st.Cohort, n) {
				t.Fatalf("%s has the change but is not in the cohort %v (step %d)", n, st.Cohort, st.Step)
			}
		}
		if st.State == api.RolloutRunning {
			seen[len(st.Cohort)] = true
		}
		if st.State == api.RolloutPromoted && len(changed) == 5 {
			break
		}
		if st.State != api.RolloutRunning && st.State != api.RolloutPromoted {
			t.Fatalf("rollout ended %s: %s", st.State, st.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !seen[1] || !seen[3] || !seen[5] {
		t.Fatalf("cohort sizes seen: %v, want 1, 3 and 5", seen)
	}
	select {
	case res := <-waited:
		if !strings.HasPrefix(res, "0|") || !strings.Contains(res, "promoted") {
			t.Fatalf("appliance wait: %s", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("appliance wait did not end after the promotion")
	}
	code, out, _ = srv.shoelace(t, "kv", "get", "appliances/web/port")
	if code != 0 || out != "8080" {
		t.Fatalf("live value after promotion: %d %q", code, out)
	}
	_, hist, _ := srv.shoelace(t, "appliance", "history", "web", "--limit", "1")
	if !strings.Contains(hist, "new port") || !strings.Contains(hist, "rollout") {
		t.Fatalf("the promotion's release: %s", hist)
	}
}

// A change whose reload command fails on the canary halts the rollout; the canary gets its
// previous file back (bytes equal) by itself; the other four never see it; appliance wait
// exits 7 naming the VM and its error. Then promote and abort by hand.
func TestE2E_RolloutBadChangeHaltsAtTheCanary(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 5)
	before := rendered(t, srv, fleet, "port=80\n")

	canary := srv.canaryHalts(t, "appliances/web/port", "bad", "10%", "halted")
	for _, a := range fleet {
		if a.name == canary {
			waitFor(t, "the canary restores its previous file", fileIs(a.conf(), before[a.name]))
			// It ran the command for the bad file and again for the restored one.
			if n := len(commandLines(t, a.env.path("commands"))); n < 3 {
				t.Fatalf("canary commands: %v", commandLines(t, a.env.path("commands")))
			}
			continue
		}
		if got := readFile(t, a.conf()); got != before[a.name] {
			t.Fatalf("%s is not in the canary but has %q", a.name, got)
		}
		if n := len(commandLines(t, a.env.path("commands"))); n != 1 {
			t.Fatalf("%s ran its command %d times: %v", a.name, n, commandLines(t, a.env.path("commands")))
		}
	}
	if st := srv.rollout(t); st.State != api.RolloutHalted || st.Instance != canary {
		t.Fatalf("after the failure: %+v", st)
	}
	// A pipeline that runs appliance wait after its write without --revision (as the README
	// does) learns the same, even though the rollout halted before it asked.
	code, out, errOut := srv.shoelace(t, "appliance", "wait", "web", "--for", "1m")
	if code != 7 || !strings.Contains(errOut, canary) || !strings.Contains(errOut, "halted") || !strings.Contains(errOut, "exited with status 1") {
		t.Fatalf("appliance wait without --revision after the halt: exit %d\n%s\n%s", code, out, errOut)
	}

	// By hand: a manual rollout waits for promote; abort ends one.
	if code, _, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8081", "--canary", "20%", "--manual"); code != 0 {
		t.Fatalf("manual rollout: %s", errOut)
	}
	waitFor(t, "the canary bakes", func() bool { st := srv.rollout(t); return st.BakedSince != nil })
	if st := srv.rollout(t); st.Step != 0 {
		t.Fatalf("a manual rollout moved by itself: %+v", st)
	}
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "promote", "web"); code != 0 || !strings.Contains(out, "running") {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}
	waitFor(t, "the second step", func() bool { return srv.rollout(t).Step == 1 })
	if code, _, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "9"); code != 7 || !strings.Contains(errOut, "rollout") {
		t.Fatalf("plain write during a rollout: exit %d: %s", code, errOut)
	}
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 || !strings.Contains(out, "aborted") {
		t.Fatalf("abort: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := srv.shoelace(t, "appliance", "wait", "web", "--for", "1m"); code != 7 || !strings.Contains(errOut, "aborted") {
		t.Fatalf("appliance wait after the abort: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, a := range fleet {
		waitFor(t, a.name+" back on the live keys", fileIs(a.conf(), "port=80\n"))
	}

	// --force aborts a running rollout and writes for everyone at once.
	if code, _, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8082", "--canary", "20%", "--manual"); code != 0 {
		t.Fatalf("another rollout: %s", errOut)
	}
	if code, _, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8083", "--force"); code != 0 {
		t.Fatalf("write with --force: exit %d: %s", code, errOut)
	}
	if st := srv.rollout(t); st.State != api.RolloutAborted || !strings.Contains(st.Reason, "force") {
		t.Fatalf("after --force: %+v", st)
	}
	for _, a := range fleet {
		waitFor(t, a.name+" has the forced write", fileIs(a.conf(), "port=8083\n"))
	}
	// The plain write came after the aborted rollout: a wait without --revision is not about it.
	if code, _, errOut := srv.shoelace(t, "appliance", "wait", "web", "--for", "1m"); code != 2 {
		t.Fatalf("appliance wait without --revision after a plain write: exit %d: %s", code, errOut)
	}
}

// A rollout survives the server: killed mid-rollout and started again, it carries on.
func TestE2E_RolloutSurvivesServerRestart(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, "", data)
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 2)
	waitEnrolled(t, srv, fleet)
	if code, _, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8080", "--canary", "50%", "--bake", "3s"); code != 0 {
		t.Fatalf("kv put --canary: %s", errOut)
	}
	waitFor(t, "the canary baking", func() bool { return srv.rollout(t).BakedSince != nil })
	srv.kill()
	srv2 := startServer(t, srv.addr, data)
	waitFor(t, "the rollout promoted by the restarted server", func() bool { return srv2.rollout(t).State == api.RolloutPromoted })
	waitAll(t, fleet, "has the change", "port=8080\n")
}

// leads reports whether replica s is the one moving the rollouts (GET /v1/status).
func (s *server) leads(t *testing.T) bool {
	t.Helper()
	code, out, errOut := s.shoelace(t, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("status of %s: exit %d: %s", s.addr, code, errOut)
	}
	var st struct {
		Rollouts struct {
			Leading bool `json:"leading"`
		} `json:"rollouts"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	return st.Rollouts.Leading
}

// Two replicas of one etcd: the one moving a rollout is killed (SIGKILL) while its canary
// bakes; the other one takes the lead when the lease runs out and carries the rollout to its
// promotion. The agents talk to the replica that stays.
func TestE2E_RolloutReplicaKilledAnotherCarriesOn(t *testing.T) {
	endpoints, _ := testutil.StartEtcd(t, t.TempDir())
	data := t.TempDir()
	etcd := []string{"--etcd-endpoints", strings.Join(endpoints, ","), "--admin-token-file", filepath.Join(data, "admin.token")}
	a := startServerArgs(t, "", data, etcd...)
	waitFor(t, "the first replica to lead the rollouts", func() bool { return a.leads(t) })
	b := startServerArgs(t, "", data, etcd...)
	if b.leads(t) {
		t.Fatal("two replicas lead the rollouts")
	}
	b.put("appliances/web/port", "80")
	fleet := startFleet(t, b, 3)
	for _, f := range fleet {
		waitFor(t, f.name+" renders", fileIs(f.conf(), "port=80\n"))
	}
	waitEnrolled(t, b, fleet)
	code, out, errOut := b.shoelace(t, "kv", "put", "appliances/web/port", "8080", "--canary", "30%", "--bake", "2s")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d: %s", code, errOut)
	}
	rev := strings.TrimSpace(strings.TrimPrefix(out, "revision "))
	// Only the leading replica knows since when a cohort bakes (a new leader bakes it again).
	waitFor(t, "the canary baking", func() bool { return a.rollout(t).BakedSince != nil })
	if st := b.rollout(t); st.State != api.RolloutRunning || st.Step != 0 {
		t.Fatalf("before the kill: %+v", st)
	}
	a.kill()
	waitFor(t, "the other replica to lead the rollouts", func() bool { return b.leads(t) })
	code, out, errOut = b.shoelace(t, "appliance", "wait", "web", "--revision", rev, "--interval", "200ms", "--for", "2m")
	if code != 0 || !strings.Contains(out, "promoted") {
		t.Fatalf("appliance wait: exit %d\n%s\n%s", code, out, errOut)
	}
	waitAll(t, fleet, "has the change", "port=8080\n")
	if code, out, _ := b.shoelace(t, "kv", "get", "appliances/web/port"); code != 0 || out != "8080" {
		t.Fatalf("live value after the promotion: %d %q", code, out)
	}
}

// A second VM started with a name already enrolled (and fresh) cannot enroll: it still renders
// with the appliance token and says why; once never enrolls. Once the name is forgotten (admin),
// the next enrollment may take it.
func TestE2E_EnrollRefusedStillRenders(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 1)
	waitEnrolled(t, srv, fleet)

	dup := startFleet(t, srv, 1)[0] // vm-1 again, on another "VM"
	waitFor(t, "the duplicate renders", fileIs(dup.conf(), "port=80\n"))
	waitFor(t, "the duplicate says why it is not enrolled", func() bool {
		l := dup.run.logs.String()
		return strings.Contains(l, "not enrolled") && strings.Contains(l, "enrolled already")
	})
	if _, err := os.Stat(dup.env.path("cache/web.instance-token")); !os.IsNotExist(err) {
		t.Fatalf("the duplicate has an instance token file: %v", err)
	}

	e := newEnv(t, srv, "", `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
`)
	if code, _, stderr := e.agentCmd("once"); code != 0 {
		t.Fatalf("once: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(e.path("cache/web.instance-token")); !os.IsNotExist(err) {
		t.Fatalf("once wrote an instance token: %v", err)
	}
	if l, _, err := srv.client.Instances(context.Background(), "web"); err != nil {
		t.Fatal(err)
	} else {
		for _, in := range l.Instances {
			if in.Instance == "vm-e2e" && in.Enrolled {
				t.Fatalf("once enrolled: %+v", in)
			}
		}
	}

	// forget is an admin's: the fleet's appliance token may not.
	out, err := exec.Command(filepath.Join(binDir, "shoelace"), "appliance", "forget", "web", "vm-1", "--addr", "http://"+srv.addr, "--token-file", dup.env.path("token")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		t.Fatalf("forget with the appliance token: %v: %s", err, out)
	}
	if code, _, errOut := srv.shoelace(t, "appliance", "forget", "web", "vm-1"); code != 0 {
		t.Fatalf("forget: exit %d: %s", code, errOut)
	}
	if code, _, _ := srv.shoelace(t, "appliance", "forget", "web", "vm-nope"); code != 3 {
		t.Fatalf("forget of an unknown instance: exit %d, want 3", code)
	}
}

// A change to shared/ written with --canary goes to the canary of each appliance first (here
// web, whose agents read port from shared/): a bad one halts there, the canary gets its previous
// file back and the rest never see it, and shared/ keeps its value; a good one steps through
// and is then written to shared/. A plain write of the key meanwhile exits 7.
func TestE2E_SharedRolloutCanary(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/name", "web")
	srv.put("shared/port", "80")
	fleet := startFleet(t, srv, 5)
	before := rendered(t, srv, fleet, "port=80\n")

	code, out, errOut := srv.shoelace(t, "kv", "put", "shared/port", "bad", "--canary", "20%", "--bake", "1h")
	if code != 0 || !strings.HasPrefix(out, "revision ") || !strings.Contains(errOut, "shared rollout group") {
		t.Fatalf("kv put shared/port --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	rev := strings.TrimSpace(strings.TrimPrefix(out, "revision "))
	st := srv.rollout(t)
	if len(st.Cohort) != 1 || st.Group == "" || !slices.Equal(st.Shared, []string{"port"}) {
		t.Fatalf("web's rollout of the shared change: %+v", st)
	}
	canary := st.Cohort[0]
	code, out, errOut = srv.shoelace(t, "appliance", "wait", "web", "--revision", rev, "--interval", "200ms", "--for", "2m")
	if code != 7 || !strings.Contains(errOut, canary) || !strings.Contains(errOut, "halted") {
		t.Fatalf("appliance wait: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, a := range fleet {
		if a.name == canary {
			waitFor(t, "the canary restores its previous file", fileIs(a.conf(), before[a.name]))
			continue
		}
		if got := readFile(t, a.conf()); got != before[a.name] {
			t.Fatalf("%s is not in the canary but has %q", a.name, got)
		}
		if n := len(commandLines(t, a.env.path("commands"))); n != 1 {
			t.Fatalf("%s ran its command %d times: %v", a.name, n, commandLines(t, a.env.path("commands")))
		}
	}
	if code, out, _ := srv.shoelace(t, "kv", "get", "shared/port"); code != 0 || out != "80" {
		t.Fatalf("live value after the halt: %d %q", code, out)
	}

	// A good change steps through web's fleet, then goes live; a plain write of the key
	// while it runs is refused with exit 7.
	code, out, errOut = srv.shoelace(t, "kv", "put", "shared/port", "8080", "--canary", "20%", "--step", "40%", "--bake", "1s")
	if code != 0 {
		t.Fatalf("kv put shared/port --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := srv.shoelace(t, "kv", "put", "shared/port", "9"); code != 7 || !strings.Contains(errOut, "shared rollout group") {
		t.Fatalf("plain write of a key of the group: exit %d: %s", code, errOut)
	}
	code, out, errOut = srv.shoelace(t, "appliance", "wait", "web", "--interval", "200ms", "--for", "2m")
	if code != 0 || !strings.Contains(out, "promoted") {
		t.Fatalf("appliance wait: exit %d\n%s\n%s", code, out, errOut)
	}
	waitAll(t, fleet, "has the change", "port=8080\n")
	if code, out, _ := srv.shoelace(t, "kv", "get", "shared/port"); code != 0 || out != "8080" {
		t.Fatalf("live value after the promotion: %d %q", code, out)
	}
	// appliance wait run after the group ended (no --revision) reports its end too.
	if code, out, errOut := srv.shoelace(t, "appliance", "wait", "web", "--for", "1m"); code != 0 || !strings.Contains(out, "promoted") {
		t.Fatalf("appliance wait after the promotion: exit %d\n%s\n%s", code, out, errOut)
	}
}

// A canary killed (SIGKILL) while the reload command of the candidate runs, whose reload then
// fails when the restarted agent runs the command it owed, has failed the candidate: the
// rollout halts on it, naming the command, and the other VM never gets the change. (Before,
// the owed command's failure was logged only: the canary reported the candidate applied,
// without an error, and the rollout moved on to the whole fleet.) Once halted, the canary
// renders the live keys again and reloads.
func TestE2E_RolloutCanaryKilledInItsReloadHalts(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	// The first reload of port=bad kills the agent (its parent) before it ends; every reload
	// of port=bad fails.
	fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
    command: echo "$SHOELACE_REVISION" >> $DIR/commands; if grep -q port=bad $DIR/out/app.conf && [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 1; fi; ! grep -q port=bad $DIR/out/app.conf
`)
	rendered(t, srv, fleet, "port=80\n")
	// The restarted agent owes the reload, runs it, and it fails.
	canary, other := killedCanaryHalts(t, srv, fleet, "command")
	if n := len(commandLines(t, other.env.path("commands"))); n != 1 {
		t.Fatalf("%s ran its command %d times, want once (the first render)", other.name, n)
	}
	// Halted: the canary is back on the live keys, reloaded.
	waitFor(t, "the canary back on the live keys", fileIs(canary.conf(), "port=80\n"))
	waitFor(t, "the canary's reload of the live keys", func() bool { return len(commandLines(t, canary.env.path("commands"))) >= 4 })
}

// A canary killed while its health check of the candidate runs (the command ran) runs the
// owed reload at its next start with the health check, which fails: the rollout halts there and
// the canary goes back to the live view. (Before, the restart ran the owed command alone, never
// the health check, and reported the candidate applied: the rollout took its next step and the
// candidate reached the other VM. A template with a health check and no command owed nothing:
// the restart ran no health check either.)
func TestE2E_RolloutCanaryKilledInItsHealthCheckHalts(t *testing.T) {
	// The first health check of port=bad kills the agent (its parent) before it ends; every
	// health check of port=bad fails.
	const health = `    health: echo "$SHOELACE_REVISION:$SHOELACE_DESTINATIONS" >> $DIR/health; if grep -q port=bad $DIR/out/app.conf && [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 1; fi; ! grep -q port=bad $DIR/out/app.conf
    health_retries: 0
`
	for _, tc := range []struct {
		name    string
		command string
		// healths is how many health checks the canary ran by the end: the first render's, the
		// candidate's, the owed reload's, and (with a command, run again on the restored file)
		// the live view's after the halt.
		healths int
	}{
		{"with a command", `    command: echo "$SHOELACE_REVISION" >> $DIR/commands
`, 4},
		{"without a command", "", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, "", t.TempDir())
			srv.put("appliances/web/port", "80")
			fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
`+tc.command+health)
			rendered(t, srv, fleet, "port=80\n")
			// The restarted agent owes the reload: the command, then the health check, which fails.
			canary, _ := killedCanaryHalts(t, srv, fleet, "health")
			// Halted: the canary is back on the live keys.
			waitFor(t, "the canary back on the live keys", fileIs(canary.conf(), "port=80\n"))
			if tc.command != "" {
				waitFor(t, "the canary's reload of the live keys", func() bool { return len(commandLines(t, canary.env.path("commands"))) >= 4 })
			}
			waitFor(t, "the canary's health checks", func() bool { return len(commandLines(t, canary.env.path("health"))) >= tc.healths })
			if got := commandLines(t, canary.env.path("health")); len(got) != tc.healths {
				t.Fatalf("canary's health checks at revisions %v, want %d", got, tc.healths)
			}
			for _, l := range commandLines(t, canary.env.path("health")) {
				if !strings.HasSuffix(l, ":"+canary.conf()) {
					t.Fatalf("canary's health checks ran with REVISION:DESTINATIONS %v, want its file named in each", commandLines(t, canary.env.path("health")))
				}
			}
		})
	}
}

// A candidate that gives a canary a file it did not have (a key that a template needs appears),
// whose reload then fails, halts the rollout and leaves no file of the candidate behind: the
// canary removes the file it created and runs the command again, as it restores a file that
// existed. (Before, a first install kept its new file, so the halted canary, back on the live
// view, which cannot render that template, kept the candidate's file for good.)
func TestE2E_RolloutCanaryFirstInstallUndone(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/out/feature.conf
    command: echo "$SHOELACE_REVISION" >> $DIR/commands; ! grep -q feature=bad $DIR/out/feature.conf
`)
	waitAll(t, fleet, "renders", "port=80\n")
	// feature.conf cannot render yet: no instance has applied a revision, but each enrolled.
	waitInstances(t, srv, fleet, "every agent enrolled", func(in api.Instance) bool { return in.Enrolled && in.Error != "" })

	canary := srv.canaryHalts(t, "appliances/web/feature", "bad", "50%", "(command)")
	for _, a := range fleet {
		if _, err := os.Stat(a.env.path("out/feature.conf")); !os.IsNotExist(err) {
			t.Fatalf("%s has the candidate's feature.conf after the halt: %v", a.name, err)
		}
		if got := readFile(t, a.conf()); got != "port=80\n" {
			t.Fatalf("%s has %q", a.name, got)
		}
		want := 0
		if a.name == canary {
			want = 2 // for the candidate, and again once its file is gone
		}
		if b, _ := os.ReadFile(a.env.path("commands")); strings.Count(string(b), "\n") != want {
			t.Fatalf("%s ran its command: %q, want %d times", a.name, b, want)
		}
	}
}

// A canary killed in the reload that follows the undo of a rollout's file after an abort (the
// live view cannot render the file the candidate created: it is removed) runs that reload again
// at its next start. (Before, nothing was owed for an undo: the restart found the file gone,
// ran no command, and the service kept the candidate's configuration until the next change.)
func TestE2E_RolloutCanaryKilledInTheReloadOfItsUndo(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	// The reload after feature.conf went away kills the agent (its parent) before it ends.
	fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/out/feature.conf
    command: echo "$SHOELACE_REVISION" >> $DIR/commands; if [ -e $DIR/out/feature.conf ]; then touch $DIR/had; elif [ -e $DIR/had ] && [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 1; fi
`)
	waitAll(t, fleet, "renders", "port=80\n")
	waitInstances(t, srv, fleet, "every agent enrolled", func(in api.Instance) bool { return in.Enrolled && in.Error != "" })

	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/feature", "on", "--canary", "50%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	canary, _ := canaryOfTwo(fleet, srv.rollout(t))
	feature := canary.env.path("out/feature.conf")
	waitFor(t, "the canary's candidate", fileIs(feature, "feature=on\n"))
	waitFor(t, "the canary's reload of the candidate", func() bool { return len(commandLines(t, canary.env.path("commands"))) == 1 })
	done := make(chan error, 1)
	go func() { done <- canary.run.cmd.Wait() }()
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	waitKilled(t, done, "the canary's agent", "by the reload of its undo")
	if _, err := os.Stat(feature); !os.IsNotExist(err) {
		t.Fatalf("feature.conf after the undo: %v, want it removed", err)
	}

	// The restarted agent owes the reload of the undone file and runs it.
	canary.run = canary.env.startAgent()
	waitFor(t, "the reload of the undo again", func() bool { return len(commandLines(t, canary.env.path("commands"))) >= 3 })
	time.Sleep(time.Second)
	if got := commandLines(t, canary.env.path("commands")); len(got) != 3 {
		t.Fatalf("canary's commands at revisions %v, want the candidate's, the killed undo's and its owed one", got)
	}
	if _, err := os.Stat(feature); !os.IsNotExist(err) {
		t.Fatalf("feature.conf after the restart: %v, want it removed", err)
	}
}

// A rollout halted by its deadline (one VM of the cohort is down) lists the VMs that had
// applied the candidate, and are back on the live view, as applied, in the CLI's text and
// JSON: before, they were listed pending, as if the halted rollout still waited for them.
func TestE2E_RolloutHaltedStatusShowsWhoApplied(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 3)
	rendered(t, srv, fleet, "port=80\n")
	down := fleet[2]
	down.run.cmd.Process.Kill()
	down.run.cmd.Wait()

	code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8080", "--canary", "100%", "--deadline", "5s")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	waitAll(t, fleet[:2], "renders the candidate", "port=8080\n")
	waitFor(t, "the deadline to halt the rollout", func() bool { return srv.rollout(t).State == api.RolloutHalted })
	waitAll(t, fleet[:2], "goes back to the live view", "port=80\n")
	waitFor(t, "the reports of the live view", func() bool {
		l, _, err := srv.client.Instances(context.Background(), "web")
		if err != nil {
			return false
		}
		back := 0
		for _, in := range l.Instances {
			if in.Instance != down.name && in.Rollout == "" && in.Applied > 0 {
				back++
			}
		}
		return back == 2
	})

	st := srv.rollout(t)
	for _, in := range st.Instances {
		want := "applied"
		if in.Instance == down.name {
			want = "failed"
		}
		if in.State != want {
			t.Fatalf("halted rollout: %s is %s, want %s: %+v", in.Instance, in.State, want, st.Instances)
		}
	}
	code, out, errOut = srv.shoelace(t, "appliance", "rollout", "status", "web")
	if code != 0 || !strings.Contains(out, "halted, its cohort is back on the live view") || strings.Contains(out, "pending") {
		t.Fatalf("rollout status: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, a := range fleet[:2] {
		if !strings.Contains(out, fmt.Sprintf("  %-24s %-8s %-11s", a.name, "canary", "applied")) {
			t.Fatalf("rollout status does not list %s applied:\n%s", a.name, out)
		}
	}
}

// canaryOfTwo is, of a fleet of two whose rollout st drew one, the agent drawn and the other.
// killedCanaryHalts writes port=bad as a rollout to one of the two agents of fleet, whose
// reload's stage (command, health) kills its agent at the first try and fails at every one:
// it waits for the canary's agent to be killed with the candidate installed, starts it again,
// and checks that the rollout halts on the canary's owed reload failing at stage, the other
// agent never given the candidate.
func killedCanaryHalts(t *testing.T, srv *server, fleet []*fleetAgent, stage string) (canary, other *fleetAgent) {
	t.Helper()
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "bad", "--canary", "50%", "--bake", "1s"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	if len(st.Cohort) != 1 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	canary, other = canaryOfTwo(fleet, st)
	done := make(chan error, 1)
	go func() { done <- canary.run.cmd.Wait() }()
	waitKilled(t, done, "the canary's agent", fmt.Sprintf("by its %s", stage))
	if got := readFile(t, canary.conf()); got != "port=bad\n" {
		t.Fatalf("canary file after the kill = %q, want the candidate installed", got)
	}
	canary.run = canary.env.startAgent()
	waitFor(t, "the rollout to end", func() bool {
		if b, _ := os.ReadFile(other.conf()); string(b) == "port=bad\n" {
			t.Fatalf("%s, outside the canary, got the candidate: the rollout moved on (%+v)", other.name, srv.rollout(t))
		}
		return srv.rollout(t).State != api.RolloutRunning
	})
	st = srv.rollout(t)
	if st.State != api.RolloutHalted || st.Instance != canary.name || !strings.Contains(st.Reason, "("+stage+")") || !strings.Contains(st.Reason, "owed by the last run") {
		t.Fatalf("rollout after the canary's owed reload failed: %s (%s): %s, want halted by %s's %s", st.State, st.Instance, st.Reason, canary.name, stage)
	}
	if got := readFile(t, other.conf()); got != "port=80\n" {
		t.Fatalf("%s, outside the canary, has %q", other.name, got)
	}
	return canary, other
}

func canaryOfTwo(fleet []*fleetAgent, st api.RolloutStatus) (canary, other *fleetAgent) {
	for _, a := range fleet {
		if a.name == st.Cohort[0] {
			canary = a
		} else {
			other = a
		}
	}
	return canary, other
}

// A canary whose reload of the candidate is still running when the rollout is aborted reports
// the candidate applied once the reload ends, after the abort: it is sent back to the live
// view, which it renders and reloads, and the aborted rollout lists it not applied, its record
// the live view. (Before, the server counted that late report as one the abort had missed:
// `rollout status` listed the canary applied, as if it had run the candidate for the rollout.)
func TestE2E_RolloutAbortedDuringTheCanarysReloadDoesNotCountIt(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	// The reload of port=81 waits until the test lets it end.
	fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
    command: echo "$SHOELACE_REVISION" >> $DIR/commands; if grep -q port=81 $DIR/out/app.conf; then touch $DIR/reloading; while [ ! -e $DIR/go ]; do sleep 0.05; done; fi
`)
	rendered(t, srv, fleet, "port=80\n")
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "81", "--canary", "50%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	canary, other := canaryOfTwo(fleet, st)
	waitFor(t, "the canary's reload of the candidate", func() bool {
		_, err := os.Stat(canary.env.path("reloading"))
		return err == nil
	})
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	// The reload ends after the abort: the agent reports the candidate, then goes back.
	if err := os.WriteFile(canary.env.path("go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the canary back on the live keys", fileIs(canary.conf(), "port=80\n"))
	waitFor(t, "the canary's report of the live view", func() bool {
		l, _, err := srv.client.Instances(context.Background(), "web")
		if err != nil {
			return false
		}
		for _, in := range l.Instances {
			if in.Instance == canary.name {
				return in.Rollout == "" && in.Applied > st.Revision
			}
		}
		return false
	})
	time.Sleep(time.Second) // a late count would have been written by now
	got := srv.rollout(t)
	for _, in := range got.Instances {
		if in.Instance == canary.name && in.State != "pending" {
			t.Fatalf("aborted rollout: %s is %s, want pending (its reload ended after the abort): %+v", canary.name, in.State, got.Instances)
		}
	}
	code, out, errOut := srv.shoelace(t, "appliance", "rollout", "status", "web")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("  %-24s %-8s %-11s", canary.name, "canary", "not applied")) {
		t.Fatalf("rollout status does not list %s not applied: exit %d\n%s\n%s", canary.name, code, out, errOut)
	}
	if got := readFile(t, other.conf()); got != "port=80\n" {
		t.Fatalf("%s, outside the canary, has %q", other.name, got)
	}
}

// A canary killed (SIGKILL) in the reload of the live view that an abort installed over the
// candidate's file, a reload that fails (the live view failed before the rollout too: the
// rollout was its fix), puts back at its next start, when the reload it owed fails there,
// what the candidate replaced, and runs the command again on it, as the same failure without
// the kill does. (Before, the owed record kept nothing for a file that held a candidate, and
// the candidate's record was cleared before the reload: the live view's failing file stayed,
// and the file before the candidate was lost.)
func TestE2E_RolloutAbortedCanaryKilledInTheLiveReloadRestoresAtRestart(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/v", "one")
	// Every reload of v=bad fails; the first once $DIR/kill-bad exists kills the agent (its
	// parent) before it ends.
	fleet := startFleetWith(t, srv, 2, `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/out/app.conf
    command: 'cat $DIR/out/app.conf >> $DIR/commands; if grep -q bad $DIR/out/app.conf && [ -e $DIR/kill-bad ]; then rm $DIR/kill-bad; kill -9 $PPID; sleep 3; fi; ! grep -q bad $DIR/out/app.conf'
`)
	waitAll(t, fleet, "renders", "v=one\n")
	// A live change whose reload fails: rolled back to v=one, the command run again.
	srv.put("appliances/web/v", "bad")
	for _, a := range fleet {
		waitFor(t, a.name+"'s rollback", func() bool { return len(commandLines(t, a.env.path("commands"))) == 3 })
	}
	// Its fix, on a canary.
	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/v", "fixed", "--canary", "50%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	canary, _ := canaryOfTwo(fleet, srv.rollout(t))
	waitFor(t, "the canary's candidate", fileIs(canary.conf(), "v=fixed\n"))
	waitFor(t, "the canary's reload of the candidate", func() bool { return len(commandLines(t, canary.env.path("commands"))) == 4 })
	if err := os.WriteFile(canary.env.path("kill-bad"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- canary.run.cmd.Wait() }()
	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	waitKilled(t, done, "the canary's agent", "by the reload of the live view")
	if got := readFile(t, canary.conf()); got != "v=bad\n" {
		t.Fatalf("app.conf = %q before the restart, want the live view that the command killed", got)
	}

	canary.run = canary.env.startAgent()
	waitFor(t, "the file before the candidate back", fileIs(canary.conf(), "v=one\n"))
	waitFor(t, "the command run again", func() bool { return len(commandLines(t, canary.env.path("commands"))) == 7 })
	if got, want := strings.Join(commandLines(t, canary.env.path("commands")), " "), "v=one v=bad v=one v=fixed v=bad v=bad v=one"; got != want {
		t.Fatalf("canary's commands saw %q, want %q: the owed reload fails, the command runs again on what the candidate replaced", got, want)
	}
}
