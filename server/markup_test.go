package server

import (
	"strings"
	"testing"
)

// Values of markup (an XML or HTML config) are answered as they are: json.Marshal wrote each
// <, > and & as \u003c, six bytes for one, in views, listings and deltas, so that such a value
// grew every agent's answer and counted against the answer budgets up to six times its size.
// Every answer says nosniff, so that no browser takes one for a page.
func TestAnswers_MarkupAsWritten(t *testing.T) {
	f := newFixture(t)
	const xml = `<Server port="8005"><Listener a="b&amp;c"/></Server>`
	const want = `<Server port=\"8005\"><Listener a=\"b&amp;c\"/></Server>`
	base := f.put("appliances/web/other", "x")
	f.put("appliances/web/server.xml", xml)
	check := func(what string, r resp) {
		t.Helper()
		if r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", what, r.StatusCode, r.body)
		}
		if !strings.Contains(string(r.body), want) || strings.Contains(string(r.body), `\u003c`) {
			t.Fatalf("%s: the value not as written: %s", what, r.body)
		}
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Fatalf("%s: X-Content-Type-Options %q, want nosniff", what, got)
		}
	}
	check("view", f.do("GET", "/v1/appliances/web", ""))
	check("listing", f.do("GET", "/v1/kv/appliances/web?recurse", ""))
	check("key", f.do("GET", "/v1/kv/appliances/web/server.xml", ""))
	check("delta", f.do("GET", lp("web", base, "30s")+"&delta", ""))
	if r := f.do("GET", "/v1/kv/appliances/web/missing", ""); r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("an error answer: X-Content-Type-Options %q, want nosniff", r.Header.Get("X-Content-Type-Options"))
	}
}
