package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// compactedProbeFresh is how long a probe of an external etcd that found a revision kept answers
// for it and every later revision (see Compacted).
const compactedProbeFresh = 100 * time.Millisecond

// compactedCache is what Compacted learnt of an external etcd's compaction, which only moves
// forward: every revision up to below is compacted; from kept on none was, at keptAt.
type compactedCache struct {
	mu     sync.Mutex
	below  int64
	kept   int64
	keptAt time.Time
}

// Compacted reports whether etcd compacted rev away: its history no longer reaches it (rev is
// below the compaction revision). An embedded etcd is asked in process, at no cost; an external
// one by a serializable read at rev, whose answers are reused briefly (a long-poll's index is
// asked about each time one would wait, and the indexes of a fleet's quiet agents are many).
// A revision a lagging member has not reached yet is not compacted.
func (s *Store) Compacted(ctx context.Context, rev int64) (bool, error) {
	if s.embed != nil {
		tx := s.embed.e.Server.KV().Read(mvcc.SharedBufReadTxMode, traceutil.TODO())
		first := tx.FirstRev()
		tx.End()
		return rev < first, nil
	}
	c := &s.compacted
	c.mu.Lock()
	switch {
	case rev < c.below:
		c.mu.Unlock()
		return true, nil
	case c.kept > 0 && rev >= c.kept && time.Since(c.keptAt) < compactedProbeFresh:
		c.mu.Unlock()
		return false, nil
	}
	c.mu.Unlock()
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	asked := time.Now()
	_, err := s.cli.Get(ctx, s.sysRoot+storeIDKey, clientv3.WithRev(rev), clientv3.WithCountOnly(), clientv3.WithSerializable())
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		c.below = max(c.below, rev+1)
		return true, nil
	case errors.Is(err, rpctypes.ErrFutureRev):
		return false, nil
	case err != nil:
		return false, s.etcdErr(ctx, "read at a revision", err)
	}
	if c.kept == 0 || rev < c.kept || time.Since(c.keptAt) >= compactedProbeFresh {
		c.kept, c.keptAt = rev, asked
	}
	return false, nil
}
