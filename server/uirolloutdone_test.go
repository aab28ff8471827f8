package server

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// After a promote or an abort the appliance page says what happened, as rollout status would
// (it said "Written at revision N", as after a key's write), and the appliances page names a
// manual rollout whose cohort has applied the change "waiting for promote" (it said "running",
// for as long as nobody pressed Promote).
func TestUI_RolloutActionSaysWhatHappened(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	listed := func() string {
		t.Helper()
		list := string(b.get("/ui/").body)
		i := strings.Index(list, `<span class="state state-`)
		if i < 0 {
			t.Fatalf("the appliances page shows no rollout: %s", list)
		}
		list = list[i:]
		return list[strings.Index(list, ">")+1 : strings.Index(list, "</span>")]
	}
	notice := func(location string) string {
		t.Helper()
		page := string(b.get(location).body)
		const start = `<p class="notice" role="status">`
		i := strings.Index(page, start)
		if i < 0 {
			t.Fatalf("no notice at %s: %s", location, page)
		}
		page = page[i+len(start):]
		return page[:strings.Index(page, "</p>")]
	}
	act := func(action string) string {
		t.Helper()
		now := rolloutStatus(t, f)
		res := b.post("/ui/appliances/web/rollout", url.Values{"csrf": {c}, "action": {action}, "rollout": {now.ID},
			"at": {strconv.Itoa(now.Step)}, "step": {"apply"}})
		mustStatus(t, res, http.StatusSeeOther)
		return res.Header.Get("Location")
	}
	reportCohort := func() {
		t.Helper()
		for _, in := range rolloutStatus(t, f).Cohort {
			report(t, f, in, viewOf(t, f, in), "")
		}
	}
	if got := listed(); got != "running" {
		t.Errorf("before the cohort applied, the appliances page shows %q, want running", got)
	}

	// Promoted before its cohort applied the change: the step waits for it, then is taken.
	at := act("promote")
	if got, want := notice(at), "Promote of rollout "+st.ID+" written at revision "; !strings.HasPrefix(got, want) ||
		!strings.HasSuffix(got, ": it moves to step 2 of 2 once every instance of its cohort has applied the candidate.") {
		t.Errorf("after a promote that waits for the cohort the page says %q, want %q…", got, want)
	}
	reportCohort()
	waitFor(t, "the step", func() bool { return rolloutStatus(t, f).Step == 1 })
	if got, want := notice(at), "Promoted rollout "+st.ID+" to step 2 of 2 (promote written at revision "; !strings.HasPrefix(got, want) {
		t.Errorf("once the step was taken the page says %q, want %q…", got, want)
	}

	reportCohort()
	waitFor(t, "the cohort's report", func() bool { return rolloutStatus(t, f).WaitsForPromote() })
	if got := listed(); got != "waiting for promote" {
		t.Errorf("a manual rollout whose cohort applied shows %q on the appliances page, want waiting for promote", got)
	}
	at = act("promote")
	waitFor(t, "the promotion", func() bool { return rolloutStatus(t, f).State == api.RolloutPromoted })
	if got, want := notice(at), "Promoted rollout "+st.ID+": it passed its last step, and its change is the live keys since revision "; !strings.HasPrefix(got, want) {
		t.Errorf("after the last step's promote the page says %q, want %q…", got, want)
	}
	if got := listed(); got != "promoted" {
		t.Errorf("a promoted rollout shows %q on the appliances page", got)
	}

	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"9090"}}`), http.StatusAccepted, &st)
	if got, want := notice(act("abort")), "Aborted rollout "+st.ID+" at revision "; !strings.HasPrefix(got, want) ||
		!strings.HasSuffix(got, ": the instances of its cohorts go back to the live keys.") {
		t.Errorf("after the abort the page says %q, want %q…", got, want)
	}
}

// In Chromium: the notice after Promote… and its confirmation says that the promote waits for
// the cohort, and once the cohort applied the change, without a reload, that the rollout moved
// to its next step (the page reads itself again as the appliance changes).
func TestUIBrowser_PromoteNoticeFollowsTheRollout(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	b.signIn(f.srv.URL, f.token)
	b.do("open the appliance", chromedp.Navigate(f.srv.URL+"/ui/appliances/web"), chromedp.WaitVisible(chromedp.CSS("#rollout")))
	b.do("ask the promote",
		chromedp.Click(chromedp.CSS(`#rollout form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.primary`)),
	)
	b.do("confirm it", chromedp.Click(chromedp.CSS(`button.primary`)), chromedp.WaitVisible(chromedp.CSS("#live .notice")))
	if got := b.text("#live .notice"); !strings.Contains(got, "Promote of rollout "+st.ID+" written at revision ") ||
		!strings.Contains(got, "it moves to step 2 of 2 once every instance of its cohort has applied the candidate") {
		t.Fatalf("after the promote the notice says %q", got)
	}
	b.shot("20-promote-waits")
	eval[bool](b, `window.__notReloaded = true`)
	in := st.Cohort[0]
	report(t, f, in, viewOf(t, f, in), "")
	b.until("the notice did not follow the step", `document.querySelector("#live .notice").textContent.includes("Promoted rollout `+st.ID+` to step 2 of 2")`, "failed-promote-notice")
	if !eval[bool](b, `window.__notReloaded === true`) {
		t.Error("the page reloaded")
	}
	b.shot("21-promoted")
	b.noViolations()
}

// The appliance page's notice after a write, a promote or an abort takes its revision from the
// query, which anyone can write in a link: /ui/appliances/x?promoted=999 (or aborted=, done=)
// said "Written at revision 999." for a revision the store never reached, a promote of no
// rollout, a write that did not touch the appliance. A notice is shown only for what the store
// holds: done=R for a release of the appliance's view at R, unchanged=R up to the store's
// revision, promoted= and aborted= for the rollout they name, after its start.
func TestUI_NoticeOfARevisionTheStoreDoesNotHave(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	wrote := f.put("appliances/web-frontend/port", "9090")
	other := f.put("appliances/billing-db/port", "5433")
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := func(q string) string {
		t.Helper()
		r := b.get("/ui/appliances/web-frontend?" + q)
		mustStatus(t, r, http.StatusOK)
		return string(r.body)
	}
	// Past the store's revision (the package's tests share one etcd: 999 may be behind it).
	far := jsonNum(wrote + 1_000_000_000)
	for _, q := range []string{"done=" + far, "promoted=" + far, "aborted=" + far, "unchanged=" + far,
		"promoted=" + far + "&rollout=r-none&at=0", "aborted=" + jsonNum(wrote), "promoted=" + jsonNum(wrote),
		"done=" + jsonNum(other)} {
		if body := page(q); strings.Contains(body, `class="notice" role="status"`) {
			t.Errorf("?%s: the page shows a notice: %s", q, body[strings.Index(body, `class="notice"`):][:120])
		}
	}
	if body := page("done=" + jsonNum(wrote)); !strings.Contains(body, "Written at revision "+jsonNum(wrote)+".") {
		t.Errorf("?done= of the appliance's write: no notice")
	}
	if sh := f.put("shared/dns", "10.0.0.54"); !strings.Contains(page("done="+jsonNum(sh)), "Written at revision "+jsonNum(sh)+".") {
		t.Errorf("?done= of a shared/ key's write: no notice")
	}
	if body := page("unchanged=" + jsonNum(wrote)); !strings.Contains(body, "Nothing written: the store held this already (since revision "+jsonNum(wrote)+").") {
		t.Errorf("?unchanged= of the appliance's key: no notice")
	}
}
