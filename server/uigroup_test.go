package server

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A rollout of a shared rollout group is shown as one: the appliance page names the group, its
// shared/ keys and the other appliances, as rollout status does; the abort's confirmation says
// that the whole group ends (the other appliances' cohorts too), the promote's that the change
// goes live only once every appliance of the group has passed its last step; a rollout that has
// passed it offers no promote (it waits for the others).
func TestUI_SharedRolloutGroupSaysSo(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	webAndAPI(t, f, 2, 1)
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=50%25&bake=20ms", "new"), http.StatusAccepted, &g)
	web := appRollout(t, f, "web")

	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	page := string(b.get("/ui/appliances/web").body)
	if !strings.Contains(page, "Part of shared rollout group "+g.Group+", of shared/ keys ntp, with the rollouts of api:") ||
		!strings.Contains(page, "an abort or a halt of any of them ends them all") {
		t.Fatalf("the appliance page does not say its rollout is of a group: %s", page)
	}
	// A token that may read web alone is told that other appliances are in the group: neither
	// their names nor how many.
	reader := newUIBrowser(t, f.srv.URL, nil)
	reader.signIn(f.newToken(api.TokenRequest{Name: "web-reader", Read: []string{"appliances/web", "shared"}}))
	if p := string(reader.get("/ui/appliances/web").body); !strings.Contains(p, "of shared/ keys ntp, with the rollouts of other appliances:") ||
		strings.Contains(p, "api") || strings.Contains(p, "1 appliance") {
		t.Fatalf("the page of a token that may read web alone: %s", p)
	}
	form := func(action string) url.Values {
		return url.Values{"csrf": {tok}, "action": {action}, "rollout": {web.ID}, "at": {"0"}}
	}
	abort := b.post("/ui/appliances/web/rollout", form("abort"))
	mustStatus(t, abort, 200)
	if !strings.Contains(string(abort.body), "and with it every rollout of its shared rollout group "+g.Group+" (api)") {
		t.Fatalf("the abort's confirmation does not say the group ends: %s", abort.body)
	}
	promote := b.post("/ui/appliances/web/rollout", form("promote"))
	mustStatus(t, promote, 200)
	if p := string(promote.body); strings.Contains(p, "the candidate becomes the live keys") ||
		!strings.Contains(p, "after its last step it waits for the other appliances of shared rollout group "+g.Group+" (api)") {
		t.Fatalf("the promote's confirmation: %s", p)
	}

	// api's one instance applies the change: api has passed its last step and waits for web.
	done := false
	waitFor(t, "api to pass its last step", func() bool {
		st := appRollout(t, f, "api")
		if !done && len(st.Cohort) == 1 {
			if v := appViewOf(t, f, "api", st.Cohort[0]); v.Rollout == st.ID {
				appReport(t, f, "api", st.Cohort[0], v, "")
				done = true
			}
		}
		return st.GroupReady
	})
	api1 := appRollout(t, f, "api")
	page = string(b.get("/ui/appliances/api").body)
	if !strings.Contains(page, "Every step passed: it waits for the other appliances of the group.") || strings.Contains(page, `value="promote"`) {
		t.Fatalf("the page of a rollout that waits for its group: %s", page)
	}
	r := b.post("/ui/appliances/api/rollout", url.Values{"csrf": {tok}, "action": {"promote"}, "rollout": {api1.ID}, "at": {"0"}})
	mustStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "waits for the other appliances of shared rollout group") {
		t.Fatalf("promote of a rollout that waits for its group: %s", r.body)
	}

	// The abort confirmed from web's page ends api's rollout too, as its confirmation said.
	f2 := form("abort")
	f2.Set("step", "apply")
	mustStatus(t, b.post("/ui/appliances/web/rollout", f2), http.StatusSeeOther)
	if st := appRollout(t, f, "api"); st.State != api.RolloutAborted {
		t.Fatalf("api's rollout after the abort of web's: %+v", st)
	}
}

// While a shared rollout group runs, the API refuses writes to the shared/ keys it changes and to
// the own keys of its appliances (409 rollout_in_progress): the confirmation of an edit says so,
// and that aborting the appliance's rollout there ends the whole group.
func TestUI_EditConfirmationWarnsOfSharedRolloutGroup(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	webAndAPI(t, f, 2, 1)
	f.put("shared/dns", "1.1.1.1")
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=50%25&bake=1h", "new"), http.StatusAccepted, &g)
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	warning := regexp.MustCompile(`(?s)<p class="warning" role="alert">(.*?)</p>`)
	confirm := func(key, value string) (resp, string) {
		t.Helper()
		var kv api.KV
		f.must(f.do("GET", "/v1/kv/"+key, ""), 200, &kv)
		r := b.post("/ui/appliances/web/edit", url.Values{"csrf": {tok}, "key": {key}, "value": {value}, "cas": {strconv.FormatInt(kv.ModRevision, 10)}})
		mustStatus(t, r, 200)
		m := warning.FindSubmatch(r.body)
		if m == nil {
			return r, ""
		}
		return r, string(m[1])
	}
	if _, w := confirm("shared/ntp", "newer"); !strings.Contains(w, "Shared rollout group "+g.Group+" changes this key: the write will be refused") {
		t.Fatalf("the edit of a shared key the group changes is not warned of: %q", w)
	}
	if _, w := confirm("appliances/web/port", "81"); !strings.Contains(w, "of shared rollout group "+g.Group+", is running") ||
		!strings.Contains(w, "ends every rollout of the group") {
		t.Fatalf("the edit of an own key of an appliance of the group: %q", w)
	}
	// Another shared key is written: no warning of the group.
	r, w := confirm("shared/dns", "9.9.9.9")
	if strings.Contains(w, "rollout") {
		t.Fatalf("a shared key the group does not change is warned of: %q", w)
	}
	mustStatus(t, b.post("/ui/appliances/web/edit", hiddenFields(r.body)), http.StatusSeeOther)
	// What the warning says happens: the write is refused.
	r, _ = confirm("shared/ntp", "newer")
	mustStatus(t, b.post("/ui/appliances/web/edit", hiddenFields(r.body)), http.StatusConflict)
}
