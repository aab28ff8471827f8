package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// An apply asks etcd whether each key it gives holds its value in nested transactions, which
// take their ops from etcd's limit per transaction: with an external etcd at its default of
// 128 (and the API's limit of keys below it), an apply of as many keys as it may give passes,
// unchanged and changed.
func TestStore_ApplyOfManyKeysWithinAnExternalEtcdsDefaultLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), Logger: quietLogger(), LogLevel: "error", UnsafeFast: true, MaxTxnOps: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cfg := testConfig(t)
	cfg.Endpoints = e.Endpoints()
	cfg.MaxTxnOps = 100
	s := openStoreWith(t, cfg)
	tree := map[string]string{}
	for i := range 100 {
		tree[fmt.Sprintf("k/%03d", i)] = fmt.Sprint(i)
	}
	if _, err := s.ApplyTree(ctx, "many", tree, -1); err != nil {
		t.Fatal(err)
	}
	res, err := s.ApplyTree(ctx, "many", tree, -1)
	if err != nil || !res.Unchanged {
		t.Fatalf("the apply of the 100 keys as they are: %+v (%v), want unchanged", res, err)
	}
	tree["k/042"] = "changed"
	res, err = s.ApplyTree(ctx, "many", tree, -1)
	if err != nil || res.Unchanged {
		t.Fatalf("the apply of the 100 keys with one changed: %+v (%v), want written", res, err)
	}
	v, _, err := s.Get(ctx, "appliances/many/k/042")
	if err != nil || v.Value != "changed" {
		t.Errorf("k/042 after the apply: %q (%v)", v.Value, err)
	}
}
