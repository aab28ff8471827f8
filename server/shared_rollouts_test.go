package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// webAndAPI seeds shared/ntp and the appliances web and api (port 80 and 90) and enrolls
// nWeb and nAPI instances of them; it returns their instance names.
func webAndAPI(t *testing.T, f *fixture, nWeb, nAPI int) (web, apis []string) {
	t.Helper()
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80")
	f.put("appliances/api/port", "90")
	return enrollApp(t, f, "web", nWeb), enrollApp(t, f, "api", nAPI)
}

// enrollApp enrolls n instances of appliance app (app-0…) with a new agent token of app.
func enrollApp(t *testing.T, f *fixture, app string, n int) []string {
	t.Helper()
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"`+app+`-agent-`+fmt.Sprint(time.Now().UnixNano())+`","appliance":"`+app+`"}`, "Content-Type", "application/json"), 201, &tok)
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s-%d", app, i)
		names = append(names, name)
		fleetTokens.Store(fmt.Sprintf("%p/%s", f.st, name), f.enroll(tok.Token, app, name).Token)
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout started, by the server's clock
	return names
}

// appViewOf reads app's view as its instance sees it, with its instance token.
func appViewOf(t *testing.T, f *fixture, app, instance string) api.View {
	t.Helper()
	var v api.View
	f.must(f.doToken(instanceToken(t, f, instance), "GET", "/v1/appliances/"+app, "", api.HeaderInstance, instance), 200, &v)
	return v
}

func appRollout(t *testing.T, f *fixture, app string) api.RolloutStatus {
	t.Helper()
	var st api.RolloutStatus
	f.must(f.do("GET", "/v1/appliances/"+app+"/rollout", ""), 200, &st)
	return st
}

func appReport(t *testing.T, f *fixture, app, instance string, v api.View, failure string) {
	t.Helper()
	rep := api.Report{Instance: instance, Revision: v.Revision, Applied: v.Revision, Rollout: v.Rollout}
	if failure != "" {
		rep.Applied, rep.Error, rep.Stage = 0, failure, api.StageCommand
	}
	b, _ := json.Marshal(rep)
	f.must(f.doToken(instanceToken(t, f, instance), "POST", "/v1/appliances/"+app+"/report", string(b), "Content-Type", "application/json", api.HeaderInstance, instance), 200, nil)
}

// liveShared reads shared/key's live value ("" when absent).
func liveShared(t *testing.T, f *fixture, key string) string {
	t.Helper()
	r := f.do("GET", "/v1/kv/shared/"+key, "")
	if r.StatusCode == http.StatusNotFound {
		return ""
	}
	var kv api.KV
	f.must(r, 200, &kv)
	return kv.Value
}

// A change to shared/ written with canary goes to the canary of each appliance that has
// instances, step by step per appliance; an appliance done waits for the others; then the
// change is written to the live tree in one release and every rollout of the group ends.
func TestSharedRollout_PromotesWhenEveryApplianceHas(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("shared/old", "gone-soon")
	// web's view is large enough for a delta to be smaller than it.
	keys := map[string]string{"port": "80"}
	for i := range 40 {
		keys[fmt.Sprintf("vhosts/site-%02d", i)] = strings.Repeat("x", 40)
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	f.must(f.do("PUT", "/v1/appliances/web", string(b)), 200, nil)
	f.put("appliances/api/port", "90")
	f.put("appliances/db/port", "5432") // no instance: gets the change when it goes live
	web := enrollApp(t, f, "web", 3)
	apis := enrollApp(t, f, "api", 2)
	before := appViewOf(t, f, "web", web[0]).Revision

	var g api.SharedRolloutStatus
	f.must(f.do("POST", "/v1/txn?canary=33%25&bake=20ms", `{"ops":[{"op":"put","key":"shared/ntp","value":"new"},{"op":"delete","key":"shared/old"}]}`,
		"Content-Type", "application/json", api.HeaderMessage, "new ntp"), http.StatusAccepted, &g)
	if g.Group == "" || g.State != api.RolloutRunning || len(g.Rollouts) != 2 || g.Rollouts[0].Appliance != "api" || g.Rollouts[1].Appliance != "web" ||
		!slices.Equal(g.Shared, []string{"ntp", "old"}) {
		t.Fatalf("started: %+v", g)
	}
	sts := map[string]api.RolloutStatus{}
	for _, st := range g.Rollouts {
		if st.Group != g.Group || len(st.Cohort) != 1 || st.Kind != api.KindTxn {
			t.Fatalf("rollout of %s: %+v", st.Appliance, st)
		}
		sts[st.Appliance] = st
	}
	seen := map[string]bool{} // the instances that ever saw the change
	look := func(app string, fleet []string) {
		cohort := appRollout(t, f, app).Cohort
		for _, n := range fleet {
			v := appViewOf(t, f, app, n)
			has := v.Keys["ntp"] == "new"
			if _, old := v.Keys["old"]; has == old {
				t.Fatalf("%s sees half the change: %+v", n, v.Keys)
			}
			if in := slices.Contains(cohort, n); has != in || in && v.Rollout != sts[app].ID || v.Keys["port"] == "" {
				t.Fatalf("%s (cohort %v) sees %+v", n, cohort, v)
			}
			seen[n] = seen[n] || has
		}
	}
	look("web", web)
	look("api", apis)
	var dbv api.View
	f.must(f.do("GET", "/v1/appliances/db", ""), 200, &dbv)
	if dbv.Keys["ntp"] != "pool" {
		t.Fatalf("db sees %+v", dbv.Keys)
	}
	// A delta from the live view to the candidate carries the change and the candidate's sum.
	canary := sts["web"].Cohort[0]
	var d api.Delta
	f.must(f.doToken(instanceToken(t, f, canary), "GET", fmt.Sprintf("/v1/appliances/web?index=%d&delta&wait=1s", before), "", api.HeaderInstance, canary), 200, &d)
	full := appViewOf(t, f, "web", canary)
	if d.Rollout != sts["web"].ID || d.Set["ntp"] != "new" || !slices.Equal(d.Unset, []string{"old"}) || d.Sum != api.ViewSum(full.Keys) {
		t.Fatalf("delta to the candidate: %+v (view %+v)", d, full)
	}

	// While the group runs: the keys it changes, the appliances' own keys and another canary
	// of shared/ or of an appliance of the group are refused; other shared keys go on, to the
	// cohorts too.
	f.mustErr(f.do("PUT", "/v1/kv/shared/ntp", "x"), http.StatusConflict, api.CodeRolloutInProgress, "shared/ntp", g.Group)
	f.mustErr(f.do("DELETE", "/v1/kv/shared/old", ""), http.StatusConflict, api.CodeRolloutInProgress, g.Group)
	f.mustErr(f.do("DELETE", "/v1/kv/shared?recurse", ""), http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port", "81"), http.StatusConflict, api.CodeRolloutInProgress, "web")
	f.mustErr(f.do("PUT", "/v1/kv/appliances/api/port?canary=10%25", "91"), http.StatusConflict, api.CodeRolloutInProgress, "api")
	f.mustErr(f.do("PUT", "/v1/kv/shared/dns?canary=10%25", "9.9.9.9"), http.StatusConflict, api.CodeRolloutInProgress, g.Group)
	f.put("shared/dns", "1.1.1.1")
	f.put("appliances/db/port", "5433")
	if v := appViewOf(t, f, "web", canary); v.Keys["dns"] != "1.1.1.1" || v.Keys["ntp"] != "new" {
		t.Fatalf("canary after a write to another shared key: %+v", v.Keys)
	}

	// web's instances apply it, cohort by cohort: web waits, ready, for api; shared/ is not
	// written until api is done too.
	applyAll := func(app string) {
		done := map[string]bool{}
		waitFor(t, app+" to pass its last step", func() bool {
			st := appRollout(t, f, app)
			for _, n := range st.Cohort {
				if !done[n] {
					v := appViewOf(t, f, app, n)
					seen[n] = seen[n] || v.Keys["ntp"] == "new"
					if v.Rollout != st.ID {
						// The replica's copy of the rollout follows the record a moment
						// later: this instance's view is still the live one. An agent
						// would get the candidate on its next long-poll; ask again.
						continue
					}
					appReport(t, f, app, n, v, "")
					done[n] = true
				}
			}
			return st.GroupReady || st.State != api.RolloutRunning
		})
	}
	applyAll("web")
	if st := appRollout(t, f, "web"); st.State != api.RolloutRunning || !st.GroupReady || len(st.Cohort) != 3 {
		t.Fatalf("web done before api: %+v", st)
	}
	time.Sleep(300 * time.Millisecond) // a few gate ticks: still waiting for api
	if liveShared(t, f, "ntp") != "pool" || appRollout(t, f, "web").State != api.RolloutRunning {
		t.Fatal("the change went live before every appliance of the group passed")
	}
	applyAll("api")
	waitFor(t, "the group to be promoted", func() bool {
		return appRollout(t, f, "web").State == api.RolloutPromoted && appRollout(t, f, "api").State == api.RolloutPromoted
	})
	if liveShared(t, f, "ntp") != "new" || liveShared(t, f, "old") != "" {
		t.Fatal("promoted but shared/ was not written")
	}
	for _, n := range append(slices.Clone(web), apis...) {
		if !seen[n] {
			t.Fatalf("%s never had the change before it went live", n)
		}
	}
	// One release, of kind txn, names the group; after it the keys are free again.
	var rels api.Releases
	f.must(f.do("GET", "/v1/releases?prefix=shared", ""), 200, &rels)
	r := rels.Releases[0]
	if r.Kind != api.KindTxn || !strings.Contains(r.Message, "shared rollout group "+g.Group+" promoted") || !strings.Contains(r.Message, "new ntp") ||
		len(r.Changes) != 1 || !slices.Equal(r.Changes[0].Changed, []string{"shared/ntp"}) || !slices.Equal(r.Changes[0].Deleted, []string{"shared/old"}) {
		t.Fatalf("the promotion's release: %+v", r)
	}
	if s := rels.Releases[1]; s.Kind != api.KindPut || s.Rollout != "" { // shared/dns
		t.Fatalf("the release before: %+v", s)
	}
	if s := rels.Releases[2]; s.Kind != api.KindRollout || s.Rollout != g.Group {
		t.Fatalf("the group's start: %+v", s)
	}
	// The canary, from the candidate it had, to the live view with the change: nothing of the
	// change differs (shared/dns was written since), and the sum is the live view's. The view is
	// the replica's as its watch has it: once the watch delivered the promotion (under load it
	// answered the view before it, with the change not yet live).
	waitFor(t, "the replica's watch at the promotion", func() bool { return f.s.hub.current() >= r.Revision })
	var back api.Delta
	f.must(f.doToken(instanceToken(t, f, canary), "GET", fmt.Sprintf("/v1/appliances/web?index=%d&delta&base_rollout=%s&wait=1s", full.Revision, sts["web"].ID), "", api.HeaderInstance, canary), 200, &back)
	live := appViewOf(t, f, "web", canary)
	if back.Rollout != "" || back.Base != full.Revision || len(back.Unset) != 0 || back.Sum != api.ViewSum(live.Keys) || len(back.Set) != 1 || back.Set["dns"] != "1.1.1.1" {
		t.Fatalf("delta from the candidate to the live view: %+v", back)
	}
	f.put("shared/ntp", "later")
	f.put("appliances/web/port", "8080")
	if v := appViewOf(t, f, "web", canary); v.Rollout != "" || v.Keys["ntp"] != "later" || v.Keys["port"] != "8080" {
		t.Fatalf("after the group: %+v", v)
	}
}

// A failure in one appliance's canary halts the whole group: no one outside the canaries ever
// saw the change, every canary goes back to the live view, and shared/ is not written. Abort
// by hand and force end a group the same way.
func TestSharedRollout_FailureHaltsTheGroup(t *testing.T) {
	f := newFixture(t)
	web, apis := webAndAPI(t, f, 5, 5)
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=20%25&bake=1h", "bad"), http.StatusAccepted, &g)
	cohorts := map[string][]string{}
	for _, st := range g.Rollouts {
		cohorts[st.Appliance] = st.Cohort
		if st.Kind != api.KindPut {
			t.Fatalf("kind: %+v", st)
		}
	}
	for app, fleet := range map[string][]string{"web": web, "api": apis} {
		for _, n := range fleet {
			if v := appViewOf(t, f, app, n); (v.Keys["ntp"] == "bad") != slices.Contains(cohorts[app], n) {
				t.Fatalf("%s sees %+v", n, v.Keys)
			}
		}
	}
	// api's canary applies it; web's fails its reload.
	apiCanary, webCanary := cohorts["api"][0], cohorts["web"][0]
	appReport(t, f, "api", apiCanary, appViewOf(t, f, "api", apiCanary), "")
	appReport(t, f, "web", webCanary, appViewOf(t, f, "web", webCanary), "systemctl reload chronyd: exited with status 1")
	ws, as := appRollout(t, f, "web"), appRollout(t, f, "api")
	if ws.State != api.RolloutHalted || ws.Instance != webCanary || !strings.Contains(ws.Reason, "status 1") {
		t.Fatalf("web after the failure: %+v", ws)
	}
	if as.State != api.RolloutHalted || !strings.Contains(as.Reason, g.Group) || !strings.Contains(as.Reason, webCanary) {
		t.Fatalf("api after web's failure: %+v", as)
	}
	for app, fleet := range map[string][]string{"web": web, "api": apis} {
		for _, n := range fleet {
			if v := appViewOf(t, f, app, n); v.Keys["ntp"] != "pool" || v.Rollout != "" {
				t.Fatalf("%s after the halt: %+v", n, v)
			}
		}
	}
	if liveShared(t, f, "ntp") != "pool" {
		t.Fatal("a halted group wrote shared/")
	}
	// Everything is free again: plain writes, and a new group.
	f.put("appliances/web/port", "81")
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=20%25", "two"), http.StatusAccepted, &g)
	// An abort of one appliance's rollout aborts the group.
	var ab api.RolloutStatus
	f.must(f.do("POST", "/v1/appliances/api/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, &ab)
	if ab.State != api.RolloutAborted || appRollout(t, f, "web").State != api.RolloutAborted {
		t.Fatalf("abort: %+v / %+v", ab, appRollout(t, f, "web"))
	}
	// Force on a key of the group aborts it and writes.
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=20%25", "three"), http.StatusAccepted, &g)
	f.mustErr(f.do("PUT", "/v1/kv/shared/ntp", "four"), http.StatusConflict, api.CodeRolloutInProgress)
	f.must(f.do("PUT", "/v1/kv/shared/ntp?force", "four"), 200, nil)
	if st := appRollout(t, f, "web"); st.State != api.RolloutAborted || st.Group != g.Group || !strings.Contains(st.Reason, "force") {
		t.Fatalf("after a forced write: %+v", st)
	}
	if liveShared(t, f, "ntp") != "four" {
		t.Fatal("the forced write did not apply")
	}
	// Force on an appliance of the group aborts it too.
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=20%25", "five"), http.StatusAccepted, &g)
	f.must(f.do("PUT", "/v1/kv/appliances/api/port?force", "92"), 200, nil)
	if st := appRollout(t, f, "web"); st.State != api.RolloutAborted || st.Group != g.Group {
		t.Fatalf("after a forced appliance write: %+v", st)
	}
	f.put("shared/ntp", "six")
}

// What a shared canary refuses: a change that mixes shared/ and an appliance, a recursive
// delete, and a fleet with no enrolled instance anywhere.
func TestSharedRollout_BadInput(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80")
	f.mustErr(f.do("PUT", "/v1/kv/shared/ntp?canary=10%25", "1"), http.StatusConflict, api.CodeConflict, "no appliance has an enrolled instance")
	enrollApp(t, f, "web", 1)
	f.mustErr(f.do("POST", "/v1/txn?canary=10%25", `{"ops":[{"op":"put","key":"shared/x","value":"1"},{"op":"put","key":"appliances/web/port","value":"2"}]}`, "Content-Type", "application/json"),
		http.StatusBadRequest, api.CodeInvalidRequest, "not both")
	f.mustErr(f.do("POST", "/v1/txn?canary=10%25", `{"ops":[{"op":"delete","key":"shared/ntp","recurse":true}]}`, "Content-Type", "application/json"),
		http.StatusBadRequest, api.CodeInvalidRequest, "recursive")
	f.mustErr(f.do("POST", "/v1/txn?canary=10%25", `{"ops":[{"op":"delete","key":"shared/ntp"},{"op":"put","key":"shared/ntp","value":"2"}]}`, "Content-Type", "application/json"),
		http.StatusBadRequest, api.CodeInvalidRequest, "twice")
	if liveShared(t, f, "ntp") != "pool" {
		t.Fatal("a refused canary wrote")
	}
	// A token that may write shared/ but not read web starts the group, and is not shown
	// web's rollout (its instances) nor web's name.
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"ci","write":["shared"]}`, "Content-Type", "application/json"), 201, &tok)
	r := f.doToken(tok.Token, "PUT", "/v1/kv/shared/ntp?canary=10%25", "new")
	var g api.SharedRolloutStatus
	f.must(r, http.StatusAccepted, &g)
	if g.Appliances != 1 || len(g.Rollouts) != 0 || strings.Contains(string(r.body), "web") {
		t.Fatalf("answer to a shared/ writer: %s", r.body)
	}
	if st := appRollout(t, f, "web"); st.Group != g.Group || st.Token != "ci" {
		t.Fatalf("web's rollout: %+v", st)
	}
	var rels api.Releases
	f.must(f.doToken(tok.Token, "GET", "/v1/releases?prefix=shared", ""), 200, &rels)
	if b, _ := json.Marshal(rels); strings.Contains(string(b), "web") || rels.Releases[0].Rollout != g.Group {
		t.Fatalf("the group's start as a shared/ reader sees it: %s", b)
	}
}

