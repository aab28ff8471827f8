package store_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// mustKeep is what a pass with every record known keeps of rs (no age or byte limit): the
// newest count releases of each scope, and the newest release.
func mustKeep(rs []api.Release, count int) map[string]bool {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b api.Release) int { return int(b.Revision - a.Revision) })
	keep := map[string]bool{}
	per := map[string]int{}
	for i, r := range rs {
		scopes := []string{""}
		if len(r.Changes) > 0 {
			scopes = scopes[:0]
			for _, c := range r.Changes {
				scopes = append(scopes, c.Scope+"/"+c.Appliance)
			}
		}
		for _, sc := range scopes {
			if per[sc] < count {
				keep[r.ID] = true
			}
			per[sc]++
		}
		if i == 0 {
			keep[r.ID] = true
		}
	}
	return keep
}

// Several replicas write to overlapping scopes and prune with what they know (their own
// records at once, the others' at their next full listing, records the others pruned counted
// until then): no pass deletes a release that a pass knowing every record keeps.
func TestStore_PruneReplicasNeverPruneWhatTheRetentionKeeps(t *testing.T) {
	const count = 2
	for seed := range 4 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg := testConfig(t)
			var reps []*store.Store
			for range 3 {
				reps = append(reps, openStoreWith(t, cfg))
			}
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			targets := [][]string{{"appliances/web/k"}, {"appliances/db/k"}, {"appliances/web/k", "appliances/db/k"}, {"shared/k"}, {"shared/k", "appliances/db/k"}}
			for step := range 160 {
				s := reps[rng.IntN(len(reps))]
				switch p := rng.IntN(10); {
				case p < 6:
					var ops []api.Op
					for _, k := range targets[rng.IntN(len(targets))] {
						ops = append(ops, api.Op{Op: api.OpPut, Key: k, Value: fmt.Sprint(step)})
					}
					if _, err := s.Txn(relCtx(t, api.KindTxn), api.Txn{Ops: ops}); err != nil {
						t.Fatal(err)
					}
				case p < 9:
					before := releases(t, s)
					keep := mustKeep(before, count)
					if _, err := s.PruneReleases(ctxT(t), store.Retention{Count: count}, time.Now()); err != nil {
						t.Fatal(err)
					}
					left := map[string]bool{}
					for _, r := range releases(t, s) {
						left[r.ID] = true
					}
					for id := range keep {
						if !left[id] {
							t.Fatalf("step %d: a pass deleted release %s, which the retention keeps (%d releases before)", step, id, len(before))
						}
					}
				default:
					store.AgeReleaseListing(s, 10*time.Minute)
				}
			}
		})
	}
}

// restoreEnv is a store on an etcd of its own, which the test can replace under it (the same
// client address, so the store's client reconnects to the new one).
type restoreEnv struct {
	dir, addr string
	e         *store.EmbeddedEtcd
	s         *store.Store
}

