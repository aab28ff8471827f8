package server

import (
	"testing"

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
