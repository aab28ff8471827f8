package store

import (
	"context"
	"errors"
	"strings"

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
	v := api.View{Appliance: name}
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return v, err
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	shared := s.kvRoot + api.SharedPrefix + "/"
	own := s.kvRoot + api.ApplianceRoot(name) + "/"
	resp, err := s.cli.Txn(octx).Then(
		clientv3.OpGet(shared, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable()),
		clientv3.OpGet(own, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable()),
	).Commit()
	if errors.Is(err, rpctypes.ErrFutureRev) || errors.Is(err, rpctypes.ErrCompacted) {
		return s.View(ctx, name)
	}
	if err != nil {
		return v, s.etcdErr(octx, "view "+name, err)
	}
	v.Revision = rev
	sharedKVs := resp.Responses[0].GetResponseRange().Kvs
	ownKVs := resp.Responses[1].GetResponseRange().Kvs
	if len(ownKVs) == 0 {
		return v, api.Errorf(api.CodeNotFound, "appliance %q has no keys (an appliance exists while it has at least one key of its own)", name)
	}
	v.Keys = make(map[string]string, len(sharedKVs)+len(ownKVs))
	for _, kv := range sharedKVs {
		v.Keys[strings.TrimPrefix(string(kv.Key), shared)] = string(kv.Value)
	}
	for _, kv := range ownKVs {
		v.Keys[strings.TrimPrefix(string(kv.Key), own)] = string(kv.Value)
	}
	return v, nil
}
