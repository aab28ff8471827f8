package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

func TestStore_Txn(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	seedSegments(t, s)
	kvWeb, _, _ := s.Get(ctx, "appliances/web/a")

	rev, err := s.Txn(ctx, api.Txn{
		Ops: []api.Op{
			{Op: api.OpPut, Key: "shared/new", Value: "n"},
			{Op: api.OpPut, Key: "shared/s", Value: "s2"},
			{Op: api.OpDelete, Key: "appliances/web", Recurse: true},
			{Op: api.OpDelete, Key: "appliances/webx"},
			{Op: api.OpDelete, Key: "absent/key"},
		},
		Guards: []api.Guard{{Key: "appliances/web/a", ModRevision: kvWeb.ModRevision}, {Key: "shared/new", ModRevision: 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"appliances/we":             "value of appliances/we",
		"appliances/web-frontend/x": "value of appliances/web-frontend/x",
		"appliances/web.x/y":        "value of appliances/web.x/y",
		"shared/new":                "n",
		"shared/s":                  "s2",
	}
	if got := dump(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after txn: got %v, want %v", got, want)
	}
	for _, k := range []string{"shared/new", "shared/s"} {
		if kv, _, _ := s.Get(ctx, k); kv.ModRevision != rev {
			t.Errorf("%s written at %d, want the txn's revision %d", k, kv.ModRevision, rev)
		}
	}
	kvNew, _, _ := s.Get(ctx, "shared/new")

	// The second guard fails: nothing changes and the error names its key.
	before := dump(t, s)
	_, err = s.Txn(ctx, api.Txn{
		Ops: []api.Op{{Op: api.OpPut, Key: "shared/s", Value: "s3"}, {Op: api.OpDelete, Key: "shared/new"}},
		Guards: []api.Guard{
			{Key: "shared/new", ModRevision: kvNew.ModRevision},
			{Key: "shared/s", ModRevision: kvNew.ModRevision - 1},
			{Key: "shared/other", ModRevision: 7},
		},
	})
	wantCode(t, err, api.CodeConflict, `"shared/s"`, fmt.Sprintf("expected mod_revision %d, found %d", kvNew.ModRevision-1, kvNew.ModRevision))
	_, err = s.Txn(ctx, api.Txn{
		Ops:    []api.Op{{Op: api.OpPut, Key: "shared/s", Value: "s3"}},
		Guards: []api.Guard{{Key: "shared/new", ModRevision: 0}},
	})
	wantCode(t, err, api.CodeConflict, `"shared/new"`, "not to exist")
	if got := dump(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("a failed guard changed the store: got %v, want %v", got, before)
	}
}

func TestStore_TxnRefused(t *testing.T) {
	s := openStore(t) // MaxTxnOps 50
	ctx := ctxT(t)
	mustPut(t, s, "a/b", "1")
	before := dump(t, s)

	var many []api.Op
	for i := range 51 {
		many = append(many, api.Op{Op: api.OpPut, Key: fmt.Sprintf("many/k%d", i), Value: "v"})
	}
	_, err := s.Txn(ctx, api.Txn{Ops: many})
	wantCode(t, err, api.CodeTooLarge, "51", "50")
	if _, err := s.Txn(ctx, api.Txn{Ops: many[:50]}); err != nil {
		t.Errorf("a txn of exactly the limit: %v", err)
	}
	s.Delete(ctx, "many", true)

	cases := []struct {
		name string
		txn  api.Txn
		code string
		want []string
	}{
		{"no ops", api.Txn{}, api.CodeInvalidRequest, []string{"no ops"}},
		{"unknown kind", api.Txn{Ops: []api.Op{{Op: "get", Key: "a/b"}}}, api.CodeInvalidRequest, []string{`"get"`, "op 1"}},
		{"bad key", api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "a//b"}}}, api.CodeInvalidKey, []string{"op 1"}},
		{"empty delete", api.Txn{Ops: []api.Op{{Op: api.OpDelete, Key: "", Recurse: true}}}, api.CodeInvalidKey, nil},
		{"double put", api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "a/b"}, {Op: api.OpPut, Key: "a/b"}}}, api.CodeInvalidRequest, []string{`"a/b"`}},
		{"put under delete", api.Txn{Ops: []api.Op{{Op: api.OpDelete, Key: "a", Recurse: true}, {Op: api.OpPut, Key: "a/c"}}}, api.CodeInvalidRequest, []string{`"a/c"`}},
		{"bad guard", api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "a/c"}}, Guards: []api.Guard{{Key: "x/", ModRevision: 1}}}, api.CodeInvalidKey, []string{"guard 1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.Txn(ctx, c.txn)
			wantCode(t, err, c.code, c.want...)
		})
	}
	// A put next to a delete of a sibling by whole segments is fine.
	if _, err := s.Txn(ctx, api.Txn{Ops: []api.Op{{Op: api.OpDelete, Key: "a/b", Recurse: true}, {Op: api.OpPut, Key: "a/b-2", Value: "x"}}}); err != nil {
		t.Fatalf("delete a/b recursively and put a/b-2: %v", err)
	}
	if got := dump(t, s); !reflect.DeepEqual(got, map[string]string{"a/b-2": "x"}) {
		t.Errorf("got %v (before: %v)", got, before)
	}
}

