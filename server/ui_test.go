package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// uiBrowser is a console client: a cookie jar, and the Origin a browser sends with its forms.
type uiBrowser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newUIBrowser(t *testing.T, base string, tr http.RoundTripper) *uiBrowser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &uiBrowser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 60 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get answers the page at p.
func (b *uiBrowser) get(p string) resp {
	b.t.Helper()
	res, err := b.c.Get(b.base + p)
	if err != nil {
		b.t.Fatalf("GET %s: %v", p, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return resp{Response: res, body: body}
}

// post sends form to p as a browser would from a page of the console (hdr: name, value pairs
// that replace the browser's headers; an empty value removes one).
func (b *uiBrowser) post(p string, form url.Values, hdr ...string) resp {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+p, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "null") // what Referrer-Policy: no-referrer makes browsers send
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("POST %s: %v", p, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return resp{Response: res, body: body}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the forms of page body.
func csrf(t *testing.T, body []byte) string {
	t.Helper()
	m := csrfField.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field in %s", body)
	}
	return string(m[1])
}

// signIn signs b in with token and returns the session's CSRF token.
func (b *uiBrowser) signIn(token string) string {
	b.t.Helper()
	form := b.get("/ui/")
	res := b.post("/ui/signin", url.Values{"csrf": {csrf(b.t, form.body)}, "token": {token}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" {
		b.t.Fatalf("sign in: status %d, location %q; body %s", res.StatusCode, res.Header.Get("Location"), res.body)
	}
	page := b.get("/ui/")
	if page.StatusCode != 200 || !strings.Contains(string(page.body), "Sign out") {
		b.t.Fatalf("after sign in: status %d; body %s", page.StatusCode, page.body)
	}
	return csrf(b.t, page.body)
}

// mustStatus checks a page's status.
func mustStatus(t *testing.T, r resp, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
}

func cookieOf(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// uiSeed writes two appliances with a secret each, and shared keys.
// uiSeed writes two appliances and a shared key and returns the revision of the last write.
func uiSeed(f *fixture) int64 {
	f.put("appliances/web-frontend/port", "8080")
	f.put("appliances/web-frontend/secrets/tls-key", "hunter2-web-secret")
	f.put("appliances/billing-db/port", "5432")
	f.put("appliances/billing-db/secrets/password", "hunter2-db-secret")
	return f.put("shared/dns", "10.0.0.53")
}

// Every console answer carries the security headers; /ui/ without a session is the sign-in
// form itself, with a password field and a CSRF cookie.
func TestUI_SigninFormAndHeaders(t *testing.T) {
	f := newFixture(t)
	b := newUIBrowser(t, f.srv.URL, nil)
	for _, p := range []string{"/ui/", "/ui/appliances/x", "/ui/static/console.css", "/ui/nope"} {
		r := b.get(p)
		h := r.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP %q allows inline code", p, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", p, h)
		}
	}
	r := b.get("/ui/")
	mustStatus(t, r, 200)
	body := string(r.body)
	if !strings.Contains(body, `type="password"`) || !strings.Contains(body, `action="/ui/signin"`) {
		t.Fatalf("sign-in form: %s", body)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "onclick") {
		t.Fatalf("inline script or style: %s", body)
	}
	c := cookieOf(r.Response, uiSigninCookie)
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure {
		t.Fatalf("sign-in cookie %+v", c)
	}
	// A deeper page without a session is the form too, 401.
	mustStatus(t, b.get("/ui/appliances/web-frontend"), http.StatusUnauthorized)
}

// Sign-in sets an HttpOnly, SameSite=Strict, expiring session cookie (Secure over TLS); a wrong
// token is refused without echoing it; the token never reaches a page.
func TestUI_SigninCookie(t *testing.T) {
	f := newFixture(t)
	b := newUIBrowser(t, f.srv.URL, nil)
	form := b.get("/ui/")
	bad := "sl_not-a-token-" + strings.Repeat("x", 30)
	r := b.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {bad}})
	mustStatus(t, r, http.StatusUnauthorized)
	if strings.Contains(string(r.body), bad) || !strings.Contains(string(r.body), "Unknown or revoked token") {
		t.Fatalf("bad token answer: %s", r.body)
	}
	// Without the sign-in form's CSRF token.
	mustStatus(t, b.post("/ui/signin", url.Values{"csrf": {"forged"}, "token": {f.token}}), http.StatusForbidden)

	form = b.get("/ui/")
	r = b.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {f.token}})
	mustStatus(t, r, http.StatusSeeOther)
	c := cookieOf(r.Response, uiCookie)
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.MaxAge != int(uiSessionTTL.Seconds()) || c.Path != "/ui/" {
		t.Fatalf("session cookie %+v", c)
	}
	if c.Value == f.token || strings.Contains(c.Value, f.token) {
		t.Fatal("the session cookie holds the token")
	}
	for _, p := range []string{"/ui/", "/ui/store"} {
		if pg := b.get(p); strings.Contains(string(pg.body), f.token) {
			t.Fatalf("%s shows the token", p)
		}
	}

	// Over TLS the cookies are Secure.
	tsrv := httptest.NewTLSServer(f.s.Handler())
	defer tsrv.Close()
	tb := newUIBrowser(t, tsrv.URL, &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}})
	form = tb.get("/ui/")
	if c := cookieOf(form.Response, uiSigninCookie); c == nil || !c.Secure {
		t.Fatalf("sign-in cookie over TLS %+v", c)
	}
	r = tb.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {f.token}})
	mustStatus(t, r, http.StatusSeeOther)
	if c := cookieOf(r.Response, uiCookie); c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie over TLS %+v", c)
	}
}

