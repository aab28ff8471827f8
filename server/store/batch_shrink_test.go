package store

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A write queued while etcd refuses a batch for its size, and bigger than the smaller batches
// that follow, goes alone: it is not left in the queue, never taken, until its caller gives up.
func TestBatch_QueuedWriteBiggerThanShrunkBatchesGoesAlone(t *testing.T) {
	hold := make(chan struct{})
	var held atomic.Bool
	heldc := make(chan struct{})
	send := func(ctx context.Context, sent *atomic.Bool, t *txnSpec) (*clientv3.TxnResponse, error) {
		sent.Store(true)
		if len(t.nested) > 1 {
			return nil, rpctypes.ErrRequestTooLarge
		}
		if held.CompareAndSwap(false, true) {
			close(heldc)
			<-hold
		}
		return &clientv3.TxnResponse{Header: &pb.ResponseHeader{Revision: 1}, Succeeded: true}, nil
	}
	b := newBatcher(send, 4*8192) // batches of at most 8 KiB
	put := func(key string, size int) chan error {
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var sent atomic.Bool
			_, err := b.txn(ctx, &sent, nil, &txnSpec{then: []clientv3.Op{clientv3.OpPut(key, strings.Repeat("v", size))}})
			errc <- err
		}()
		return errc
	}
	queued := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue)
	}
	first := put("a", 1)
	<-heldc
	var errcs []chan error
	for i, w := range []struct {
		key  string
		size int
	}{{"b", 3000}, {"c", 3000}, {"d", 6000}} {
		errcs = append(errcs, put(w.key, w.size))
		for queued() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	// b and c go as one batch, which etcd refuses: batches shrink to 4 KiB, smaller than d.
	close(hold)
	for i, errc := range append(errcs, first) {
		if err := <-errc; err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if b.refused != 1 {
		t.Fatalf("%d batches refused, want 1", b.refused)
	}
}
