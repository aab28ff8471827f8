package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch watches the whole root from revision from (inclusive) and sends one Event per revision
// (and progress notifications). The channel closes when ctx ends or the watch breaks; the final
// error, if any (ErrCompacted, a lost leader, ...), is reported by the returned func after close.
//
// from <= 0 watches from the next revision. The error func returns nil when the watch ended
// because ctx did; errors.Is(err, ErrCompacted) when from was compacted (re-read, then watch
// again from the revision read + 1). Events under the root that are neither kv/ nor sys/ keys
// are skipped. The caller must drain the channel or cancel ctx.
func (s *Store) Watch(ctx context.Context, from int64) (<-chan Event, func() error) {
	out := make(chan Event, 16)
	w := &watchResult{}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithProgressNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from))
	}
	wch := s.cli.Watch(wctx, s.root, opts...)
	go func() {
		defer close(out)
		defer cancel()
		w.set(s.pump(ctx, wch, out))
	}()
	return out, w.get
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

// pump turns watch responses into Events until ctx ends or the watch breaks.
func (s *Store) pump(ctx context.Context, wch clientv3.WatchChan, out chan<- Event) error {
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-wch:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			if s.ctx.Err() != nil {
				return errors.New("watch: the store is closed")
			}
			return errors.New("watch: closed by etcd")
		}
		if err := resp.Err(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("watch: %w (compacted up to revision %d)", ErrCompacted, resp.CompactRevision)
			}
			return s.etcdErr(ctx, "watch", err)
		}
		if resp.IsProgressNotify() {
			if !send(Event{Revision: resp.Header.Revision, Progress: true}) {
				return nil
			}
			continue
		}
		var cur *Event
		for _, e := range resp.Events {
			rev := e.Kv.ModRevision
			if cur != nil && cur.Revision != rev {
				if !send(*cur) {
					return nil
				}
				cur = nil
			}
			k := string(e.Kv.Key)
			user, isUser := strings.CutPrefix(k, s.kvRoot)
			sys, isSys := strings.CutPrefix(k, s.sysRoot)
			if !isUser && !isSys {
				continue
			}
			if cur == nil {
				cur = &Event{Revision: rev}
			}
			if isUser {
				cur.Keys = append(cur.Keys, user)
			} else {
				cur.SysKeys = append(cur.SysKeys, sys)
			}
		}
		if cur != nil && !send(*cur) {
			return nil
		}
	}
}
