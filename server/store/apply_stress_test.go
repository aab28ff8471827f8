package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// stressOp is what one write of TestStore_ApplyStress did, as its caller saw it.
type stressOp struct {
	who   string // "apply", "apply-cas", "put", "delete"
	keys  map[string]string
	key   string
	val   string // a put's
	cas   int64
	res   store.Applied
	rev   int64
	after int64 // the store's revision just after the call returned
	err   error
}

// Concurrent applies of random trees (some the appliance's own, some changing a few keys, some
// adding and removing keys, some guarded by cas) and single-key puts and deletes of the same
// appliance, through two replicas, for about a second. Then, with etcd's history:
//   - an apply that wrote left the appliance exactly as given, at its revision;
//   - an unchanged apply wrote nothing, and its revision is one at which the appliance held its keys;
//   - every write that succeeded has exactly one release, at its revision, and no other release
//     exists; each release names exactly the keys whose value differs between rev-1 and rev;
//   - no call fails but with a documented conflict, and none hangs.
//
// The seed is random per run, and printed on failure; SHOELACE_STRESS_SEED=n replays one
// (the interleaving still varies).
func TestStore_ApplyStress(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SHOELACE_STRESS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SHOELACE_STRESS_SEED: %v", err)
		}
		seed = n
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed: SHOELACE_STRESS_SEED=%d", seed)
		}
	})

	cfg := testConfig(t)
	open := func() *store.Store {
		s, err := store.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	replicas := []*store.Store{open(), open()}
	s := replicas[0]
	ctx := ctxT(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	const name = "web"
	abs := s.Root() + "kv/" + api.ApplianceRoot(name) + "/"
	relCtx := func(ctx context.Context, kind string) context.Context {
		ri := store.ReleaseInfo{Token: "ci", Kind: kind}
		if kind == api.KindApply {
			ri.Appliance = name
		}
		return store.WithRelease(ctx, ri)
	}
	universe := []string{"a", "b", "c", "d", "e", "f/g", "f/h"}
	value := func(r *rand.Rand) string { return strconv.Itoa(r.IntN(3)) }

	if _, err := s.Put(relCtx(ctx, api.KindPut), "shared/s", "x", -1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(relCtx(ctx, api.KindApply), name, map[string]string{"a": "0", "b": "0", "c": "0"}, -1); err != nil {
		t.Fatal(err)
	}
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	current := func(st *store.Store) (map[string]string, int64, error) {
		kvs, rev, err := st.List(ctx, api.ApplianceRoot(name), false)
		if err != nil {
			return nil, 0, err
		}
		m := map[string]string{}
		for _, kv := range kvs {
			m[strings.TrimPrefix(kv.Key, api.ApplianceRoot(name)+"/")] = kv.Value
		}
		return m, rev, nil
	}

	var (
		mu  sync.Mutex
		ops []stressOp
	)
	record := func(st *store.Store, op stressOp) {
		op.after, _ = st.Revision(ctx)
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	applier := func(id uint64) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, id))
		for time.Now().Before(stop) {
			st := replicas[r.IntN(len(replicas))]
			cur, listRev, err := current(st)
			if err != nil {
				t.Errorf("list: %v", err)
				return
			}
			keys := maps.Clone(cur)
			kind := r.IntN(10)
			switch {
			case kind < 4: // the tree as it is
			case kind < 7: // change a few values
				for range 1 + r.IntN(2) {
					keys[universe[r.IntN(len(universe))]] = value(r)
				}
			default: // add and remove keys
				for _, k := range universe {
					switch r.IntN(3) {
					case 0:
						delete(keys, k)
					case 1:
						keys[k] = value(r)
					}
				}
			}
			if len(keys) == 0 {
				keys["a"] = value(r)
			}
			op := stressOp{who: "apply", keys: keys, cas: -1}
			if r.IntN(5) == 0 {
				op.who, op.cas = "apply-cas", listRev
			}
			op.res, op.err = st.ApplyTree(relCtx(ctx, api.KindApply), name, keys, op.cas)
			record(st, op)
		}
	}
	writer := func(id uint64) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, id))
		for time.Now().Before(stop) {
			st := replicas[r.IntN(len(replicas))]
			k := universe[r.IntN(len(universe))]
			op := stressOp{key: k}
			if r.IntN(3) == 0 {
				op.who = "delete"
				op.rev, _, op.err = st.Delete(relCtx(ctx, api.KindDelete), api.ApplianceRoot(name)+"/"+k, false)
			} else {
				op.who, op.val = "put", value(r)
				op.res, op.err = st.PutResult(relCtx(ctx, api.KindPut), api.ApplianceRoot(name)+"/"+k, op.val, -1)
				op.rev = op.res.Revision
			}
			record(st, op)
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
		}
	}
	for i := range 3 {
		wg.Add(1)
		go applier(uint64(i))
	}
	wg.Add(1)
	go writer(100)
	waitAll(t, &wg, time.Minute, "the writers did not end within a minute of their last start")
	if t.Failed() {
		return
	}

	treeAt := func(rev int64) map[string]string {
		t.Helper()
		resp, err := cli.Get(ctx, abs, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("read the appliance at %d: %v", rev, err)
		}
		m := map[string]string{}
		for _, kv := range resp.Kvs {
			m[strings.TrimPrefix(string(kv.Key), abs)] = string(kv.Value)
		}
		return m
	}

	wrote := map[int64]string{} // revision: the write that made it
	counts := map[string]int{}
	for _, op := range ops {
		switch {
		case op.err != nil:
			counts[op.who+" error"]++
			var ae *api.Error
			ok := errors.As(op.err, &ae)
			switch {
			case ok && op.who == "delete" && ae.Code == api.CodeNotFound:
			case ok && op.who == "apply-cas" && ae.Code == api.CodeConflict:
			case ok && ae.Code == api.CodeConflict && strings.Contains(ae.Message, "kept changing"):
			default:
				t.Errorf("%s %v: %v", op.who, op.keys, op.err)
			}
			continue
		case op.who == "put" && op.res.Unchanged: // the key held the value at that revision
			counts[op.who+" unchanged"]++
			if got, ok := treeAt(op.rev)[op.key]; !ok || got != op.val {
				t.Errorf("unchanged put %s=%s answered revision %d, where the key held %q (%v)", op.key, op.val, op.rev, got, ok)
			}
			continue
		case op.who == "put" || op.who == "delete":
			counts[op.who]++
			if w, dup := wrote[op.rev]; dup {
				t.Errorf("%s %s and %s both answered revision %d", op.who, op.key, w, op.rev)
			}
			wrote[op.rev] = op.who + " " + op.key
			continue
		}
		rev := op.res.Revision
		if rev > op.after {
			t.Errorf("%s %v answered revision %d, after the store's %d when it returned", op.who, op.keys, rev, op.after)
			continue
		}
		if op.res.Unchanged {
			counts[op.who+" unchanged"]++
			got := treeAt(rev)
			for k, v := range op.keys {
				if got[k] != v {
					t.Errorf("unchanged %s %v answered revision %d, where the appliance held %v", op.who, op.keys, rev, got)
					break
				}
			}
			continue
		}
		counts[op.who]++
		if w, dup := wrote[rev]; dup {
			t.Errorf("%s %v and %s both answered revision %d", op.who, op.keys, w, rev)
		}
		wrote[rev] = fmt.Sprintf("%s %v", op.who, op.keys)
		if got := treeAt(rev); !maps.Equal(got, op.keys) {
			t.Errorf("%s %v answered revision %d, where the appliance held %v", op.who, op.keys, rev, got)
		}
		if maps.Equal(treeAt(rev-1), op.keys) {
			t.Errorf("%s %v wrote revision %d, but the appliance held exactly its keys just before: an apply that changes nothing writes nothing", op.who, op.keys, rev)
		}
		if op.who == "apply-cas" {
			resp, err := cli.Get(ctx, abs, clientv3.WithPrefix(), clientv3.WithRev(rev-1))
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range resp.Kvs {
				if kv.ModRevision > op.cas {
					t.Errorf("%s %v (cas %d) applied at %d over %s, changed at %d", op.who, op.keys, op.cas, rev, kv.Key, kv.ModRevision)
				}
			}
		}
	}
	t.Logf("seed %d: %v", seed, counts)

	rels, _, err := s.Releases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, rel := range rels {
		if rel.Revision <= start {
			continue
		}
		if seen[rel.Revision] {
			t.Errorf("two releases at revision %d", rel.Revision)
		}
		seen[rel.Revision] = true
		if _, ok := wrote[rel.Revision]; !ok {
			t.Errorf("release %s at revision %d, which no write that succeeded answered: %+v", rel.ID, rel.Revision, rel.Changes)
			continue
		}
		before, after := treeAt(rel.Revision-1), treeAt(rel.Revision)
		var created, changed, deleted []string
		for k, v := range after {
			switch old, ok := before[k]; {
			case !ok:
				created = append(created, api.ApplianceRoot(name)+"/"+k)
			case old != v:
				changed = append(changed, api.ApplianceRoot(name)+"/"+k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				deleted = append(deleted, api.ApplianceRoot(name)+"/"+k)
			}
		}
		var got api.ReleaseChange
		for _, c := range rel.Changes {
			if c.Scope != api.ScopeAppliance || c.Appliance != name {
				t.Errorf("release at %d (%s) names scope %s/%s", rel.Revision, wrote[rel.Revision], c.Scope, c.Appliance)
				continue
			}
			got = c
		}
		for _, l := range []struct {
			what      string
			got, want []string
		}{{"created", got.Created, created}, {"changed", got.Changed, changed}, {"deleted", got.Deleted, deleted}} {
			slices.Sort(l.want)
			if !slices.Equal(l.got, l.want) {
				t.Errorf("release at %d (%s) lists %s %v; from %v to %v: %v", rel.Revision, wrote[rel.Revision], l.what, l.got, before, after, l.want)
			}
		}
	}
	for rev, w := range wrote {
		if !seen[rev] {
			t.Errorf("%s answered revision %d, which has no release", w, rev)
		}
	}
}

// waitAll waits for wg, failing t with every goroutine's stack when it takes longer than d.
func waitAll(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s:\n%s", what, buf[:runtime.Stack(buf, true)])
	}
}
