package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// flatOp is one write of TestStore_ReleaseFlatRace, as its caller saw it.
type flatOp struct {
	id     string // the release's message; puts write "v-"+id
	kind   string // put, cas, txn, delete, raw, norel
	puts   map[string]string
	dels   []string
	guards map[string]int64 // key: the mod_revision the write expected (a cas put's, a txn's guards)
	rev    int64
	err    error
	// unchanged: the write changed no key (a txn deleting absent keys only), and wrote nothing.
	unchanged bool
	// span is the store's revisions when the call began and when it returned.
	span [2]int64
}

// Three replicas on one root write a handful of keys (two under one parent, so that a write's
// keys are read back as one range; shared/, two appliances and another key, so that writes go
// in batches too) with puts, compare-and-swap puts, guarded transactions and deletes, all with
// releases, while a plain etcd client and a replica without releases change the same keys
// behind the replicas' prior caches. Every write that records a release goes as one flat
// transaction (a few keys, no prefix), whose failure is told apart from the Else's reads. Then,
// from etcd's history of the keys:
//   - every revision that changed a key is a write that said it succeeded (or a plain one), and
//     changed exactly that write's keys; a write that failed left no value and no release;
//   - a write that succeeded had its guards hold just before its revision, and has exactly one
//     release, at its revision, naming each key created, changed or deleted as it really was;
//   - a conflict is real: at the revision it answered, a guard's key was not as expected; and
//     "kept changing" is too: the write's keys changed at least once between each two tries;
//   - a delete that found nothing found nothing, and no release exists that no write made.
func TestStore_ReleaseFlatRace(t *testing.T) {
	cfg := testConfig(t)
	replicas := []*store.Store{openStoreWith(t, cfg), openStoreWith(t, cfg), openStoreWith(t, cfg)}
	s := replicas[0]
	ctx := ctxT(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	kv := s.Root() + "kv/"
	keys := []string{"shared/a/k0", "shared/a/k1", "shared/b/k2", "appliances/web/x", "appliances/web/y/z", "appliances/api/x", "misc/k"}
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu  sync.Mutex
		ops []*flatOp
	)
	// modOf is key's mod_revision now (0: absent), read by the plain client.
	modOf := func(k string) int64 {
		resp, err := cli.Get(ctx, kv+k, clientv3.WithKeysOnly())
		if err != nil || len(resp.Kvs) == 0 {
			return 0
		}
		return resp.Kvs[0].ModRevision
	}
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	writer := func(id uint64, st *store.Store) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(id, uint64(time.Now().UnixNano())))
		for i := 0; time.Now().Before(stop); i++ {
			op := &flatOp{id: fmt.Sprintf("w%d-%d", id, i), puts: map[string]string{}, guards: map[string]int64{}}
			op.span[0], _ = st.Revision(ctx)
			rctx := store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Message: op.id, Kind: api.KindPut})
			// A guard right when read, or one that is stale already (an earlier revision).
			expect := func(k string) int64 {
				m := modOf(k)
				if r.IntN(3) == 0 && m > 0 {
					m -= 1 + r.Int64N(m)
				}
				return m
			}
			k := keys[r.IntN(len(keys))]
			switch n := r.IntN(10); {
			case n < 3:
				op.kind, op.puts[k] = "put", "v-"+op.id
				op.rev, op.err = st.Put(rctx, k, op.puts[k], -1)
			case n < 5:
				op.kind, op.puts[k], op.guards[k] = "cas", "v-"+op.id, expect(k)
				op.rev, op.err = st.Put(rctx, k, op.puts[k], op.guards[k])
			case n < 6:
				op.kind, op.dels = "delete", []string{k}
				op.rev, _, op.err = st.Delete(rctx, k, false)
			default:
				op.kind = "txn"
				var txn api.Txn
				for _, j := range r.Perm(len(keys))[:1+r.IntN(3)] {
					k := keys[j]
					if r.IntN(4) == 0 {
						op.dels = append(op.dels, k)
						txn.Ops = append(txn.Ops, api.Op{Op: api.OpDelete, Key: k})
					} else {
						op.puts[k] = "v-" + op.id
						txn.Ops = append(txn.Ops, api.Op{Op: api.OpPut, Key: k, Value: op.puts[k]})
					}
				}
				for _, j := range r.Perm(len(keys))[:r.IntN(3)] {
					op.guards[keys[j]] = expect(keys[j])
					txn.Guards = append(txn.Guards, api.Guard{Key: keys[j], ModRevision: op.guards[keys[j]]})
				}
				var res store.Applied
				res, op.err = st.TxnResult(store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Message: op.id, Kind: api.KindTxn}), txn)
				op.rev, op.unchanged = res.Revision, res.Unchanged
			}
			op.span[1], _ = st.Revision(ctx)
			mu.Lock()
			ops = append(ops, op)
			mu.Unlock()
		}
	}
	// Writes that the replicas' caches are not told of: a plain client's, and a replica's
	// without a release.
	behind := func(id uint64) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(id, uint64(time.Now().UnixNano())))
		for i := 0; time.Now().Before(stop); i++ {
			k := keys[r.IntN(len(keys))]
			op := &flatOp{id: fmt.Sprintf("b%d-%d", id, i), kind: "raw", puts: map[string]string{}}
			switch r.IntN(4) {
			case 0:
				op.dels = []string{k}
				resp, err := cli.Delete(ctx, kv+k)
				if err == nil && resp.Deleted == 0 {
					continue // no revision
				} else if err == nil {
					op.rev = resp.Header.Revision
				}
				op.err = err
			case 1:
				op.kind, op.puts[k] = "norel", "v-"+op.id
				op.rev, op.err = replicas[r.IntN(len(replicas))].Put(ctx, k, op.puts[k], -1)
			default:
				op.puts[k] = "v-" + op.id
				resp, err := cli.Put(ctx, kv+k, op.puts[k])
				if err == nil {
					op.rev = resp.Header.Revision
				}
				op.err = err
			}
			mu.Lock()
			ops = append(ops, op)
			mu.Unlock()
			time.Sleep(time.Duration(1+r.IntN(3)) * time.Millisecond)
		}
	}
	for i, st := range replicas {
		for j := range 2 {
			wg.Add(1)
			go writer(uint64(10*i+j), st)
		}
	}
	wg.Add(1)
	go behind(100)
	waitAll(t, &wg, time.Minute, "the writers did not end within a minute")
	if t.Failed() {
		return
	}

	// The keys' history since start: each key's states, oldest first.
	type state struct {
		rev    int64 // the revision that made it
		exists bool
		value  string
	}
	hist := map[string][]state{}
	first, err := cli.Get(ctx, kv, clientv3.WithPrefix(), clientv3.WithRev(start))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range first.Kvs {
		hist[strings.TrimPrefix(string(e.Key), kv)] = []state{{e.ModRevision, true, string(e.Value)}}
	}
	end, err := cli.Put(ctx, kv+"zz/end", "")
	if err != nil {
		t.Fatal(err)
	}
	events := map[int64][]string{} // revision: the keys it changed
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range cli.Watch(wctx, kv, clientv3.WithPrefix(), clientv3.WithRev(start+1)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			rev, k := ev.Kv.ModRevision, strings.TrimPrefix(string(ev.Kv.Key), kv)
			events[rev] = append(events[rev], k)
			hist[k] = append(hist[k], state{rev, ev.Type == clientv3.EventTypePut, string(ev.Kv.Value)})
		}
		if n := len(resp.Events); n > 0 && resp.Events[n-1].Kv.ModRevision >= end.Header.Revision {
			break
		}
	}
	cancel()
	delete(events, end.Header.Revision)
	at := func(k string, rev int64) state {
		var st state
		for _, s := range hist[k] {
			if s.rev > rev {
				break
			}
			st = s
		}
		return st
	}
	mod := func(k string, rev int64) int64 {
		if st := at(k, rev); st.exists {
			return st.rev
		}
		return 0
	}

	rels := map[string][]api.Release{}
	all, _, err := s.Releases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range all {
		rels[rel.Message] = append(rels[rel.Message], rel)
	}
	values := map[string]bool{} // every value etcd held since start
	for _, states := range hist {
		for _, st := range states {
			values[st.value] = true
		}
	}
	claimed := map[int64][]*flatOp{} // revision: the writes that said they made it
	counts := map[string]int{}
	for _, op := range ops {
		switch {
		case op.err == nil && op.unchanged:
			// Its keys were as it writes them, and its guards held, at the revision it answered.
			counts[op.kind+" unchanged"]++
			for k, v := range op.puts {
				if st := at(k, op.rev); !st.exists || st.value != v {
					t.Errorf("unchanged %s %s answered %d, where %s is %+v", op.kind, op.id, op.rev, k, st)
				}
			}
			for _, k := range op.dels {
				if at(k, op.rev).exists {
					t.Errorf("unchanged %s %s answered %d, where the key %s it deletes is there", op.kind, op.id, op.rev, k)
				}
			}
			for k, want := range op.guards {
				if got := mod(k, op.rev); got != want {
					t.Errorf("unchanged %s %s answered %d with %s at %d, guarded on %d", op.kind, op.id, op.rev, k, got, want)
				}
			}
			if len(rels[op.id]) > 0 {
				t.Errorf("unchanged %s %s has a release at %d", op.kind, op.id, rels[op.id][0].Revision)
			}
			continue
		case op.err == nil:
			counts[op.kind]++
			claimed[op.rev] = append(claimed[op.rev], op)
		case isCode(op.err, api.CodeConflict) && containsText(op.err, "kept changing"):
			// Each try after the first found a key changed since the last one's read.
			counts[op.kind+" kept changing"]++
			changes := 0
			for rev := op.span[0] + 1; rev <= op.span[1]; rev++ {
				for _, k := range events[rev] {
					if _, put := op.puts[k]; put || slices.Contains(op.dels, k) {
						changes++
						break
					}
				}
			}
			if changes < 19 {
				t.Errorf("%s %s: %v, but its keys changed %d times during the call", op.kind, op.id, op.err, changes)
			}
		case isCode(op.err, api.CodeConflict) && (op.kind == "cas" || op.kind == "txn"):
			counts[op.kind+" conflict"]++
			failed := false
			for k, want := range op.guards {
				failed = failed || mod(k, op.rev) != want
			}
			if !failed {
				t.Errorf("%s %s (guards %v) was refused at %d, where every guard held", op.kind, op.id, op.guards, op.rev)
			}
		case isCode(op.err, api.CodeNotFound) && op.kind == "delete":
			counts["delete not found"]++
			if at(op.dels[0], op.rev).exists {
				t.Errorf("delete %s of %s found nothing at %d, where the key was there", op.id, op.dels[0], op.rev)
			}
		default:
			t.Errorf("%s %s: %v", op.kind, op.id, op.err)
			continue
		}
		if op.err != nil {
			for _, v := range op.puts {
				if values[v] {
					t.Errorf("%s %s failed (%v), but etcd held its value %s", op.kind, op.id, op.err, v)
				}
			}
			if len(rels[op.id]) > 0 {
				t.Errorf("%s %s failed (%v), but has a release at %d", op.kind, op.id, op.err, rels[op.id][0].Revision)
			}
			continue
		}
		rev := op.rev
		for k, v := range op.puts {
			if st := at(k, rev); st.rev != rev || st.value != v {
				t.Errorf("%s %s answered %d, where %s is %+v", op.kind, op.id, rev, k, st)
			}
		}
		for _, k := range op.dels {
			if at(k, rev).exists {
				t.Errorf("%s %s answered %d, where the key %s it deletes is there", op.kind, op.id, rev, k)
			}
		}
		for k, want := range op.guards {
			if got := mod(k, rev-1); got != want {
				t.Errorf("%s %s applied at %d with %s at %d, guarded on %d", op.kind, op.id, rev, k, got, want)
			}
		}
		if op.kind == "raw" || op.kind == "norel" {
			continue
		}
		if len(rels[op.id]) != 1 || rels[op.id][0].Revision != rev {
			t.Errorf("%s %s applied at %d: releases %+v, want one at its revision", op.kind, op.id, rev, rels[op.id])
			continue
		}
		var want [3][]string // created, changed, deleted
		for k, v := range op.puts {
			switch before := at(k, rev-1); {
			case !before.exists:
				want[0] = append(want[0], k)
			case before.value != v:
				want[1] = append(want[1], k)
			}
		}
		for _, k := range op.dels {
			if at(k, rev-1).exists {
				want[2] = append(want[2], k)
			}
		}
		var got [3][]string
		for _, c := range rels[op.id][0].Changes {
			got[0], got[1], got[2] = append(got[0], c.Created...), append(got[1], c.Changed...), append(got[2], c.Deleted...)
		}
		for i, what := range []string{"created", "changed", "deleted"} {
			slices.Sort(want[i])
			slices.Sort(got[i])
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("%s %s at %d: release lists %s %v, want %v", op.kind, op.id, rev, what, got[i], want[i])
			}
		}
	}
	for rev, ks := range events {
		for _, k := range ks {
			ok := false
			for _, op := range claimed[rev] {
				_, put := op.puts[k]
				ok = ok || put || slices.Contains(op.dels, k)
			}
			if !ok {
				t.Errorf("revision %d changed %s, which no write that succeeded there touches (%d claim it)", rev, k, len(claimed[rev]))
			}
		}
	}
	for _, rel := range all {
		if rel.Revision > start && (len(claimed[rel.Revision]) == 0 || len(rels[rel.Message]) != 1) {
			t.Errorf("release %s (%q) at %d: no write made it once", rel.ID, rel.Message, rel.Revision)
		}
	}
	t.Logf("%v", counts)
}

