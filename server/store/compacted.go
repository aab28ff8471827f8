package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// compactedProbeFresh is how long an answer that a revision is kept holds for it and every later
// revision (see Compacted).
const compactedProbeFresh = 100 * time.Millisecond

// compactedCache is what Compacted learnt of etcd's compaction, which only moves forward: every
// revision below below is compacted; from kept on none was, at keptAt (unix nanoseconds). Read
// without a lock (see Compacted); mu orders the probes' updates and guards flight.
type compactedCache struct {
	below, kept, keptAt atomic.Int64
	mu                  sync.Mutex
	flight              chan struct{} // closed when the probe under way ends; nil: none
	probes              atomic.Int64  // etcd asked, all told (for tests)
}

// known answers from what the cache holds, when it can.
func (c *compactedCache) known(rev int64) (known, compacted bool) {
	if rev < c.below.Load() {
		return true, true
	}
	if k := c.kept.Load(); k > 0 && rev >= k && time.Now().UnixNano()-c.keptAt.Load() < int64(compactedProbeFresh) {
		return true, false
	}
	return false, false
}

// Compacted reports whether etcd compacted rev away: its history no longer reaches it (rev is
// below the compaction revision). A long-poll's index is asked about each time one would wait,
// on the long-poll's own goroutine, whose stack stays at its first 4 KiB only if nothing it
// calls goes deep — a contended lock or a call to etcd would grow it to 8 KiB for as long as the
// long-poll waits, 40 MB for 10,000 (measured: 19.5 → 25–35 KiB per waiter). So answers are
// reused, read from atomics: a revision found compacted, for good; one found kept (and every
// later one), for compactedProbeFresh. Otherwise the question goes to a goroutine of its own,
// where one probe at a time asks etcd (in process of an embedded etcd, by a serializable read at
// rev of an external one) and the others wait for its answer: 10,000 long-polls arriving
// together ask once. A revision a lagging member has not reached yet is not compacted.
func (s *Store) Compacted(ctx context.Context, rev int64) (bool, error) {
	return s.CompactedWithin(ctx, rev, 0)
}

// CompactedWithin is Compacted asking etcd for at most d (0: the store's request timeout); an
// error says that it could not tell in time. The bound is set on Compacted's own goroutine, where
// it costs the caller's stack nothing.
func (s *Store) CompactedWithin(ctx context.Context, rev int64, d time.Duration) (bool, error) {
	if known, compacted := s.compacted.known(rev); known {
		return compacted, nil
	}
	type answer struct {
		compacted bool
		err       error
	}
	ch := make(chan answer, 1)
	go func() {
		if d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		compacted, err := s.compactedSlow(ctx, rev)
		ch <- answer{compacted, err}
	}()
	a := <-ch
	return a.compacted, a.err
}

// compactedSlow is Compacted when the cache cannot answer: it joins the probe under way, and
// probes itself when that one's answer does not cover rev.
func (s *Store) compactedSlow(ctx context.Context, rev int64) (bool, error) {
	c := &s.compacted
	for {
		if known, compacted := c.known(rev); known {
			return compacted, nil
		}
		c.mu.Lock()
		if f := c.flight; f != nil {
			c.mu.Unlock()
			select {
			case <-f:
				continue
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		f := make(chan struct{})
		c.flight = f
		c.mu.Unlock()
		compacted, err := s.probeCompacted(ctx, rev)
		c.mu.Lock()
		c.flight = nil
		c.mu.Unlock()
		close(f)
		return compacted, err
	}
}

// probeCompacted asks etcd whether rev is compacted and records the answer (see Compacted).
func (s *Store) probeCompacted(ctx context.Context, rev int64) (bool, error) {
	s.compacted.probes.Add(1)
	asked := time.Now()
	var err error
	if s.embed != nil {
		tx := s.embed.e.Server.KV().Read(mvcc.SharedBufReadTxMode, traceutil.TODO())
		if rev < tx.FirstRev() {
			err = rpctypes.ErrCompacted
		}
		tx.End()
	} else {
		ctx, cancel := s.opCtx(ctx)
		defer cancel()
		_, err = s.cli.Get(ctx, s.sysRoot+storeIDKey, clientv3.WithRev(rev), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err != nil && !errors.Is(err, rpctypes.ErrCompacted) && !errors.Is(err, rpctypes.ErrFutureRev) {
			return false, s.etcdErr(ctx, "read at a revision", err)
		}
	}
	c := &s.compacted
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		c.below.Store(max(c.below.Load(), rev+1))
		return true, nil
	case err != nil: // ahead of a lagging member
		return false, nil
	}
	// Kept at asked: so is every later revision, then and before (compaction only moves
	// forward), which makes either order of the two stores safe for a reader between them.
	if k := c.kept.Load(); k == 0 || rev < k || asked.UnixNano()-c.keptAt.Load() >= int64(compactedProbeFresh) {
		c.kept.Store(rev)
		c.keptAt.Store(asked.UnixNano())
	}
	return false, nil
}
