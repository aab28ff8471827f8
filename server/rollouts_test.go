package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
)

// fleetTokens are the instance tokens of the fleets enrollFleet enrolled, by instance name.
var fleetTokens sync.Map

// enrollFleet enrolls n instances of appliance web (vm-0…) with web's agent token, as their
// agents do when they start, and waits a moment so that a rollout starts after it.
func enrollFleet(t *testing.T, f *fixture, n int) []string {
	t.Helper()
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"web-agent-`+fmt.Sprint(time.Now().UnixNano())+`","appliance":"web"}`, "Content-Type", "application/json"), 201, &tok)
	var names []string
	for i := range n {
		name := fmt.Sprintf("vm-%d", i)
		names = append(names, name)
		fleetTokens.Store(fmt.Sprintf("%p/%s", f.st, name), f.enroll(tok.Token, "web", name).Token)
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout started, by the server's clock
	return names
}

// instanceToken is the instance token of name in f's fleet.
func instanceToken(t *testing.T, f *fixture, name string) string {
	t.Helper()
	tok, ok := fleetTokens.Load(fmt.Sprintf("%p/%s", f.st, name))
	if !ok {
		t.Fatalf("%s is not enrolled", name)
	}
	return tok.(string)
}

// viewOf reads web's view as instance sees it, with its instance token ("": the admin token,
// without an instance).
func viewOf(t *testing.T, f *fixture, instance string) api.View {
	t.Helper()
	var v api.View
	if instance == "" {
		f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
		return v
	}
	f.must(f.doToken(instanceToken(t, f, instance), "GET", "/v1/appliances/web", "", api.HeaderInstance, instance), 200, &v)
	return v
}

func rolloutStatus(t *testing.T, f *fixture) api.RolloutStatus {
	t.Helper()
	var st api.RolloutStatus
	f.must(f.do("GET", "/v1/appliances/web/rollout", ""), 200, &st)
	return st
}

// report posts instance's report of having applied its current view (or failed it).
func report(t *testing.T, f *fixture, instance string, v api.View, failure string) {
	t.Helper()
	rep := api.Report{Instance: instance, Revision: v.Revision, Applied: v.Revision, Rollout: v.Rollout}
	if failure != "" {
		rep.Applied, rep.Error, rep.Stage = 0, failure, api.StageCommand
	}
	b, _ := json.Marshal(rep)
	f.must(f.doToken(instanceToken(t, f, instance), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json", api.HeaderInstance, instance), 200, nil)
}

// A rollout brings the candidate to the canary first, then step by step to every instance as
// each cohort reports it applied, and ends as a release of the live tree; plain writes wait.
func TestRollout_StepsThenPromotes(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 5)

	// A step of 57%: the share's float times 100 is 56.99999999999999, which the rollout's
	// release message said until it wrote shares as they were given.
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=20%25&step=57%25&bake=50ms", `{"keys":{"port":"8080"}}`, api.HeaderMessage, "new port"), http.StatusAccepted, &st)
	if st.State != api.RolloutRunning || !slices.Equal(st.Steps, []int{1, 4, 5}) || len(st.Cohort) != 1 {
		t.Fatalf("started: %+v", st)
	}
	canary := st.Cohort[0]
	if v := viewOf(t, f, canary); v.Keys["port"] != "8080" || v.Keys["ntp"] != "pool" || v.Rollout != st.ID {
		t.Fatalf("canary view: %+v", v)
	}
	for _, n := range fleet {
		if n != canary {
			if v := viewOf(t, f, n); v.Keys["port"] != "80" || v.Rollout != "" {
				t.Fatalf("%s is not in the cohort but sees %+v", n, v)
			}
		}
	}
	if v := viewOf(t, f, ""); v.Keys["port"] != "80" {
		t.Fatalf("a view without instance sees the candidate: %+v", v)
	}
	// Plain writes to the appliance are refused while it runs; shared/ is not.
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port", "81"), http.StatusConflict, api.CodeRolloutInProgress, "web", "rollout")
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"81"}}`), http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("PUT", "/v1/appliances/web?canary=10%25", `{"keys":{"port":"82"}}`), http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/x","value":"1"},{"op":"delete","key":"appliances/web/port"}]}`, "Content-Type", "application/json"),
		http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("DELETE", "/v1/kv/appliances?recurse", ""), http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), http.StatusConflict, api.CodeRolloutInProgress)
	f.put("shared/dns", "1.1.1.1")

	// Each cohort in turn applies the candidate: the rollout advances to the end.
	done := map[string]bool{}
	waitFor(t, "the rollout to be promoted", func() bool {
		st = rolloutStatus(t, f)
		for _, n := range st.Cohort {
			if !done[n] {
				// The status reads the record from etcd; the views are served from what the
				// replica holds of it, which the step's write (or the watch) sets a moment
				// later. The cohort's views change then, and the rollout cannot move on
				// without their reports.
				var v api.View
				waitFor(t, n+" in the cohort to get the candidate", func() bool {
					v = viewOf(t, f, n)
					return v.Rollout == st.ID || st.State != api.RolloutRunning
				})
				report(t, f, n, v, "")
				done[n] = true
			}
		}
		return st.State == api.RolloutPromoted
	})
	if len(done) != 5 {
		t.Fatalf("promoted with %d of 5 instances reporting", len(done))
	}
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/port", ""), 200, &kv)
	if kv.Value != "8080" {
		t.Fatalf("live value after promotion: %q", kv.Value)
	}
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web/releases", ""), 200, &rels)
	if len(rels.Releases) < 2 || !strings.Contains(rels.Releases[0].Message, "rollout "+st.ID) || !strings.Contains(rels.Releases[0].Message, "new port") {
		t.Fatalf("newest release: %+v", rels.Releases)
	}
	// Its start is a release too, of kind rollout, naming what the candidate changes.
	if r := rels.Releases[1]; r.Kind != api.KindRollout || r.Rollout != st.ID || !strings.Contains(r.Message, "started: canary 20%, step 57%: new port") ||
		len(r.Changes) != 1 || !slices.Equal(r.Changes[0].Changed, []string{"appliances/web/port"}) {
		t.Fatalf("the rollout's start: %+v", r)
	}
	// Ended: plain writes go again, and every instance has the live view.
	f.put("appliances/web/port", "8081")
	if v := viewOf(t, f, canary); v.Keys["port"] != "8081" || v.Rollout != "" {
		t.Fatalf("after the rollout: %+v", v)
	}
}

