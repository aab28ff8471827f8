package store

import (
	"context"
	"errors"
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
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return nil, 0, err
	}
	if rev <= 0 {
		return nil, 0, api.Errorf(api.CodeInvalidRequest, "revision %d: a revision is a positive number", rev)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	root := s.kvRoot + api.ApplianceRoot(name) + "/"
	resp, err := s.cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithRev(rev))
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil, 0, api.Errorf(api.CodeCompacted,
			"revision %d of appliance %q is compacted: the store keeps %s; restore an older state from a backup", rev, name, s.historyKept())
	case errors.Is(err, rpctypes.ErrFutureRev):
		cur, cerr := s.Revision(ctx)
		if cerr != nil {
			return nil, 0, api.Errorf(api.CodeInvalidRequest, "revision %d is ahead of the store", rev)
		}
		return nil, cur, api.Errorf(api.CodeInvalidRequest, "revision %d is ahead of the store (at revision %d)", rev, cur)
	case err != nil:
		return nil, 0, s.etcdErr(ctx, "read appliance "+name+" at a revision", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, api.Errorf(api.CodeNotFound, "appliance %q had no keys at revision %d", name, rev)
	}
	keys := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys[strings.TrimPrefix(string(kv.Key), root)] = string(kv.Value)
	}
	return keys, resp.Header.Revision, nil
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