// A POST needs the session's CSRF token and a same-origin request.
func TestUI_CSRFAndOrigin(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	edit := func(csrf string, hdr ...string) resp {
		return b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrf}, "key": {"appliances/web-frontend/port"}, "value": {"81"}, "cas": {"0"}, "step": {"apply"}}, hdr...)
	}
	for _, c := range []struct {
		name string
		csrf string
		hdr  []string
	}{
		{"no csrf", "", nil},
		{"wrong csrf", "x" + tok, nil},
		{"cross-site", tok, []string{"Sec-Fetch-Site", "cross-site"}},
		{"other origin", tok, []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
		{"no origin", tok, []string{"Sec-Fetch-Site", "", "Origin", ""}},
	} {
		r := edit(c.csrf, c.hdr...)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403; body %s", c.name, r.StatusCode, r.body)
		}
	}
	if kv := f.do("GET", "/v1/kv/appliances/web-frontend/port", ""); !strings.Contains(string(kv.body), `"8080"`) {
		t.Fatalf("a refused form wrote: %s", kv.body)
	}
	// The same origin by its Origin header alone (a browser without fetch metadata) is taken.
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	r := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {tok}, "key": {"appliances/web-frontend/port"}, "value": {"81"}, "cas": {jsonNum(kv.ModRevision)}, "step": {"apply"}},
		"Sec-Fetch-Site", "", "Origin", f.srv.URL)
	mustStatus(t, r, http.StatusSeeOther)
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

// A token sees in the console what its scopes let it read through the API: an appliance's agent
// token, or a read token for one appliance, never sees another appliance's name; no page shows
// a secret value or a token.
func TestUI_Scopes(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	uiSeed(f)
	tokens := map[string]string{
		"admin":  f.token,
		"agent":  f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"}),
		"reader": f.newToken(api.TokenRequest{Name: "web-reader", Read: []string{"appliances/web-frontend", "shared"}}),
		"writer": f.newToken(api.TokenRequest{Name: "web-writer", Write: []string{"appliances/web-frontend"}}),
		"db":     f.newToken(api.TokenRequest{Name: "db-reader", Read: []string{"appliances/billing-db"}}),
	}
	secrets := []string{"hunter2-web-secret", "hunter2-db-secret"}
	pages := func(app string) []string {
		return []string{"/ui/", "/ui/store", "/ui/appliances/" + app, "/ui/appliances/" + app + "/history",
			"/ui/appliances/" + app + "/releases/3", "/ui/appliances/" + app + "/releases/4",
			"/ui/appliances/" + app + "/edit?key=appliances/" + app + "/port"}
	}
	for _, c := range []struct {
		who     string
		app     string // the appliance it may see
		other   string // one it must never see
		store   int
		fleet   bool
		canEdit bool
	}{
		{"admin", "web-frontend", "", 200, true, true},
		{"agent", "web-frontend", "billing-db", 403, false, false},
		{"reader", "web-frontend", "billing-db", 200, true, false},
		{"writer", "web-frontend", "billing-db", 200, true, true},
		{"db", "billing-db", "web-frontend", 200, true, false},
	} {
		t.Run(c.who, func(t *testing.T) {
			b := newUIBrowser(t, f.srv.URL, nil)
			b.signIn(tokens[c.who])
			for _, p := range pages(c.app) {
				r := b.get(p)
				body := string(r.body)
				for _, s := range secrets {
					if strings.Contains(body, s) {
						t.Errorf("%s shows a secret value", p)
					}
				}
				for _, tok := range tokens {
					if strings.Contains(body, tok) {
						t.Errorf("%s shows a token", p)
					}
				}
				if c.other != "" && strings.Contains(body, c.other) {
					t.Errorf("%s names appliance %s: %s", p, c.other, body)
				}
			}
			list := string(b.get("/ui/").body)
			if !strings.Contains(list, `href="/ui/appliances/`+c.app+`"`) {
				t.Errorf("list lacks %s: %s", c.app, list)
			}
			mustStatus(t, b.get("/ui/store"), c.store)
			page := b.get("/ui/appliances/" + c.app)
			mustStatus(t, page, 200)
			if got := strings.Contains(string(page.body), `id="instances"`); got != c.fleet {
				t.Errorf("instances shown %v, want %v", got, c.fleet)
			}
			if !strings.Contains(string(page.body), "(secret)") {
				t.Errorf("the secret is not shown masked: %s", page.body)
			}
			if got := strings.Contains(string(page.body), "/edit?key=appliances%2F"+c.app+"%2Fport"); got != c.canEdit {
				t.Errorf("edit link shown %v, want %v", got, c.canEdit)
			}
			if c.other != "" {
				mustStatus(t, b.get("/ui/appliances/"+c.other), http.StatusForbidden)
				mustStatus(t, b.get("/ui/appliances/"+c.other+"/history"), http.StatusForbidden)
			}
			// Secrets are never editable in the console, not even by the admin.
			mustStatus(t, b.get("/ui/appliances/"+c.app+"/edit?key=appliances/"+c.app+"/secrets/x"), http.StatusBadRequest)
		})
	}
}

// A session ends with its token: revoked, the next request answers the sign-in form.
func TestUI_SessionEndsWithToken(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	tok := f.newToken(api.TokenRequest{Name: "ops", Read: []string{"appliances", "shared"}})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(tok)
	mustStatus(t, b.get("/ui/appliances/web-frontend"), 200)
	f.must(f.do("DELETE", "/v1/tokens/ops", ""), 200, nil)
	waitFor(t, "the revocation to reach the cache", func() bool { return f.s.auth.byNameRecord("ops") == nil })
	r := b.get("/ui/appliances/web-frontend")
	mustStatus(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), `type="password"`) {
		t.Fatalf("not the sign-in form: %s", r.body)
	}
	// Signing out ends a session too.
	b2 := newUIBrowser(t, f.srv.URL, nil)
	c := b2.signIn(f.token)
	mustStatus(t, b2.post("/ui/signout", url.Values{"csrf": {c}}), http.StatusSeeOther)
	mustStatus(t, b2.get("/ui/store"), http.StatusUnauthorized)
}

