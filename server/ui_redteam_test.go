package server

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// The holder of an agent token (on every VM of a fleet, in its baked image) enrolls as many
// instance tokens as it likes: each signing in once must not count as a token of its own at the
// cap of sessions, where the token holding the most loses its oldest; the admin's one session
// stays.
func TestUI_InstanceTokenFloodKeepsOthers(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	victim := newUIBrowser(t, f.srv.URL, nil)
	victim.signIn(f.token)
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	var enrolled []string
	for i := range 3 {
		enrolled = append(enrolled, f.enroll(agent, "web-frontend", fmt.Sprintf("vm-%d", i)).Token)
	}
	waitFor(t, "the instance tokens in the cache", func() bool {
		return f.s.auth.byNameRecord(instanceTokenName("web-frontend", "vm-2")) != nil
	})
	// Sessions of as many more instance tokens of the same agent token as fill the cap (the
	// rate limit spreads their enrollments and sign-ins over minutes), one each.
	for i := range uiMaxSessions - 1 {
		inst := fmt.Sprintf("filler-%d", i)
		f.s.ui.create(&tokenRecord{Name: instanceTokenName("web-frontend", inst), Hash: fmt.Sprintf("%064x", i),
			Appliance: "web-frontend", Instance: inst, Parent: "web-agent"}, time.Now())
	}
	for _, tok := range enrolled {
		newUIBrowser(t, f.srv.URL, nil).signIn(tok)
	}
	if n := len(f.s.ui.m); n != uiMaxSessions {
		t.Fatalf("%d sessions, want the cap %d", n, uiMaxSessions)
	}
	mustStatus(t, victim.get("/ui/store"), http.StatusOK)
}

var hiddenField = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// hiddenFields are the hidden fields of the forms of page body, as a browser sends them.
func hiddenFields(body []byte) url.Values {
	out := url.Values{}
	for _, m := range hiddenField.FindAllSubmatch(body, -1) {
		out.Set(html.UnescapeString(string(m[1])), html.UnescapeString(string(m[2])))
	}
	return out
}

// A rollout's promotion or abort confirmed on a page that is out of date does nothing: a
// confirmation of a promotion whose step has passed meanwhile would skip the next step's bake
// (the same button pressed twice, or a confirmation left open), and one of an abort whose
// rollout ended, another one started since, would abort a rollout nobody reviewed.
func TestUI_RolloutActionOfStalePage(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=25%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	c := st.Cohort[0]
	report(t, f, c, viewOf(t, f, c), "") // a promotion waits for the cohort, not for its bake
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	promote := hiddenFields(page.body)
	promote.Set("action", "promote")
	if promote.Get("rollout") != st.ID || promote.Get("at") != "0" {
		t.Fatalf("the page's forms do not name the rollout and its step: %v", promote)
	}
	// Steps are counted from 1, as the CLI's rollout status counts them (the page said "step 0").
	if want := fmt.Sprintf("step 1 of %d", len(st.Steps)); !strings.Contains(string(page.body), want) {
		t.Fatalf("the page does not say %q: %s", want, page.body)
	}
	confirm := b.post("/ui/appliances/web/rollout", promote)
	mustStatus(t, confirm, 200)
	if want := fmt.Sprintf("is at step 1 of %d.", len(st.Steps)); !strings.Contains(string(confirm.body), want) {
		t.Fatalf("the confirmation does not say %q: %s", want, confirm.body)
	}
	apply := hiddenFields(confirm.body)
	mustStatus(t, b.post("/ui/appliances/web/rollout", apply), http.StatusSeeOther)
	waitFor(t, "the second step", func() bool { return rolloutStatus(t, f).Step == 1 })
	// The same confirmation again (pressed twice, or sent again from the history).
	again := b.post("/ui/appliances/web/rollout", apply)
	mustStatus(t, again, http.StatusConflict)
	if want := html.EscapeString(fmt.Sprintf("at step 2 of %d; the page showed %q at step 1)", len(st.Steps), st.ID)); !strings.Contains(string(again.body), want) {
		t.Fatalf("the refusal does not say %q: %s", want, again.body)
	}
	// The appliance page shown before the promotion.
	mustStatus(t, b.post("/ui/appliances/web/rollout", promote), http.StatusConflict)
	time.Sleep(300 * time.Millisecond) // a promotion the leader had not taken yet would show now
	if got := rolloutStatus(t, f); got.Step != 1 || got.State != api.RolloutRunning {
		t.Fatalf("a stale confirmation moved the rollout: step %d, %s", got.Step, got.State)
	}

	// An abort confirmed for this rollout, sent after it ended and another one started.
	page = b.get("/ui/appliances/web")
	abort := hiddenFields(page.body)
	abort.Set("action", "abort")
	confirm = b.post("/ui/appliances/web/rollout", abort)
	mustStatus(t, confirm, 200)
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	var next api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=25%25&manual", `{"keys":{"port":"9090"}}`), http.StatusAccepted, &next)
	mustStatus(t, b.post("/ui/appliances/web/rollout", hiddenFields(confirm.body)), http.StatusConflict)
	if got := rolloutStatus(t, f); got.ID != next.ID || got.State != api.RolloutRunning {
		t.Fatalf("the new rollout: %s %s, want %s running", got.ID, got.State, next.ID)
	}
}

