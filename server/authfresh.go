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
// store? A miss reads every token record from the store, at most one read at a time; a request
// takes the result of a read that started after it arrived, so concurrent misses share one read.
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
}

// storeChanged makes the reads begun until now stale: the replica is on another store.
func (f *freshTokens) storeChanged() { f.since.Store(time.Now().UnixNano()) }

// lookupFresh finds secret's token in the store as it is now (after arrived).
// An error says that the store could not be asked: the token may well exist.
func (s *Server) lookupFresh(ctx context.Context, secret string, arrived time.Time) (*tokenRecord, error) {
	f := &s.fresh
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := s.readFreshLocked(ctx, arrived); err != nil {
		return nil, err
	}
	return findToken(f.byHash, secret), nil
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
		m, _, err := s.st.SysList(rctx, tokenPrefix)
		cancel()
		if err != nil {
			if ctx.Err() == nil { // the store's failure, not this request's client gone
				f.failed, f.err = started, err
			}
			return err
		}
		byHash := make(map[string]*tokenRecord, len(m))
		for k, v := range m {
			if rec, err := decodeToken(k, v); err == nil {
				byHash[rec.Hash] = rec
			}
		}
		f.started, f.byHash = started, byHash
	}
	return nil
}
