package store

import (
	"context"
	"fmt"
	"reflect"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

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
	kv  pb.KVServer // what cli's KV calls
	ee  *EmbeddedEtcd
}

func newInProcess(ee *EmbeddedEtcd) *inProcess {
	s := ee.e.Server
	c := clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(s.Logger()))
	kv := v3rpc.NewQuotaKVServer(s)
	c.KV = clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(kv), c)
	c.Lease = clientv3.NewLeaseFromLeaseClient(adapter.LeaseServerToLeaseClient(v3rpc.NewQuotaLeaseServer(s)), c, time.Second)
	return &inProcess{cli: c, kv: kv, ee: ee}
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

// txn runs t on the embedded etcd, as cli.Txn would, with the request built by specRequest:
// client/v3 copies every compare with proto.Clone at each step on its way
// (Compare, OpTxn, the request's conversion, If), three or four copies of each of a write's
// guards, which were 4–7% of the server's CPU under a stream of writes. Errors are as
// client/v3 returns them.
func (p *inProcess) txn(ctx context.Context, t *txnSpec) (*clientv3.TxnResponse, error) {
	req, ok := specRequest(t)
	if !ok {
		return p.cli.Txn(ctx).If(t.cmps...).Then(t.thenOps()...).Else(t.els...).Commit()
	}
	resp, err := p.kv.Txn(ctx, req)
	if err != nil {
		return nil, clientv3.ContextError(ctx, err)
	}
	return (*clientv3.TxnResponse)(resp), nil
}

// txnRequest is the etcd request of If(c).Then(t).Else(e), as client/v3 builds it but sharing
// the compares (never changed once made) instead of copying them; false when an op holds what
// it cannot read (see requestOp).
func txnRequest(c []clientv3.Cmp, t, e []clientv3.Op) (*pb.TxnRequest, bool) {
	return specRequest(&txnSpec{cmps: c, then: t, els: e})
}

// specRequest is the etcd request of t (see txnRequest), its nested transactions first in Then.
func specRequest(t *txnSpec) (*pb.TxnRequest, bool) {
	r := &pb.TxnRequest{}
	if !fillTxn(r, t) {
		return nil, false
	}
	return r, true
}

// fillTxn makes r the request of t (see specRequest). Success and Failure share one array.
func fillTxn(r *pb.TxnRequest, t *txnSpec) bool {
	c, n := t.cmps, len(t.nested)
	r.Compare = make([]*pb.Compare, len(c))
	nt := n + len(t.then)
	ops := make([]*pb.RequestOp, nt+len(t.raw)+len(t.els))
	r.Success, r.Failure = ops[:nt:nt+len(t.raw)], ops[nt+len(t.raw):]
	for i := range c {
		r.Compare[i] = c[i].GetCompare()
	}
	for i, nt := range t.nested {
		o := new(txnOp)
		if !fillTxn(&o.r, nt) {
			return false
		}
		r.Success[i] = o.op()
	}
	for _, ops := range []struct {
		from []clientv3.Op
		to   []*pb.RequestOp
	}{{t.then, r.Success[n:]}, {t.els, r.Failure}} {
		for i, op := range ops.from {
			ro, ok := requestOp(op)
			if !ok {
				return false
			}
			ops.to[i] = ro
		}
	}
	r.Success = append(r.Success, t.raw...)
	return true
}

// An etcd request op and what it holds, in one allocation: made apart, a request op was three
// (the op, its oneof's wrapper, the request), and a put makes four or five.
type (
	txnOp struct {
		o pb.RequestOp
		w pb.RequestOp_RequestTxn
		r pb.TxnRequest
	}
	putOp struct {
		o pb.RequestOp
		w pb.RequestOp_RequestPut
		r pb.PutRequest
	}
	rangeOp struct {
		o pb.RequestOp
		w pb.RequestOp_RequestRange
		r pb.RangeRequest
	}
	deleteOp struct {
		o pb.RequestOp
		w pb.RequestOp_RequestDeleteRange
		r pb.DeleteRangeRequest
	}
)

func (x *txnOp) op() *pb.RequestOp {
	x.w.RequestTxn, x.o.Request = &x.r, &x.w
	return &x.o
}

func (x *putOp) op() *pb.RequestOp {
	x.w.RequestPut, x.o.Request = &x.r, &x.w
	return &x.o
}

func (x *rangeOp) op() *pb.RequestOp {
	x.w.RequestRange, x.o.Request = &x.r, &x.w
	return &x.o
}

