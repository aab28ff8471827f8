package store_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/server/store"
)

// An apply's read of the live tree was paged by the apply's own values: an apply that gives
// many keys values far smaller than they hold (empty ones) read them all in one page, so that
// a writer's small applies, refused after the read (a rollout running on the appliance) or
// not, held an appliance's large values whole as before, one etcd answer each. An apply now
// asks etcd whether each key it gives holds its value (at the mod_revision read) and reads no
// live value: its answers hold no values at all, whatever the live tree holds.
func TestStore_ApplyOfSmallValuesOverLargeOnesReadsNoLiveValue(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	largest := 0
	store.SetLiveReadHook(s, func(n int) {
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, n)
	})
	small := map[string]string{}
	for i := range 9 {
		k := fmt.Sprintf("conf/part%d", i)
		if _, err := s.Put(ctx, "appliances/big/"+k, strings.Repeat(fmt.Sprint(i), 950_000), -1); err != nil {
			t.Fatal(err)
		}
		small[k] = ""
	}
	res, err := s.ApplyTree(ctx, "big", small, -1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged || len(res.Deleted) != 0 {
		t.Errorf("the apply of empty values over large ones: %+v, want written, nothing deleted", res)
	}
	mu.Lock()
	l := largest
	mu.Unlock()
	if l > 64<<10 {
		t.Errorf("the apply of empty values over nine of 950 KB held an answer of %d bytes of its live tree, want at most 64 KiB (names only)", l)
	}
	for k := range small {
		v, _, err := s.Get(ctx, "appliances/big/"+k)
		if err != nil || v.Value != "" {
			t.Errorf("%s after the apply: %d bytes (%v), want empty", k, len(v.Value), err)
		}
	}
	// The same again: unchanged, nothing written.
	res2, err := s.ApplyTree(ctx, "big", small, -1)
	if err != nil || !res2.Unchanged || res2.Revision != res.Revision {
		t.Errorf("the same apply again: %+v (%v), want unchanged at %d", res2, err, res.Revision)
	}
}