// A shared rollout group survives the replica that moves it: web passes its last step under
// one leader, which goes away; the other replica promotes the group once api has too.
func TestSharedRollout_AnotherReplicaCarriesOn(t *testing.T) {
	parallelShared(t)
	a := newFixture(t)
	b := newFixtureOn(t, a.st)
	b.token = a.token
	a.put("shared/ntp", "pool")
	a.put("appliances/web/port", "80")
	a.put("appliances/api/port", "90")
	web := enrollApp(t, a, "web", 1)
	apis := enrollApp(t, a, "api", 1)
	waitFor(t, "a leader", func() bool { return a.s.rollouts.leading.Load() || b.s.rollouts.leading.Load() })
	leader, other := a, b
	if b.s.rollouts.leading.Load() {
		leader, other = b, a
	}
	other.must(other.do("PUT", "/v1/kv/shared/ntp?canary=100%25", "new"), http.StatusAccepted, nil)
	appReport(t, other, "web", web[0], appViewOf(t, other, "web", web[0]), "")
	waitFor(t, "web ready", func() bool { return appRollout(t, other, "web").GroupReady })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leader.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other replica to lead", func() bool { return other.s.rollouts.leading.Load() })
	if liveShared(t, other, "ntp") != "pool" {
		t.Fatal("promoted before api passed")
	}
	appReport(t, other, "api", apis[0], appViewOf(t, other, "api", apis[0]), "")
	waitFor(t, "the promotion", func() bool {
		return appRollout(t, other, "web").State == api.RolloutPromoted && appRollout(t, other, "api").State == api.RolloutPromoted
	})
	if liveShared(t, other, "ntp") != "new" {
		t.Fatal("promoted but shared/ was not written")
	}
}

