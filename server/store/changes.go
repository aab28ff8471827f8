package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Change is one view key (under shared/ or appliances/) put or deleted, with its new value.
type Change struct {
	Key     string // relative to <root>kv/
	Value   string // empty when Deleted
	Deleted bool
}

// ChangeEvent is an Event that also carries the changes of view keys, so that a watcher can
// keep a copy of the views without reading them back.
type ChangeEvent struct {
	Event
	Changes []Change
}

// viewPrefixes are the kv/ subtrees that views are made of.
var viewPrefixes = []string{api.SharedPrefix + "/", api.AppliancesPrefix + "/"}

func isViewKey(k string) bool {
	for _, p := range viewPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// LoadViewKeys reads every view key (under shared/ and appliances/, relative to <root>kv/)
// with its value, at one revision, which it returns.
func (s *Store) LoadViewKeys(ctx context.Context) (map[string]string, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ops := make([]clientv3.Op, len(viewPrefixes))
	for i, p := range viewPrefixes {
		ops[i] = clientv3.OpGet(s.kvRoot+p, clientv3.WithPrefix())
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "load view keys", err)
	}
	out := make(map[string]string)
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out[strings.TrimPrefix(string(kv.Key), s.kvRoot)] = string(kv.Value)
		}
	}
	return out, resp.Header.Revision, nil
}

// WatchChanges is Watch whose events also carry the values of the view keys they changed
// (ChangeEvent.Changes, in the order etcd applied them). Everything else is as Watch says.
func (s *Store) WatchChanges(ctx context.Context, from int64) (<-chan ChangeEvent, func() error) {
	return s.WatchChangesSince(ctx, from, s.connEnds.next())
}

// ConnEnds returns a channel that is closed when a connection of the client to etcd ends
// after this call (see WatchChangesSince).
func (s *Store) ConnEnds() <-chan struct{} { return s.connEnds.next() }

// RequestProgress asks every open watch for a progress notification, without waiting: etcd sends
// it, at the store's revision, once the watch has delivered every change up to it (a watch that
// is behind gets its events first, or nothing). Its ChangeEvent has Progress set.
func (s *Store) RequestProgress() { s.progress.end() }

// WatchChangesSince is WatchChanges that ends with ErrReconnected also when a connection to
// etcd ended after ended was taken (from ConnEnds) but before the watch started. A caller
// that looked at the store before it watches (its id, its revision) takes ended before it
// looks: a connection that ended meanwhile may have been replaced by one to another store,
// which the watch would follow from a revision of the store looked at.
func (s *Store) WatchChangesSince(ctx context.Context, from int64, ended <-chan struct{}) (<-chan ChangeEvent, func() error) {
	out := make(chan ChangeEvent, 16)
	w := &watchResult{}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithProgressNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from))
	}
	// A watcher of its own gives the watch a gRPC stream of its own, opened on the member the
	// balancer picks now: a watch started again after a stall does not join the stalled stream.
	var wt clientv3.Watcher
	if s.local != nil {
		wt = s.local.newWatcher()
	} else {
		wt = clientv3.NewWatcher(s.cli)
	}
	go func() {
		defer close(out)
		defer wt.Close()
		defer cancel()
		// Watch blocks until its stream is open, which takes forever while no member is
		// reachable: it is waited for like any other silence.
		opened := make(chan clientv3.WatchChan, 1)
		go func() { opened <- wt.Watch(wctx, s.root, opts...) }()
		w.set(s.pumpChanges(ctx, wctx, wt, from, opened, ended, out))
	}()
	return out, w.get
}