// A failure reported by a canary halts the rollout at once and gives the canary back the live
// view; the others never see the candidate. A halted rollout is final.
func TestRollout_FailureHalts(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 5)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25&bake=1h", "bad"), http.StatusAccepted, &st)
	canary := st.Cohort[0]
	v := viewOf(t, f, canary)
	if v.Keys["port"] != "bad" {
		t.Fatalf("canary view: %+v", v)
	}
	report(t, f, canary, v, "systemctl reload nginx: exited with status 1")
	st = rolloutStatus(t, f)
	if st.State != api.RolloutHalted || st.Instance != canary || !strings.Contains(st.Reason, "status 1") {
		t.Fatalf("after a failure: %+v", st)
	}
	if v := viewOf(t, f, canary); v.Keys["port"] != "80" || v.Rollout != "" {
		t.Fatalf("canary still sees the candidate after the halt: %+v", v)
	}
	f.mustErr(f.do("POST", "/v1/appliances/web/rollout", `{"action":"promote"}`, "Content-Type", "application/json"), http.StatusConflict, api.CodeConflict, "halted")
	// The next write with canary starts a new rollout.
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25", "good"), http.StatusAccepted, &st)
	if st.State != api.RolloutRunning {
		t.Fatalf("new rollout: %+v", st)
	}
	// Abort by hand; then force: a plain write with force aborts the next one.
	var ab api.RolloutStatus
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, &ab)
	if ab.State != api.RolloutAborted {
		t.Fatalf("abort: %+v", ab)
	}
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25", "again"), http.StatusAccepted, &st)
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port", "x"), http.StatusConflict, api.CodeRolloutInProgress)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?force", "forced"), 200, nil)
	if st = rolloutStatus(t, f); st.State != api.RolloutAborted || !strings.Contains(st.Reason, "force") {
		t.Fatalf("after a forced write: %+v", st)
	}
}