// Editing a key asks for confirmation, then writes it with cas and a release of source console;
// a change made meanwhile is a conflict.
func TestUI_EditKey(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	form := b.get("/ui/appliances/web-frontend/edit?key=appliances/web-frontend/port")
	mustStatus(t, form, 200)
	c := csrf(t, form.body)
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindSubmatch(form.body)[1]
	fields := url.Values{"csrf": {c}, "key": {"appliances/web-frontend/port"}, "value": {"9090"}, "cas": {string(cas)}}
	confirm := b.post("/ui/appliances/web-frontend/edit", fields)
	mustStatus(t, confirm, 200)
	if !strings.Contains(string(confirm.body), "9090") || !strings.Contains(string(confirm.body), `name="step" value="apply"`) {
		t.Fatalf("confirm page: %s", confirm.body)
	}
	if kv := f.do("GET", "/v1/kv/appliances/web-frontend/port", ""); !strings.Contains(string(kv.body), `"8080"`) {
		t.Fatalf("the confirmation step wrote: %s", kv.body)
	}
	fields.Set("step", "apply")
	fields.Set("message", "bigger port")
	r := b.post("/ui/appliances/web-frontend/edit", fields)
	mustStatus(t, r, http.StatusSeeOther)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	if kv.Value != "9090" {
		t.Fatalf("value %q", kv.Value)
	}
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web-frontend/releases?limit=1", ""), 200, &rels)
	if rel := rels.Releases[0]; rel.Source != "console" || rel.Message != "bigger port" || rel.Token != "admin" || rel.Kind != api.KindPut {
		t.Fatalf("release %+v", rel)
	}
	// The same form again: the key changed since its cas.
	mustStatus(t, b.post("/ui/appliances/web-frontend/edit", fields), http.StatusConflict)

	// The value the key holds, at its revision: nothing is written, and the page says so
	// (it said "Written at revision R", R being the key's old one).
	fields.Set("cas", jsonNum(kv.ModRevision))
	r = b.post("/ui/appliances/web-frontend/edit", fields)
	mustStatus(t, r, http.StatusSeeOther)
	loc := r.Header.Get("Location")
	if want := "/ui/appliances/web-frontend?unchanged=" + jsonNum(kv.ModRevision); loc != want {
		t.Fatalf("after writing the value held: Location %q, want %q", loc, want)
	}
	if page := b.get(loc); !strings.Contains(string(page.body), "Nothing written: the store held this already (since revision "+jsonNum(kv.ModRevision)+").") {
		t.Fatalf("the appliance's page after writing the value held: %s", page.body)
	}
}

// Rolling back from the history page restores the appliance's keys as they were, secrets
// included, as a release of kind rollback with source console.
func TestUI_Rollback(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	good := f.put("appliances/web-frontend/mode", "good")
	f.put("appliances/web-frontend/mode", "bad")
	f.put("appliances/web-frontend/secrets/tls-key", "hunter2-new-secret")
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	hist := b.get("/ui/appliances/web-frontend/history")
	mustStatus(t, hist, 200)
	c := csrf(t, hist.body)
	confirm := b.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {c}, "to": {jsonNum(good)}})
	mustStatus(t, confirm, 200)
	body := string(confirm.body)
	if !strings.Contains(body, "bad") || !strings.Contains(body, "good") || strings.Contains(body, "hunter2") {
		t.Fatalf("confirm page: %s", body)
	}
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindStringSubmatch(body)[1]
	r := b.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {c}, "to": {jsonNum(good)}, "cas": {cas}, "step": {"apply"}})
	mustStatus(t, r, http.StatusSeeOther)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web-frontend", ""), 200, &v)
	if v.Keys["mode"] != "good" || v.Keys["secrets/tls-key"] != "hunter2-web-secret" {
		t.Fatalf("view after rollback %v", v.Keys)
	}
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web-frontend/releases?limit=1", ""), 200, &rels)
	if rel := rels.Releases[0]; rel.Kind != api.KindRollback || rel.Source != "console" || rel.RollbackTo != good {
		t.Fatalf("release %+v", rel)
	}
	// Confirmed against a state that changed since: refused, nothing written.
	f.put("appliances/web-frontend/mode", "other")
	mustStatus(t, b.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {c}, "to": {jsonNum(good)}, "cas": {cas}, "step": {"apply"}}), http.StatusConflict)
	// A token that may only read gets no rollback.
	rb := newUIBrowser(t, f.srv.URL, nil)
	rc := rb.signIn(f.newToken(api.TokenRequest{Name: "ro", Read: []string{"appliances/web-frontend"}}))
	if strings.Contains(string(rb.get("/ui/appliances/web-frontend/history").body), "/rollback") {
		t.Fatal("a read token is offered a rollback")
	}
	mustStatus(t, rb.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {rc}, "to": {jsonNum(good)}}), http.StatusForbidden)
}