// The console's files are answered with the headers of every console answer, no-store
// included, as DESIGN.md says of static files (they had no-cache).
func TestUI_StaticFilesHeaders(t *testing.T) {
	f := newFixture(t)
	b := newUIBrowser(t, f.srv.URL, nil)
	for _, p := range []string{"/ui/static/console.css", "/ui/static/console.js"} {
		r := b.get(p)
		mustStatus(t, r, http.StatusOK)
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", p, got)
		}
		if r.Header.Get("Content-Security-Policy") != uiCSP || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", p, r.Header)
		}
	}
}

// While the store cannot be asked, a token this replica does not know is not known to be
// revoked: the sign-in answers 503 with Retry-After, as the API does, not "Unknown or revoked
// token" to the holder of a valid one; a replica started while the store was down included.
func TestUI_SigninWhileStoreDown(t *testing.T) {
	parallelOwnEtcd(t)
	st, _, stop := ownEtcdStore(t, t.TempDir())
	f := newFixtureOn(t, st)
	uiSeed(f)
	tok := f.newToken(api.TokenRequest{Name: "new-ops", Read: []string{"appliances", "shared"}})
	waitFor(t, "the token in the cache", func() bool { return f.s.auth.byNameRecord("new-ops") != nil })
	stop()
	// As if created a moment ago through another replica, its watch event not come yet (after
	// the store stopped: no watch event puts it back meanwhile).
	f.s.auth.mu.Lock()
	rec := f.s.auth.byName["new-ops"]
	delete(f.s.auth.byName, "new-ops")
	delete(f.s.auth.byHash, rec.Hash)
	f.s.auth.mu.Unlock()
	cfg := testConfig()
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	g := New(st, cfg, testutil.Logger()) // started with the store down: no token loaded
	gsrv := httptest.NewServer(g.Handler())
	for _, c := range []struct{ name, base, token string }{{"not cached", f.srv.URL, tok}, {"not loaded", gsrv.URL, f.token}} {
		b := newUIBrowser(t, c.base, nil)
		form := b.get("/ui/")
		r := b.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {c.token}})
		if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" ||
			strings.Contains(string(r.body), "revoked token") || !strings.Contains(string(r.body), `type="password"`) {
			t.Errorf("%s: status %d, Retry-After %q; body %s", c.name, r.StatusCode, r.Header.Get("Retry-After"), r.body)
		}
	}
	gsrv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Errorf("close server: %v", err)
	}
	closeBeforeEtcd(t, f)
}

