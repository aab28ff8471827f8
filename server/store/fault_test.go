package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
	"github.com/shoelace-dev/shoelace/server/store"
)

// proxied opens a store whose etcd client goes through the given proxies, on the root of
// direct (a store straight on etcd, to check what etcd holds).
func proxied(t *testing.T, direct *store.Store, mod func(*store.Config), proxies ...*faultproxy.Proxy) *store.Store {
	t.Helper()
	return openStore(t, func(c *store.Config) {
		c.Root = direct.Root()
		c.Endpoints = nil
		for _, p := range proxies {
			c.Endpoints = append(c.Endpoints, p.URL())
		}
		if mod != nil {
			mod(c)
		}
	})
}

// writeCase is one kind of write, checked against what etcd holds afterwards.
type writeCase struct {
	name  string
	write func(ctx context.Context, s *store.Store) (int64, error)
	check func(t *testing.T, direct *store.Store, rev int64)
}

// keyAt fails the test unless key holds value, written at rev.
func keyAt(t *testing.T, s *store.Store, key, value string, rev int64) {
	t.Helper()
	kv, _, err := s.Get(ctxT(t), key)
	if err != nil || kv.Value != value || kv.ModRevision != rev {
		t.Fatalf("get %s = %+v, %v; want value %q at revision %d", key, kv, err, value, rev)
	}
}

func gone(t *testing.T, s *store.Store, key string) {
	t.Helper()
	if _, _, err := s.Get(ctxT(t), key); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("get %s: %v, want not found", key, err)
	}
}

func withRel(ctx context.Context) context.Context {
	return store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Kind: api.KindPut})
}

// oneReleaseAt fails the test unless exactly one release record has revision rev.
func oneReleaseAt(t *testing.T, s *store.Store, rev int64) {
	t.Helper()
	n := 0
	for _, r := range releases(t, s) {
		if r.Revision == rev {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d release records at revision %d, want 1", n, rev)
	}
}

func writeCases(t *testing.T, direct *store.Store) []writeCase {
	mustPut(t, direct, "shared/del", "x")
	mustPut(t, direct, "shared/tree/a", "x")
	mustPut(t, direct, "shared/tree/b", "x")
	casRev := mustPut(t, direct, "shared/cas", "old")
	if _, err := direct.SysPut(ctxT(t), "tokens/gone", []byte("x"), -1); err != nil {
		t.Fatal(err)
	}
	mustPut(t, direct, "shared/reldel", "x")
	return []writeCase{
		{"put", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Put(ctx, "shared/put", "v", -1)
		}, func(t *testing.T, d *store.Store, rev int64) { keyAt(t, d, "shared/put", "v", rev) }},
		// Writes with a release: their record, not a marker, tells that they applied.
		{"put-release", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Put(withRel(ctx), "shared/relput", "v", 0)
		}, func(t *testing.T, d *store.Store, rev int64) {
			keyAt(t, d, "shared/relput", "v", rev)
			oneReleaseAt(t, d, rev)
		}},
		{"delete-release", func(ctx context.Context, s *store.Store) (int64, error) {
			rev, _, err := s.Delete(withRel(ctx), "shared/reldel", false)
			return rev, err
		}, func(t *testing.T, d *store.Store, rev int64) {
			gone(t, d, "shared/reldel")
			oneReleaseAt(t, d, rev)
		}},
		{"put-cas-new", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Put(ctx, "shared/new", "v", 0)
		}, func(t *testing.T, d *store.Store, rev int64) { keyAt(t, d, "shared/new", "v", rev) }},
		{"put-cas", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Put(ctx, "shared/cas", "new", casRev)
		}, func(t *testing.T, d *store.Store, rev int64) { keyAt(t, d, "shared/cas", "new", rev) }},
		{"txn", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Txn(ctx, api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "shared/t1", Value: "1"}, {Op: api.OpPut, Key: "shared/t2", Value: "2"}}})
		}, func(t *testing.T, d *store.Store, rev int64) {
			keyAt(t, d, "shared/t1", "1", rev)
			keyAt(t, d, "shared/t2", "2", rev)
		}},
		{"delete", func(ctx context.Context, s *store.Store) (int64, error) {
			rev, n, err := s.Delete(ctx, "shared/del", false)
			if err == nil && n != 1 {
				t.Errorf("delete answered %d keys deleted, want 1", n)
			}
			return rev, err
		}, func(t *testing.T, d *store.Store, rev int64) { gone(t, d, "shared/del") }},
		{"delete-recurse", func(ctx context.Context, s *store.Store) (int64, error) {
			rev, n, err := s.Delete(ctx, "shared/tree", true)
			if err == nil && n != 2 {
				t.Errorf("recursive delete answered %d keys deleted, want 2", n)
			}
			return rev, err
		}, func(t *testing.T, d *store.Store, rev int64) { gone(t, d, "shared/tree/a") }},
		{"apply", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.Apply(ctx, "web", map[string]string{"a": "1"}, -1)
		}, func(t *testing.T, d *store.Store, rev int64) { keyAt(t, d, "appliances/web/a", "1", rev) }},
		{"sys-put", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.SysPut(ctx, "tokens/t", []byte("h"), 0)
		}, func(t *testing.T, d *store.Store, rev int64) {
			v, mod, err := d.SysGet(ctxT(t), "tokens/t")
			if err != nil || string(v) != "h" || mod != rev {
				t.Fatalf("sys key = %q at %d, %v; want \"h\" at %d", v, mod, err, rev)
			}
		}},
		{"sys-delete", func(ctx context.Context, s *store.Store) (int64, error) {
			return s.SysDelete(ctx, "tokens/gone")
		}, func(t *testing.T, d *store.Store, rev int64) {
			if _, _, err := d.SysGet(ctxT(t), "tokens/gone"); !errors.Is(err, api.ErrNotFound) {
				t.Fatalf("sys key still there: %v", err)
			}
		}},
	}
}

