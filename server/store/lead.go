package store

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Timings of Lead.
const (
	// leaderTTL is the lease of an elected replica, in seconds: when it dies, another one takes
	// over within about this long.
	leaderTTL = 10
	// leaderRetry is how often a replica that is not the leader tries to become it.
	leaderRetry = 2 * time.Second
)

// Lead runs fn while this replica (id) is the elected leader of role, among every replica of
// the store, until ctx ends. The leader holds the system key leaders/<role>, created only
// while absent and bound to a lease of its own that it keeps alive; fn's context ends when the
// lease is lost (or ctx ends), and the replica tries again. The others try every leaderRetry.
// At most one replica runs fn for a role at a time, for as long as its lease holds. Every etcd
// call is bounded by ctx (so that Lead returns at once when ctx ends, even with etcd away).
func (s *Store) Lead(ctx context.Context, role, id string, fn func(ctx context.Context), log *slog.Logger) {
	for ctx.Err() == nil {
		led, err := s.leadOnce(ctx, role, id, fn)
		if err != nil && ctx.Err() == nil {
			log.Debug("election", "role", role, "err", err)
		}
		if led {
			continue
		}
		t := time.NewTimer(leaderRetry)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// leadOnce tries to become the leader of role once; when it does, it runs fn until the lease
// is lost, and reports true.
func (s *Store) leadOnce(ctx context.Context, role, id string, fn func(ctx context.Context)) (bool, error) {
	key := s.sysRoot + "leaders/" + role
	gctx, cancel := s.opCtx(ctx)
	lease, err := s.cli.Grant(gctx, leaderTTL)
	cancel()
	if err != nil {
		return false, err
	}
	revoke := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_, _ = s.cli.Revoke(rctx, lease.ID)
	}
	tctx, cancel := s.opCtx(ctx)
	resp, err := s.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, id, clientv3.WithLease(lease.ID))).Commit()
	cancel()
	if err != nil || !resp.Succeeded {
		revoke()
		return false, err
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	alive, err := s.cli.KeepAlive(lctx, lease.ID)
	if err != nil {
		revoke()
		return false, err
	}
	go func() {
		for range alive { // closed when the lease cannot be kept alive any more, or lctx ends
		}
		stop()
	}()
	fn(lctx)
	revoke() // hand over at once rather than at the lease's expiry
	return true, nil
}

// freeLeaders revokes the leases of the leaders' keys that an embedded store holds as it
// starts, which deletes the keys: an embedded store is one replica's alone (it never sits
// behind several), so such a lease is of no live replica — of this one's previous life, killed
// before it could hand over, or of the snapshot the store was restored from — and etcd keeps it
// for its whole TTL after it starts, during which no replica could lead (rollouts stood still
// for about 12 s). A store that cannot do it now lets the leases expire, as before.
func (s *Store) freeLeaders(ctx context.Context) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+"leaders/", clientv3.WithPrefix()) // keys only would leave the lease out
	if err != nil {
		s.log.Warn("read the leaders' keys of the store's previous run; they hold until their lease expires", "err", err)
		return
	}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			continue
		}
		if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn("revoke the lease of a leader of the store's previous run; it holds until it expires", "key", string(kv.Key), "err", err)
		}
	}
}
