package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// freshTokens answers the one question the token cache cannot: is a token this replica has not
// seen yet (created a moment ago through another replica, its watch event still on the way) in the
// store? The store's revision, read after the request arrived, says what the cache must have
// applied: once the watch has brought the cache there (reach), the cache answers; a token created
// before the request arrived is in it by then. Reads of the revision are shared like reads of the
// tokens: a request takes the result of one that started after it arrived. Only while the watch
// does not get there within freshWait (it is behind, or broken) are the token records read, at
// most one read at a time, shared by the requests that arrived before it began. So a client
// sending unknown tokens costs a read of the revision, not a read and decoding of every token.
// The result only authenticates requests: the cache is changed by the watch alone, so a read that
// a revocation overtook can never bring a revoked token back.
type freshTokens struct {
	mu      sync.Mutex
	started time.Time // when the last read began
	byHash  map[string]*tokenRecord
	// failed is when the last failed read began, and err its error: requests that arrived
	// before it share that failure instead of each waiting for a read of its own in turn.
	failed time.Time
	err    error
	// since is when this replica last found itself on another store (see Server.adoptStoreID):
	// a read begun before it says nothing of the store it is on now.
	// (Unix nanoseconds; set without mu, which a read holds.)
	since atomic.Int64
	reads atomic.Int64 // reads of the token records made (for tests)

	// The last read of the store's revision, shared as reads of the tokens are (under revMu).
	revMu      sync.Mutex
	revStarted time.Time
	rev        int64
	revBack    bool // rev is below the reach taken before it was read: the store went back
	revFailed  time.Time
	revErr     error

	reach cacheReach
}

// freshWait bounds how long a request with a token the cache does not hold waits for the watch
// to bring the cache to the store's revision before it reads the token records instead.
const freshWait = 500 * time.Millisecond

// cacheReach is the revision up to which the token cache holds every change of the store's
// tokens: a load of every token read at that revision, and the watch's events after it, applied
// in order. 0 while not known (nothing loaded yet, or the store changed or went back since).
type cacheReach struct {
	mu     sync.Mutex
	rev    int64
	raised chan struct{} // closed when rev rises; nil until someone waits
	// gapFrom is the first revision of the last watch that started past rev, which asked for a
	// reload of the tokens (see Server.tokensWatched).
	gapFrom int64
	// at is rev, for stale without the lock (every request asks it). missed is a revision up
	// to which the store's tokens changed in ways the cache may not hold: a watch started past
	// rev (a compaction hid the changes between), or it was reset for one. While rev is below
	// it, a revocation may be among those changes: the cache's tokens are asked of the store.
	at, missed atomic.Int64
}

// raise records that the cache holds every change up to rev.
func (c *cacheReach) raise(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.rev {
		return
	}
	c.rev = rev
	c.at.Store(rev)
	if c.raised != nil {
		close(c.raised)
		c.raised = nil
	}
}

// reset forgets the revision: the cache's tokens are of a store or history that is gone.
func (c *cacheReach) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rev, c.gapFrom = 0, 0
	c.at.Store(0)
	c.missed.Store(0) // revisions of a store or history that is gone
}

// miss records that the cache may lack changes of the store's tokens up to rev (see missed).
func (c *cacheReach) miss(rev int64) {
	for {
		m := c.missed.Load()
		if rev <= m || c.missed.CompareAndSwap(m, rev) {
			return
		}
	}
}

// stale reports whether the cache may lack changes of the store's tokens (a revocation among
// them): a load of the tokens has not reached what the watch is known to have missed.
func (c *cacheReach) stale() bool {
	return c.at.Load() < c.missed.Load()
}

// get returns the revision.
func (c *cacheReach) get() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// watched extends the reach to rev, which a watch that started at from applied, when that watch
// follows on from it; false when it starts past it (changes from rev+1 to from-1 are not in the
// cache). It asks for no reload itself.
func (c *cacheReach) watched(from, rev int64) (gap bool) {
	if reached := c.get(); reached == 0 || from > reached+1 {
		return true
	}
	c.raise(rev)
	return false
}

