package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// An apply reads the names and revisions of the appliance's live keys, which its transaction
// and audit need, and the values of only the keys it gives, a page at a time: it read the whole
// tree with one etcd Get, in no budget, so that many small applies at once (a stale cas refused
// 409 after the read, or a body of one key) to an appliance of nine values of 950 KB each held
// the whole 8.5 MB tree each, with gRPC's buffers (sixteen at once took a replica's heap up by
// 259-273 MiB: TestApply_SmallAppliesToALargeTreeAtOnce). Each answer of etcd's the read holds
// is now the names, or about a page of the apply's own values (livePageBytes) or one value,
// and what the apply does is as before.
func TestStore_ApplyReadsTheLiveTreeAPageAtATime(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	largest, answers := 0, 0
	store.SetLiveReadHook(s, func(n int) {
		mu.Lock()
		defer mu.Unlock()
		largest, answers = max(largest, n), answers+1
	})
	measured := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		l, a := largest, answers
		largest, answers = 0, 0
		return l, a
	}
	// A small key first: a read sized by the keys read before would read the rest at once.
	tree := map[string]string{"app/name": "big"}
	if _, err := s.Put(ctx, "appliances/big/app/name", "big", -1); err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		k, v := fmt.Sprintf("conf/part%d", i), strings.Repeat(fmt.Sprint(i), 950_000)
		if _, err := s.Put(ctx, "appliances/big/"+k, v, -1); err != nil {
			t.Fatal(err)
		}
		tree[k] = v
	}
	before, err := s.Put(ctx, "appliances/big/small", "1", -1)
	if err != nil {
		t.Fatal(err)
	}
	tree["small"] = "1"
	measured()
	// The bound: a page of about listPageBytes (1 MiB), or one value over it. The whole tree
	// in one answer is 8.5 MB.
	const bound = 2 << 20

	// The same tree: nothing written.
	res, err := s.ApplyTree(ctx, "big", tree, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unchanged || res.Revision != before {
		t.Errorf("the apply of the tree as it is: %+v, want unchanged at revision %d", res, before)
	}
	if l, a := measured(); l > bound || a == 0 {
		t.Errorf("the apply of the tree as it is held an answer of %d bytes of its live tree (of %d answers), want at most %d", l, a, bound)
	}

	// A change after the cas: refused, nothing written.
	changed, err := s.Put(ctx, "appliances/big/conf/part3", "changed", -1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ApplyTree(ctx, "big", map[string]string{"small": "2"}, before)
	if e := (*api.Error)(nil); !errors.As(err, &e) || e.Code != api.CodeConflict || !strings.Contains(e.Message, "conf/part3") {
		t.Errorf("apply with the cas before conf/part3 changed: %v, want a conflict naming conf/part3", err)
	}
	if l, a := measured(); l > bound || a == 0 {
		t.Errorf("the apply refused by its cas held an answer of %d bytes of its live tree (of %d answers), want at most %d", l, a, bound)
	}

	// The tree again over the changed key: its value is read in a page sized by the apply's.
	res, err = s.ApplyTree(ctx, "big", tree, changed)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged || res.Revision <= changed || len(res.Deleted) != 0 {
		t.Errorf("the apply of the tree over conf/part3 changed: %+v, want written after %d, nothing deleted", res, changed)
	}
	changed = res.Revision
	if l, a := measured(); l > bound || a == 0 {
		t.Errorf("the apply of the tree over conf/part3 changed held an answer of %d bytes of its live tree (of %d answers), want at most %d", l, a, bound)
	}
	v, _, err := s.Get(ctx, "appliances/big/conf/part3")
	if err != nil || v.Value != tree["conf/part3"] || v.ModRevision != changed {
		t.Errorf("conf/part3 after the apply: %d bytes at revision %d (%v), want %d at %d", len(v.Value), v.ModRevision, err, len(tree["conf/part3"]), changed)
	}
	v, _, err = s.Get(ctx, "appliances/big/conf/part4")
	if err != nil || v.ModRevision >= changed {
		t.Errorf("conf/part4, which the apply left as it was, has mod_revision %d (%v), want before %d", v.ModRevision, err, changed)
	}

	// One key: the others go, and the apply says which, for the audit.
	res, err = s.ApplyTree(ctx, "big", map[string]string{"small": "2"}, changed)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"appliances/big/app/name"}
	for i := range 9 {
		want = append(want, fmt.Sprintf("appliances/big/conf/part%d", i))
	}
	if res.Unchanged || res.Revision <= changed || !slices.Equal(res.Deleted, want) {
		t.Errorf("the apply of one key: %+v, want written after %d, deleted %v", res, changed, want)
	}
	if l, a := measured(); l > bound || a == 0 {
		t.Errorf("the apply of one key held an answer of %d bytes of its live tree (of %d answers), want at most %d", l, a, bound)
	}
	kvs, _, err := s.List(ctx, "appliances/big", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || kvs[0].Key != "appliances/big/small" || kvs[0].Value != "2" {
		t.Errorf("after the apply of one key: %v", kvs)
	}
}
