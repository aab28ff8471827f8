package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// restoreCopy brings the etcd in dir back from the copy of its data in copyDir, as etcd brought
// back from a VM snapshot without a revision bump is: its clients, through p, are cut first (etcd
// stops at once rather than wait for their watches to end), and reach it again once it serves.
// It returns the new etcd's stop.
func restoreCopy(t *testing.T, p *faultproxy.Proxy, dir, copyDir string, stop func()) func() {
	t.Helper()
	p.Down()
	stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	_, stop = testutil.StartEtcd(t, dir)
	p.Up()
	return stop
}

// TestAuth_TokenCreatedAgainAfterStoreWentBack: a token revoked at a revision that the store's
// history lost (etcd brought back from a copy of its data without a revision bump) and created
// again under the same name, at a revision below that revocation, is a token like any other on
// this replica: cached, so that it is answered while etcd is away. The revocation's revision,
// kept from the lost history, made the cache ignore the new record, and every request with it
// had to ask the store (503 while etcd was away).
func TestAuth_TokenCreatedAgainAfterStoreWentBack(t *testing.T) {
	dir := t.TempDir()
	eps, stop := testutil.StartEtcd(t, dir)
	p := faultproxy.Start(t, eps[0])
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, throughProxy(t, cfg, p))
	f.put("shared/x", "0")

	copyDir := filepath.Join(t.TempDir(), "copy")
	p.Down()
	stop()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	_, stop = testutil.StartEtcd(t, dir)
	p.Up()
	waitFor(t, "etcd back", func() bool { return f.doToken("", "GET", "/health/deps", "").StatusCode == 200 })
	f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	for range 30 {
		f.put("shared/x", "1")
	}
	var del struct{ Revision int64 }
	f.must(f.do("DELETE", "/v1/tokens/ci", ""), 200, &del)
	waitFor(t, "the replica's watch at the revocation", func() bool { return f.s.hub.current() >= del.Revision })

	restoreCopy(t, p, dir, copyDir, stop)
	waitFor(t, "the replica on the store's revision", func() bool { return f.s.hub.current() < del.Revision })

	var c api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"ci","read":["shared"]}`), 201, &c)
	if c.Revision >= del.Revision {
		t.Fatalf("token created again at revision %d, want one below its revocation's, %d (the test needs it)", c.Revision, del.Revision)
	}
	if !within(5*time.Second, func() bool { return f.s.auth.lookup(c.Token) != nil }) {
		t.Fatalf("the token created again at revision %d is not cached 5s later (revoked at %d in the lost history)", c.Revision, del.Revision)
	}
	f.must(f.doToken(c.Token, "GET", "/v1/kv/shared/x", ""), 200, nil)
	p.Down()
	// Cached: answered without the store.
	f.must(f.doToken(c.Token, "GET", "/v1/maintenance", ""), 200, nil)
	p.Up()
}