func (x *deleteOp) op() *pb.RequestOp {
	x.w.RequestDeleteRange, x.o.Request = &x.r, &x.w
	return &x.o
}

// clientOp is op, built as etcd takes it, as a client/v3 op (for a transaction specRequest
// cannot build): a put, or a transaction of compares of a key's version or value and puts, as
// SysPutEach builds them.
func clientOp(op *pb.RequestOp) clientv3.Op {
	switch r := op.Request.(type) {
	case *pb.RequestOp_RequestPut:
		return clientv3.OpPut(string(r.RequestPut.Key), string(r.RequestPut.Value))
	case *pb.RequestOp_RequestTxn:
		t := r.RequestTxn
		cmps := make([]clientv3.Cmp, len(t.Compare))
		for i, c := range t.Compare {
			result := map[pb.Compare_CompareResult]string{pb.Compare_EQUAL: "=", pb.Compare_NOT_EQUAL: "!=", pb.Compare_GREATER: ">", pb.Compare_LESS: "<"}[c.Result]
			switch c.Target {
			case pb.Compare_VERSION:
				cmps[i] = compare(clientv3.Version(string(c.Key)), result, c.GetVersion())
			case pb.Compare_VALUE:
				cmps[i] = compare(clientv3.Value(string(c.Key)), result, string(c.GetValue()))
			default:
				panic(fmt.Sprintf("clientOp: compare of %v", c.Target))
			}
		}
		then, els := make([]clientv3.Op, len(t.Success)), make([]clientv3.Op, len(t.Failure))
		for i, o := range t.Success {
			then[i] = clientOp(o)
		}
		for i, o := range t.Failure {
			els[i] = clientOp(o)
		}
		return clientv3.OpTxn(cmps, then, els)
	}
	panic(fmt.Sprintf("clientOp: %T", op.Request))
}

// putFields are the indexes of the fields of clientv3.Op that a put request needs and that Op
// has no accessor for; ok is false if this client/v3 names them otherwise.
var putFields = func() (f struct {
	lease, ignoreValue, ignoreLease []int
	ok                              bool
}) {
	t := reflect.TypeFor[clientv3.Op]()
	l, ok1 := t.FieldByName("leaseID")
	v, ok2 := t.FieldByName("ignoreValue")
	g, ok3 := t.FieldByName("ignoreLease")
	f.ok = ok1 && ok2 && ok3 && l.Type.Kind() == reflect.Int64 && v.Type.Kind() == reflect.Bool && g.Type.Kind() == reflect.Bool
	f.lease, f.ignoreValue, f.ignoreLease = l.Index, v.Index, g.Index
	return f
}()

// requestOp is op's request; false for what it does not build (a sorted range, and a put when
// this client/v3's Op is not as putFields expects).
func requestOp(op clientv3.Op) (*pb.RequestOp, bool) {
	switch {
	case op.IsPut():
		if !putFields.ok {
			return nil, false
		}
		v := reflect.ValueOf(&op).Elem()
		x := new(putOp)
		x.r.Key, x.r.Value, x.r.PrevKv = op.KeyBytes(), op.ValueBytes(), op.IsPrevKV()
		x.r.Lease = v.FieldByIndex(putFields.lease).Int()
		x.r.IgnoreValue = v.FieldByIndex(putFields.ignoreValue).Bool()
		x.r.IgnoreLease = v.FieldByIndex(putFields.ignoreLease).Bool()
		return x.op(), true
	case op.IsDelete():
		x := new(deleteOp)
		x.r.Key, x.r.RangeEnd, x.r.PrevKv = op.KeyBytes(), op.RangeBytes(), op.IsPrevKV()
		return x.op(), true
	case op.IsGet():
		if op.IsSortSet() {
			return nil, false
		}
		x := new(rangeOp)
		x.r.Key, x.r.RangeEnd, x.r.Limit, x.r.Revision = op.KeyBytes(), op.RangeBytes(), op.Limit(), op.Rev()
		x.r.Serializable, x.r.KeysOnly, x.r.CountOnly = op.IsSerializable(), op.IsKeysOnly(), op.IsCountOnly()
		x.r.MinModRevision, x.r.MaxModRevision = op.MinModRev(), op.MaxModRev()
		x.r.MinCreateRevision, x.r.MaxCreateRevision = op.MinCreateRev(), op.MaxCreateRev()
		return x.op(), true
	case op.IsTxn():
		c, t, e := op.Txn()
		x := new(txnOp)
		if !fillTxn(&x.r, &txnSpec{cmps: c, then: t, els: e}) {
			return nil, false
		}
		return x.op(), true
	}
	return nil, false
}