// A sign-in form open in one tab still signs in after another console page was opened without
// a session in the same browser (a second tab, or the script of a page whose session ended),
// which answers the form too: it used to set a new sign-in cookie, and the first form then
// answered "The sign-in form expired".
func TestUI_SigninFormSurvivesAnotherTab(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	first := b.get("/ui/")
	mustStatus(t, b.get("/ui/appliances/web-frontend"), http.StatusUnauthorized)
	mustStatus(t, b.get("/ui/"), http.StatusOK)
	r := b.post("/ui/signin", url.Values{"csrf": {csrf(t, first.body)}, "token": {f.token}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in from the first tab: status %d; body %s", r.StatusCode, r.body)
	}
	// A made-up sign-in cookie is never taken as the form's token.
	c := newUIBrowser(t, f.srv.URL, nil)
	u, _ := url.Parse(f.srv.URL + "/ui/")
	c.c.Jar.SetCookies(u, []*http.Cookie{{Name: uiSigninCookie, Value: "planted", Path: "/ui/"}})
	if form := c.get("/ui/"); csrf(t, form.body) == "planted" {
		t.Fatal("the form took a planted sign-in cookie")
	}
}

// While a rollout of the appliance runs, the API refuses writes to its keys (409
// rollout_in_progress): the confirmation of a key's edit or of a rollback says so before the
// operator types a message and confirms, and what to do in the console (a shared key, which
// the rollout does not hold, is not warned of).
func TestUI_ConfirmationsWarnOfRunningRollout(t *testing.T) {
	f := newFixture(t)
	first := f.put("appliances/web/port", "80")
	f.put("appliances/web/mode", "blue")
	f.put("shared/ntp", "pool1")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080","mode":"blue"}}`), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	warning := regexp.MustCompile(`(?s)<p class="warning" role="alert">(.*?)</p>`)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/mode", ""), 200, &kv)
	edit := b.post("/ui/appliances/web/edit", url.Values{"csrf": {tok}, "key": {"appliances/web/mode"}, "value": {"green"}, "cas": {strconv.FormatInt(kv.ModRevision, 10)}})
	mustStatus(t, edit, 200)
	rollback := b.post("/ui/appliances/web/rollback", url.Values{"csrf": {tok}, "to": {strconv.FormatInt(first, 10)}})
	mustStatus(t, rollback, 200)
	for what, page := range map[string]resp{"edit": edit, "rollback": rollback} {
		m := warning.FindSubmatch(page.body)
		if m == nil || !strings.Contains(string(m[1]), st.ID) || !strings.Contains(string(m[1]), "abort") {
			t.Errorf("the %s confirmation does not warn of rollout %s: %s", what, st.ID, page.body)
		}
	}
	// What the warning says happens: the write is refused and nothing changes.
	mustStatus(t, b.post("/ui/appliances/web/edit", hiddenFields(edit.body)), http.StatusConflict)
	f.must(f.do("GET", "/v1/kv/appliances/web/mode", ""), 200, &kv)
	if kv.Value != "blue" {
		t.Fatalf("written during the rollout: %q", kv.Value)
	}
	f.must(f.do("GET", "/v1/kv/shared/ntp", ""), 200, &kv)
	shared := b.post("/ui/appliances/web/edit", url.Values{"csrf": {tok}, "key": {"shared/ntp"}, "value": {"pool2"}, "cas": {strconv.FormatInt(kv.ModRevision, 10)}})
	mustStatus(t, shared, 200)
	if m := warning.FindSubmatch(shared.body); m != nil && strings.Contains(string(m[1]), "rollout") {
		t.Errorf("a shared key's confirmation warns of the appliance's rollout: %s", m[1])
	}
}

// A promotion waits for every instance of the current cohort to apply the candidate (it skips
// the bake only): the confirmation of a promotion says so, rather than that the rollout "moves
// to its next step now", which it did not while the cohort had not applied.
func TestUI_PromoteConfirmationSaysItWaitsForTheCohort(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	promote := hiddenFields(b.get("/ui/appliances/web").body)
	promote.Set("action", "promote")
	confirm := b.post("/ui/appliances/web/rollout", promote)
	mustStatus(t, confirm, 200)
	if body := string(confirm.body); strings.Contains(body, "next step now") || !strings.Contains(body, "as soon as every instance of the current cohort has applied the candidate") {
		t.Errorf("the confirmation of a promotion whose cohort has not applied: %s", body)
	}
	mustStatus(t, b.post("/ui/appliances/web/rollout", hiddenFields(confirm.body)), http.StatusSeeOther)
	time.Sleep(300 * time.Millisecond) // the leader's next ticks
	if got := rolloutStatus(t, f); got.Step != 0 || got.State != api.RolloutRunning {
		t.Fatalf("the promotion moved on without the cohort: step %d, %s", got.Step, got.State)
	}
	c := st.Cohort[0]
	report(t, f, c, viewOf(t, f, c), "")
	waitFor(t, "the promotion once the cohort applied", func() bool { return rolloutStatus(t, f).Step == 1 })
}
