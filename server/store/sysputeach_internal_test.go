package store

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"google.golang.org/protobuf/proto"
)

// SysPutEach's ops, built as etcd takes them, are the request client/v3 makes of the same puts
// as client/v3 ops; and clientOp (how a transaction specRequest cannot build sends them) makes
// the same request of them again, nested in a batch too.
func TestSysPutOps_AsClientV3BuildsThem(t *testing.T) {
	capture := &requestCapture{}
	kv := clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(capture), nil)
	s := &Store{sysRoot: "/root/sys/"}
	puts := []SysPutIf{
		{Key: "instances/web/vm-1", Value: []byte(`{"applied":7}`)},
		{Key: "instances/web/vm-2", Value: []byte("x"), Guard: "tokens/t2"},
		{Key: "instances/web/vm-3", Value: []byte(""), Guard: "tokens/t3", Exists: true},
		{Key: "instances/web/vm-4", Value: []byte("y"), Guard: "tokens/t4", Is: []byte("held")},
	}
	want := []clientv3.Op{
		clientv3.OpPut("/root/sys/instances/web/vm-1", `{"applied":7}`),
		clientv3.OpTxn([]clientv3.Cmp{compare(clientv3.Version("/root/sys/tokens/t2"), "=", 0)},
			[]clientv3.Op{clientv3.OpPut("/root/sys/instances/web/vm-2", "x")}, nil),
		clientv3.OpTxn([]clientv3.Cmp{compare(clientv3.Version("/root/sys/tokens/t3"), ">", 0)},
			[]clientv3.Op{clientv3.OpPut("/root/sys/instances/web/vm-3", "")}, nil),
		clientv3.OpTxn([]clientv3.Cmp{compare(clientv3.Value("/root/sys/tokens/t4"), "=", "held")},
			[]clientv3.Op{clientv3.OpPut("/root/sys/instances/web/vm-4", "y")}, nil),
	}
	if _, err := kv.Txn(context.Background()).Then(want...).Commit(); err != nil {
		t.Fatal(err)
	}
	wantReq := capture.got
	ops := s.sysPutOps(puts, 3)
	if got := (&pb.TxnRequest{Success: ops}); !proto.Equal(got, wantReq) {
		t.Errorf("sysPutOps:\n got %v\nwant %v", got, wantReq)
	}
	var back []clientv3.Op
	for _, op := range ops {
		back = append(back, clientOp(op))
	}
	if _, err := kv.Txn(context.Background()).Then(back...).Commit(); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(capture.got, wantReq) {
		t.Errorf("clientOp:\n got %v\nwant %v", capture.got, wantReq)
	}

	// In a spec, after its client/v3 ops, alone and nested in a batch, both ways.
	marker := clientv3.OpPut("/root/req/m", "w")
	spec := &txnSpec{then: []clientv3.Op{marker}, raw: ops}
	for _, c := range []struct {
		name string
		spec *txnSpec
	}{{"alone", spec}, {"batch", &txnSpec{nested: []*txnSpec{spec, {then: []clientv3.Op{marker}}}}}} {
		got, ok := specRequest(c.spec)
		if !ok {
			t.Fatalf("%s: specRequest did not build it", c.name)
		}
		if _, err := kv.Txn(context.Background()).If(c.spec.cmps...).Then(c.spec.thenOps()...).Else(c.spec.els...).Commit(); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, capture.got) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, got, capture.got)
		}
	}

	// A batch takes their keys as written and their guards as read.
	w := &batchWrite{}
	footprint(w, spec)
	if len(w.writes) != 5 || len(w.reads) != 3 || w.writes[1].key != "/root/sys/instances/web/vm-1" || w.reads[2].key != "/root/sys/tokens/t4" {
		t.Errorf("footprint: writes %v, reads %v", w.writes, w.reads)
	}
}
