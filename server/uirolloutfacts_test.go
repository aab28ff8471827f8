package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The appliance page says of a rollout what rollout status prints: how many instances get the
// change and how many applied it, its strategy (a manual one's steps wait for a promote), who
// started it with which write and message, and, once a manual rollout's cohort has applied the
// change, that it waits for a promote (it showed "running, step 1 of 2" and nothing else, for
// as long as nobody pressed Promote).
func TestUI_RolloutSaysWhatStatusSays(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080"}}`, api.HeaderMessage, "new port"), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := string(b.get("/ui/appliances/web").body)
	for _, want := range []string{
		"1 of 2 instances get the change, 0 of them applied it.",
		"Strategy: canary 50%, bake ",
		", manual (each step waits for a promote).",
		"Started by admin (apply): new port.",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not say %q: %s", want, page)
		}
	}
	if strings.Contains(page, "waits for a promote:") {
		t.Errorf("the page says the rollout waits for a promote before its cohort applied: %s", page)
	}
	c := st.Cohort[0]
	report(t, f, c, viewOf(t, f, c), "")
	waitFor(t, "the cohort's report", func() bool { return rolloutStatus(t, f).WaitsForPromote() })
	page = string(b.get("/ui/appliances/web").body)
	if !strings.Contains(page, "1 of 2 instances get the change, 1 of them applied it") ||
		!strings.Contains(page, "<strong>It waits for a promote:</strong>") {
		t.Fatalf("the page of a manual rollout whose cohort applied: %s", page)
	}
}

// Maintenance refuses a rollout's promote and abort (503), as it refuses the console's other
// writes: their confirmations warn of it, as an edit's and a rollback's do.
func TestUI_RolloutConfirmationsWarnOfMaintenance(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 2)
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, nil)
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	form := hiddenFields(b.get("/ui/appliances/web").body)
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"true"}, "step": {"apply"}}), http.StatusSeeOther)
	const want = "Maintenance is on: the store is read-only and the write will be refused"
	for _, action := range []string{"promote", "abort"} {
		form.Set("action", action)
		confirm := b.post("/ui/appliances/web/rollout", form)
		mustStatus(t, confirm, 200)
		if !strings.Contains(string(confirm.body), want) {
			t.Errorf("the %s's confirmation lacks %q: %s", action, want, confirm.body)
		}
		// What it warns of: the confirmed form is refused.
		mustStatus(t, b.post("/ui/appliances/web/rollout", hiddenFields(confirm.body)), http.StatusServiceUnavailable)
	}
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"false"}, "step": {"apply"}}), http.StatusSeeOther)
	form.Set("action", "abort")
	if confirm := b.post("/ui/appliances/web/rollout", form); strings.Contains(string(confirm.body), want) {
		t.Errorf("maintenance off, the abort's confirmation warns of it: %s", confirm.body)
	}
}