func newRestoreEnv(t *testing.T) *restoreEnv {
	t.Helper()
	dir := t.TempDir()
	e, err := store.StartEmbedded(ctxT(t), store.EmbedConfig{Dir: filepath.Join(dir, "a", "etcd"), Logger: quietLogger(), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	env := &restoreEnv{dir: dir, addr: strings.TrimPrefix(e.Endpoints()[0], "http://"), e: e}
	t.Cleanup(func() { env.e.Close() })
	env.s = openStoreWith(t, store.Config{Endpoints: e.Endpoints(), Root: "/shoelace/", Logger: quietLogger(), MaxTxnOps: 50})
	return env
}

// replace stops the etcd and starts the one in etcdDir at its address.
func (env *restoreEnv) replace(t *testing.T, etcdDir string) {
	t.Helper()
	env.e.Close()
	e, err := store.StartEmbedded(ctxT(t), store.EmbedConfig{Dir: etcdDir, ClientAddr: env.addr, Logger: quietLogger(), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	env.e = e
}

// put writes web's key with a release, trying again while the client reconnects.
func (env *restoreEnv) put(t *testing.T, v string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := env.s.Put(relCtx(t, api.KindPut), "appliances/web/k", v, -1)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ids(rs []api.Release) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s@%d", r.ID, r.Revision))
	}
	return out
}

// The store restored from a snapshot under a running server (RUNBOOK: etcdutl snapshot restore
// --bump-revision, then the replicas restarted): a pass must not count the records made after
// the snapshot, which the restore took away, and prune the restored releases that the
// retention keeps. Either the newest record the last pass knew is gone (the lost records were
// known to a pass), or the replica's next write jumped ahead by the restore's bump (they were
// made since): the pass lists them all.
func TestStore_PruneAfterRestoreKeepsRestoredReleases(t *testing.T) {
	for _, passedLost := range []bool{true, false} {
		t.Run(fmt.Sprintf("lost records seen by a pass=%v", passedLost), func(t *testing.T) {
			env := newRestoreEnv(t)
			pass := func(count int) {
				t.Helper()
				if _, err := env.s.PruneReleases(ctxT(t), store.Retention{Count: count}, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			env.put(t, "r1")
			env.put(t, "r2") // the snapshot holds r1 and r2 of web
			pass(10)
			snap := filepath.Join(env.dir, "snap.db")
			f, err := os.Create(snap)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.s.Snapshot(ctxT(t), f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			restored := releases(t, env.s)
			env.put(t, "s1")
			env.put(t, "s2") // lost with the restore
			if passedLost {
				pass(10)
			}

			env.e.Close()
			if _, err := store.Restore(ctxT(t), store.RestoreConfig{SnapshotPath: snap, DataDir: filepath.Join(env.dir, "b"), Root: "/shoelace/", Logger: quietLogger()}); err != nil {
				t.Fatal(err)
			}
			env.replace(t, store.EtcdDir(filepath.Join(env.dir, "b")))
			env.put(t, "n1")
			before := releases(t, env.s)
			if len(before) != 3 {
				t.Fatalf("after the restore and one write: %v, want r2, r1 and the new one", ids(before))
			}
			pass(2)
			after := releases(t, env.s)
			if len(after) != 2 || after[1].ID != restored[0].ID {
				t.Fatalf("a pass after the restore left %v of %v; want the new release and the newest restored one, %s (Count 2)", ids(after), ids(before), restored[0].ID)
			}
		})
	}
}

// The store replaced under a running server by one whose revisions are lower (a new cluster,
// or a snapshot restored without --bump-revision): until its next full listing, a pass counts
// the old store's records, newer by mod revision than anything in the new one, and deletes
// the new store's newest release.
func TestStore_PruneAfterStoreReplacedKeepsNewestRelease(t *testing.T) {
	env := newRestoreEnv(t)
	for i := range 30 { // the old store's revisions run ahead of the new one's
		if _, err := env.s.Put(ctxT(t), "shared/filler", fmt.Sprint(i), -1); err != nil {
			t.Fatal(err)
		}
	}
	env.put(t, "o1")
	env.put(t, "o2")
	if _, err := env.s.PruneReleases(ctxT(t), store.Retention{Count: 10}, time.Now()); err != nil {
		t.Fatal(err)
	}
	env.replace(t, filepath.Join(env.dir, "c", "etcd"))
	env.put(t, "n1")
	before := releases(t, env.s)
	if len(before) != 1 {
		t.Fatalf("the new store: %v, want one release", ids(before))
	}
	if _, err := env.s.PruneReleases(ctxT(t), store.Retention{Count: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if after := releases(t, env.s); len(after) != 1 {
		t.Fatalf("a pass deleted the store's only (newest) release %v", ids(before))
	}
}

// The pruner wakes every quarter of the records the last pass knew (kickPruner): a pass that
// deleted most of them knows only those it kept, not those it deleted.
func TestStore_KnownReleasesCountsWhatThePassKept(t *testing.T) {
	s := openStore(t)
	putWeb(t, s, 40)
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 4}, time.Now()); err != nil || n != 36 {
		t.Fatalf("prune 40 to 4: %d pruned, %v; want 36", n, err)
	}
	if got := s.KnownReleases(); got != 4 {
		t.Fatalf("KnownReleases after a pass that kept 4 of 40: %d, want 4", got)
	}
}