// A write that etcd applied but whose answer was lost (the connection broke after etcd
// answered) is settled and answered as the success it was, at its revision — never as a
// failure that says it was not applied (a retry with cas would then meet its own write).
func TestStore_WriteAppliedAnswerLost(t *testing.T) {
	direct := openStore(t)
	p := faultproxy.Start(t, etcd(t).Endpoints()[0])
	s := proxied(t, direct, nil, p)
	for _, c := range writeCases(t, direct) {
		t.Run(c.name, func(t *testing.T) {
			cuts := p.Cuts()
			p.CutAfterReply(faultproxy.Writes, false)
			rev, err := c.write(ctxT(t), s)
			p.Disarm()
			if p.Cuts() != cuts+1 {
				t.Fatalf("the proxy cut %d connections, want 1", p.Cuts()-cuts)
			}
			if err != nil {
				t.Fatalf("write whose answer was lost: %v; want the success etcd applied", err)
			}
			c.check(t, direct, rev)
		})
	}
}

// A write that was sent but never reached etcd is settled as not applied and tried again: a
// put with cas=0 of a new key succeeds once, instead of failing (or meeting itself on a retry).
func TestStore_WriteLostBeforeEtcdIsTriedAgain(t *testing.T) {
	direct := openStore(t)
	p := faultproxy.Start(t, etcd(t).Endpoints()[0])
	s := proxied(t, direct, nil, p)
	mustPut(t, s, "shared/warm", "x") // connected, with a marker lease
	p.CutBeforeRequest(faultproxy.Writes, false)
	rev, err := s.Put(ctxT(t), "shared/once", "v", 0)
	if p.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", p.Cuts())
	}
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	kv, _, err := direct.Get(ctxT(t), "shared/once")
	if err != nil || kv.ModRevision != rev || kv.Version != 1 {
		t.Fatalf("key = %+v, %v; want version 1 at revision %d", kv, err, rev)
	}
}

// When the outcome cannot be learnt, the answer says so (outcome_unknown: check, then retry),
// and a write that never left says it was not applied.
func TestStore_WriteOutcomeUnknown(t *testing.T) {
	direct := openStore(t)
	p := faultproxy.Start(t, etcd(t).Endpoints()[0])
	s := proxied(t, direct, func(c *store.Config) {
		c.RequestTimeout = time.Second
		c.AttemptTimeout = 200 * time.Millisecond
	}, p)
	mustPut(t, s, "shared/warm", "x")

	p.CutAfterReply(faultproxy.Writes, true) // the answer is lost, then etcd is unreachable
	_, err := s.Put(ctxT(t), "shared/applied", "v", -1)
	wantCode(t, err, api.CodeOutcomeUnknown, "put shared/applied", "outcome is unknown", "check, then retry")
	if !errors.Is(err, &api.Error{Code: api.CodeOutcomeUnknown}) || errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("%v is not only outcome_unknown", err)
	}
	kv, _, gerr := direct.Get(ctxT(t), "shared/applied")
	if gerr != nil || kv.Value != "v" {
		t.Fatalf("etcd holds %+v, %v; the write was applied", kv, gerr)
	}

	// Unreachable before the request left: not applied, and the message says so.
	_, err = s.Put(ctxT(t), "shared/never", "v", -1)
	wantCode(t, err, api.CodeUnavailable, "not applied", "retry")
	p.Up()
	gone(t, direct, "shared/never")
}

