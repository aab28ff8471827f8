package store

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
)

// The embedded etcd's hot path, in process.
//
// With an embedded etcd, a write's transaction and the watch the hub follows are the two etcd
// calls on the way from an API write to an agent's file. Through the gRPC client each crosses
// a loopback socket twice (request and answer, event), with the wakeups of both sides; etcd's
// v3client adapters call the server's own gRPC handlers directly instead. The store keeps its
// gRPC client for everything else (health, status, snapshots, reads with their retries and
// metrics), and uses the in-process one for commit's transactions and WatchChanges.

// inProcess is a client of an embedded etcd that calls its server directly.
type inProcess struct {
	cli *clientv3.Client
	ee  *EmbeddedEtcd
}

func newInProcess(ee *EmbeddedEtcd) *inProcess {
	s := ee.e.Server
	c := clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(s.Logger()))
	c.KV = clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(s)), c)
	c.Lease = clientv3.NewLeaseFromLeaseClient(adapter.LeaseServerToLeaseClient(v3rpc.NewQuotaLeaseServer(s)), c, time.Second)
	return &inProcess{cli: c, ee: ee}
}

// newWatcher returns a watcher of its own (a stream of its own), as clientv3.NewWatcher does
// for a gRPC client.
func (p *inProcess) newWatcher() clientv3.Watcher {
	w := clientv3.NewWatchFromWatchClient(adapter.WatchServerToWatchClient(v3rpc.NewWatchServer(p.ee.e.Server)), p.cli)
	return blankWatcher{w}
}

// blankWatcher hides the caller's context values from the watch server, as etcd's own
// v3client does: the server would read trace data from them that other goroutines write.
type blankWatcher struct{ clientv3.Watcher }

type blankContext struct{ context.Context }

func (blankContext) String() string { return "(blank)" }

func (w blankWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	return w.Watcher.Watch(blankContext{ctx}, key, opts...)
}

func (p *inProcess) close() { _ = p.cli.Close() }

// writer is the client for writes that need no marker (see commit): the in-process one with an
// embedded etcd, else the gRPC client.
func (s *Store) writer() clientv3.KV {
	if s.local != nil {
		return s.local.cli
	}
	return s.cli
}
