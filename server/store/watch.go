package store

import (
	"context"
	"sync"
)

// Watch watches the whole root from revision from (inclusive) and sends one Event per revision
// (and progress notifications). The channel closes when ctx ends or the watch breaks; the final
// error, if any (ErrCompacted, a lost leader, etcd silent for twice WatchProgressInterval while
// the store moved on, a connection to etcd that ended, ...), is reported by the returned func
// after close.
//
// from <= 0 watches from the next revision. The error func returns nil when the watch ended
// because ctx did; errors.Is(err, ErrCompacted) when from was compacted (re-read, then watch
// again from the revision read + 1). Events under the root that are neither kv/ nor sys/ keys
// are skipped. The caller must drain the channel or cancel ctx.
func (s *Store) Watch(ctx context.Context, from int64) (<-chan Event, func() error) {
	in, errf := s.WatchChanges(ctx, from)
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		for ev := range in {
			select {
			case out <- ev.Event:
			case <-ctx.Done():
				for range in { // WatchChanges closes in promptly once ctx is done
				}
				return
			}
		}
	}()
	return out, errf
}

type watchResult struct {
	mu  sync.Mutex
	err error
}

func (w *watchResult) set(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

func (w *watchResult) get() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
