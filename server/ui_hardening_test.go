package server

import (
	"encoding/json"
	"html"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// An agent token signed in to the console is not shown etcd's error (its endpoints) when the
// store fails, as the API does not show it either.
func TestUI_StoreFailureHidesEtcdFromAgents(t *testing.T) {
	parallelOwnEtcd(t)
	dir := t.TempDir()
	st, eps, stop := ownEtcdStore(t, dir)
	f := newFixtureOn(t, st)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web"})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(agent)
	stop()
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 503)
	if body := string(page.body); strings.Contains(body, "127.0.0.1") || strings.Contains(body, eps[0]) || !strings.Contains(body, "the store is unavailable") {
		t.Errorf("console page shows etcd's address to an agent token")
	}
	closeBeforeEtcd(t, f)
}

// In an appliance named "secrets" every key is a secret (api.IsSecret of the full key): the
// tree masks them, and so does the release page (and the rollback confirmation, by the same uiDiff).
func TestUI_ReleaseDiffMasksSecretsOfApplianceNamedSecrets(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/secrets/password", "TOPSECRET-1")
	rev := f.put("appliances/secrets/password", "TOPSECRET-2")
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/secrets/releases/" + strconv.FormatInt(rev, 10))
	mustStatus(t, page, 200)
	if strings.Contains(string(page.body), "TOPSECRET") {
		t.Errorf("the release page shows a secret value")
	}
}

// Opening a key's edit form and writing it unchanged leaves the value as it was: a leading
// newline (which the HTML parser drops after <textarea>) and LF line ends (which browsers send
// as CRLF) included.
func TestUI_EditKeepsLineEnds(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/script", "\n#!/bin/sh\necho hi\n")
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	form := b.get("/ui/appliances/web/edit?key=appliances%2Fweb%2Fscript")
	mustStatus(t, form, 200)
	// What a browser sends: the textarea's value (its first newline after the tag dropped by the
	// HTML parser), with CRLF line ends.
	m := regexp.MustCompile(`(?s)<textarea[^>]*>(.*?)</textarea>`).FindSubmatch(form.body)
	v := html.UnescapeString(string(m[1]))
	v = strings.TrimPrefix(v, "\n")
	v = strings.ReplaceAll(v, "\n", "\r\n")
	cas := regexp.MustCompile(`name="cas" value="(\d+)"`).FindSubmatch(form.body)[1]
	vals := url.Values{"csrf": {tok}, "key": {"appliances/web/script"}, "value": {v}, "cas": {string(cas)}, "step": {"apply"}}
	if e := regexp.MustCompile(`name="eol" value="(\w+)"`).FindSubmatch(form.body); e != nil {
		vals.Set("eol", string(e[1]))
	}
	mustStatus(t, b.post("/ui/appliances/web/edit", vals), 303)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/script", ""), 200, &kv)
	if kv.Value != "\n#!/bin/sh\necho hi\n" {
		t.Errorf("value after an unchanged edit: %q", kv.Value)
	}
}