// A canary that never reports halts the rollout at its deadline; manual rollouts wait for
// promote at each step.
func TestRollout_DeadlineAndManual(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&deadline=300ms", "x"), http.StatusAccepted, &st)
	waitFor(t, "the deadline to halt the rollout", func() bool { return rolloutStatus(t, f).State == api.RolloutHalted })
	if st = rolloutStatus(t, f); !strings.Contains(st.Reason, "deadline") || st.Instance == "" {
		t.Fatalf("deadline halt: %+v", st)
	}

	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&manual", "y"), http.StatusAccepted, &st)
	c := st.Cohort[0]
	report(t, f, c, viewOf(t, f, c), "")
	waitFor(t, "the canary to bake", func() bool { return rolloutStatus(t, f).BakedSince != nil })
	if st = rolloutStatus(t, f); st.Step != 0 || st.State != api.RolloutRunning {
		t.Fatalf("manual rollout moved by itself: %+v", st)
	}
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"promote"}`, "Content-Type", "application/json"), 200, nil)
	waitFor(t, "the second step", func() bool { return rolloutStatus(t, f).Step == 1 })
}

// Bad rollout parameters are refused with the rule they break; no instance, no rollout.
func TestRollout_BadInput(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("shared/ntp", "x")
	for _, c := range []struct{ path, body, words string }{
		{"/v1/kv/appliances/web/port?canary=0%25", "1", "canary"},
		{"/v1/kv/appliances/web/port?canary=150%25", "1", "canary"},
		{"/v1/kv/appliances/web/port?step=10%25", "1", "needs canary"},
		{"/v1/kv/appliances/web/port?canary=10%25&bake=forever", "1", "bake"},
		{"/v1/kv/appliances/web/port?canary=10%25&deadline=0s", "1", "deadline"},
		{"/v1/kv/appliances/web/port?canary=10%25&cas=3", "1", "cas"},
	} {
		f.mustErr(f.do("PUT", c.path, c.body), http.StatusBadRequest, api.CodeInvalidRequest, c.words)
	}
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25", "1"), http.StatusConflict, api.CodeConflict, "no enrolled instance")
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound)
	f.mustErr(f.do("POST", "/v1/appliances/web/rollout", `{"action":"dance"}`, "Content-Type", "application/json"), http.StatusBadRequest, api.CodeInvalidRequest, "promote")
}

// A rollout is moved by one replica at a time; when that one goes away, another carries on.
func TestRollout_AnotherReplicaCarriesOn(t *testing.T) {
	parallelShared(t)
	a := newFixture(t)
	b := newFixtureOn(t, a.st)
	b.token = a.token
	a.put("appliances/web/port", "80")
	fleet := enrollFleet(t, a, 2)
	waitFor(t, "a leader", func() bool { return a.s.rollouts.leading.Load() || b.s.rollouts.leading.Load() })
	leader, other := a, b
	if b.s.rollouts.leading.Load() {
		leader, other = b, a
	}
	if other.s.rollouts.leading.Load() {
		t.Fatal("both replicas lead the rollouts")
	}
	var st api.RolloutStatus
	other.must(other.do("PUT", "/v1/kv/appliances/web/port?canary=50%25", "8080"), http.StatusAccepted, &st)
	// The leader goes away (its lease is handed over as it stops), then the canary reports.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leader.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other replica to lead", func() bool { return other.s.rollouts.leading.Load() })
	for _, n := range fleet {
		v := viewOf(t, other, n)
		if v.Rollout != "" {
			report(t, other, n, v, "")
		}
	}
	waitFor(t, "the second step", func() bool { return rolloutStatus(t, other).Step == 1 })
	c := rolloutStatus(t, other).Cohort
	for _, n := range c {
		report(t, other, n, viewOf(t, other, n), "")
	}
	waitFor(t, "the promotion", func() bool { return rolloutStatus(t, other).State == api.RolloutPromoted })
}

// A rollback can be rolled out too: guarded like a plain one, promoted as a rollback release.
func TestRollout_Rollback(t *testing.T) {
	f := newFixture(t)
	old := f.put("appliances/web/port", "80")
	cur := f.put("appliances/web/port", "81")
	fleet := enrollFleet(t, f, 1)
	body := `{"keys":{"port":"80"}}`
	hdr := []string{api.HeaderRollback, fmt.Sprint(old), "Content-Type", "application/json"}
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?canary=100%%25&cas=%d", old), body, hdr...), http.StatusConflict, api.CodeConflict, "changed")
	var st api.RolloutStatus
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?canary=100%%25&cas=%d", cur), body, hdr...), http.StatusAccepted, &st)
	if st.Kind != api.KindRollback {
		t.Fatalf("kind %q", st.Kind)
	}
	report(t, f, fleet[0], viewOf(t, f, fleet[0]), "")
	waitFor(t, "the promotion", func() bool { return rolloutStatus(t, f).State == api.RolloutPromoted })
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web/releases", ""), 200, &rels)
	if r := rels.Releases[0]; r.Kind != api.KindRollback || !strings.Contains(r.Message, fmt.Sprintf("rollback of web to revision %d", old)) {
		t.Fatalf("release: %+v", r)
	}
}

// A cohort's instance whose name is taken over during the rollout (stale, enrolled again with
// the fleet's appliance token) is not the instance drawn: its new holder's reports neither
// halt the rollout nor let it advance.
func TestRollout_TakenOverInstanceDoesNotCount(t *testing.T) {
	parallelShared(t)
	f := newFixture(t, func(c *Config) { c.InstanceStale = 2 * time.Second })
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	drawn := f.enroll(agent, "web", "vm-0")
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout started, by the server's clock
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&deadline=1h", "8080"), http.StatusAccepted, &st)

	// Once the name is stale, the fleet's token takes it over.
	var taker api.Enrolled
	waitFor(t, "vm-0 to be stale and taken over", func() bool {
		r := f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-0"}`)
		if r.StatusCode != http.StatusCreated {
			return false
		}
		f.must(r, http.StatusCreated, &taker)
		return true
	})
	if taker.Token == drawn.Token {
		t.Fatal("the same token twice")
	}
	var v api.View
	f.must(f.doToken(taker.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	post := func(rep api.Report) {
		b, _ := json.Marshal(rep)
		f.must(f.doToken(taker.Token, "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json"), 200, nil)
	}
	// A failure of the new holder does not halt it...
	post(api.Report{Instance: "vm-0", Revision: v.Revision, Rollout: st.ID, Error: "forged", Stage: api.StageCommand})
	if got := rolloutStatus(t, f); got.State != api.RolloutRunning {
		t.Fatalf("halted by the new holder of a name drawn: %+v", got)
	}
	// ...and its report of the candidate applied does not advance it.
	post(api.Report{Instance: "vm-0", Revision: v.Revision, Applied: v.Revision, Rollout: st.ID})
	waitFor(t, "the report recorded", func() bool {
		in, _ := f.record("web", "vm-0")
		return in.Rollout == st.ID && in.Applied == v.Revision
	})
	if err := f.s.stepRollout(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if got := rolloutStatus(t, f); got.State != api.RolloutRunning || got.Instances[0].State != "pending" {
		t.Fatalf("counted the new holder of a name drawn: %+v", got)
	}
}

// Only the instance's own token gets the candidate: the fleet's appliance token naming a
// cohort's instance gets the live view (and so learns neither the candidate nor its id).
func TestRollout_CandidateOnlyForTheInstanceToken(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-0")
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout started, by the server's clock
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "8080"), http.StatusAccepted, nil)
	var v api.View
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout == "" {
		t.Fatalf("the instance's view: %+v", v)
	}
	for _, path := range []string{"/v1/appliances/web", "/v1/appliances/web?index=1&wait=5s"} {
		for _, tok := range []string{agent, f.token} {
			var got api.View
			f.must(f.doToken(tok, "GET", path, "", api.HeaderInstance, "vm-0"), 200, &got)
			if got.Keys["port"] != "80" || got.Rollout != "" {
				t.Fatalf("GET %s as vm-0 with a token other than its instance token: %+v", path, got)
			}
		}
	}
}

