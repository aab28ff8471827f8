package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ApplianceAt reads appliance name's own keys (relative to appliances/<name>/) as they were at
// revision rev, from etcd's history. It also returns the store's current revision. A revision
// older than the history the store keeps is an api.CodeCompacted error; one ahead of the store
// is an invalid request; an appliance with no keys at rev is api.ErrNotFound.
func (s *Store) ApplianceAt(ctx context.Context, name string, rev int64) (map[string]string, int64, error) {
	keys := map[string]string{}
	cur, err := s.ApplianceAtPaged(ctx, name, rev, func(kvs []api.KV, _ int64, _ bool) error {
		for _, kv := range kvs {
			keys[kv.Key] = kv.Value
		}
		return nil
	})
	if err != nil {
		return nil, cur, err
	}
	return keys, cur, nil
}

// ApplianceAtPaged reads what ApplianceAt reads a page at a time, in key order (keys relative
// to appliances/<name>/), every page at rev, as ListPaged reads a listing: page gets each page
// with the store's revision when the first was read and whether more follow, and may end the
// read with an error, which ApplianceAtPaged returns. It holds one page at a time: a tree read
// whole is held as etcd's answer and its copy, and then as its JSON, which is up to six times
// its size for control characters. The errors of the first page are ApplianceAt's; a later
// page whose revision etcd compacted meanwhile fails with an error wrapping ErrCompacted.
func (s *Store) ApplianceAtPaged(ctx context.Context, name string, rev int64, page func(kvs []api.KV, cur int64, more bool) error) (int64, error) {
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return 0, err
	}
	if rev <= 0 {
		return 0, api.Errorf(api.CodeInvalidRequest, "revision %d: a revision is a positive number", rev)
	}
	root := s.kvRoot + api.ApplianceRoot(name) + "/"
	from, end := root, clientv3.GetPrefixRangeEnd(root)
	// The first page is one key: a tree's first keys may be as large as a value may be
	// (--max-value-bytes), and a page of listPageFirst such keys was most of a large tree.
	limit := int64(1)
	var cur int64
	for first := true; ; first = false {
		cctx, cancel := s.opCtx(ctx)
		resp, err := s.cli.Get(cctx, from, clientv3.WithRange(end), clientv3.WithLimit(limit), clientv3.WithRev(rev))
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrCompacted) && first:
			return 0, api.Errorf(api.CodeCompacted,
				"revision %d of appliance %q is compacted: the store keeps %s; restore an older state from a backup", rev, name, s.historyKept())
		case errors.Is(err, rpctypes.ErrCompacted):
			return cur, fmt.Errorf("read appliance %s at revision %d: %w (while reading it)", name, rev, ErrCompacted)
		case errors.Is(err, rpctypes.ErrFutureRev):
			cur, cerr := s.Revision(ctx)
			if cerr != nil {
				return 0, api.Errorf(api.CodeInvalidRequest, "revision %d is ahead of the store", rev)
			}
			return cur, api.Errorf(api.CodeInvalidRequest, "revision %d is ahead of the store (at revision %d)", rev, cur)
		case err != nil:
			return cur, s.etcdErr(ctx, "read appliance "+name+" at a revision", err)
		}
		if first {
			cur = resp.Header.Revision
			if len(resp.Kvs) == 0 {
				return cur, api.Errorf(api.CodeNotFound, "appliance %q had no keys at revision %d", name, rev)
			}
		}
		out := make([]api.KV, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			out = append(out, api.KV{Key: strings.TrimPrefix(string(kv.Key), root), Value: string(kv.Value),
				ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision, Version: kv.Version})
		}
		var more bool
		from, limit, more = nextPage(resp.Kvs, from, limit, resp.More)
		resp = nil // etcd's answer is copied: let it go before the page's work
		if err := page(out, cur, more); err != nil {
			return cur, err
		}
		if !more {
			return cur, nil
		}
	}
}

func (s *Store) historyKept() string {
	if s.Embedded() {
		return DefaultAutoCompaction + " of history"
	}
	return "the history its etcd cluster's --auto-compaction-retention allows"
}

// CompactRevision is the oldest revision etcd's history still holds (the revision of its last
// compaction), as a watch from revision 1 learns it; 0 when nothing is compacted or etcd did not
// say within the request timeout. It is for messages that name what can still be read.
func (s *Store) CompactRevision(ctx context.Context) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for resp := range s.cli.Watch(ctx, s.sysRoot+storeIDKey, clientv3.WithRev(1)) {
		if resp.CompactRevision != 0 {
			return resp.CompactRevision, nil
		}
		if err := resp.Err(); err != nil {
			return 0, s.etcdErr(ctx, "watch for the compacted revision", err)
		}
		return 0, nil // events from revision 1: nothing compacted
	}
	if ctx.Err() != nil && context.Cause(ctx) == context.DeadlineExceeded {
		return 0, nil
	}
	return 0, ctx.Err()
}
