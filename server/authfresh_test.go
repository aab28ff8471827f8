package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A token created through one replica works on another before that replica's watch has
// delivered it; a token revoked in the store stays refused even while a stale cache holds it.
func TestAuth_NewTokenWorksOnAnotherReplicaAtOnce(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	a.put("shared/ntp", "pool")

	var created struct {
		Token string `json:"token"`
	}
	a.must(a.do("POST", "/v1/tokens", `{"name":"ci","read":["shared"]}`, "Content-Type", "application/json"), 201, &created)
	// Make b's cache miss as if its watch had not delivered the token yet.
	waitFor(t, "b to learn the token", func() bool { return b.s.auth.lookup(created.Token) != nil })
	b.s.auth.remove("ci", 0)
	if b.s.auth.lookup(created.Token) != nil {
		t.Fatal("the token is still cached on b")
	}
	b.must(b.doToken(created.Token, "GET", "/v1/kv/shared/ntp", ""), 200, nil)
	if b.s.auth.lookup(created.Token) != nil {
		t.Error("the store lookup filled the cache: only the watch may")
	}

	// Revoked in the store: refused on b, whatever its cache says.
	a.must(a.do("DELETE", "/v1/tokens/ci", ""), 200, nil)
	waitFor(t, "b to drop the token", func() bool { return b.s.auth.lookup(created.Token) == nil })
	b.mustErr(b.doToken(created.Token, "GET", "/v1/kv/shared/ntp", ""), 401, api.CodeUnauthorized, "unknown or revoked")
}

// Unknown tokens sent one after another (each arriving after the last read of the tokens
// began) make a read of every token record at most every freshReadEvery, not one each: each
// read decodes every record, and one client without a token kept a core busy with them. A token
// the cache has not seen yet is still found.
func TestAuth_UnknownTokensShareReadsOfTheStore(t *testing.T) {
	f := newFixture(t)
	for i := range 200 {
		f.newToken(api.TokenRequest{Name: fmt.Sprintf("t%03d", i), Read: []string{"shared"}})
	}
	reads := func() time.Time {
		f.s.fresh.mu.Lock()
		defer f.s.fresh.mu.Unlock()
		return f.s.fresh.started
	}
	seen := map[time.Time]bool{}
	start := time.Now()
	const requests = 12
	for i := range requests {
		f.mustErr(f.doToken(fmt.Sprintf("sl_unknown-%d", i), "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized)
		seen[reads()] = true
	}
	elapsed := time.Since(start)
	if most := int(elapsed/freshReadEvery) + 2; len(seen) > most {
		t.Errorf("%d requests with unknown tokens in %v read the tokens %d times; want at most %d", requests, elapsed, len(seen), most)
	}

	tok := f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	f.s.auth.remove("ci", 0) // as if the watch had not delivered it yet
	f.mustErr(f.do("GET", "/v1/kv/shared/x", ""), 404, api.CodeNotFound)
	f.mustErr(f.doToken(tok, "GET", "/v1/kv/shared/x", ""), 404, api.CodeNotFound)
}
