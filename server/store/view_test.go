package store_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestStore_View(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	mustPut(t, s, "shared/system/ntp", "shared-ntp")
	mustPut(t, s, "shared/system/dns", "shared-dns")
	mustPut(t, s, "sharedx/nope", "no")
	mustPut(t, s, "appliances/web", "the key itself is not in the view")
	_, err := s.View(ctx, "web")
	wantCode(t, err, api.CodeNotFound, `appliance "web" has no keys`, "at least one key of its own")

	mustPut(t, s, "appliances/web/system/ntp", "web-ntp")
	last := mustPut(t, s, "appliances/web/app/port", "8080")
	mustPut(t, s, "appliances/web-frontend/app/port", "9090")
	last2 := mustPut(t, s, "appliances/webx/app/port", "7070")

	v, err := s.View(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"system/ntp": "web-ntp", "system/dns": "shared-dns", "app/port": "8080"}
	if v.Appliance != "web" || !reflect.DeepEqual(v.Keys, want) || v.Revision < last2 {
		t.Errorf("view: got %+v, want keys %v at a revision >= %d", v, want, last)
	}

	_, err = s.View(ctx, "db")
	wantCode(t, err, api.CodeNotFound, `"db"`)
	_, err = s.View(ctx, "../x")
	wantCode(t, err, api.CodeInvalidName)
}

func TestStore_Appliances(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	names, rev, err := s.Appliances(ctx)
	if err != nil || len(names) != 0 || names == nil || rev <= 0 {
		t.Fatalf("no appliances: %#v %d %v", names, rev, err)
	}
	for _, k := range []string{"appliances/web-frontend/a", "appliances/web/b/c", "appliances/web/a",
		"appliances/solo", "appliances/db/x", "shared/appliances/y/z", "appliances/web.x/q"} {
		mustPut(t, s, k, "v")
	}
	names, _, err = s.Appliances(ctx)
	if want := []string{"db", "web", "web-frontend", "web.x"}; err != nil || !reflect.DeepEqual(names, want) {
		t.Errorf("appliances: got %v (%v), want %v", names, err, want)
	}
}

func TestStore_Apply(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	for _, k := range []string{"appliances/web/a", "appliances/web/c", "appliances/web/e/1", "appliances/web/e/2",
		"appliances/web/g", "appliances/web-frontend/a", "appliances/web", "shared/a"} {
		mustPut(t, s, k, "old")
	}
	keys := map[string]string{"b": "B", "d": "D", "e/3": "E3", "g": "G", "h/i/j": "HIJ"}
	rev, err := s.Apply(ctx, "web", keys, -1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"appliances/web/b": "B", "appliances/web/d": "D", "appliances/web/e/3": "E3", "appliances/web/g": "G",
		"appliances/web/h/i/j":      "HIJ",
		"appliances/web-frontend/a": "old", "appliances/web": "old", "shared/a": "old",
	}
	if got := dump(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after apply: got %v, want %v", got, want)
	}
	kvs, _, _ := s.List(ctx, "appliances/web/", true)
	for _, kv := range kvs[1:] { // kvs[0] is appliances/web itself, not the appliance's
		if kv.ModRevision != rev {
			t.Errorf("%s at revision %d, want the apply's %d", kv.Key, kv.ModRevision, rev)
		}
	}

	// cas: guarded by the apply's revision, a later change of one key is a conflict.
	later := mustPut(t, s, "appliances/web/d", "D2")
	before := dump(t, s)
	_, err = s.Apply(ctx, "web", map[string]string{"x": "X"}, rev)
	wantCode(t, err, api.CodeConflict, `"appliances/web/d"`, fmt.Sprint(later), fmt.Sprint(rev))
	// A new key after cas is a conflict too.
	s.Delete(ctx, "appliances/web/d", false)
	mustPut(t, s, "appliances/web/new", "N")
	rev2 := mustPut(t, s, "appliances/web/d", "D2")
	before = dump(t, s)
	_, err = s.Apply(ctx, "web", map[string]string{"x": "X"}, later)
	wantCode(t, err, api.CodeConflict, `"appliances/web/`)
	if got := dump(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("a failed cas changed the store: got %v, want %v", got, before)
	}
	if _, err := s.Apply(ctx, "web", map[string]string{"x": "X"}, rev2); err != nil {
		t.Fatalf("apply with a current cas: %v", err)
	}
	v, err := s.View(ctx, "web")
	if err != nil || !reflect.DeepEqual(v.Keys, map[string]string{"x": "X", "a": "old"}) {
		t.Errorf("view after apply: %v %v", v.Keys, err)
	}

	// cas 0: only when the appliance has no keys.
	_, err = s.Apply(ctx, "web", map[string]string{"y": "Y"}, 0)
	wantCode(t, err, api.CodeConflict)
	if _, err := s.Apply(ctx, "db", map[string]string{"y": "Y"}, 0); err != nil {
		t.Fatalf("apply of a new appliance with cas 0: %v", err)
	}

	// An empty apply removes the appliance.
	if _, err := s.Apply(ctx, "db", map[string]string{}, -1); err != nil {
		t.Fatal(err)
	}
	_, err = s.View(ctx, "db")
	wantCode(t, err, api.CodeNotFound)
}

func TestStore_ApplyTooLargeChangesNothing(t *testing.T) {
	s := openStore(t) // MaxTxnOps 50
	ctx := ctxT(t)
	mustPut(t, s, "appliances/web/a", "old")
	before := dump(t, s)
	keys := map[string]string{}
	for i := range 51 {
		keys[fmt.Sprintf("k%d", i)] = "v"
	}
	_, err := s.Apply(ctx, "web", keys, -1)
	wantCode(t, err, api.CodeTooLarge, `"web"`, "51", "50")
	if got := dump(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("a refused apply changed the store: got %v", got)
	}
	_, err = s.Apply(ctx, "web", map[string]string{"a//b": "x"}, -1)
	wantCode(t, err, api.CodeInvalidKey)

	// At the limit, with every old key going, etcd sees up to 2*limit+1 ops: still fine.
	for i := range 50 {
		mustPut(t, s, fmt.Sprintf("appliances/web/k%d-old", i), "old")
	}
	delete(keys, "k50")
	if _, err := s.Apply(ctx, "web", keys, -1); err != nil {
		t.Fatalf("apply of exactly the limit: %v", err)
	}
	if got := dump(t, s); len(got) != 50 {
		t.Errorf("after apply: %d keys, want 50", len(got))
	}
}

// Concurrent applies never mix: the appliance ends as exactly one of them.
func TestStore_ApplyConcurrent(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	sets := make([]map[string]string, 4)
	for i := range sets {
		sets[i] = map[string]string{"common": fmt.Sprint(i)}
		for j := range 5 + i {
			sets[i][fmt.Sprintf("only-%d/k%d", i, j)] = "v"
		}
	}
	done := make(chan error)
	for i := range sets {
		go func() {
			for range 5 {
				if _, err := s.Apply(ctx, "web", sets[i], -1); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range sets {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.View(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range sets {
		if reflect.DeepEqual(v.Keys, set) {
			return
		}
	}
	t.Fatalf("the appliance mixes applies: %v", v.Keys)
}
