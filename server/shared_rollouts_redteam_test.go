package server

import (
	"encoding/json"
	"fmt"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"net/http"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A shared canary while a group runs is refused; the refusal does not tell the writer to
// send it with force (a write with canary cannot take force) but how the group is aborted,
// which works.
func TestSharedRollout_CanaryWhileAGroupRunsSaysHowToAbortIt(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("shared/dns", "1.1.1.1")
	f.put("appliances/web/port", "80")
	enrollApp(t, f, "web", 2)
	var g1, g2 api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=50%25&bake=1h", "new"), http.StatusAccepted, &g1)
	r := f.do("PUT", "/v1/kv/shared/dns?canary=50%25", "8.8.8.8")
	f.mustErr(r, http.StatusConflict, api.CodeRolloutInProgress, "without --canary and with --force")
	if strings.Contains(string(r.body), "write with --force to abort") {
		t.Fatalf("the refusal tells a canary to take force: %s", r.body)
	}
	f.must(f.do("PUT", "/v1/kv/shared/ntp?force", "pool"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/shared/dns?canary=50%25", "8.8.8.8"), http.StatusAccepted, &g2)
	if st := appRollout(t, f, "web"); st.Group != g2.Group || st.State != api.RolloutRunning {
		t.Fatalf("web's rollout after the abort: %+v", st)
	}
}

// The rollout of an appliance that another appliance's failure halted says so without the
// other's instance and error, nor the shared/ keys, to a token that may read only its own
// appliance.
func TestSharedRollout_OthersFailureNotShownToAnotherAppliancesReader(t *testing.T) {
	f := newFixture(t)
	_, apis := webAndAPI(t, f, 1, 1)
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&bake=1h", "bad"), http.StatusAccepted, &g)
	appReport(t, f, "api", apis[0], appViewOf(t, f, "api", apis[0]), "secret-ish failure text of api")
	webOnly := f.newToken(api.TokenRequest{Name: "web-reader", Read: []string{"appliances/web"}})
	var st api.RolloutStatus
	r := f.doToken(webOnly, "GET", "/v1/appliances/web/rollout", "")
	f.must(r, 200, &st)
	if st.State != api.RolloutHalted || !strings.Contains(st.Reason, g.Group) {
		t.Fatalf("web's rollout: %+v", st)
	}
	if b := string(r.body); strings.Contains(b, apis[0]) || strings.Contains(b, "secret-ish") || strings.Contains(b, `"api`) || strings.Contains(b, "ntp") {
		t.Fatalf("a reader of web only sees api's failure: %s", b)
	}
	if st := appRollout(t, f, "web"); !strings.Contains(st.Reason, apis[0]) || !strings.Contains(st.Reason, "secret-ish") || len(st.Shared) != 1 {
		t.Fatalf("web's rollout to the admin: %+v", st)
	}
	// Nor does the answer to an abort by a writer of web alone name the shared/ keys.
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&bake=1h", "again"), http.StatusAccepted, &g)
	webWriter := f.newToken(api.TokenRequest{Name: "web-writer", Write: []string{"appliances/web"}})
	r = f.doToken(webWriter, "POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json")
	f.must(r, 200, &st)
	if st.State != api.RolloutAborted || strings.Contains(string(r.body), "ntp") {
		t.Fatalf("the abort's answer to a writer of web: %s", r.body)
	}
	// The admin sees api's rollout ended by web's abort, and the keys.
	if st := appRollout(t, f, "api"); !strings.Contains(st.Reason, "aborted by token web-writer") || len(st.Shared) != 1 {
		t.Fatalf("api's rollout to the admin: %+v", st)
	}
}

// Forged reports: an instance of one appliance of the group cannot report for another's
// rollout (403), and a failure that names the group's id rather than the rollout's halts
// nothing; nor does a failure of an instance that is not in the cohort.
func TestSharedRollout_ForgedReportsHaltNothing(t *testing.T) {
	f := newFixture(t)
	web, apis := webAndAPI(t, f, 2, 1)
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=50%25&bake=1h", "new"), http.StatusAccepted, &g)
	webRollout := appRollout(t, f, "web")
	victim := webRollout.Cohort[0]
	for _, rollout := range []string{webRollout.ID, g.Group} {
		b, _ := json.Marshal(api.Report{Instance: victim, Revision: g.Revision, Rollout: rollout, Error: "forged", Stage: api.StageCommand})
		// api's instance token, reporting as web's canary.
		f.mustErr(f.doToken(instanceToken(t, f, apis[0]), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json", api.HeaderInstance, victim),
			http.StatusForbidden, api.CodeForbidden)
		// api's instance token reporting on its own appliance, naming web's rollout or the group.
		b, _ = json.Marshal(api.Report{Instance: apis[0], Revision: g.Revision, Rollout: rollout, Error: "forged", Stage: api.StageCommand})
		f.must(f.doToken(instanceToken(t, f, apis[0]), "POST", "/v1/appliances/api/report", string(b), "Content-Type", "application/json", api.HeaderInstance, apis[0]), 200, nil)
	}
	// web's instance out of the cohort, naming its rollout.
	other := web[0]
	if other == victim {
		other = web[1]
	}
	b, _ := json.Marshal(api.Report{Instance: other, Revision: g.Revision, Rollout: webRollout.ID, Error: "forged", Stage: api.StageCommand})
	f.must(f.doToken(instanceToken(t, f, other), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json", api.HeaderInstance, other), 200, nil)
	for _, app := range []string{"web", "api"} {
		if st := appRollout(t, f, app); st.State != api.RolloutRunning || st.Group != g.Group {
			t.Fatalf("%s after forged reports: %+v", app, st)
		}
	}
}

// A plain write of an appliance committed while a shared rollout group starts (after the
// start read the appliance's tree, before its transaction) is not undone for the cohort.
func TestSharedRollout_PlainWriteRacingTheStartIsKeptForTheCohort(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80")
	f.put("appliances/web/gone", "soon")
	web := enrollApp(t, f, "web", 1)
	testHookSharedStart = func() {
		f.put("appliances/web/port", "81")
		f.must(f.do("DELETE", "/v1/kv/appliances/web/gone", ""), 200, nil)
	}
	t.Cleanup(func() { testHookSharedStart = nil })
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25&bake=1h", "new"), http.StatusAccepted, &g)
	testHookSharedStart = nil
	v := appViewOf(t, f, "web", web[0])
	if v.Rollout == "" || v.Keys["ntp"] != "new" || v.Keys["port"] != "81" {
		t.Fatalf("the cohort's view: %+v", v)
	}
	if _, ok := v.Keys["gone"]; ok {
		t.Fatalf("the cohort's view has a key deleted before the start: %+v", v)
	}
}

// A group whose start fits etcd's request size but whose promotion (the records again, and the
// change) would not is 413 when it starts, not halted after every canary took it.
func TestSharedRollout_PromotionOverTheRequestSizeIs413UpFront(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, cfg.DataDir = nil, t.TempDir() // embedded: its request size limit is known
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	limit := f.st.MaxRequestBytes()
	const apps = 11
	value := strings.Repeat("x", limit/(apps+1)+(limit/(apps+1))/20) // start ≈ 10.5/12 of the limit, promotion over it
	for i := range apps {
		f.put(fmt.Sprintf("appliances/a%d/port", i), "1")
		enrollApp(t, f, fmt.Sprintf("a%d", i), 1)
	}
	f.mustErr(f.do("PUT", "/v1/kv/shared/big?canary=100%25", value), http.StatusRequestEntityTooLarge, api.CodeTooLarge, "promotion")
	if r := f.do("GET", "/v1/appliances/a0/rollout", ""); r.StatusCode != http.StatusNotFound {
		t.Fatalf("a rollout started: %d %s", r.StatusCode, r.body)
	}
}

// Races, through two replicas of one store: two shared canaries, and a shared canary against a
// canary of one of its appliances. One wins each time; the loser is 409 rollout_in_progress;
// nothing is left held.
func TestSharedRollout_RacesThroughTwoReplicas(t *testing.T) {
	a := newFixture(t)
	b := newFixtureOn(t, a.st)
	b.token = a.token
	a.put("shared/ntp", "pool")
	a.put("shared/dns", "1")
	a.put("appliances/web/port", "80")
	enrollApp(t, a, "web", 2)
	for i := range 6 {
		second := []string{"/v1/kv/shared/dns?canary=50%25&bake=1h", "/v1/kv/appliances/web/port?canary=50%25&bake=1h"}[i%2]
		codes := make(chan int, 2)
		for j, req := range []struct {
			f    *fixture
			path string
		}{{a, "/v1/kv/shared/ntp?canary=50%25&bake=1h"}, {b, second}} {
			go func() {
				r := req.f.do("PUT", req.path, fmt.Sprint(1000+i*10+j)) // values no key holds: each write changes something
				if r.StatusCode == http.StatusConflict && !strings.Contains(string(r.body), api.CodeRolloutInProgress) {
					t.Errorf("409 of another kind: %s", r.body)
				}
				codes <- r.StatusCode
			}()
		}
		c1, c2 := <-codes, <-codes
		if min(c1, c2) != http.StatusAccepted || max(c1, c2) != http.StatusConflict {
			t.Fatalf("race %d: %d and %d", i, c1, c2)
		}
		st := appRollout(t, a, "web")
		if st.State != api.RolloutRunning {
			t.Fatalf("race %d: web's rollout %+v", i, st)
		}
		a.must(a.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
		// Nothing held: plain writes of both keys and of web go through.
		a.put("shared/ntp", "pool")
		a.put("shared/dns", "1")
		a.put("appliances/web/port", "80")
	}
}

// The release of a group's start tells the keys it would create from those it would change,
// and leaves out a delete of a key that is not there, as a plain write's release does.
func TestSharedRollout_StartReleaseTellsCreatedFromChanged(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("shared/old", "x")
	f.put("appliances/web/port", "80")
	enrollApp(t, f, "web", 1)
	var g api.SharedRolloutStatus
	f.must(f.do("POST", "/v1/txn?canary=100%25&bake=1h", `{"ops":[{"op":"put","key":"shared/ntp","value":"new"},{"op":"put","key":"shared/fresh","value":"1"},`+
		`{"op":"delete","key":"shared/old"},{"op":"delete","key":"shared/never"}]}`, "Content-Type", "application/json"), http.StatusAccepted, &g)
	var rels api.Releases
	f.must(f.do("GET", "/v1/releases?prefix=shared", ""), 200, &rels)
	rel := rels.Releases[0]
	if rel.Rollout != g.Group || len(rel.Changes) != 1 {
		t.Fatalf("release: %+v", rel)
	}
	c := rel.Changes[0]
	if strings.Join(c.Created, ",") != "shared/fresh" || strings.Join(c.Changed, ",") != "shared/ntp" || strings.Join(c.Deleted, ",") != "shared/old" ||
		c.CreatedCount != 1 || c.ChangedCount != 1 || c.DeletedCount != 1 {
		t.Fatalf("the start's changes: %+v", c)
	}
}

// A plain write of an appliance committed while its canary starts (after the start read the
// tree, before its transaction) is not undone by the promotion: the candidate is the write's
// edits over the tree the start left.
func TestRollout_PlainWriteRacingTheStartIsNotLost(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("appliances/web/other", "1")
	f.put("appliances/web/gone", "soon")
	web := enrollApp(t, f, "web", 1)
	testHookRolloutStart = func() {
		testHookRolloutStart = nil
		f.put("appliances/web/other", "2")
		f.must(f.do("DELETE", "/v1/kv/appliances/web/gone", ""), 200, nil)
	}
	t.Cleanup(func() { testHookRolloutStart = nil })
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25", "81"), http.StatusAccepted, &st)
	v := appViewOf(t, f, "web", web[0])
	if v.Rollout != st.ID || v.Keys["port"] != "81" || v.Keys["other"] != "2" {
		t.Fatalf("the cohort's view: %+v", v)
	}
	if _, ok := v.Keys["gone"]; ok {
		t.Fatalf("the cohort's view has a key deleted before the start: %+v", v)
	}
	appReport(t, f, "web", web[0], v, "")
	waitFor(t, "the promotion", func() bool { return appRollout(t, f, "web").State == api.RolloutPromoted })
	var live api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &live)
	if live.Keys["port"] != "81" || live.Keys["other"] != "2" {
		t.Fatalf("live after the promotion: %+v", live.Keys)
	}
	if _, ok := live.Keys["gone"]; ok {
		t.Fatalf("the promotion brought back a deleted key: %+v", live.Keys)
	}
}

// A forced plain write of a group's key racing the group's promotion: whichever comes first,
// the forced value is the one that stays, the group ends promoted or aborted, and nothing is
// left held.
func TestSharedRollout_ForcedWriteRacingThePromotion(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.put("appliances/web/port", "80")
	web := enrollApp(t, f, "web", 1)
	for i := range 4 {
		var g api.SharedRolloutStatus
		f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25", fmt.Sprint("canary-", i)), http.StatusAccepted, &g)
		appReport(t, f, "web", web[0], appViewOf(t, f, "web", web[0]), "")
		if i%2 == 1 {
			waitFor(t, "web ready", func() bool { st := appRollout(t, f, "web"); return st.GroupReady || st.State != api.RolloutRunning })
		}
		forced := fmt.Sprint("forced-", i)
		f.must(f.do("PUT", "/v1/kv/shared/ntp?force", forced), 200, nil)
		waitFor(t, "the group's end", func() bool { return appRollout(t, f, "web").State != api.RolloutRunning })
		if st := appRollout(t, f, "web"); st.Group != g.Group || st.State != api.RolloutPromoted && st.State != api.RolloutAborted {
			t.Fatalf("race %d: %+v", i, st)
		}
		if v := liveShared(t, f, "ntp"); v != forced {
			t.Fatalf("race %d: shared/ntp is %q, not the forced %q", i, v, forced)
		}
		f.put("appliances/web/port", "80")
	}
}