// Maintenance is turned on and off from the store page, by an admin only, after confirmation.
func TestUI_Maintenance(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"true"}}), 200)
	if f.s.maintenance.Load() {
		t.Fatal("the confirmation step turned maintenance on")
	}
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"true"}, "step": {"apply"}}), http.StatusSeeOther)
	if !f.s.maintenance.Load() {
		t.Fatal("maintenance is off")
	}
	store := b.get("/ui/store")
	if !strings.Contains(string(store.body), "writes are refused") {
		t.Fatalf("store page: %s", store.body)
	}
	// Writes from the console are refused like the API's.
	form := b.get("/ui/appliances/web-frontend/edit?key=appliances/web-frontend/port")
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindSubmatch(form.body)[1]
	mustStatus(t, b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {c}, "key": {"appliances/web-frontend/port"}, "value": {"1"}, "cas": {string(cas)}, "step": {"apply"}}), http.StatusServiceUnavailable)
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"false"}, "step": {"apply"}}), http.StatusSeeOther)
	if f.s.maintenance.Load() {
		t.Fatal("maintenance is on")
	}
	nb := newUIBrowser(t, f.srv.URL, nil)
	nc := nb.signIn(f.newToken(api.TokenRequest{Name: "w", Write: []string{"appliances"}}))
	if strings.Contains(string(nb.get("/ui/store").body), "maintenance on") {
		t.Fatal("a non-admin is offered maintenance")
	}
	mustStatus(t, nb.post("/ui/store/maintenance", url.Values{"csrf": {nc}, "on": {"true"}, "step": {"apply"}}), http.StatusForbidden)
}

// A rollout shows on the appliance page with promote and abort for a token that may write; abort
// ends it.
func TestUI_RolloutAbort(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=25%25&bake=1h", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	for _, want := range []string{"running", `value="promote"`, `value="abort"`} {
		if !strings.Contains(string(page.body), want) {
			t.Fatalf("page lacks %q: %s", want, page.body)
		}
	}
	if list := b.get("/ui/"); !strings.Contains(string(list.body), "state-running") {
		t.Fatalf("list lacks the rollout: %s", list.body)
	}
	confirm := b.post("/ui/appliances/web/rollout", url.Values{"csrf": {c}, "action": {"abort"}, "rollout": {st.ID}, "at": {"0"}})
	mustStatus(t, confirm, 200)
	if rolloutStatus(t, f).State != api.RolloutRunning {
		t.Fatal("the confirmation step aborted")
	}
	mustStatus(t, b.post("/ui/appliances/web/rollout", hiddenFields(confirm.body)), http.StatusSeeOther)
	if got := rolloutStatus(t, f).State; got != api.RolloutAborted {
		t.Fatalf("state %s", got)
	}
}

// The live endpoint waits in the hub and answers as soon as the view changes.
func TestUI_Live(t *testing.T) {
	f := newFixture(t)
	seeded := uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	// The hub learns of writes through its watch: wait until it has seen the seed, or the
	// long-poll below would answer the seed's own change instead of the one this test makes.
	waitFor(t, "the hub to see the seed", func() bool { return f.s.hub.current() >= seeded })
	idx := f.s.hub.current()
	done := make(chan resp, 1)
	go func() {
		res, err := b.c.Get(f.srv.URL + "/ui/appliances/web-frontend/live?index=" + jsonNum(idx))
		if err != nil {
			done <- resp{}
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		done <- resp{Response: res, body: body}
	}()
	waitFor(t, "the console's long-poll", func() bool { return f.s.hub.open() == 1 })
	rev := f.put("shared/dns", "10.0.0.54")
	select {
	case r := <-done:
		var a uiLiveAnswer
		if r.Response == nil || json.Unmarshal(r.body, &a) != nil || !a.Changed || a.Index < rev {
			t.Fatalf("live answer %v %s", r.Response, r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll did not answer the change")
	}
	// A token without the appliance cannot wait on it.
	ab := newUIBrowser(t, f.srv.URL, nil)
	ab.signIn(f.newToken(api.TokenRequest{Name: "db", Appliance: "billing-db"}))
	mustStatus(t, ab.get("/ui/appliances/web-frontend/live?index=1"), http.StatusForbidden)
}

// Sign-in attempts are rate limited per client address, like API requests without a token.
func TestUI_SigninRateLimited(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 1 })
	b := newUIBrowser(t, f.srv.URL, nil)
	limited := false
	for range 10 {
		if r := b.post("/ui/signin", url.Values{"csrf": {"x"}, "token": {"sl_wrong"}}); r.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("10 sign-in attempts at once were not rate limited")
	}
}

// With --ui=false, /ui/ is 404, and so is / (the API has no route there).
func TestUI_Off(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UI = false })
	for _, p := range []string{"/ui/", "/ui/static/console.css", "/ui/appliances/x", "/"} {
		if r := f.doCtx(context.Background(), "", "GET", p, ""); r.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: status %d", p, r.StatusCode)
		}
	}
}

// The server's address opened in a browser leads to the console. Before, / answered the API's
// JSON 404 "no such route", with no word of /ui/.
func TestUI_RootLeadsToTheConsole(t *testing.T) {
	f := newFixture(t)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, f.srv.URL+"/", nil)
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/ui/" {
			t.Errorf("%s /: %d, Location %q; want 302 to /ui/", method, r.StatusCode, r.Header.Get("Location"))
		}
	}
	// Only / itself: another path is still the API's 404, and another method too.
	for _, mp := range [][2]string{{"GET", "/x"}, {"POST", "/"}} {
		if r := f.doCtx(context.Background(), "", mp[0], mp[1], ""); r.StatusCode != http.StatusNotFound && r.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d", mp[0], mp[1], r.StatusCode)
		}
	}
}

// A session is known to the replica that made it only: another replica over the same store
// answers the sign-in form (cookies ignore ports, so the same browser sends it to both).
func TestUI_SessionPerReplica(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	g := newFixtureOn(t, f.st)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	other := newUIBrowser(t, g.srv.URL, nil)
	other.c.Jar = b.c.Jar
	r := other.get("/ui/appliances/web-frontend")
	mustStatus(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), `type="password"`) {
		t.Fatalf("not the sign-in form: %s", r.body)
	}
	other.signIn(f.token)
	mustStatus(t, other.get("/ui/appliances/web-frontend"), 200)
}

