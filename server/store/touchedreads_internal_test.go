package store

import (
	"reflect"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// touchedReads makes its reads as clientv3.OpGet makes them: the exact keys grouped by parent
// (a key alone, or a range of a parent's keys), then the prefixes.
func TestTouchedReads_AsOpGet(t *testing.T) {
	exact := []string{"/r/kv/appliances/a/k1", "/r/kv/appliances/a/k2", "/r/kv/appliances/a/k3", "/r/kv/appliances/b/k", "/r/kv/shared/x"}
	prefixes := []string{"/r/kv/appliances/c/"}
	want := []clientv3.Op{
		clientv3.OpGet(exact[0], clientv3.WithRange(exact[2]+"\x00")),
		clientv3.OpGet(exact[3]),
		clientv3.OpGet(exact[4]),
		clientv3.OpGet(prefixes[0], clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	}
	if got := touchedReads(exact, prefixes); !reflect.DeepEqual(got, want) {
		t.Fatalf("touchedReads:\n%#v\nwant\n%#v", got, want)
	}
	// The template is never changed by the reads made from it.
	if !reflect.DeepEqual(getOp, clientv3.OpGet("")) {
		t.Fatalf("getOp changed: %#v", getOp)
	}
}
