package server

import (
	"slices"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A record under sys/tokens/ whose key is no token name (only a direct etcd write makes one)
// was the next of a page it ended, which the next request refused ("after must be a token
// name"): paging stopped there. Such records are left out, and a page never ends on one, so
// that paging goes through them all, whatever the limit, each token listed once.
func TestTokens_ListPagesPastStrayRecords(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/a", "1")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	for _, name := range []string{"b", "c", "d", "e", "instance", "zz"} {
		f.newToken(api.TokenRequest{Name: name, Read: []string{"shared"}})
	}
	f.enroll(agent, "web", "vm-1")
	f.enroll(agent, "web", "vm-2")
	strays := []string{"b x", "c/d", "c/e/f", "d\x01", "d\xff", "e 1", "e 2", "e 3", "e 4", "e 5",
		"instance:web/x", "instance:web:vm-1 x", "zz/last", "zz~", "zz~/more"}
	for _, k := range strays {
		if _, err := f.st.SysPut(t.Context(), tokenPrefix+k, []byte("junk"), -1); err != nil {
			t.Fatal(err)
		}
	}
	want := func(all bool) []string {
		var names []string
		for _, n := range f.tokenNames(all) {
			if tokenListName(n) {
				names = append(names, n)
			}
		}
		return names
	}
	all, users := want(true), want(false)
	if len(all) != 10 || len(users) != 8 {
		t.Fatalf("the store holds tokens %v (users' %v)", all, users)
	}
	for _, limit := range []int{1, 2, 3, 4, 7, 1000} {
		if got := f.tokenPages("all", limit, nil); !slices.Equal(got, all) {
			t.Errorf("?all&limit=%d listed %v, want %v", limit, got, all)
		}
		if got := f.tokenPages("all=false", limit, nil); !slices.Equal(got, users) {
			t.Errorf("?limit=%d listed %v, want %v", limit, got, users)
		}
	}
	// Without a limit too, and the strays are still in the store, untouched.
	var l api.TokenList
	f.must(f.do("GET", "/v1/tokens?all", ""), 200, &l)
	if got := tokenInfoNames(l.Tokens); !slices.Equal(got, all) || l.Next != "" {
		t.Errorf("?all: %v next %q, want %v", got, l.Next, all)
	}
	for _, k := range strays {
		if v, _, err := f.st.SysGet(t.Context(), tokenPrefix+k); err != nil || string(v) != "junk" {
			t.Errorf("stray %q: %q %v", k, v, err)
		}
	}
}