// A deadline in one appliance halts the whole group; a manual group waits for a promote of
// each appliance's steps, then goes live when the last is promoted.
func TestSharedRollout_DeadlineAndManual(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	web, apis := webAndAPI(t, f, 1, 1)
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&deadline=500ms", "new"), http.StatusAccepted, nil)
	appReport(t, f, "web", web[0], appViewOf(t, f, "web", web[0]), "")
	waitFor(t, "the deadline", func() bool { return appRollout(t, f, "api").State == api.RolloutHalted })
	if ws, as := appRollout(t, f, "web"), appRollout(t, f, "api"); ws.State != api.RolloutHalted || !strings.Contains(ws.Reason, "deadline") || !strings.Contains(as.Reason, "deadline") {
		t.Fatalf("after api's deadline: %+v / %+v", ws, as)
	}
	if liveShared(t, f, "ntp") != "pool" {
		t.Fatal("a halted group wrote shared/")
	}

	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&manual", "manual"), http.StatusAccepted, nil)
	appReport(t, f, "web", web[0], appViewOf(t, f, "web", web[0]), "")
	appReport(t, f, "api", apis[0], appViewOf(t, f, "api", apis[0]), "")
	promote := func(app string) {
		f.must(f.do("POST", "/v1/appliances/"+app+"/rollout", `{"action":"promote"}`, "Content-Type", "application/json"), 200, nil)
	}
	promote("web")
	waitFor(t, "web ready", func() bool { return appRollout(t, f, "web").GroupReady })
	time.Sleep(300 * time.Millisecond)
	if liveShared(t, f, "ntp") != "pool" || appRollout(t, f, "api").State != api.RolloutRunning {
		t.Fatal("went live before api was promoted")
	}
	promote("api")
	waitFor(t, "the promotion", func() bool { return appRollout(t, f, "web").State == api.RolloutPromoted })
	if liveShared(t, f, "ntp") != "manual" || appRollout(t, f, "api").State != api.RolloutPromoted {
		t.Fatal("promoted but shared/ was not written")
	}
}

