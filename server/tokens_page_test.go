package server

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// tokenPages lists GET /v1/tokens?query a page of limit at a time (0: the server's default),
// calling between(next) after each page but the last; it returns every name, in order.
func (f *fixture) tokenPages(query string, limit int, between func(next string)) []string {
	f.t.Helper()
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			f.t.Fatalf("GET /v1/tokens?%s: over 1000 pages", query)
		}
		q := query
		if limit > 0 {
			q += fmt.Sprintf("&limit=%d", limit)
		}
		if after != "" {
			q += "&after=" + url.QueryEscape(after)
		}
		var l api.TokenList
		r := f.do("GET", "/v1/tokens?"+q, "")
		f.must(r, 200, &l)
		if l.Revision <= 0 || r.index() != l.Revision {
			f.t.Fatalf("GET /v1/tokens?%s: revision %d, X-Shoelace-Index %d", q, l.Revision, r.index())
		}
		if want := max(limit, 0); limit > 0 && len(l.Tokens) > want {
			f.t.Fatalf("GET /v1/tokens?%s: %d tokens, over the limit", q, len(l.Tokens))
		}
		for _, ti := range l.Tokens {
			names = append(names, ti.Name)
		}
		if l.Next == "" {
			return names
		}
		if len(l.Tokens) == 0 || l.Next != l.Tokens[len(l.Tokens)-1].Name {
			f.t.Fatalf("GET /v1/tokens?%s: next %q after %d tokens, want the name of the last one", q, l.Next, len(l.Tokens))
		}
		if between != nil {
			between(l.Next)
		}
		after = l.Next
	}
}

