package server

import (
	"strconv"
	"strings"
	"testing"
)

// A view of big values (each up to --max-value-bytes, of characters that HTML escapes to five
// bytes) makes pages of bounded size: the appliance page, a release's diff and a rollback's
// confirmation show the start of each value and how many bytes they leave out, within a budget
// per page, where they showed every value in full (12 values of 1 MiB were a page of 60 MiB,
// held in the server's memory whole, and fetched again by the live script after every change).
// The edit form still holds the whole value, and a small value is still shown whole.
func TestUI_BigValuesMakeBoundedPages(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat(`"`, 1<<20-64)
	apply := func(v string) int64 {
		f.put("appliances/huge/small", "small-value-shown")
		var rev int64
		for i := range 12 {
			rev = f.put("appliances/huge/big/"+strconv.Itoa(i), v+strconv.Itoa(i))
		}
		return rev
	}
	first := apply(big)
	second := apply(strings.Repeat("<", 1<<20-64))
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	const bound = 8 << 20
	check := func(what string, r resp) {
		t.Helper()
		mustStatus(t, r, 200)
		if len(r.body) > bound {
			t.Errorf("%s: %d bytes, want at most %d", what, len(r.body), bound)
		}
		if !strings.Contains(string(r.body), "bytes not shown") {
			t.Errorf("%s does not say that values were cut", what)
		}
	}
	page := b.get("/ui/appliances/huge")
	check("appliance page", page)
	if !strings.Contains(string(page.body), "small-value-shown") || !strings.Contains(string(page.body), "&lt;&lt;&lt;&lt;") {
		t.Errorf("the appliance page does not show the values' starts")
	}
	check("release page", b.get("/ui/appliances/huge/releases/"+strconv.FormatInt(second, 10)))
	check("rollback confirmation", b.post("/ui/appliances/huge/rollback", map[string][]string{"csrf": {tok}, "to": {strconv.FormatInt(first, 10)}}))
	form := b.get("/ui/appliances/huge/edit?key=appliances/huge/big/3")
	mustStatus(t, form, 200)
	if n := strings.Count(string(form.body), "&lt;"); n < 1<<20-64 {
		t.Errorf("the edit form holds %d of the value's characters, want all %d", n, 1<<20-64)
	}
}