// A report's words reach rollout status and appliance wait, read in terminals: control
// characters and bidi controls in them are replaced (the failure still halts the rollout), and
// a rollout id is one as a view gives it.
func TestRollout_ReportTextShowable(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 1)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "8080"), http.StatusAccepted, &st)
	tok := instanceToken(t, f, fleet[0])
	v := viewOf(t, f, fleet[0])
	post := func(rep api.Report, hdr ...string) resp {
		b, _ := json.Marshal(rep)
		return f.doToken(tok, "POST", "/v1/appliances/web/report", string(b), append([]string{"Content-Type", "application/json"}, hdr...)...)
	}
	f.mustErr(post(api.Report{Instance: fleet[0], Rollout: "\u202e" + st.ID[:10]}), 400, api.CodeInvalidRequest, "rollout id")
	f.mustErr(f.doToken(tok, "GET", "/v1/appliances/web", "", api.HeaderRollout, "<b>"), 400, api.CodeInvalidRequest, api.HeaderRollout)
	evil := "nginx: \x1b]0;owned\x07\x1b[2J\u202eboom\u2066\x7f\u0085\nline 2\tend"
	f.must(post(api.Report{Instance: fleet[0], Revision: v.Revision, Rollout: st.ID, Error: evil, Stage: api.StageCommand, Template: "t\x1b[1m", Version: "v\x00"}), 200, nil)
	st = rolloutStatus(t, f)
	if st.State != api.RolloutHalted {
		t.Fatalf("not halted: %+v", st)
	}
	for what, text := range map[string]string{"reason": st.Reason, "error": st.Instances[0].Error} {
		if strings.ContainsAny(text, "\x1b\x07\x00\x7f\u0085\u202e\u2066") || !strings.Contains(text, "boom") || !strings.Contains(text, "\nline 2\tend") {
			t.Errorf("%s: %q", what, text)
		}
	}
}

// The gate of an appliance with many instance records (a large fleet, or names its appliance
// token made up) reads them less often than every tick: not megabytes four times a second.
func TestRollout_GateReadsSpacedBySize(t *testing.T) {
	var mu sync.Mutex
	var reads []time.Time
	read := readGateReports
	readGateReports = func(s *Server, ctx context.Context, name string) (map[string]api.Instance, int64, error) {
		mu.Lock()
		reads = append(reads, time.Now())
		mu.Unlock()
		return read(s, ctx, name)
	}
	t.Cleanup(func() { readGateReports = read })
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 1)
	puts := map[string][]byte{}
	for i := range 1000 {
		in := api.Instance{Appliance: "web", Instance: fmt.Sprintf("made-up-%d", i), LastSeen: time.Now().UTC(), Token: "web-agent"}
		puts[instanceRecordKey("web", in.Instance)], _ = json.Marshal(in)
	}
	if _, err := f.st.SysApply(context.Background(), nil, puts, nil); err != nil {
		t.Fatal(err)
	}
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "8080"), http.StatusAccepted, nil)
	waitFor(t, "four reads of the gate", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reads) >= 4
	})
	mu.Lock()
	defer mu.Unlock()
	if err := spacedReads(reads, 2*rolloutTick); err != nil {
		t.Errorf("the gate of 1001 records: %v", err)
	}
}

// spacedReads says how reads at fail to be spaced by every on average: a read each tick, where
// the budget allows one every few, has a mean gap of one tick. Single gaps are not judged
// (but for two reads within one tick): on a loaded machine a tick the rollout loop took late
// makes its gap long and the next one short.
func spacedReads(at []time.Time, every time.Duration) error {
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < rolloutTick/2 {
			return fmt.Errorf("read again after %s (reads at %v)", gap, at)
		}
	}
	if n := len(at); n > 1 {
		if mean := at[n-1].Sub(at[0]) / time.Duration(n-1); mean < every {
			return fmt.Errorf("read every %s on average, want every %s or more (reads at %v)", mean, every, at)
		}
	}
	return nil
}