// Any token may sign in over and over: at the cap of sessions, its own oldest go, never the
// sessions of a token that holds fewer (an agent token's holder cannot sign everyone out).
func TestUI_SessionFloodKeepsOthers(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	uiSeed(f)
	victim := newUIBrowser(t, f.srv.URL, nil)
	victim.signIn(f.token)
	attacker := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	rec := f.s.auth.byNameRecord("web-agent")
	// As many sign-ins as the cap holds (the rate limit spreads them over minutes), then more
	// through the form.
	for range uiMaxSessions {
		f.s.ui.create(rec, time.Now())
	}
	for range 3 {
		newUIBrowser(t, f.srv.URL, nil).signIn(attacker)
	}
	if n := len(f.s.ui.m); n != uiMaxSessions {
		t.Fatalf("%d sessions, want the cap %d", n, uiMaxSessions)
	}
	mustStatus(t, victim.get("/ui/store"), http.StatusOK)
}

// A replica that drains answers the live script 503, not "nothing changed", which would make
// it fetch the page and wait again at once, over and over until the replica is gone.
func TestUI_LiveWhileDraining(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	f.s.hub.drain()
	r := b.get("/ui/appliances/web-frontend/live?index=" + jsonNum(f.s.hub.current()))
	mustStatus(t, r, http.StatusServiceUnavailable)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

// Every answer under /ui carries the console's headers, also those made before any console
// handler runs: the redirect of /ui and the refusal of an unclean path.
func TestUI_HeadersOnEveryAnswer(t *testing.T) {
	f := newFixture(t)
	b := newUIBrowser(t, f.srv.URL, nil)
	type ask struct{ method, path string }
	var asks []ask
	for _, p := range []string{"/ui", "/ui//x", "/ui/./store", "/ui/appliances/%2e%2e", "/ui/static/nope.css", "/ui/static/"} {
		asks = append(asks, ask{http.MethodGet, p})
	}
	// /ui asked with another method: ServeMux redirected it to /ui/ (307) without the headers.
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		asks = append(asks, ask{m, "/ui"})
	}
	for _, a := range asks {
		p := a.path
		req, _ := http.NewRequest(a.method, f.srv.URL+p, nil)
		req.URL.RawPath, req.URL.Opaque = "", "//"+req.URL.Host+p // the path as sent, uncleaned
		res, err := b.c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", a.method, p, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode < 300 {
			t.Errorf("%s %s: status %d", a.method, p, res.StatusCode)
		}
		if res.StatusCode == http.StatusBadRequest && (!strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "has an empty, &#39;.&#39; or &#39;..&#39; segment")) {
			// The console's error page, as for any other refusal under /ui, not the API's JSON.
			t.Errorf("GET %s (%d): %s %q", p, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		if csp := res.Header.Get("Content-Security-Policy"); csp != uiCSP {
			t.Errorf("%s %s (%d): CSP %q", a.method, p, res.StatusCode, csp)
		}
		if res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s (%d): headers %v", a.method, p, res.StatusCode, res.Header)
		}
		if p == "/ui" && res.Header.Get("Location") != "/ui/" {
			t.Errorf("%s %s (%d): location %q, want /ui/", a.method, p, res.StatusCode, res.Header.Get("Location"))
		}
	}
}

// After sign-in the browser goes on to the page it asked for, and only to a clean console path:
// never another host, nor a path a browser would read otherwise than the server checked it.
func TestUI_SigninNext(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	for next, want := range map[string]string{
		"/ui/appliances/web-frontend": "/ui/appliances/web-frontend",
		"":                            "/ui/",
		"//evil.example/":             "/ui/",
		"https://evil.example/ui/":    "/ui/",
		"/ui//evil.example":           "/ui/",
		"/ui/\\evil.example":          "/ui/",
		"/ui/\t/evil.example":         "/ui/",
		"/ui/\n/evil.example":         "/ui/",
		"/ui/x/../../v1/status":       "/ui/",
		"/ui/%2e%2e/v1/tokens":        "/ui/", // a browser reads %2e as a dot: /v1/tokens
		"/ui/x/.%2E/%2e./v1/status":   "/ui/",
		"/ui/appliances/a%2fb":        "/ui/",
		"/ui/store?x=1":               "/ui/",
		"/ui/é":                       "/ui/",
		"/ui/signin":                  "/ui/",
		"/ui/signout":                 "/ui/",
	} {
		b := newUIBrowser(t, f.srv.URL, nil)
		form := b.get("/ui/")
		r := b.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {f.token}, "next": {next}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("next %q: status %d, Location %q, want %q", next, r.StatusCode, r.Header.Get("Location"), want)
		}
	}
	// /ui/signin, in the address bar after a refused sign-in, reloaded: the console's start.
	b := newUIBrowser(t, f.srv.URL, nil)
	if r := b.get("/ui/signin"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/" || r.Header.Get("Content-Security-Policy") != uiCSP {
		t.Fatalf("GET /ui/signin: status %d, Location %q, headers %v", r.StatusCode, r.Header.Get("Location"), r.Header)
	}
	// So are the addresses of the confirmation pages, opened again: the page the form was on.
	for p, want := range map[string]string{
		"/ui/appliances/web-frontend/rollback": "/ui/appliances/web-frontend/history",
		"/ui/appliances/web-frontend/rollout":  "/ui/appliances/web-frontend",
		"/ui/store/maintenance":                "/ui/store",
	} {
		if r := b.get(p); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want || r.Header.Get("Content-Security-Policy") != uiCSP {
			t.Errorf("GET %s: status %d, Location %q", p, r.StatusCode, r.Header.Get("Location"))
		}
	}
	// The form a deeper page answers carries that page as next.
	form := b.get("/ui/appliances/web-frontend/history")
	if !strings.Contains(string(form.body), `name="next" value="/ui/appliances/web-frontend/history"`) {
		t.Fatalf("sign-in form: %s", form.body)
	}
	// A link to a key's edit page, followed without a session: the sign-in keeps the page but not
	// its key (next has no query), and the key-less edit page is the appliance's, not a 400.
	form = b.get("/ui/appliances/web-frontend/edit?key=appliances/web-frontend/port")
	if !strings.Contains(string(form.body), `name="next" value="/ui/appliances/web-frontend/edit"`) {
		t.Fatalf("sign-in form of the edit page: %s", form.body)
	}
	r := b.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {f.token}, "next": {"/ui/appliances/web-frontend/edit"}})
	mustStatus(t, r, http.StatusSeeOther)
	if r = b.get(r.Header.Get("Location")); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/appliances/web-frontend" {
		t.Fatalf("the edit page without its key after sign-in: status %d, Location %q, want a redirect to the appliance's page", r.StatusCode, r.Header.Get("Location"))
	}
}