// Writes on both sides of the size past which a write's release guards stay in a transaction
// of their own (128 compares, or 128 Else ops, at one level): guarded transactions of n keys
// and applies of n keys, each over a prior cache made stale by another replica (one key
// rewritten, one deleted). Either way, a stale guard is the transaction's conflict, naming the
// key, with nothing written; the right guards apply; and each record counts what the keys
// really held before.
func TestStore_ReleaseFlatBoundary(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxTxnOps = 200
	a, b := openStoreWith(t, cfg), openStoreWith(t, cfg)
	ctx := ctxT(t)
	counts := func(what string, rev int64, created, changed, deleted int) {
		t.Helper()
		rs := releases(t, a)
		c, ch, d := rs[0].Counts()
		if rs[0].Revision != rev || c != created || ch != changed || d != deleted {
			t.Fatalf("%s: newest release at %d counts %d/%d/%d, want at %d %d/%d/%d", what, rs[0].Revision, c, ch, d, rev, created, changed, deleted)
		}
	}
	// A transaction of n shared keys has 3n+1 compares with its release's (its guards, the
	// rollout's of each shared key, the marker): it crosses at 42; an apply of n keys over as
	// many (2n+2) at 63.
	for n := 38; n <= 68; n++ {
		// Two parents: the keys are read back as two ranges.
		key := func(i int) string { return fmt.Sprintf("shared/n%d/p%d/k%03d", n, i%2, i) }
		var txn api.Txn
		for i := range n {
			txn.Ops = append(txn.Ops, api.Op{Op: api.OpPut, Key: key(i), Value: "1"})
			txn.Guards = append(txn.Guards, api.Guard{Key: key(i), ModRevision: 0})
		}
		rev, err := a.Txn(relCtx(t, api.KindTxn), txn)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		counts(fmt.Sprintf("n=%d: create", n), rev, n, 0, 0)
		// Behind a's cache: b rewrites one key, deletes another.
		last, err := b.Put(relCtx(t, api.KindPut), key(n-1), "2", -1)
		if err != nil {
			t.Fatal(err)
		}
		gone, _, err := b.Delete(relCtx(t, api.KindDelete), key(0), false)
		if err != nil {
			t.Fatal(err)
		}
		nrel := len(releases(t, a))
		for i := range n {
			txn.Ops[i].Value = "3"
			txn.Guards[i].ModRevision = rev // stale for key(0) and key(n-1)
		}
		if _, err := a.Txn(relCtx(t, api.KindTxn), txn); !isCode(err, api.CodeConflict) || containsText(err, "kept changing") {
			t.Fatalf("n=%d: txn with stale guards: %v, want the guard's conflict", n, err)
		}
		if got, _, err := a.Get(ctx, key(n-1)); err != nil || got.Value != "2" {
			t.Fatalf("n=%d: after the refused txn %s is %+v (%v)", n, key(n-1), got, err)
		}
		if len(releases(t, a)) != nrel {
			t.Fatalf("n=%d: the refused txn has a release", n)
		}
		txn.Guards[0].ModRevision, txn.Guards[n-1].ModRevision = 0, last
		if rev, err = a.Txn(relCtx(t, api.KindTxn), txn); err != nil {
			t.Fatalf("n=%d: txn with the right guards (after %d): %v", n, gone, err)
		}
		counts(fmt.Sprintf("n=%d: txn", n), rev, 1, n-1, 0)

		// An apply of n keys over a tree that b changed behind a's cache.
		name := fmt.Sprintf("bulk%d", n)
		tree := map[string]string{}
		for i := range n {
			tree[fmt.Sprintf("k%03d", i)] = "1"
		}
		if rev, err = a.Apply(store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Kind: api.KindApply, Appliance: name}), name, tree, -1); err != nil {
			t.Fatalf("n=%d: apply: %v", n, err)
		}
		counts(fmt.Sprintf("n=%d: apply", n), rev, n, 0, 0)
		if _, err := b.Put(relCtx(t, api.KindPut), api.ApplianceRoot(name)+"/k000", "2", -1); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Delete(relCtx(t, api.KindDelete), api.ApplianceRoot(name)+"/k001", false); err != nil {
			t.Fatal(err)
		}
		for k := range tree {
			tree[k] = "3"
		}
		delete(tree, "k002")
		if rev, err = a.Apply(store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Kind: api.KindApply, Appliance: name}), name, tree, -1); err != nil {
			t.Fatalf("n=%d: apply again: %v", n, err)
		}
		counts(fmt.Sprintf("n=%d: apply again", n), rev, 1, n-2, 1)
	}
}