// A frozen member (its connection open, nothing answered, as a SIGSTOPped etcd) costs a
// request one try: reads and writes routed to it are tried again on another member.
func TestStore_FrozenMemberCostsOneTry(t *testing.T) {
	direct := openStore(t)
	var ps []*faultproxy.Proxy
	for range 3 {
		ps = append(ps, faultproxy.Start(t, etcd(t).Endpoints()[0]))
	}
	const try = 300 * time.Millisecond
	s := proxied(t, direct, func(c *store.Config) {
		c.RequestTimeout = 10 * time.Second
		c.AttemptTimeout = try
	}, ps...)
	ctx := ctxT(t)
	for i := range 6 { // every member connected, and the marker lease granted
		mustPut(t, s, "shared/warm", string(rune('a'+i)))
	}
	ps[0].Freeze()
	defer ps[0].Thaw()

	ops := []struct {
		name string
		do   func() error
	}{
		{"get", func() error { _, _, err := s.Get(ctx, "shared/warm"); return err }},
		{"list", func() error { _, _, err := s.List(ctx, "shared", false); return err }},
		{"revision", func() error { _, err := s.Revision(ctx); return err }},
		{"put", func() error { _, err := s.Put(ctx, "shared/p", "1", -1); return err }},
		{"sys-get", func() error { _, _, err := s.SysGet(ctx, "store-id"); return err }},
		{"txn", func() error {
			_, err := s.Txn(ctx, api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "shared/q", Value: "1"}}})
			return err
		}},
		{"apply", func() error { _, err := s.Apply(ctx, "web", map[string]string{"a": "1"}, -1); return err }},
		{"view", func() error { _, err := s.View(ctx, "web"); return err }},
	}
	// Each op at least once on every member: the balancer takes them in turn.
	for round := range 3 {
		for _, op := range ops {
			start := time.Now()
			err := op.do()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("round %d, %s with a frozen member: %v (after %s)", round, op.name, err, took.Round(time.Millisecond))
			}
			// A try on the frozen member, a fence and a try elsewhere: well under the
			// request timeout that bounded a call before.
			if bound := 12 * try; took > bound {
				t.Fatalf("round %d, %s took %s with a frozen member, want under %s", round, op.name, took, bound)
			}
		}
	}
}

// A watch whose member freezes hears nothing: it asks for progress, ends after three times
// WatchProgressInterval (the store is past it), and watching again (as the hub does) goes through another member, so
// changes keep coming while the member is frozen.
func TestStore_WatchOnFrozenMemberMovesOn(t *testing.T) {
	direct := openStore(t)
	var ps []*faultproxy.Proxy
	for range 3 {
		ps = append(ps, faultproxy.Start(t, etcd(t).Endpoints()[0]))
	}
	s := proxied(t, direct, func(c *store.Config) {
		c.WatchProgressInterval = 100 * time.Millisecond
		c.AttemptTimeout = 300 * time.Millisecond
	}, ps...)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	from, err := direct.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys := make(chan string, 100)
	silent := make(chan error, 100)
	done := make(chan struct{})
	go func() { // the hub's loop, in short
		defer close(done)
		from := from + 1
		for ctx.Err() == nil {
			ch, errf := s.WatchChanges(ctx, from)
			for ev := range ch {
				for _, k := range ev.Keys {
					keys <- k
				}
				from = ev.Revision + 1
			}
			if err := errf(); err != nil {
				silent <- err
			}
		}
	}()
	defer func() { cancel(); <-done }()
	wait := func(key string, within time.Duration) {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case k := <-keys:
				if k == key {
					return
				}
			case <-timeout:
				t.Fatalf("no watch event for %s within %s", key, within)
			}
		}
	}
	mustPut(t, direct, "shared/k0", "x")
	wait("shared/k0", 10*time.Second)
	// The proxy carrying the watch is the one that forwards its next event: the only one that
	// carried bytes while it came (keepalives on the others can share the moment: try again).
	carrier := faultproxy.Carrier(t, ps, func(try int) {
		k := fmt.Sprintf("shared/k1-%d", try)
		mustPut(t, direct, k, "x")
		wait(k, 10*time.Second)
	})
	ps[carrier].Freeze()
	defer ps[carrier].Thaw()
	for _, k := range []string{"shared/k2", "shared/k3"} {
		mustPut(t, direct, k, "x")
		wait(k, 5*time.Second)
	}
	select {
	case err := <-silent:
		if !errors.Is(err, store.ErrWatchSilent) {
			t.Fatalf("the watch ended with %v, want ErrWatchSilent", err)
		}
	default:
		t.Fatal("the frozen watch did not end")
	}
}