// The gates of many running rollouts (a shared rollout group over a fleet of appliances) share
// one budget of reads: each appliance's records, and its rollout's record, are read every few
// ticks, not each of them every tick while the cohorts apply or bake.
func TestRollout_GatesShareOneReadBudget(t *testing.T) {
	const apps = 20 // their gates cost 20 × gateCost(1): a read every third tick
	var mu sync.Mutex
	reads := map[string][]time.Time{}
	note := func(what, name string) {
		if strings.HasPrefix(name, "gate-") {
			mu.Lock()
			reads[what+" "+name] = append(reads[what+" "+name], time.Now())
			mu.Unlock()
		}
	}
	readReports, readRecord := readGateReports, readStepRecord
	readGateReports = func(s *Server, ctx context.Context, name string) (map[string]api.Instance, int64, error) {
		note("reports", name)
		return readReports(s, ctx, name)
	}
	readStepRecord = func(s *Server, ctx context.Context, name string) (rollout.Record, int64, error) {
		note("record", name)
		return readRecord(s, ctx, name)
	}
	t.Cleanup(func() { readGateReports, readStepRecord = readReports, readRecord })
	f := newFixture(t)
	for i := range apps {
		name := fmt.Sprintf("gate-%d", i)
		f.put("appliances/"+name+"/port", "80")
		var tok api.TokenCreated
		f.must(f.do("POST", "/v1/tokens", `{"name":"`+name+`-agent","appliance":"`+name+`"}`, "Content-Type", "application/json"), 201, &tok)
		f.enroll(tok.Token, name, "vm-0")
	}
	time.Sleep(10 * time.Millisecond)
	for i := range apps {
		f.must(f.do("PUT", fmt.Sprintf("/v1/kv/appliances/gate-%d/port?canary=100%%25&bake=1h", i), "8080"), http.StatusAccepted, nil)
	}
	waitFor(t, "four reads of every gate", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range apps {
			if len(reads[fmt.Sprintf("reports gate-%d", i)]) < 4 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for what, at := range reads {
		if err := spacedReads(at, 2*rolloutTick); err != nil {
			t.Errorf("%s, with %d rollouts running: %v", what, apps, err)
		}
	}
}

// A schema set during a rollout that the candidate breaks halts it when it would be promoted,
// rather than have the elected replica try again every tick while writes stay refused.
func TestRollout_SchemaSetMeanwhileHalts(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 1)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "8080"), http.StatusAccepted, nil)
	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object","properties":{"port":{"pattern":"^80$"}}}`), 200, nil)
	report(t, f, fleet[0], viewOf(t, f, fleet[0]), "")
	waitFor(t, "the rollout to halt", func() bool { return rolloutStatus(t, f).State != api.RolloutRunning })
	if st := rolloutStatus(t, f); st.State != api.RolloutHalted || !strings.Contains(st.Reason, "schema") {
		t.Fatalf("after the promotion was refused: %+v", st)
	}
	f.put("appliances/web/port", "80") // writes go again
}

