package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
	"github.com/shoelace-dev/shoelace/server/store"
)

// A write to an etcd that answers nothing (its only member frozen) ends by its call's
// deadline, RequestTimeout, with or without a release record to read the keys for, and at
// once when its caller goes away; the store keeps working once etcd answers again.
func TestStore_WriteToFrozenEtcdEndsByItsDeadline(t *testing.T) {
	const request, try = 1500 * time.Millisecond, 200 * time.Millisecond
	s, _, p := warmProxied(t, request, try)
	writes := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"put", func(ctx context.Context) error { _, err := s.Put(ctx, "shared/f", "1", -1); return err }},
		{"put-release", func(ctx context.Context) error { _, err := s.Put(withRel(ctx), "shared/g", "1", -1); return err }},
		{"txn-release", func(ctx context.Context) error {
			_, err := s.Txn(withRel(ctx), api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "shared/h", Value: "1"}}})
			return err
		}},
		{"apply-release", func(ctx context.Context) error {
			_, err := s.Apply(withRel(ctx), "frozen", map[string]string{"a": "1"}, -1)
			return err
		}},
	}
	p.Freeze()
	for _, w := range writes {
		start := time.Now()
		err := w.do(ctxT(t))
		// The bound is loose (a slow machine): what it catches is a write that waits for
		// etcd past its deadline, which it would until the test's own 30 s.
		if took := time.Since(start); err == nil || took > request+4*try {
			t.Errorf("%s to a frozen etcd: %v after %s, want an error by %s", w.name, err, took, request)
		}
		ctx, cancel := context.WithCancel(ctxT(t))
		time.AfterFunc(try/2, cancel)
		start = time.Now()
		err = w.do(ctx)
		if took := time.Since(start); err == nil || took > request/2 {
			t.Errorf("%s to a frozen etcd, its caller gone: %v after %s, want an error at once", w.name, err, took)
		}
	}
	p.Thaw()
	for _, w := range writes {
		if err := w.do(ctxT(t)); err != nil {
			t.Errorf("%s once etcd answers again: %v", w.name, err)
		}
	}
}

// A write sent to an etcd that then answers nothing is settled within the call's deadline, not
// a whole request timeout after its try ended: the fence of a write sent at once to a frozen
// etcd took the try's time and then a request timeout of its own (13 s for the 10 s request
// timeout of a real server). Once etcd answers, the write is there at most once.
func TestStore_WriteToFrozenEtcdSettledWithinItsDeadline(t *testing.T) {
	const request, try = 2 * time.Second, 800 * time.Millisecond
	s, direct, p := warmProxied(t, request, try)
	p.Freeze()
	start := time.Now()
	_, err := s.Put(ctxT(t), "shared/frozen-fence", "1", -1)
	took := time.Since(start)
	p.Thaw()
	wantCode(t, err, api.CodeOutcomeUnknown, "outcome is unknown")
	// The bound is loose (a slow machine): what it catches is a fence that starts a request
	// timeout of its own after the try.
	if took > request+try/2 {
		t.Errorf("a write to a frozen etcd answered after %s, want by its request timeout, %s", took, request)
	}
	mustPut(t, s, "shared/warm", "thawed")
	if kv, _, err := direct.Get(ctxT(t), "shared/frozen-fence"); err == nil && kv.Version != 1 {
		t.Errorf("the write is there %d times", kv.Version)
	}
}

// warmProxied is a store whose etcd is reached through a fault proxy of its own, with the given
// request and attempt timeouts, connected and its marker lease granted by a few writes; direct
// is a store of the same root that reaches etcd without the proxy.
func warmProxied(t *testing.T, request, try time.Duration) (s, direct *store.Store, p *faultproxy.Proxy) {
	t.Helper()
	direct = openStore(t)
	p = faultproxy.Start(t, etcd(t).Endpoints()[0])
	s = proxied(t, direct, func(c *store.Config) {
		c.RequestTimeout = request
		c.AttemptTimeout = try
	}, p)
	for i := range 3 {
		mustPut(t, s, "shared/warm", string(rune('a'+i)))
	}
	return s, direct, p
}
