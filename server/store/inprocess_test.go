package store

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"google.golang.org/protobuf/proto"
)

// requestCapture is a KV server that keeps the transaction requests it gets: what client/v3
// sends for a txn, to compare txnRequest's with.
type requestCapture struct {
	pb.UnimplementedKVServer
	got *pb.TxnRequest
}

func (c *requestCapture) Txn(_ context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	c.got = r
	return &pb.TxnResponse{}, nil
}

// txnRequest builds the request client/v3 builds, for every op and compare the store uses and
// more: puts with a lease, prev_kv and the ignore flags, ranges with every option but sort,
// deletes of a key, a range and a prefix, transactions nested three deep.
func TestTxnRequest_AsClientV3BuildsIt(t *testing.T) {
	capture := &requestCapture{}
	kv := clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(capture), nil)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision("/k"), "=", 7),
		clientv3.Compare(clientv3.CreateRevision("/m/"), "=", 0).WithPrefix(),
		clientv3.Compare(clientv3.Value("/v"), "!=", "x"),
		clientv3.Compare(clientv3.Version("/w"), ">", 2),
		clientv3.Compare(clientv3.LeaseValue("/l"), "=", clientv3.LeaseID(5)),
		clientv3.Compare(clientv3.ModRevision("/a"), "<", 9).WithRange("/b"),
	}
	puts := []clientv3.Op{
		clientv3.OpPut("/p", "v"),
		clientv3.OpPut("/p", "v", clientv3.WithLease(42), clientv3.WithPrevKV()),
		clientv3.OpPut("/p", "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease()),
	}
	reads := []clientv3.Op{
		clientv3.OpGet("/g"),
		clientv3.OpGet("/g/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(3), clientv3.WithLimit(2)),
		clientv3.OpGet("/g", clientv3.WithCountOnly(), clientv3.WithSerializable(), clientv3.WithMinModRev(1),
			clientv3.WithMaxModRev(8), clientv3.WithMinCreateRev(2), clientv3.WithMaxCreateRev(7)),
		clientv3.OpGet("/a", clientv3.WithRange("/b")),
		clientv3.OpGet("/z", clientv3.WithFromKey()),
	}
	dels := []clientv3.Op{
		clientv3.OpDelete("/d"),
		clientv3.OpDelete("/d/", clientv3.WithPrefix(), clientv3.WithPrevKV()),
		clientv3.OpDelete("/a", clientv3.WithRange("/b")),
	}
	inner := clientv3.OpTxn(cmps[:2], append(append([]clientv3.Op{}, puts...), dels...), reads)
	middle := clientv3.OpTxn(cmps[2:], []clientv3.Op{inner, puts[0]}, nil)
	for _, c := range []struct {
		name      string
		cmps      []clientv3.Cmp
		then, els []clientv3.Op
	}{
		{"empty", nil, nil, nil},
		{"compares and puts", cmps, puts, nil},
		{"reads and deletes", nil, reads, dels},
		{"nested", cmps[:1], []clientv3.Op{middle, clientv3.OpTxn(nil, nil, nil)}, []clientv3.Op{inner}},
	} {
		if _, err := kv.Txn(context.Background()).If(c.cmps...).Then(c.then...).Else(c.els...).Commit(); err != nil {
			t.Fatal(err)
		}
		got, ok := txnRequest(c.cmps, c.then, c.els)
		if !ok {
			t.Fatalf("%s: txnRequest did not build it", c.name)
		}
		if !proto.Equal(got, capture.got) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, got, capture.got)
		}
	}
	// What it does not build, it says so: the store then sends through client/v3.
	sorted := []clientv3.Op{clientv3.OpGet("/s", clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))}
	if _, ok := txnRequest(nil, sorted, nil); ok {
		t.Error("txnRequest built a sorted range")
	}
	if _, ok := specRequest(&txnSpec{nested: []*txnSpec{{then: sorted}}}); ok {
		t.Error("specRequest built a sorted range nested")
	}

	// A spec's nested transactions (a batch of guarded writes) make the request client/v3 makes
	// of the same transactions as OpTxn ops (thenOps), first in Then.
	write := &txnSpec{cmps: cmps[:2], then: puts, els: reads}
	guarded := &txnSpec{cmps: cmps[2:4], nested: []*txnSpec{write}, els: reads[:1]}
	for _, c := range []struct {
		name string
		spec *txnSpec
	}{
		{"guarded write", guarded},
		{"batch", &txnSpec{nested: []*txnSpec{guarded, {then: dels}, guarded}}},
		{"nested and ops", &txnSpec{cmps: cmps[:1], nested: []*txnSpec{write, {}}, then: []clientv3.Op{puts[0], middle}, els: dels}},
	} {
		if _, err := kv.Txn(context.Background()).If(c.spec.cmps...).Then(c.spec.thenOps()...).Else(c.spec.els...).Commit(); err != nil {
			t.Fatal(err)
		}
		got, ok := specRequest(c.spec)
		if !ok {
			t.Fatalf("%s: specRequest did not build it", c.name)
		}
		if !proto.Equal(got, capture.got) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, got, capture.got)
		}
	}
}