// tokenNames is every token name in the store, sorted; with all, the instance tokens too.
func (f *fixture) tokenNames(all bool) []string {
	f.t.Helper()
	m, _, err := f.st.SysList(f.t.Context(), tokenPrefix)
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for k := range m {
		if name := strings.TrimPrefix(k, tokenPrefix); all || !isInstanceToken(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// GET /v1/tokens pages as the other lists do (limit, at most 1000, and a next to continue
// from; without limit, every token): with a few hundred instance tokens enrolled, the pages of ?all list every
// token once, by name, whatever the limit; without all, the instance tokens are left out, the
// user tokens on either side of their names all listed. It answered every record at once.
func TestTokens_ListPages(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/a", "1")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	for _, name := range []string{"a-first", "hz", "i", "instance", "instancf", "j", "zz-last"} {
		f.newToken(api.TokenRequest{Name: name, Read: []string{"shared"}})
	}
	for i := range 230 {
		f.enroll(agent, "web", fmt.Sprintf("vm-%03d", i))
	}
	all, users := f.tokenNames(true), f.tokenNames(false)
	if len(all) != 239 || len(users) != 9 { // admin, agent-web and the seven
		t.Fatalf("the store holds %d tokens, %d of them users': %v", len(all), len(users), users)
	}
	for _, limit := range []int{1, 7, 50, 1000} {
		if got := f.tokenPages("all", limit, nil); !slices.Equal(got, all) {
			t.Errorf("?all&limit=%d listed %d tokens %v…, want the %d in the store by name", limit, len(got), got[:min(len(got), 5)], len(all))
		}
	}
	for _, limit := range []int{1, 2, 9, 10} {
		if got := f.tokenPages("all=false", limit, nil); !slices.Equal(got, users) {
			t.Errorf("?limit=%d listed %v, want %v", limit, got, users)
		}
	}
	// No limit: every token, and no next, as before pages (a client that does not page must
	// not take a first page for the whole list); after it, every one past it.
	var l api.TokenList
	f.must(f.do("GET", "/v1/tokens?all", ""), 200, &l)
	if got := tokenInfoNames(l.Tokens); !slices.Equal(got, all) || l.Next != "" {
		t.Errorf("?all without a limit: %d tokens, next %q; want all %d and none", len(l.Tokens), l.Next, len(all))
	}
	l = api.TokenList{}
	f.must(f.do("GET", "/v1/tokens?all&limit=", ""), 200, &l)
	if got := tokenInfoNames(l.Tokens); !slices.Equal(got, all) || l.Next != "" {
		t.Errorf("?all&limit= (empty): %d tokens, next %q; want all %d, as without limit", len(l.Tokens), l.Next, len(all))
	}
	l = api.TokenList{}
	f.must(f.do("GET", "/v1/tokens?all&after="+all[9], ""), 200, &l)
	if got := tokenInfoNames(l.Tokens); !slices.Equal(got, all[10:]) || l.Next != "" {
		t.Errorf("?all&after=%s without a limit: %d tokens, next %q; want the %d after it", all[9], len(l.Tokens), l.Next, len(all)-10)
	}
	// A last page that ends the list exactly has no next.
	l = api.TokenList{}
	f.must(f.do("GET", "/v1/tokens?limit=9", ""), 200, &l)
	if len(l.Tokens) != 9 || l.Next != "" {
		t.Errorf("?limit=9 of 9 user tokens: %d tokens, next %q; want 9 and none", len(l.Tokens), l.Next)
	}
	// A continuation past every name, or one that names no token: what sorts after it.
	l = api.TokenList{}
	f.must(f.do("GET", "/v1/tokens?all&after=zzz", ""), 200, &l)
	if len(l.Tokens) != 0 || l.Next != "" {
		t.Errorf("?after=zzz: %+v, want no token and no next", l)
	}
	l = api.TokenList{}
	f.must(f.do("GET", "/v1/tokens?after=instance:web:vm-100&limit=2", ""), 200, &l)
	if len(l.Tokens) != 2 || l.Tokens[0].Name != "instancf" || l.Tokens[1].Name != "j" || l.Next != "j" {
		t.Errorf("?after=instance:web:vm-100&limit=2 without all: %+v, want instancf, j", l.Tokens)
	}
}

// A bad limit is the 400 the releases' lists give, word for word; a bad continuation a 400
// naming it; and the releases' before is not a parameter of this list.
func TestTokens_ListPageErrors(t *testing.T) {
	f := newFixture(t)
	for _, v := range []string{"0", "-1", "1001", "x", "1.5"} {
		rel := f.do("GET", "/v1/releases?limit="+v, "")
		tok := f.do("GET", "/v1/tokens?all&limit="+v, "")
		f.mustErr(tok, 400, api.CodeInvalidRequest, "limit must be from 1 to 1000")
		if rel.StatusCode != 400 || tok.errMessage() != rel.errMessage() {
			t.Errorf("limit=%s: tokens %q, releases %d %q", v, tok.errMessage(), rel.StatusCode, rel.errMessage())
		}
	}
	for _, v := range []string{"a/b", "..", "a::b", "instance:", "%00", strings.Repeat("x", 300)} {
		f.mustErr(f.do("GET", "/v1/tokens?after="+v, ""), 400, api.CodeInvalidRequest, "after must be a token name")
	}
	f.mustErr(f.do("GET", "/v1/tokens?before=5", ""), 400, api.CodeInvalidRequest, `unknown query parameter "before"`, "[all limit after]")
	f.mustErr(f.do("GET", "/v1/tokens?limit=1&limit=2", ""), 400, api.CodeInvalidRequest, `"limit" is given 2 times`)
}

// Tokens created and revoked between pages neither repeat nor hide the others: every token that
// stood throughout is listed once, one created past the page listed, none listed twice.
func TestTokens_ListPagesWhileTokensChange(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/a", "1")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	for i := range 40 {
		f.newToken(api.TokenRequest{Name: fmt.Sprintf("user-%02d", i), Read: []string{"shared"}})
	}
	for i := range 200 {
		f.enroll(agent, "web", fmt.Sprintf("vm-%03d", i))
	}
	before := f.tokenNames(true)
	revoked := map[string]bool{}
	created := map[string]bool{}
	step := 0
	got := f.tokenPages("all", 13, func(next string) {
		step++
		switch step {
		case 2: // created behind the pages and ahead of them
			for _, name := range []string{"aaa-new", "user-10b", "zzz-new"} {
				f.newToken(api.TokenRequest{Name: name, Read: []string{"shared"}})
				created[name] = true
			}
		case 5: // revoked and forgotten ahead of the pages, and the one the page ended at
			for _, name := range []string{"user-30", "user-31"} {
				f.must(f.do("DELETE", "/v1/tokens/"+name, ""), 200, nil)
				revoked[name] = true
			}
			f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-150", ""), 200, nil)
			revoked["instance:web:vm-150"] = true
			if isInstanceToken(next) {
				inst := strings.TrimPrefix(next, "instance:web:")
				f.must(f.do("DELETE", "/v1/appliances/web/instances/"+inst, ""), 200, nil)
				revoked[next] = true
			}
		case 8:
			f.enroll(agent, "web", "vm-999")
			created["instance:web:vm-999"] = true
		}
	})
	seen := map[string]int{}
	for _, name := range got {
		seen[name]++
		if seen[name] == 2 {
			t.Errorf("%s listed twice", name)
		}
	}
	if !slices.IsSorted(got) {
		t.Errorf("the pages are not in name order")
	}
	for _, name := range before {
		if !revoked[name] && seen[name] != 1 {
			t.Errorf("%s, there throughout, listed %d times", name, seen[name])
		}
	}
	for _, name := range []string{"user-10b", "zzz-new", "instance:web:vm-999"} {
		if seen[name] != 1 {
			t.Errorf("%s, created ahead of the pages, listed %d times", name, seen[name])
		}
	}
	for _, name := range []string{"user-30", "user-31", "instance:web:vm-150"} {
		if seen[name] != 0 {
			t.Errorf("%s, revoked ahead of the pages, listed", name)
		}
	}
	if step < 8 {
		t.Fatalf("only %d pages", step+1)
	}
}

// tokenInfoNames is the names of ts, in their order.
func tokenInfoNames(ts []api.TokenInfo) []string {
	var names []string
	for _, ti := range ts {
		names = append(names, ti.Name)
	}
	return names
}