// A sign-in ends the session the browser already held: a session id set in the browser by
// someone else (session fixation), or an old one, is never the one signed in.
func TestUI_SigninEndsPreviousSession(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	// The attacker's own session, whose cookie it plants in the victim's browser.
	attacker := newUIBrowser(t, f.srv.URL, nil)
	attacker.signIn(f.newToken(api.TokenRequest{Name: "low", Read: []string{"appliances/web-frontend"}}))
	u, _ := url.Parse(f.srv.URL + "/ui/")
	planted := cookieOfJar(attacker, u, uiCookie)
	// The victim opens the sign-in form; the attacker's cookie is planted before it signs in.
	victim := newUIBrowser(t, f.srv.URL, nil)
	form := victim.get("/ui/")
	victim.c.Jar.SetCookies(u, []*http.Cookie{{Name: uiCookie, Value: planted, Path: "/ui/"}})
	r := victim.post("/ui/signin", url.Values{"csrf": {csrf(t, form.body)}, "token": {f.token}})
	mustStatus(t, r, http.StatusSeeOther)
	if c := cookieOf(r.Response, uiCookie); c == nil || c.Value == planted {
		t.Fatalf("the sign-in kept the planted session id: %+v", c)
	}
	// The planted (attacker's) session is over: the attacker does not ride on the victim's sign-in.
	mustStatus(t, attacker.get("/ui/store"), http.StatusUnauthorized)
	mustStatus(t, victim.get("/ui/store"), http.StatusOK)
}

func cookieOfJar(b *uiBrowser, u *url.URL, name string) string {
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	b.t.Fatalf("no cookie %s", name)
	return ""
}

// A token revoked through one replica ends its console sessions on every replica at once, the
// open long-poll of a page included.
func TestUI_RevokeEndsSessionsOnEveryReplica(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	g := newFixtureOn(t, f.st)
	tok := f.newToken(api.TokenRequest{Name: "ops", Read: []string{"appliances", "shared"}})
	waitFor(t, "the token to reach the other replica", func() bool { return g.s.auth.byNameRecord("ops") != nil })
	onF, onG := newUIBrowser(t, f.srv.URL, nil), newUIBrowser(t, g.srv.URL, nil)
	onF.signIn(tok)
	onG.signIn(tok)
	waitFor(t, "the hub to see the seed", func() bool { return g.s.hub.current() >= f.s.hub.current() })
	live := make(chan int, 1)
	go func() {
		res, err := onG.c.Get(g.srv.URL + "/ui/appliances/web-frontend/live?index=" + jsonNum(g.s.hub.current()))
		if err != nil {
			live <- 0
			return
		}
		res.Body.Close()
		live <- res.StatusCode
	}()
	waitFor(t, "the page's long-poll on the other replica", func() bool { return g.s.hub.open() == 1 })
	f.must(f.do("DELETE", "/v1/tokens/ops", ""), 200, nil)
	select {
	case code := <-live:
		if code != http.StatusUnauthorized {
			t.Fatalf("the long-poll answered %d, want 401", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll went on after the revocation")
	}
	mustStatus(t, onG.get("/ui/appliances/web-frontend"), http.StatusUnauthorized)
	mustStatus(t, onF.get("/ui/appliances/web-frontend"), http.StatusUnauthorized)
}

// The instances table shows each agent's version, also from the reports that long-polls carry
// (the agent's User-Agent), not only from POST …/report.
func TestUI_AgentVersionFromLongPoll(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	e := f.enroll(agent, "web-frontend", "vm-7")
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web-frontend", "", api.HeaderInstance, "vm-7", api.HeaderApplied, "1",
		"User-Agent", "shoelace-agent/1.2.3"), 200, nil)
	waitFor(t, "the report's record", func() bool {
		in, ok := f.record("web-frontend", "vm-7")
		return ok && in.Applied == 1
	})
	if in, _ := f.record("web-frontend", "vm-7"); in.Version != "1.2.3" {
		t.Fatalf("record %+v", in)
	}
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	if page := b.get("/ui/appliances/web-frontend"); !strings.Contains(string(page.body), "<td>1.2.3</td>") {
		t.Fatalf("the agent's version is not on the page: %s", page.body)
	}
}