// bigTxnTimeouts gives a store's calls the time that a transaction of tens of thousands of
// ops takes on a loaded machine under the race detector: the first try's 3 s and the call's
// 10 s (the defaults) ran out now and then ("etcd did not answer in time", 1 run in 3 with
// GOMAXPROCS=1 beside other processes). The tests are of etcd's limits, not of its speed.
func bigTxnTimeouts(c *store.Config) {
	c.AttemptTimeout, c.RequestTimeout = time.Minute, 2*time.Minute
}

// bigTxnCtx is ctxT for a store of bigTxnTimeouts.
func bigTxnCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// An etcd limit met by the request is a 413 naming the limit, and changes nothing.
func TestStore_EtcdLimits(t *testing.T) {
	// The API's limit above etcd's (4*10000+64 on the shared test etcd, 10 MiB requests): etcd refuses.
	s := openStore(t, func(c *store.Config) { c.MaxTxnOps = 60000 }, bigTxnTimeouts)
	ctx := bigTxnCtx(t)
	keys := map[string]string{}
	for i := range 40100 { // over 40064 puts
		keys[fmt.Sprintf("k%05d", i)] = "v"
	}
	_, err := s.Apply(ctx, "big", keys, -1)
	wantCode(t, err, api.CodeTooLarge, "--max-txn-ops")

	big := make([]byte, 11<<20)
	for i := range big {
		big[i] = 'x'
	}
	_, err = s.Put(ctx, "shared/big", string(big), -1)
	wantCode(t, err, api.CodeTooLarge, "--max-request-bytes")
	if got := dump(t, s); len(got) != 0 {
		t.Errorf("refused writes left %d keys", len(got))
	}
}

// TestStore_FullApplyFitsTheEmbeddedEtcd: an apply of as many keys as the API takes (its
// release guards a key each, the write nested under them), and one guarded by cas that
// replaces them with as many others (a delete and a guard more per key), fit the embedded
// etcd's limit of operations: the API's limit is the one a caller meets. Each may take two
// minutes: under -race, with other packages' tests on the two cores, the replace (30,000 etcd
// operations) took longer than the store's default 10 s, and once longer than 30 s.
func TestStore_FullApplyFitsTheEmbeddedEtcd(t *testing.T) {
	s := openStore(t, func(c *store.Config) { c.MaxTxnOps = store.DefaultMaxTxnOps }, bigTxnTimeouts)
	ctx := store.WithRelease(bigTxnCtx(t), store.ReleaseInfo{Kind: "apply", Appliance: "full"})
	tree := func(prefix string) map[string]string {
		keys := map[string]string{}
		for i := range store.DefaultMaxTxnOps {
			keys[fmt.Sprintf("%s%05d", prefix, i)] = "v"
		}
		return keys
	}
	rev, err := s.Apply(ctx, "full", tree("a"), -1)
	if err != nil {
		t.Fatalf("apply of %d keys: %v", store.DefaultMaxTxnOps, err)
	}
	if _, err := s.Apply(ctx, "full", tree("b"), rev); err != nil {
		t.Fatalf("apply of %d keys over as many others, cas %d: %v", store.DefaultMaxTxnOps, rev, err)
	}
	got := dump(t, s)
	if len(got) != store.DefaultMaxTxnOps || got["appliances/full/b00000"] != "v" || got["appliances/full/a00000"] != "" {
		t.Fatalf("after the replace: %d keys", len(got))
	}
}