// wait reports whether the cache reaches rev within d, asking the store's watches for a progress
// notification when it does not yet (the watch's revision rises only with events, and no event
// may come: the store's last writes were not under this root).
func (c *cacheReach) wait(ctx context.Context, rev int64, d time.Duration, ask func()) bool {
	var timer *time.Timer
	for {
		c.mu.Lock()
		if c.rev >= rev {
			c.mu.Unlock()
			return true
		}
		if c.raised == nil {
			c.raised = make(chan struct{})
		}
		raised := c.raised
		c.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
			ask()
		}
		select {
		case <-raised:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// tokensWatched is called after each watch event (hub.onWatched): the cache holds every change
// up to rev when the watch, started at from, follows on from what it held. A watch that starts
// past that (its start was read before the tokens were loaded, and the store moved on between)
// would never let the cache catch up, nor apply the changes between: the tokens are loaded again,
// once per such watch.
func (s *Server) tokensWatched(from, rev int64) {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	c := &s.fresh.reach
	if !c.watched(from, rev) || !s.auth.loaded.Load() {
		return // a load not done yet is being retried: the next event looks again once it is
	}
	c.miss(from - 1)
	c.mu.Lock()
	again := c.gapFrom != from
	c.gapFrom = from
	c.mu.Unlock()
	if again {
		s.reloadSysLater("the store watch started past the revision the tokens were loaded at", nil)
	}
}

// storeChanged makes the reads begun until now stale: the replica is on another store.
func (f *freshTokens) storeChanged() { f.since.Store(time.Now().UnixNano()) }

// lookupFresh finds secret's token in the store as it is now (after arrived).
// An error says that the store could not be asked: the token may well exist.
func (s *Server) lookupFresh(ctx context.Context, secret string, arrived time.Time) (*tokenRecord, error) {
	f := &s.fresh
	rev, back, err := s.revisionSince(ctx, arrived)
	if err != nil {
		return nil, err
	}
	// A store that went back (restored from older data, or another cluster) holds a history the
	// cache has not seen, at revisions it has passed: its tokens are read.
	if !back && f.reach.wait(ctx, rev, freshWait, s.st.RequestProgress) {
		return s.auth.lookup(secret), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := s.readFreshLocked(ctx, arrived); err != nil {
		return nil, err
	}
	return findToken(f.byHash, secret), nil
}

// revisionSince is the store's revision as read by a read begun after arrived, and whether it is
// below the cache's reach taken before the read (the store's history went back), or why no read
// could be made; concurrent callers share one read.
func (s *Server) revisionSince(ctx context.Context, arrived time.Time) (rev int64, back bool, err error) {
	f := &s.fresh
	f.revMu.Lock()
	defer f.revMu.Unlock()
	if since := time.Unix(0, f.since.Load()); since.After(arrived) {
		arrived = since
	}
	if f.revStarted.After(arrived) {
		return f.rev, f.revBack, nil
	}
	if f.revFailed.After(arrived) {
		return 0, false, f.revErr
	}
	started, reached := time.Now(), f.reach.get()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rev, err = s.st.Revision(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil { // the store's failure, not this request's client gone
			f.revFailed, f.revErr = started, err
		}
		return 0, false, err
	}
	f.revStarted, f.rev, f.revBack = started, rev, rev < reached
	return rev, f.revBack, nil
}

// lookupUnknown asks the store about secret, which the token cache does not hold (a token
// created a moment ago through another replica, or none): its record, or nil when the store has
// no such token. While the store cannot tell — the tokens not loaded since this replica
// started, or the read failed for a secret not known to be revoked — it is an unavailable error
// with Retry-After: the token may well exist, and neither the API nor the console answers
// "unknown or revoked" to its holder.
func (s *Server) lookupUnknown(ctx context.Context, secret string, arrived time.Time) (*tokenRecord, error) {
	if !s.auth.loaded.Load() {
		e := api.Errorf(api.CodeUnavailable, "tokens are not loaded yet: the store has not been reachable since this replica started")
		e.RetryAfter = 2
		return nil, e
	}
	rec, err := s.lookupFresh(ctx, secret, arrived)
	if err != nil && !s.auth.wasRevoked(secret) {
		e := api.Errorf(api.CodeUnavailable, "the token is not known to this replica yet and the store could not be asked; retry later")
		e.RetryAfter = 2
		return nil, e
	}
	return rec, nil
}

// lookupFreshHash finds the token named name whose secret hashes to hash in the store as it is
// now (after arrived): a console session made with a token that the cache has not seen yet.
func (s *Server) lookupFreshHash(ctx context.Context, name, hash string, arrived time.Time) *tokenRecord {
	f := &s.fresh
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.readFreshLocked(ctx, arrived) != nil {
		return nil
	}
	if rec := f.byHash[hash]; rec != nil && rec.Name == name {
		return rec
	}
	return nil
}

// readFreshLocked reads every token record into f.byHash unless a read started after arrived,
// and answers nil when f.byHash is such a read, else why none could be made; f.mu is held.
func (s *Server) readFreshLocked(ctx context.Context, arrived time.Time) error {
	f := &s.fresh
	if since := time.Unix(0, f.since.Load()); since.After(arrived) {
		arrived = since
	}
	if !f.started.After(arrived) {
		if f.failed.After(arrived) {
			return f.err
		}
		started := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, _, err := s.st.SysListRevs(rctx, 0, []string{tokenPrefix})
		cancel()
		if err != nil {
			if ctx.Err() == nil { // the store's failure, not this request's client gone
				f.failed, f.err = started, err
			}
			return err
		}
		byHash := make(map[string]*tokenRecord, len(m))
		for k, v := range m {
			if rec, err := decodeToken(k, v.Data); err == nil {
				rec.rev = v.Rev // its enrollment's revision, for an instance token's
				byHash[rec.Hash] = rec
			}
		}
		f.started, f.byHash = started, byHash
		f.reads.Add(1)
	}
	return nil
}
