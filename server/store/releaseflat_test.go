package store_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A write whose own guard fails while the store's cache of the key is stale (another replica
// wrote it): the transaction that joins the release's guards to the write's fails on both, the
// release's is told apart by the key read in its Else and tried again with what the key holds,
// and the write's own failure is then a conflict, at once, not "kept changing"; nothing is
// recorded. With the right revision the write goes through and is recorded as a change.
func TestStore_ReleaseStaleCacheAndFailedGuard(t *testing.T) {
	cfg := testConfig(t)
	a, b := openStoreWith(t, cfg), openStoreWith(t, cfg)
	if _, err := a.Put(relCtx(t, api.KindPut), "shared/k", "1", -1); err != nil {
		t.Fatal(err)
	}
	rev, err := b.Put(relCtx(t, api.KindPut), "shared/k", "2", -1) // a's cache still says 1
	if err != nil {
		t.Fatal(err)
	}
	n := len(releases(t, a))
	if _, err := a.Put(relCtx(t, api.KindPut), "shared/k", "3", rev-1); !isCode(err, api.CodeConflict) || !containsText(err, "expected mod_revision") {
		t.Fatalf("put with a wrong cas over a stale cache: %v, want the cas conflict", err)
	}
	if _, err := a.Txn(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "shared/k", Value: "3"}},
		Guards: []api.Guard{{Key: "shared/k", ModRevision: rev - 1}}}); !isCode(err, api.CodeConflict) || containsText(err, "kept changing") {
		t.Fatalf("txn with a failing guard: %v, want the guard's conflict", err)
	}
	if got := len(releases(t, a)); got != n {
		t.Fatalf("failed writes recorded %d releases", got-n)
	}
	if _, err := a.Put(relCtx(t, api.KindPut), "shared/k", "3", rev); err != nil {
		t.Fatalf("put with the right cas: %v", err)
	}
	rs := releases(t, a)
	want := withCounts([]api.ReleaseChange{{Scope: api.ScopeShared, Changed: []string{"shared/k"}}})
	if len(rs) != n+1 || fmt.Sprint(rs[0].Changes) != fmt.Sprint(want) {
		t.Fatalf("after the put: %d releases (want %d), newest changes %+v, want %+v", len(rs), n+1, rs[0].Changes, want)
	}
}

// A transaction too large for one level (its guards and the release's past etcd's default of
// 128 compares) keeps the release's guards in a transaction of their own, and is recorded.
func TestStore_ReleaseOfALargeGuardedTxn(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxTxnOps = 100
	s := openStoreWith(t, cfg)
	var t1 api.Txn
	for i := range 100 {
		t1.Ops = append(t1.Ops, api.Op{Op: api.OpPut, Key: fmt.Sprintf("shared/big/k%03d", i), Value: "1"})
		t1.Guards = append(t1.Guards, api.Guard{Key: fmt.Sprintf("shared/big/k%03d", i), ModRevision: 0})
	}
	rev, err := s.Txn(relCtx(t, api.KindTxn), t1)
	if err != nil {
		t.Fatal(err)
	}
	rs := releases(t, s)
	if rs[0].Revision != rev || rs[0].Changes[0].CreatedCount != 100 {
		t.Fatalf("newest release %+v, want the txn's 100 creates at %d", rs[0], rev)
	}
	// Its guards failing is a conflict, recorded nowhere.
	if _, err := s.Txn(relCtx(t, api.KindTxn), t1); !isCode(err, api.CodeConflict) {
		t.Fatalf("the same txn again (its keys exist now): %v, want a conflict", err)
	}
	if got := len(releases(t, s)); got != len(rs) {
		t.Fatalf("a failed txn recorded %d releases", got-len(rs))
	}
}

// containsText reports whether err's message holds s.
func containsText(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
