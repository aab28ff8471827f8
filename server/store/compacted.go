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

	"github.com/shoelace-dev/shoelace/internal/api"
)

// compactedProbeFresh is how long an answer that a revision is kept holds for it and every later
// revision (see Compacted).
const compactedProbeFresh = 100 * time.Millisecond

// compactedCache is what Compacted learnt of etcd's compaction, which only moves forward: every
// revision below below is compacted; from kept on none was, at keptAt (unix nanoseconds). Read
// without a lock (see Compacted); mu orders the probes' updates.
type compactedCache struct {
	below, kept, keptAt atomic.Int64
	mu                  sync.Mutex
	flight              atomic.Pointer[compactedProbe] // the probe under way; nil: none
	probes              atomic.Int64                   // etcd asked, all told (for tests)
}

// compactedProbe is one question to etcd, of revision rev, and its answer once done is closed.
// bounded says that done closes by deadline (unix nanoseconds): the probe asks an external etcd
// within it (the embedded etcd is read without a deadline).
type compactedProbe struct {
	rev       int64
	done      chan struct{}
	deadline  int64
	bounded   bool
	compacted bool
	err       error
}

// answers reports whether p's answer (p done) answers the question of rev: compacted when rev is
// no later than a revision found compacted, kept when no earlier than one found kept.
func (p *compactedProbe) answers(rev int64) (ok, compacted bool, err error) {
	switch {
	case p.err != nil:
		return true, false, p.err
	case p.compacted:
		return rev <= p.rev, true, nil
	default:
		return rev >= p.rev, false, nil
	}
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
// later one), for compactedProbeFresh. Otherwise one probe at a time, on a goroutine of its own,
// asks etcd (in process of an embedded etcd, by a serializable read at rev of an external one),
// and the questions that arrive meanwhile wait for its answer where they are: 10,000 long-polls
// arriving together ask once and start one goroutine between them. A revision a lagging member
// has not reached yet is not compacted.
//
// Before, each question the cache could not answer started a goroutine to wait on; a probe that
// took longer than compactedProbeFresh (an external etcd busy with writes) answered only the
// question that started it, and the others asked again one by one: 10,000 long-polls opening
// while 10,000 first reports were written left 10,000 goroutines' descriptors and stacks behind
// (the runtime keeps them for reuse), 1–1.5 KiB per waiter.
func (s *Store) Compacted(ctx context.Context, rev int64) (bool, error) {
	return s.CompactedWithin(ctx, rev, 0)
}

// CompactedWithin is Compacted waiting for at most d (0: the store's request timeout); an error
// says that it could not tell in time.
func (s *Store) CompactedWithin(ctx context.Context, rev int64, d time.Duration) (bool, error) {
	if known, compacted := s.compacted.known(rev); known {
		return compacted, nil
	}
	if d <= 0 {
		d = s.cfg.RequestTimeout
	}
	// A question waits for a probe that ends within its own time without a timer of its own:
	// 10,000 long-polls opening together each made one (about 300 bytes, kept by the runtime
	// after Stop until it next cleans its timers), 2–3 MB of the server's heap when they are
	// answered (see the twentieth round of BENCHMARKS.md).
	deadline := time.Now().Add(d).UnixNano()
	var timeout <-chan time.Time // nil: waits for probes that end by deadline only
	c := &s.compacted
	for {
		p := c.flight.Load()
		if p == nil {
			p = &compactedProbe{rev: rev, done: make(chan struct{}), deadline: deadline, bounded: s.embed == nil}
			if !c.flight.CompareAndSwap(nil, p) {
				continue
			}
			go s.runCompactedProbe(p)
		}
		if timeout == nil && (!p.bounded || p.deadline > deadline) {
			t := time.NewTimer(time.Duration(deadline - time.Now().UnixNano()))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timeout:
			return false, api.Errorf(api.CodeUnavailable, "read at a revision: etcd did not answer within %v", d)
		}
		if ok, compacted, err := p.answers(rev); ok {
			return compacted, err
		}
		if known, compacted := c.known(rev); known {
			return compacted, nil
		}
		// That probe asked of another revision: ask of this one.
	}
}

// runCompactedProbe asks etcd p's question until p's deadline, while the store is open, then
// lets the questions waiting for it go.
func (s *Store) runCompactedProbe(p *compactedProbe) {
	ctx, cancel := context.WithDeadline(s.ctx, time.Unix(0, p.deadline))
	defer cancel()
	p.compacted, p.err = s.probeCompacted(ctx, p.rev)
	s.compacted.flight.CompareAndSwap(p, nil) // before done: a question woken asks anew
	close(p.done)
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