// pumpChanges turns watch responses into ChangeEvents until ctx ends or the watch breaks. A
// watch that hears nothing for WatchProgressInterval asks etcd for a progress notification;
// one that still hears nothing for as long again reads the store's revision (see idle): it ends
// with ErrWatchSilent unless the store is idle at the revision the watch has reached (its
// member may be frozen, or its connection dead without a close); a store past that revision
// gets one more interval for its change to come, as a write that landed while the watch
// looked is on its way. from is the watch's first revision (0: the next). A connection to
// etcd that ends (ended closes) ends it with ErrReconnected.
func (s *Store) pumpChanges(ctx, wctx context.Context, wt clientv3.Watcher, from int64, opened <-chan clientv3.WatchChan, ended <-chan struct{}, out chan<- ChangeEvent) error {
	send := func(ev ChangeEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	every := s.cfg.WatchProgressInterval
	quiet := time.NewTimer(every)
	defer quiet.Stop()
	asked := false
	var passed error           // idle found the store past next; reset by every answer
	next := from               // the revision the watch waits for (0: not known yet)
	var wch clientv3.WatchChan // nil until the watch is open
	asks := s.progress.next()  // closed by RequestProgress
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case wch = <-opened:
			continue
		case <-asks:
			asks = s.progress.next()
			if wch != nil {
				rctx, cancel := context.WithTimeout(wctx, every)
				_ = wt.RequestProgress(rctx) // a failure: the caller waits in vain, and reads instead
				cancel()
			}
			continue
		case resp, ok = <-wch:
		case <-ended:
			// Not only at its next answer: etcd sends none to a watch resumed on a store that
			// has not passed its revision, as after a restart on the same data (see idle).
			return ErrReconnected
		case <-ctx.Done():
			return nil
		case <-quiet.C:
			if passed != nil {
				return passed // what the store was past of did not come either
			}
			if asked {
				err := s.idle(wctx, next, every)
				if errors.Is(err, errPassed) {
					// A write that landed while the watch looked may be on its way to it: it
					// gets one more interval to come before the watch counts as silent. Not
					// read again: each read takes a turn of the balancer, and with a second
					// one every re-watch on three members landed on the member it left.
					passed = err
					quiet.Reset(every)
					continue
				}
				if err != nil {
					return err
				}
				asked = false
				quiet.Reset(every)
				continue
			}
			rctx, cancel := context.WithTimeout(wctx, every)
			_ = wt.RequestProgress(rctx) // a failure shows as silence
			cancel()
			asked = true
			quiet.Reset(every)
			continue
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
		// The etcd client resumes a watch whose connection broke on the next connection it
		// opens, from the revision after the last it delivered: when the endpoints lead to
		// another store now (another cluster, one restored from a snapshot), it would follow
		// that store's history as if it were the one before, silently. It ends instead, for
		// the caller to learn what store it is on (see ErrReconnected).
		select {
		case <-ended:
			return ErrReconnected
		default:
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
		s.sawRevision(resp.Header.Revision)
		switch {
		case len(resp.Events) > 0:
			next = resp.Events[len(resp.Events)-1].Kv.ModRevision + 1
		case resp.IsProgressNotify():
			next = max(next, resp.Header.Revision+1)
		}
		if !s.sendChanges(resp, send) {
			return nil
		}
		// Counted from here: time spent waiting for the reader is not etcd's silence.
		asked, passed = false, nil
		quiet.Reset(every)
	}
}

// idle tells a watch that heard nothing, not even the progress notification it asked for,
// from one that waits for a store that has nothing to send it: etcd sends no progress
// notification to a watch whose next revision the store has not reached (next, the revision
// after the last the watch heard of), as when nothing was written since the watch started or
// since the etcd client resumed it. nil when the store is at next - 1; ErrWatchSilent when it
// cannot be read within d, and ErrWatchSilent wrapping errPassed when it is past next - 1 (the
// watch's member may be frozen, or the change is on its way); an error too when it is below
// it, or below Reached (its history went back: the caller must learn where it is).
func (s *Store) idle(ctx context.Context, next int64, d time.Duration) error {
	silent := fmt.Errorf("%w (%s)", ErrWatchSilent, 2*d)
	if next <= 0 {
		return silent
	}
	// Taken before the read: an answer that comes after it may carry a revision above it.
	reached := max(next-1, s.Reached())
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if s.idleHook != nil {
		s.idleHook()
	}
	rev, err := s.Revision(rctx)
	switch {
	case err != nil:
		return silent
	case rev >= next:
		return fmt.Errorf("%w: %w, at revision %d", ErrWatchSilent, errPassed, rev)
	case rev < reached:
		return fmt.Errorf("watch: the store is at revision %d, below the %d it reached (its history went back)", rev, reached)
	}
	return nil
}

// sizeLists gives cur's lists the room of the events of its revision, evs from its first on
// (its changes as many as its user keys, of which they are the views'): appended one at a time
// they grew again and again, a batch's revision holding each of its writes' keys and release
// records.
func (s *Store) sizeLists(cur *ChangeEvent, evs []*clientv3.Event) {
	user, sys := 0, 0
	for _, e := range evs {
		if e.Kv.ModRevision != cur.Revision {
			break
		}
		switch k := e.Kv.Key; {
		case hasPrefix(k, s.kvRoot):
			user++
		case hasPrefix(k, s.sysRoot):
			sys++
		}
	}
	if user > 0 {
		cur.Keys, cur.Changes = make([]string, 0, user), make([]Change, 0, user)
	}
	if sys > 0 {
		cur.SysKeys, cur.Sys = make([]string, 0, sys), make([]SysChange, 0, sys)
	}
}

// hasPrefix is strings.HasPrefix of b's bytes, without making a string of them.
func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// errPassed is idle's answer when the store is past the revision the watch waits for: the
// watch's member may be frozen, or a write landed while the watch was looking (see pumpChanges).
var errPassed = errors.New("the store is past the revision the watch waits for")

// sendChanges sends resp as ChangeEvents, one per revision; false when ctx ended.
func (s *Store) sendChanges(resp clientv3.WatchResponse, send func(ChangeEvent) bool) bool {
	if resp.IsProgressNotify() {
		return send(ChangeEvent{Event: Event{Revision: resp.Header.Revision, Progress: true}})
	}
	var cur *ChangeEvent
	for i, e := range resp.Events {
		rev := e.Kv.ModRevision
		if cur != nil && cur.Revision != rev {
			if !send(*cur) {
				return false
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
			cur = &ChangeEvent{Event: Event{Revision: rev}}
			s.sizeLists(cur, resp.Events[i:])
		}
		deleted := e.Type == clientv3.EventTypeDelete
		if !isUser {
			cur.SysKeys = append(cur.SysKeys, sys)
			c := SysChange{Key: sys, Deleted: deleted}
			if !deleted {
				c.Value = e.Kv.Value
			}
			cur.Sys = append(cur.Sys, c)
			continue
		}
		cur.Keys = append(cur.Keys, user)
		if isViewKey(user) {
			c := Change{Key: user, Deleted: deleted}
			if !deleted {
				c.Value = string(e.Kv.Value)
			}
			cur.Changes = append(cur.Changes, c)
		}
	}
	return cur == nil || send(*cur)
}
