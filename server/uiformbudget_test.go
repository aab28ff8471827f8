package server

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// heldForm sends a console POST of path with the session cookie of b, its headers and a
// Content-Length of size but no body, as a client that sends its body slowly does, and returns
// the connection.
func heldForm(t *testing.T, b *uiBrowser, path string, size int64) (*bufio.Reader, net.Conn) {
	t.Helper()
	u, _ := url.Parse(b.base + "/ui/")
	session := ""
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == uiCookie {
			session = c.Value
		}
	}
	if session == "" {
		t.Fatal("no session cookie")
	}
	c := rawConn(t, u.Host)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nCookie: %s=%s\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n",
		path, u.Host, uiCookie, session, size)
	return bufio.NewReader(c), c
}

// The console's forms are read within the replica's budget of large bodies, as the API's kv,
// txn and apply bodies are, and a session whose token may write nothing (an agent's, a
// reader's) is refused a form that writes before its body is read. Before, any valid token's
// session could send forms of up to three times --max-value-bytes to the edit page, each read
// and parsed whole before the form's CSRF token or the token's grants were looked at: 300 of
// them sent at once by an agent token's session took a replica from 60 MB to 1.9 GB.
func TestUI_FormsWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	uiSeed(f)
	formLimit := f.s.uiFormLimit()

	// A token that may write nothing: 403 before the body, whichever form that writes.
	for _, body := range []string{`{"name":"agent-x","appliance":"web-frontend"}`, `{"name":"reader-x","read":["shared","appliances"]}`} {
		var tok api.TokenCreated
		f.must(f.do("POST", "/v1/tokens", body, "Content-Type", "application/json"), 201, &tok)
		b := newUIBrowser(t, f.srv.URL, nil)
		b.signIn(tok.Token)
		for _, page := range []string{"/ui/appliances/web-frontend/edit", "/ui/appliances/web-frontend/rollback", "/ui/appliances/web-frontend/rollout", "/ui/store/maintenance"} {
			br, _ := heldForm(t, b, page, formLimit)
			res, err := readAnswerWithin(br, 5*time.Second) // the body would take the body timeout
			if err != nil {
				t.Fatalf("%s, %s: no answer before the body: %v", body, page, err)
			}
			if res.StatusCode != http.StatusForbidden {
				t.Fatalf("%s, %s: %d, want 403", body, page, res.StatusCode)
			}
		}
		// Signing out takes no grant.
		csrfTok := csrf(t, b.get("/ui/").body)
		if r := b.post("/ui/signout", url.Values{"csrf": {csrfTok}}); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: sign out: %d %s", body, r.StatusCode, r.body)
		}
	}

	admin := newUIBrowser(t, f.srv.URL, nil)
	csrfTok := admin.signIn(f.token)
	full := bodiesAtOnce * f.s.bodyBudget.max
	budgetFree := func() bool {
		if f.s.bodyBudget.sem.TryAcquire(full) {
			f.s.bodyBudget.sem.Release(full)
			return true
		}
		return false
	}
	// Only the edit form carries a value: the others' forms are small, and one over their limit is 413.
	for _, page := range []string{"/ui/appliances/web-frontend/rollback", "/ui/appliances/web-frontend/rollout", "/ui/store/maintenance", "/ui/signout"} {
		br, _ := heldForm(t, admin, page, largeBody)
		res, err := readAnswerWithin(br, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: a form of %d bytes: no answer before the body: %v", page, largeBody, err)
		}
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: a form of %d bytes: %d, want 413", page, largeBody, res.StatusCode)
		}
	}
	// An edit form on its way holds its share of the budget until it is answered.
	_, c := heldForm(t, admin, "/ui/appliances/web-frontend/edit", formLimit)
	waitFor(t, "the form's share taken", func() bool { return !budgetFree() })
	c.Close()
	waitFor(t, "the form's share given back once its client went away", budgetFree)

	// With the budget taken by the API's bodies, a large form waits, then is 503; small ones pass.
	big := strings.Repeat("a", largeBody)
	for range bodiesAtOnce {
		c := rawConn(t, strings.TrimPrefix(f.srv.URL, "http://"))
		fmt.Fprintf(c, "POST /v1/txn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", f.token, f.s.bodyBudget.max)
	}
	waitFor(t, "the budget taken", func() bool {
		if f.s.bodyBudget.sem.TryAcquire(1) {
			f.s.bodyBudget.sem.Release(1)
			return false
		}
		return true
	})
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	r := admin.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrfTok}, "key": {"appliances/web-frontend/port"}, "value": {big}, "cas": {jsonNum(kv.ModRevision)}, "step": {"apply"}})
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("a large edit with the budget taken: %d (Retry-After %q), want 503", r.StatusCode, r.Header.Get("Retry-After"))
	}
	r = admin.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrfTok}, "key": {"appliances/web-frontend/port"}, "value": {"81"}, "cas": {jsonNum(kv.ModRevision)}, "step": {"apply"}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("a small edit with the budget taken: %d %s", r.StatusCode, r.body)
	}
}

// A large value is written from the console once the budget is free: the form's share covers
// the write it makes (the write does not ask for a share of its own, which 8 such edits at once
// would wait for in vain).
func TestUI_LargeEditWritesWithinItsFormsShare(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	uiSeed(f)
	admin := newUIBrowser(t, f.srv.URL, nil)
	csrfTok := admin.signIn(f.token)
	// Leave the budget room for one form at the limit, no more.
	full := bodiesAtOnce * f.s.bodyBudget.max
	formWeight := min(f.s.uiFormLimit(), f.s.bodyBudget.max)
	if !f.s.bodyBudget.sem.TryAcquire(full - formWeight) {
		t.Fatal("budget not free")
	}
	defer f.s.bodyBudget.sem.Release(full - formWeight)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	big := strings.Repeat("b", largeBody)
	r := admin.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {csrfTok}, "key": {"appliances/web-frontend/port"}, "value": {big}, "cas": {jsonNum(kv.ModRevision)}, "step": {"apply"}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("a large edit: %d %s", r.StatusCode, r.body)
	}
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	if kv.Value != big {
		t.Fatalf("value of %d bytes, want %d", len(kv.Value), len(big))
	}
}

// readAnswerWithin reads an HTTP answer from br within d.
func readAnswerWithin(br *bufio.Reader, d time.Duration) (*http.Response, error) {
	type out struct {
		res *http.Response
		err error
	}
	ch := make(chan out, 1)
	go func() {
		res, err := http.ReadResponse(br, nil)
		if err == nil {
			res.Body.Close()
		}
		ch <- out{res, err}
	}()
	select {
	case o := <-ch:
		return o.res, o.err
	case <-time.After(d):
		return nil, fmt.Errorf("no answer within %s", d)
	}
}
