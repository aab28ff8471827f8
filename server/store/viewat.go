package store

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ViewAt reads appliance name's view as it was at revision rev, with a serializable read: the
// etcd member answers from its own copy, without the consensus round of a linearizable read.
// A revision's data never changes, so the answer is exact wherever the member stands, as long
// as it has applied rev. When it has not (a lagging member) or rev was compacted, ViewAt falls
// back to View, a linearizable read at the current revision (later than rev). rev <= 0 is View.
// Errors are View's; the returned View carries the revision read at, which is rev on the fast
// path.
func (s *Store) ViewAt(ctx context.Context, name string, rev int64) (api.View, error) {
	if rev <= 0 {
		return s.View(ctx, name)
	}
	v, err := s.readView(ctx, name, clientv3.WithRev(rev), clientv3.WithSerializable())
	if errors.Is(err, rpctypes.ErrFutureRev) || errors.Is(err, rpctypes.ErrCompacted) {
		return s.View(ctx, name)
	}
	v.Revision = rev
	return v, s.etcdErr(ctx, "view "+name, err)
}