// A VM that has not applied a change of shared/ is behind on its appliance's page also for a
// token that may read the appliance but not shared/ (the VM's view holds shared/ all the same),
// as the appliances page counts it: the appliance page counted it on the latest revision.
func TestUI_FleetBehindSharedChangeWithoutSharedRead(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "8080")
	f.put("shared/ntp", "pool1")
	vm := f.enroll(f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web"}), "web", "vm-1")
	var v api.View
	f.must(f.doToken(vm.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	body, _ := json.Marshal(api.Report{Instance: "vm-1", Revision: v.Revision, Applied: v.Revision})
	f.must(f.doToken(vm.Token, "POST", "/v1/appliances/web/report", string(body), "Content-Type", "application/json"), 200, nil)
	waitFor(t, "the report's record", func() bool { in, ok := f.record("web", "vm-1"); return ok && in.Applied == v.Revision })
	changed := f.put("shared/ntp", "pool2")

	for _, who := range []struct{ name, token string }{
		{"admin", f.token},
		{"web team", f.newToken(api.TokenRequest{Name: "web-team", Write: []string{"appliances/web"}})},
	} {
		b := newUIBrowser(t, f.srv.URL, nil)
		b.signIn(who.token)
		list := b.get("/ui/")
		mustStatus(t, list, 200)
		if !regexp.MustCompile(`(?s)>web</a></th>\s*<td class="num">1</td>\s*<td class="num">1</td>\s*<td class="num">0</td>`).Match(list.body) {
			t.Errorf("%s: the appliances page does not count vm-1 behind: %s", who.name, list.body)
		}
		page := b.get("/ui/appliances/web")
		mustStatus(t, page, 200)
		text := string(page.body)
		if !strings.Contains(text, "1 VMs, 0 on the latest revision") || !strings.Contains(text, "behind") {
			t.Errorf("%s: vm-1 applied %d, shared/ changed at %d: the appliance page shows it current: %s", who.name, v.Revision, changed, text)
		}
		if !strings.Contains(text, "last change at revision "+strconv.FormatInt(changed, 10)) {
			t.Errorf("%s: the appliance page does not name the view's last change (%d): %s", who.name, changed, text)
		}
		if strings.Contains(text, "pool2") != (who.name == "admin") {
			t.Errorf("%s: shared/ value shown %v", who.name, strings.Contains(text, "pool2"))
		}
	}
}

// A release message typed on a confirmation page that the API refuses (a control or bidi
// character, which a history listing cannot show, or over its size) is refused in the form's
// words: the page named the header the console sends it in, which its user never saw.
func TestUI_RefusedMessageNamedAsTheForm(t *testing.T) {
	f := newFixture(t)
	rev := f.put("appliances/web/port", "80")
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	for msg, want := range map[string]string{
		"deploy \u202eevil":       "the release message has the control character U+202E",
		strings.Repeat("é", 3000): "the release message is 6000 bytes, over the limit of 4096",
	} {
		r := b.post("/ui/appliances/web/edit", url.Values{"csrf": {tok}, "key": {"appliances/web/port"}, "value": {"81"}, "cas": {strconv.FormatInt(rev, 10)}, "step": {"apply"}, "message": {msg}})
		mustStatus(t, r, 400)
		if body := html.UnescapeString(string(r.body)); !strings.Contains(body, want) || strings.Contains(body, api.HeaderMessage) {
			t.Errorf("the refusal does not say %q in the form's words: %s", want, body)
		}
	}
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/port", ""), 200, &kv)
	if kv.Value != "80" {
		t.Fatalf("written: %q", kv.Value)
	}
}

// A token's secret pasted into a console address (an appliance's name, a key to edit) is not
// written into the log: the console's error line writes "sl_…" in its place, as the API's does.
// Before, the access line wrote sl_… and the "console error" line after it the secret whole (at
// error level, logged by default, when the store failed the read).
func TestUI_SecretPastedInAConsoleAddressIsNotLogged(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	f.put("appliances/web/port", "80")
	tok := f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	mustStatus(t, b.get("/ui/appliances/"+tok), http.StatusNotFound)
	mustStatus(t, b.get("/ui/appliances/web/edit?key=appliances/web/"+tok), http.StatusNotFound)
	mustStatus(t, b.get("/ui/appliances/"+tok+"/history"), http.StatusNotFound)
	logs := buf.String()
	for _, secret := range []string{tok, tok[:20], tok[len(tok)-20:]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs hold a token's secret (or part of it) %q:\n%s", secret, logs)
		}
	}
	if n := strings.Count(logs, `"msg":"console error"`); n < 3 || !strings.Contains(logs, `appliances/web/sl_…`) {
		t.Errorf("%d console error lines, want 3 naming sl_…:\n%s", n, logs)
	}
}
