package server

import (
	"net/http"
	"testing"
)

// A console page's address with a slash too many (typed, or cut back to its directory in the
// address bar) is sent to the page, as net/http sends a directory's address to its canonical
// form: /ui/appliances/ and /ui/appliances to the appliances page, a page's address and "/" to
// the page, its query kept. Before, each was the console's 404. Other addresses stay 404.
func TestUI_SlashTooManyRedirectsToThePage(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	for from, to := range map[string]string{
		"/ui/appliances":                   "/ui/",
		"/ui/appliances/":                  "/ui/",
		"/ui/appliances/web/":              "/ui/appliances/web",
		"/ui/appliances/web/history/?x=1":  "/ui/appliances/web/history?x=1",
		"/ui/store/":                       "/ui/store",
		"/ui/appliances/web/releases/3/":   "/ui/appliances/web/releases/3",
		"/ui/appliances/web/edit/?key=a/b": "/ui/appliances/web/edit?key=a/b",
	} {
		r := b.get(from)
		if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != to {
			t.Errorf("GET %s: %d to %q, want 301 to %s", from, r.StatusCode, r.Header.Get("Location"), to)
		}
	}
	for _, p := range []string{"/ui/nothing/", "/ui/static/console.css/", "/ui/appliances/web/nothing/"} {
		mustStatus(t, b.get(p), http.StatusNotFound)
	}
	mustStatus(t, b.get("/ui/appliances/web"), http.StatusOK)
}
