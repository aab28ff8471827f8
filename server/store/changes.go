package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	out := make(chan ChangeEvent, 16)
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
		w.set(s.pumpChanges(ctx, wch, out))
	}()
	return out, w.get
}

// pumpChanges turns watch responses into ChangeEvents until ctx ends or the watch breaks.
func (s *Store) pumpChanges(ctx context.Context, wch clientv3.WatchChan, out chan<- ChangeEvent) error {
	send := func(ev ChangeEvent) bool {
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
			if !send(ChangeEvent{Event: Event{Revision: resp.Header.Revision, Progress: true}}) {
				return nil
			}
			continue
		}
		var cur *ChangeEvent
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
				cur = &ChangeEvent{Event: Event{Revision: rev}}
			}
			if !isUser {
				cur.SysKeys = append(cur.SysKeys, sys)
				continue
			}
			cur.Keys = append(cur.Keys, user)
			if isViewKey(user) {
				c := Change{Key: user, Deleted: e.Type == clientv3.EventTypeDelete}
				if !c.Deleted {
					c.Value = string(e.Kv.Value)
				}
				cur.Changes = append(cur.Changes, c)
			}
		}
		if cur != nil && !send(*cur) {
			return nil
		}
	}
}