// Reports gate only the rollout they name, from the cohort's own instance tokens: a canary's
// failure or success naming another appliance's rollout, and a failure of an instance outside
// the cohort, neither halt nor advance web's rollout.
func TestRollout_ReportsOfAnotherRolloutDoNotGate(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("appliances/db/port", "5432")
	fleet := enrollFleet(t, f, 2)
	var dbTok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"db-agent","appliance":"db"}`, "Content-Type", "application/json"), 201, &dbTok)
	f.enroll(dbTok.Token, "db", "db-0")
	time.Sleep(10 * time.Millisecond)
	var db, st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/db/port?canary=100%25&bake=1h", "5433"), http.StatusAccepted, &db)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25", "8080"), http.StatusAccepted, &st)
	canary := st.Cohort[0]
	other := fleet[0]
	if other == canary {
		other = fleet[1]
	}
	v := viewOf(t, f, canary)
	if v.Rollout != st.ID {
		t.Fatalf("canary view: %+v", v)
	}
	post := func(instance string, rep api.Report) {
		t.Helper()
		b, _ := json.Marshal(rep)
		f.must(f.doToken(instanceToken(t, f, instance), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json", api.HeaderInstance, instance), 200, nil)
	}
	// The canary fails, and applies, db's rollout; the other instance fails web's.
	post(canary, api.Report{Instance: canary, Revision: v.Revision, Rollout: db.ID, Error: "forged", Stage: api.StageCommand})
	post(other, api.Report{Instance: other, Revision: v.Revision, Rollout: st.ID, Error: "forged", Stage: api.StageCommand})
	post(canary, api.Report{Instance: canary, Revision: v.Revision, Applied: v.Revision, Rollout: db.ID})
	time.Sleep(4 * rolloutTick)
	if st := rolloutStatus(t, f); st.State != api.RolloutRunning || st.Step != 0 {
		t.Fatalf("reports of another rollout gated web's: %+v", st)
	}
	// A report with db's instance token cannot name web at all.
	b, _ := json.Marshal(api.Report{Instance: canary, Revision: v.Revision, Rollout: st.ID, Error: "forged", Stage: api.StageCommand})
	f.mustErr(f.doToken(dbTok.Token, "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json"), http.StatusForbidden, api.CodeForbidden)
	if st := rolloutStatus(t, f); st.State != api.RolloutRunning {
		t.Fatalf("db's token halted web's rollout: %+v", st)
	}
	// The canary's own report of web's rollout moves it.
	report(t, f, canary, v, "")
	waitFor(t, "the next step", func() bool { return rolloutStatus(t, f).Step == 1 })
	var dbNow api.RolloutStatus
	f.must(f.do("GET", "/v1/appliances/db/rollout", ""), 200, &dbNow)
	if dbNow.State != api.RolloutRunning || dbNow.Step != 0 {
		t.Fatalf("web's reports moved db's rollout: %+v", dbNow)
	}
}

// The instances drawn are the enrolled ones seen within --instance-stale: one silent for
// longer takes no part (it would only stall the rollout until its deadline).
func TestRollout_DrawsOnlyInstancesSeenRecently(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InstanceStale = 2 * time.Second })
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 3)
	time.Sleep(2100 * time.Millisecond)
	for _, n := range fleet[:2] {
		report(t, f, n, viewOf(t, f, n), "")
	}
	waitFor(t, "the reports recorded", func() bool {
		for _, n := range fleet[:2] {
			if in, ok := f.record("web", n); !ok || time.Since(in.LastSeen) > 2*time.Second {
				return false
			}
		}
		return true
	})
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "8080"), http.StatusAccepted, &st)
	var drawn []string
	for _, in := range st.Instances {
		drawn = append(drawn, in.Instance)
	}
	slices.Sort(drawn)
	if !slices.Equal(drawn, fleet[:2]) {
		t.Fatalf("drawn %v, want %v (%s silent for longer than --instance-stale)", drawn, fleet[:2], fleet[2])
	}
}

// A VM that enrolls while a rollout runs is not drawn: it gets the live view, even when the
// cohort is every instance drawn. A shared/ write during the rollout reaches every instance,
// the cohort's candidate view included.
func TestRollout_NewInstanceGetsTheLiveView(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&bake=1h", "8080"), http.StatusAccepted, &st)
	if len(st.Cohort) != 2 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"web-agent-late","appliance":"web"}`, "Content-Type", "application/json"), 201, &tok)
	late := f.enroll(tok.Token, "web", "vm-late")
	var v api.View
	f.must(f.doToken(late.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-late"), 200, &v)
	if v.Keys["port"] != "80" || v.Rollout != "" {
		t.Fatalf("an instance enrolled during the rollout sees %+v", v)
	}
	f.put("shared/dns", "1.1.1.1")
	for _, n := range fleet {
		if v := viewOf(t, f, n); v.Keys["port"] != "8080" || v.Keys["dns"] != "1.1.1.1" || v.Rollout != st.ID {
			t.Fatalf("%s in the cohort after a shared write: %+v", n, v)
		}
	}
	f.must(f.doToken(late.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-late"), 200, &v)
	if v.Keys["port"] != "80" || v.Keys["dns"] != "1.1.1.1" {
		t.Fatalf("vm-late after a shared write: %+v", v)
	}
}

// The answer to a promote or an abort shows each instance as a status request does, with the
// revision it applied (the answers said that every instance had applied nothing).
func TestRollout_ActionAnswerShowsTheReports(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&manual", "81"), http.StatusAccepted, &st)
	c := st.Cohort[0]
	v := viewOf(t, f, c)
	report(t, f, c, v, "")
	waitFor(t, "the canary to bake", func() bool { return rolloutStatus(t, f).BakedSince != nil })
	check := func(action string, ans api.RolloutStatus) {
		t.Helper()
		now := rolloutStatus(t, f)
		for i, in := range ans.Instances {
			// The stepper may take the next step between the answer and the status read: the
			// next cohort's instances then go from waiting to pending, which is no disagreement.
			moved := in.Instance != c && now.Step != ans.Step && in.State == "waiting" && now.Instances[i].State == "pending"
			if in.Instance == c && in.Applied != v.Revision || !moved && in.State != now.Instances[i].State || in.Applied != now.Instances[i].Applied {
				t.Fatalf("%s answered %+v; status says %+v", action, ans.Instances, now.Instances)
			}
		}
	}
	var ans api.RolloutStatus
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"promote"}`, "Content-Type", "application/json"), 200, &ans)
	check("promote", ans)
	// The promote rewrote the record, not what the canary applied: it is still applied (it
	// was shown pending, as if it had never applied the candidate, until the next step).
	for _, in := range ans.Instances {
		if in.Instance == c && in.State != "applied" {
			t.Fatalf("promote answered the canary %+v, want applied", in)
		}
	}
	waitFor(t, "the second step", func() bool { return rolloutStatus(t, f).Step == 1 })
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, &ans)
	if ans.State != api.RolloutAborted {
		t.Fatalf("abort: %+v", ans)
	}
	check("abort", ans)
}

// GET /v1/status names the appliances with a rollout running only as far as the token may read
// them: a token scoped to one appliance learned every other appliance's name there.
func TestRollout_StatusShowsReadableOnly(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("appliances/db/port", "5432")
	for _, app := range []string{"web", "db"} {
		agent := f.newToken(api.TokenRequest{Name: "status-" + app + "-agent", Appliance: app})
		f.enroll(agent, app, "vm-0")
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollouts started, by the server's clock
	for _, app := range []string{"web", "db"} {
		f.must(f.do("PUT", "/v1/appliances/"+app+"?canary=50%25&bake=1h", `{"keys":{"port":"1"}}`), http.StatusAccepted, nil)
	}
	running := func(token string) []string {
		t.Helper()
		var st Status
		f.must(f.doToken(token, "GET", "/v1/status", ""), http.StatusOK, &st)
		return st.Rollouts.Running
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(running(f.adminToken()), []string{"db", "web"}) {
		if time.Now().After(deadline) {
			t.Fatalf("admin sees running rollouts %q, want db and web", running(f.adminToken()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	web := f.newToken(api.TokenRequest{Name: "status-web-reader", Read: []string{"appliances/web"}})
	if got := running(web); !slices.Equal(got, []string{"web"}) {
		t.Errorf("a reader of appliances/web sees running rollouts %q, want only web", got)
	}
	shared := f.newToken(api.TokenRequest{Name: "status-shared-writer", Write: []string{"shared"}})
	if got := running(shared); got == nil || len(got) != 0 {
		t.Errorf("a writer of shared/ sees running rollouts %q, want [] (not null)", got)
	}
}

// An apply's cas with canary is refused as the apply's is: a key deleted since cas (409) or a
// cas ahead of the store (400) starts no rollout.
func TestRollout_CasRefusedAsTheApplys(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	base := f.put("appliances/web/tls", "on")
	enrollFleet(t, f, 1)
	f.must(f.do("DELETE", "/v1/kv/appliances/web/tls", ""), http.StatusOK, nil)
	var cur api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &cur)
	body := `{"keys":{"port":"81"}}`
	for _, c := range []struct {
		cas    int64
		status int
		code   string
		words  string
	}{
		{base, http.StatusConflict, api.CodeConflict, "tls"},
		{cur.Revision + 1000, http.StatusBadRequest, api.CodeInvalidRequest, fmt.Sprintf("ahead of the store (at revision %d", cur.Revision)},
	} {
		for _, q := range []string{"", "&canary=100%25"} {
			path := fmt.Sprintf("/v1/appliances/web?cas=%d%s", c.cas, q)
			f.mustErr(f.do("PUT", path, body, "Content-Type", "application/json"), c.status, c.code, c.words)
		}
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound)
	if v := viewOf(t, f, ""); v.Keys["port"] != "80" {
		t.Errorf("port = %q after the refused writes, want 80", v.Keys["port"])
	}
}

// GET …/rollout carries X-Shoelace-Index as every answer does: the revision it was read at,
// not the rollout record's, which is older once anything else was written.
func TestRollout_StatusIndexIsTheReadRevision(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 1)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "81"), http.StatusAccepted, &st)
	after := f.put("shared/ntp", "pool.ntp.org")
	r := f.do("GET", "/v1/appliances/web/rollout", "")
	f.must(r, 200, &st)
	if r.index() < after {
		t.Errorf("X-Shoelace-Index %d of the rollout read, want at least %d (a write made before the read)", r.index(), after)
	}
	if st.Revision >= after {
		t.Errorf("status revision %d, want the record's, before %d", st.Revision, after)
	}
}

// After a rollout halted or was aborted, the instances of its cohort that had applied the
// candidate are shown applied, though their agents went back to the live view since (before,
// they were listed pending, as if the ended rollout still waited for them); one that never
// applied it stays pending, the one that halted it failed.
func TestRollout_EndedShowsWhoAppliedTheCandidate(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 3)
	states := func(st api.RolloutStatus) map[string]string {
		m := map[string]string{}
		for _, in := range st.Instances {
			m[in.Instance] = in.State
		}
		return m
	}
	for _, end := range []string{api.RolloutHalted, api.RolloutAborted} {
		var st api.RolloutStatus
		f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual&deadline=3s", "8"+end), http.StatusAccepted, &st)
		silent := fleet[2]
		for _, n := range fleet[:2] {
			report(t, f, n, viewOf(t, f, n), "")
		}
		waitFor(t, "two of the cohort applied", func() bool {
			m := states(rolloutStatus(t, f))
			return m[fleet[0]] == "applied" && m[fleet[1]] == "applied"
		})
		if end == api.RolloutAborted {
			f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
		}
		waitFor(t, "the rollout to end "+end, func() bool { return rolloutStatus(t, f).State == end })
		// The cohort goes back to the live view, and its agents report it. The status reads the
		// record from etcd; the views are served from what the replica holds of it, which the
		// end's write sets a moment after etcd has it (CI read the status in between once).
		for _, n := range fleet {
			if n == silent {
				continue
			}
			var v api.View
			waitFor(t, n+" to get the live view after the end", func() bool {
				v = viewOf(t, f, n)
				return v.Rollout == ""
			})
			report(t, f, n, v, "")
		}
		want := map[string]string{fleet[0]: "applied", fleet[1]: "applied", silent: "pending"}
		if end == api.RolloutHalted {
			want[silent] = "failed" // it halted the rollout (the deadline)
		}
		waitFor(t, "the live view's reports recorded", func() bool {
			var ins api.Instances
			f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
			back := 0
			for _, in := range ins.Instances {
				if in.Instance != silent && in.Rollout == "" {
					back++
				}
			}
			return back == 2
		})
		if got := states(rolloutStatus(t, f)); !maps.Equal(got, want) {
			t.Fatalf("%s rollout's instances = %v, want %v", end, got, want)
		}
	}
}

// A report answered just before the rollout is aborted, which the server had not yet written
// when the abort read the reports, still counts the instance among those that applied the
// candidate: once its agent is back on the live view, the ended rollout shows it applied
// (before, pending: the abort kept only the reports already in the store). So too when the
// reports reach another replica than the abort.
func TestRollout_ReportRacingTheEndCounts(t *testing.T) {
	a := newFixture(t)
	b := newFixtureOn(t, a.st)
	b.token = a.token
	a.put("appliances/web/port", "80")
	fleet := enrollFleet(t, a, 2)
	waitFor(t, "replica b knows the instance tokens", func() bool {
		for _, n := range fleet {
			if b.s.auth.lookup(instanceToken(t, a, n)) == nil {
				return false
			}
		}
		return true
	})
	for i, to := range []*fixture{a, b} {
		var st api.RolloutStatus
		a.must(a.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", fmt.Sprint(81+i)), http.StatusAccepted, &st)
		waitFor(t, "the candidate on the reports' replica", func() bool { return viewOf(t, to, fleet[0]).Rollout == st.ID })
		for _, n := range fleet {
			report(t, to, n, viewOf(t, to, n), "")
		}
		a.must(a.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
		waitFor(t, "the live view on the reports' replica", func() bool { return viewOf(t, to, fleet[0]).Rollout == "" })
		for _, n := range fleet {
			v := viewOf(t, to, n)
			if v.Rollout != "" {
				t.Fatalf("%s still gets the candidate after the abort: %+v", n, v)
			}
			report(t, to, n, v, "")
		}
		waitFor(t, "the live view's reports recorded", func() bool {
			var ins api.Instances
			a.must(a.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
			back := 0
			for _, in := range ins.Instances {
				if in.Rollout == "" && in.Applied > st.Revision {
					back++
				}
			}
			return back == len(fleet)
		})
		// The reporter counts them right after it writes their reports, maybe with the last.
		allApplied := func() bool {
			for _, in := range rolloutStatus(t, a).Instances {
				if in.State != "applied" {
					return false
				}
			}
			return true
		}
		if !within(30*time.Second, allApplied) {
			for _, in := range rolloutStatus(t, a).Instances {
				if in.State != "applied" {
					t.Errorf("replica %d: aborted rollout: %s is %s, want applied (it reported the candidate before the abort)", i, in.Instance, in.State)
				}
			}
		}
	}
}

// A cohort's instance forgotten and enrolled again while the rollout runs holds a token the
// rollout did not draw: the gates do not count its reports (TestRollout_TakenOverInstanceDoesNotCount),
// so it gets the live view, as DESIGN says of "one made with another token", not the candidate
// it could run uncounted (its failure halting nothing, its success passing no gate). Its long-
// poll's delta is not made from the candidate either. The drawn token, until forgotten, had it.
func TestRollout_InstanceEnrolledAgainGetsTheLiveView(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	drawn := f.enroll(agent, "web", "vm-0")
	// Start the rollout at the start of a second, so that it, the forget and the enrollment
	// again fall within one second (they take milliseconds): enrollment times kept to the
	// second told an instance enrolled then from one enrolled before the start.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, &st)
	var v api.View
	f.must(f.doToken(drawn.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout != st.ID {
		t.Fatalf("the drawn instance's view: %+v", v)
	}

	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-0", ""), 200, nil)
	again := f.enroll(agent, "web", "vm-0")
	for _, path := range []string{
		"/v1/appliances/web",
		fmt.Sprintf("/v1/appliances/web?index=%d&wait=5s&delta&base_rollout=%s", v.Revision-1, st.ID),
	} {
		var got api.View
		f.must(f.doToken(again.Token, "GET", path, ""), 200, &got)
		if got.Keys["port"] != "80" || got.Rollout != "" {
			t.Fatalf("GET %s with vm-0's token enrolled during the rollout: %+v, want the live view", path, got)
		}
	}
	if got := rolloutStatus(t, f); got.State != api.RolloutRunning {
		t.Fatalf("rollout: %+v", got)
	}
}

// A txn sent with canary is refused as the same txn without it is, and starts no rollout: a
// key put twice, or put and deleted (a recursive delete over it too), is no write the store
// takes, and its candidate was staged with the puts applied last, which the plain write never does.
func TestRollout_TxnRefusedAsThePlainTxn(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("appliances/web/app/a", "1")
	enrollFleet(t, f, 1)
	for _, ops := range []string{
		`[{"op":"put","key":"appliances/web/port","value":"1"},{"op":"put","key":"appliances/web/port","value":"2"}]`,
		`[{"op":"delete","key":"appliances/web/port"},{"op":"put","key":"appliances/web/port","value":"2"}]`,
		`[{"op":"delete","key":"appliances/web/app","recurse":true},{"op":"put","key":"appliances/web/app/b","value":"2"}]`,
	} {
		body := `{"ops":` + ops + `}`
		plain := f.do("POST", "/v1/txn", body, "Content-Type", "application/json")
		f.mustErr(plain, http.StatusBadRequest, api.CodeInvalidRequest, "invalid transaction")
		f.mustErr(f.do("POST", "/v1/txn?canary=100%25", body, "Content-Type", "application/json"), http.StatusBadRequest, api.CodeInvalidRequest, plain.errMessage())
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound, "")
}

// A cohort's view read from the store (the replica's copy of the view keys not loaded, or not yet
// at the revision asked) holds shared/'s keys below it, as every view does: the key "shared"
// itself is in none. Before, it came into the cohort's view as a key "shared", which the view
// made from the replica's copy, and the live view, lack.
func TestRollout_CandidateReadFromStoreLeavesKeySharedOut(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("shared", "not in any view")
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 1)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=100%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	want := map[string]string{"ntp": "pool", "port": "8080"}
	waitFor(t, "the cohort's view", func() bool { return viewOf(t, f, fleet[0]).Rollout == st.ID })
	if v := viewOf(t, f, fleet[0]); !maps.Equal(v.Keys, want) {
		t.Fatalf("cohort's view from the replica's copy: %v, want %v", v.Keys, want)
	}
	// Without the copy the views are read from the store; a change makes a new one.
	f.s.hub.mir.invalidate()
	rev := f.put("shared/dns", "1.1.1.1")
	want["dns"] = "1.1.1.1"
	v := viewOf(t, f, fleet[0])
	if v.Rollout != st.ID || v.Revision < rev || !maps.Equal(v.Keys, want) {
		t.Fatalf("cohort's view read from the store: %+v, want %v at %d or later", v, want, rev)
	}
	if v := viewOf(t, f, ""); v.Keys["shared"] != "" || v.Keys["port"] != "80" {
		t.Fatalf("live view read from the store: %+v", v)
	}
}