// The instances that reported a shared change applied just before its group was aborted are
// shown applied in each appliance's ended rollout, though the abort read the reports before
// the server had written them (see TestRollout_ReportRacingTheEndCounts).
func TestSharedRollout_ReportRacingTheEndCounts(t *testing.T) {
	f := newFixture(t)
	web, apis := webAndAPI(t, f, 2, 2)
	fleets := map[string][]string{"web": web, "api": apis}
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&manual", "new"), http.StatusAccepted, &g)
	for app, fleet := range fleets {
		for _, n := range fleet {
			appReport(t, f, app, n, appViewOf(t, f, app, n), "")
		}
	}
	f.must(f.do("POST", "/v1/appliances/api/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	for app, fleet := range fleets {
		for _, n := range fleet {
			v := appViewOf(t, f, app, n)
			if v.Rollout != "" || v.Keys["ntp"] != "pool" {
				t.Fatalf("%s after the abort: %+v", n, v)
			}
			appReport(t, f, app, n, v, "")
		}
	}
	waitFor(t, "the live view's reports recorded", func() bool {
		back := 0
		for app := range fleets {
			var ins api.Instances
			f.must(f.do("GET", "/v1/appliances/"+app+"/instances", ""), 200, &ins)
			for _, in := range ins.Instances {
				if in.Rollout == "" && in.Applied > 0 {
					back++
				}
			}
		}
		return back == len(web)+len(apis)
	})
	// The reporter counts them right after it writes their reports, maybe with the last.
	allApplied := func() bool {
		for app := range fleets {
			for _, in := range appRollout(t, f, app).Instances {
				if in.State != "applied" {
					return false
				}
			}
		}
		return true
	}
	if within(30*time.Second, allApplied) {
		return
	}
	for app := range fleets {
		st := appRollout(t, f, app)
		if st.State != api.RolloutAborted {
			t.Fatalf("%s: %+v", app, st)
		}
		for _, in := range st.Instances {
			if in.State != "applied" {
				t.Errorf("%s's aborted rollout: %s is %s, want applied (it reported the candidate before the abort)", app, in.Instance, in.State)
			}
		}
	}
}

// A canary of shared/ keys is judged against shared/'s keys below it: the key "shared" itself
// (in no view) is not shared/shared. Before, a canary put of shared/shared with the value the
// key "shared" held was answered 200 unchanged, and nothing was written.
func TestSharedRollout_KeySharedItselfIsNotAKeyOfShared(t *testing.T) {
	f := newFixture(t)
	webAndAPI(t, f, 1, 1)
	f.put("shared", "v")
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/shared?canary=50%25&manual", "v"), http.StatusAccepted, &g)
	if g.State != api.RolloutRunning || !slices.Equal(g.Shared, []string{"shared"}) || g.Appliances != 2 {
		t.Fatalf("started: %+v", g)
	}
	f.mustErr(f.do("GET", "/v1/kv/shared/shared", ""), http.StatusNotFound, api.CodeNotFound)
}

// A canary of shared/ when the only enrolled instances are of appliances without keys of their
// own (which have no view, and take no part) says so, where it said "no appliance has an
// enrolled instance", which the instance list belies. It names those appliances to a token that
// may read them, and counts them for one that may not.
func TestSharedRollout_EnrolledOnlyInAppliancesWithoutKeysSaysWhy(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80") // keys, no instance
	agent := f.newToken(api.TokenRequest{Name: "db-fleet", Appliance: "db"})
	f.enroll(agent, "db", "db-1") // an instance, no keys
	const why = "the enrolled instances are of %s, without keys of their own, which have no view"
	f.mustErr(f.do("PUT", "/v1/kv/shared/ntp?canary=10%25", "1"), http.StatusConflict, api.CodeConflict,
		"no appliance with keys of its own has an enrolled instance seen in the last 1h0m0s", fmt.Sprintf(why, "db"))
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"ci","write":["shared"]}`, "Content-Type", "application/json"), 201, &tok)
	r := f.doToken(tok.Token, "PUT", "/v1/kv/shared/ntp?canary=10%25", "1")
	f.mustErr(r, http.StatusConflict, api.CodeConflict, fmt.Sprintf(why, "1 appliance(s)"))
	if strings.Contains(string(r.body), "db") {
		t.Fatalf("answer to a shared/ writer that may not read db: %s", r.body)
	}
	if liveShared(t, f, "ntp") != "pool" {
		t.Fatal("a refused canary wrote")
	}
}
