package store

import (
	"context"
	"crypto/sha256"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// SetCopyLimit sets the largest release copy s keeps, in bytes.
func SetCopyLimit(s *Store, n int) { s.copyLimitBytes = n }

// AgeReleaseListing moves s's last full listing of release records d into the past.
func AgeReleaseListing(s *Store, d time.Duration) {
	s.metas.mu.Lock()
	defer s.metas.mu.Unlock()
	s.metas.full = s.metas.full.Add(-d)
}

// HoldWrites makes the next transaction s sends wait until release is called (held is closed
// once it waits); the writes that come meanwhile queue in its batcher.
func HoldWrites(s *Store) (held <-chan struct{}, release func()) {
	gate, waiting := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	send := s.batch.send
	s.batch.send = func(ctx context.Context, sent *atomic.Bool, t *txnSpec) (*clientv3.TxnResponse, error) {
		if first.CompareAndSwap(false, true) {
			close(waiting)
			<-gate
		}
		return send(ctx, sent, t)
	}
	return waiting, func() { close(gate) }
}

// QueuedWrites is how many writes wait in s's batcher.
func QueuedWrites(s *Store) int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.queue)
}

// BatchesRefused is how many batches etcd refused whole to s.
func BatchesRefused(s *Store) int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return s.batch.refused
}

// CompactedProbes is how many times Compacted asked etcd.
func CompactedProbes(s *Store) int64 { return s.compacted.probes.Load() }

// SetFatalExit makes the embedded etcd's fatal hook call exit instead of os.Exit, until restore.
func SetFatalExit(exit func(int)) (restore func()) {
	prev := fatalExit
	fatalExit = exit
	return func() { fatalExit = prev }
}

// EtcdLogger is the logger the embedded etcd e logs with (its fatal errors too).
func EtcdLogger(e *EmbeddedEtcd) *zap.Logger { return e.e.Server.Logger() }

// SetApplyHook sets the func that s's applies call at their stages (see Store.applyHook).
func SetApplyHook(s *Store, f func(stage string)) { s.applyHook = f }

// SetLiveReadHook sets the func that s's applies call with the bytes of each answer of their
// reads of the live tree (see Store.liveReadHook).
func SetLiveReadHook(s *Store, f func(bytes int)) { s.liveReadHook = f }

// SetIdleHook sets the func that s's silent watches call right before they read the store's
// revision (see Store.idleHook).
func SetIdleHook(s *Store, f func()) { s.idleHook = f }

// ReleasesDecoded is how many release records s's reads of every record decoded.
func ReleasesDecoded(s *Store) int64 { return s.releases.decoded.Load() }

// ReleasesHeld is how many decoded release records s holds for its next read.
func ReleasesHeld(s *Store) int {
	s.releases.mu.Lock()
	defer s.releases.mu.Unlock()
	return len(s.releases.held)
}

// SetReleasesHeldIdle sets how long s keeps the decoded release records after its last read.
func SetReleasesHeldIdle(s *Store, d time.Duration) {
	s.releases.mu.Lock()
	defer s.releases.mu.Unlock()
	s.releases.idle = d
}

// DropHeldReleases lets go of the release records s decoded, as an idle server does.
func DropHeldReleases(s *Store) {
	s.releases.mu.Lock()
	defer s.releases.mu.Unlock()
	s.releases.held, s.releases.order, s.releases.out = nil, nil, nil
}

// PlantPrior makes s's prior cache say that key (absolute) held value at mod, as known at at:
// a memory that etcd's history may not share (another store's, after the endpoints moved).
func PlantPrior(s *Store, key, value string, mod, at int64) {
	t := newTouched([]string{key})
	t.state[0] = prior{mod: mod, create: mod, sum: sha256.Sum256([]byte(value))}
	s.priors.store(t, at)
}

// PriorKnown says whether s's prior cache holds key (absolute).
func PriorKnown(s *Store, key string) bool {
	s.priors.mu.Lock()
	defer s.priors.mu.Unlock()
	_, ok := s.priors.m[key]
	return ok
}

// SetBelowPage sets how many key names the look for a store below the root reads at a time,
// until the test ends.
func SetBelowPage(tb interface{ Cleanup(func()) }, n int64) {
	old := belowPage
	belowPage = n
	tb.Cleanup(func() { belowPage = old })
}