// What users and agents write reaches the pages as text, never as markup: values, messages,
// sources, an agent's error, template and version, on every page that shows them.
func TestUI_NoMarkupFromData(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	const xss = `"><img src=x onerror=alert(1)><script>alert(2)</script>'`
	f.put("appliances/web-frontend/app", xss)
	rev := f.put("shared/motd", xss)
	f.must(f.do("PUT", "/v1/kv/appliances/web-frontend/mode", xss, api.HeaderMessage, xss, api.HeaderSource, xss), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	e := f.enroll(agent, "web-frontend", "vm-1")
	report, _ := json.Marshal(api.Report{Instance: "vm-1", Revision: rev, Applied: 1, Error: xss, Stage: api.StageRender, Template: xss, Version: xss})
	f.must(f.doToken(e.Token, "POST", "/v1/appliances/web-frontend/report", string(report), "Content-Type", "application/json"), 200, nil)
	waitFor(t, "the report's record", func() bool { in, ok := f.record("web-frontend", "vm-1"); return ok && in.Applied == 1 })
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web-frontend/releases?limit=1", ""), 200, &rels)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	form := b.get("/ui/appliances/web-frontend/edit?key=appliances/web-frontend/mode")
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindSubmatch(form.body)[1]
	confirm := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrf(t, form.body)}, "key": {"appliances/web-frontend/mode"}, "value": {xss + "2"}, "cas": {string(cas)}})
	mustStatus(t, confirm, 200)
	pages := map[string][]byte{"confirm": confirm.body}
	for _, p := range []string{"/ui/", "/ui/appliances/web-frontend", "/ui/appliances/web-frontend/history",
		"/ui/appliances/web-frontend/releases/" + jsonNum(rels.Releases[0].Revision), form.Request.URL.RequestURI()} {
		r := b.get(p)
		mustStatus(t, r, 200)
		pages[p] = r.body
	}
	shown := 0
	for p, body := range pages {
		for _, bad := range []string{"<img", "<script>alert", "onerror=alert(1)>"} {
			if strings.Contains(string(body), bad) {
				t.Errorf("%s has markup from data (%s): %s", p, bad, body)
			}
		}
		shown += strings.Count(string(body), "&lt;img src=x onerror=alert(1)&gt;")
	}
	if shown < 8 {
		t.Fatalf("the data is shown escaped %d times, want it on every page", shown)
	}
}

// A release that changed two appliances at once (one txn) shows, to a token of one of them, its
// own appliance's changes only: the other's name is on no page, the live answer included.
func TestUI_MultiApplianceTxnScoped(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	var out struct{ Revision int64 }
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web-frontend/port","value":"81"},{"op":"put","key":"appliances/billing-db/port","value":"5433"}]}`,
		"Content-Type", "application/json", api.HeaderMessage, "move both ports"), 200, &out)
	for _, tr := range []api.TokenRequest{
		{Name: "web-reader", Read: []string{"appliances/web-frontend", "shared"}},
		{Name: "web-agent", Appliance: "web-frontend"},
	} {
		b := newUIBrowser(t, f.srv.URL, nil)
		b.signIn(f.newToken(tr))
		for _, p := range []string{"/ui/", "/ui/appliances/web-frontend", "/ui/appliances/web-frontend/history",
			"/ui/appliances/web-frontend/releases/" + jsonNum(out.Revision), "/ui/appliances/web-frontend/live?index=1"} {
			r := b.get(p) // the agent token may not read the releases: its 403 pages count too
			if r.StatusCode != 200 && (tr.Appliance == "" || r.StatusCode != http.StatusForbidden) {
				t.Errorf("%s: %s: status %d", tr.Name, p, r.StatusCode)
			}
			if strings.Contains(string(r.body), "billing") {
				t.Errorf("%s: %s names the other appliance: %s", tr.Name, p, r.body)
			}
			if strings.HasSuffix(p, "/history") && r.StatusCode == 200 && !strings.Contains(string(r.body), "move both ports") {
				t.Errorf("%s: the txn is not in the history: %s", tr.Name, r.body)
			}
		}
	}
}

// A token created a moment ago through another replica may be in the store before this
// replica's cache has it: a sign-in with it works (as an API request would), and so do the
// session's next pages, until its watch event comes; revoked meanwhile, the session ends.
func TestUI_SessionOfTokenNotCachedYet(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	uiSeed(f)
	// Created through another replica; its watch event does not come to this one yet.
	stalled, _ := stallWatch(t, f, "new-ops")
	other := newFixtureOn(t, testutil.OpenStore(t, cfg))
	other.token = f.token
	tok := other.newToken(api.TokenRequest{Name: "new-ops", Read: []string{"appliances", "shared"}})
	<-stalled
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(tok)
	mustStatus(t, b.get("/ui/appliances/web-frontend"), http.StatusOK)
	f.must(f.do("DELETE", "/v1/tokens/new-ops", ""), 200, nil)
	mustStatus(t, b.get("/ui/appliances/web-frontend"), http.StatusUnauthorized)
}

// The console shows an appliance's view as its agents get it: the key named as shared/'s root
// ("shared") and the one named as the appliance's (appliances/web), which are in no view, are
// neither in its tree nor counted among its keys, and an appliance with no other key has no page,
// as it has no view. Before, the page showed "shared" as a shared key of the view (its value
// too), and counted appliances/web among the appliance's own keys.
func TestUI_KeysNamedAsARootAreInNoView(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("shared/dns", "10.0.0.53")
	f.put("shared", "root-of-shared")
	f.put("appliances/web", "root-of-web")
	f.put("appliances/other", "root-of-other")
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	for _, p := range []string{"/ui/", "/ui/appliances/web"} {
		page := b.get(p)
		mustStatus(t, page, 200)
		body := string(page.body)
		for _, s := range []string{"root-of-shared", "root-of-web", "root-of-other"} {
			if strings.Contains(body, s) {
				t.Errorf("%s shows the value of a key in no view, %q", p, s)
			}
		}
		if p != "/ui/" && !strings.Contains(body, "(1 keys of its own") {
			t.Errorf("%s does not count 1 key of its own:\n%s", p, body)
		}
	}
	mustStatus(t, b.get("/ui/appliances/other"), 404)
}

// The sign-in form's hint says where a server writes its first admin token (admin.token in its data
// directory, or --admin-token-file), not only where make run keeps it: on a packaged server the hint
// named run/admin.token, a file there is none of.
func TestUI_SigninHintNamesTheAdminTokenFile(t *testing.T) {
	f := newFixture(t)
	r := newUIBrowser(t, f.srv.URL, nil).get("/ui/")
	mustStatus(t, r, 200)
	for _, want := range []string{"<code>admin.token</code> in its data directory", "<code>--admin-token-file</code>"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("sign-in form lacks %q: %s", want, r.body)
		}
	}
}

