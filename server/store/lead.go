package store

import (
	"context"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// leaderTTL is the lease of an elected replica, in seconds: when it dies, another one takes
// over within about this long.
const leaderTTL = 10

// Lead runs fn while this replica (id) is the elected leader of role, among every replica of
// the store, until ctx ends: it campaigns through an etcd election under a lease of its own,
// runs fn with a context that ends when the lease is lost (or ctx ends), and campaigns again.
// At most one replica runs fn for a role at a time, for as long as the lease holds.
func (s *Store) Lead(ctx context.Context, role, id string, fn func(ctx context.Context), log *slog.Logger) {
	pause := time.Second
	for ctx.Err() == nil {
		if err := s.leadOnce(ctx, role, id, fn); err != nil && ctx.Err() == nil {
			log.Debug("election", "role", role, "err", err)
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			pause = min(2*pause, 30*time.Second)
			continue
		}
		pause = time.Second
	}
}

func (s *Store) leadOnce(ctx context.Context, role, id string, fn func(ctx context.Context)) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(leaderTTL), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, s.sysRoot+"leaders/"+role)
	if err := el.Campaign(ctx, id); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	fn(lctx)
	if ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = el.Resign(rctx)
		rcancel()
	}
	return nil
}