// An aborted rollout's instances read as the CLI's rollout status prints them: nothing waits for
// them any more, so the canary that had not applied the candidate is "not applied" and the others
// "not reached"; the page showed "pending" and "waiting", as if the ended rollout still went on.
func TestUI_RolloutEndedInstanceStates(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=25%25&bake=1h", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	if page := b.get("/ui/appliances/web"); !strings.Contains(string(page.body), "<td>pending</td>") {
		t.Fatalf("a running rollout's canary is not pending: %s", page.body)
	}
	mustStatus(t, b.post("/ui/appliances/web/rollout", url.Values{"csrf": {c}, "action": {"abort"}, "rollout": {st.ID}, "at": {"0"}, "step": {"apply"}}), http.StatusSeeOther)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	body := string(page.body)
	for _, want := range []string{"<td>not applied</td>", "<td>not reached</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the aborted rollout's page lacks %q: %s", want, body)
		}
	}
	if strings.Contains(body, "<td>pending</td>") || strings.Contains(body, "<td>waiting</td>") {
		t.Errorf("the aborted rollout's page says an instance is still waited for: %s", body)
	}
}

// A rollout's instances name their cohort as the CLI's rollout status does, counted as the page's
// "step N of M" is: the canary, then "step 2"; the page listed cohort 0 and 1 under "step 1 of 2".
func TestUI_RolloutCohortNames(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	f.must(f.do("PUT", "/v1/appliances/web?canary=25%25&bake=1h", `{"keys":{"port":"8080"}}`), http.StatusAccepted, nil)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	body := string(page.body)
	for _, want := range []string{"step 1 of 2", "<td>canary</td>", "<td>step 2</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the rollout's page lacks %q: %s", want, body)
		}
	}
}

// A stale edit form (the key written by someone else since the form was shown) is refused, 409, with
// words about the form: the page gave the store's "conflict on key K: expected mod_revision R, found
// S", which names neither the form nor what to do.
func TestUI_EditStaleFormSaysSo(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	form := b.get("/ui/appliances/web-frontend/edit?key=appliances/web-frontend/port")
	mustStatus(t, form, 200)
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindSubmatch(form.body)[1]
	f.put("appliances/web-frontend/port", "7070")
	r := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrf(t, form.body)}, "key": {"appliances/web-frontend/port"},
		"value": {"9090"}, "cas": {string(cas)}, "step": {"apply"}})
	mustStatus(t, r, http.StatusConflict)
	want := `key &#34;appliances/web-frontend/port&#34; changed after its edit form was shown (at revision ` + string(cas) + `); nothing was written: edit it again`
	if !strings.Contains(string(r.body), want) || strings.Contains(string(r.body), "mod_revision") {
		t.Fatalf("the stale form's answer lacks %q: %s", want, r.body)
	}
	if kv := f.do("GET", "/v1/kv/appliances/web-frontend/port", ""); !strings.Contains(string(kv.body), `"7070"`) {
		t.Fatalf("the stale form wrote: %s", kv.body)
	}
}

// While maintenance is on, a write's confirmation (an edit's, a rollback's) says the write will be
// refused, as it says so of a running rollout: it offered the write without a word, and only the
// confirmed POST answered 503.
func TestUI_ConfirmWarnsOfMaintenance(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	rev := f.put("appliances/web-frontend/port", "7070")
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"true"}, "step": {"apply"}}), http.StatusSeeOther)
	const want = "Maintenance is on: the store is read-only and the write will be refused"
	edit := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {c}, "key": {"appliances/web-frontend/port"}, "value": {"1"}, "cas": {jsonNum(rev)}})
	mustStatus(t, edit, 200)
	if !strings.Contains(string(edit.body), want) {
		t.Errorf("the edit's confirmation lacks %q: %s", want, edit.body)
	}
	rb := b.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {c}, "to": {jsonNum(rev - 1)}})
	mustStatus(t, rb, 200)
	if !strings.Contains(string(rb.body), want) {
		t.Errorf("the rollback's confirmation lacks %q: %s", want, rb.body)
	}
	mustStatus(t, b.post("/ui/store/maintenance", url.Values{"csrf": {c}, "on": {"false"}, "step": {"apply"}}), http.StatusSeeOther)
	if edit := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {c}, "key": {"appliances/web-frontend/port"}, "value": {"1"}, "cas": {jsonNum(rev)}}); strings.Contains(string(edit.body), want) {
		t.Errorf("maintenance off, the edit's confirmation warns of it: %s", edit.body)
	}
}

// A page of older releases links back to the newest ones: it linked only to still older
// releases, and the way back to the top was the browser's back button, page by page.
func TestUI_HistoryOlderPageLinksToNewest(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	for i := range 55 {
		f.put("appliances/web-frontend/port", jsonNum(int64(9000+i)))
	}
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	first := b.get("/ui/appliances/web-frontend/history")
	mustStatus(t, first, 200)
	const newest = `<a href="/ui/appliances/web-frontend/history">Newest releases</a>`
	if strings.Contains(string(first.body), newest) {
		t.Errorf("the newest page links to itself: %s", first.body)
	}
	m := regexp.MustCompile(`history\?before=(\d+)`).FindSubmatch(first.body)
	if m == nil {
		t.Fatalf("no older releases link: %s", first.body)
	}
	older := b.get("/ui/appliances/web-frontend/history?before=" + string(m[1]))
	mustStatus(t, older, 200)
	if !strings.Contains(string(older.body), newest) {
		t.Errorf("the page of older releases lacks %q: %s", newest, older.body)
	}
}
