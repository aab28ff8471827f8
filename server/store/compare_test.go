package store

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// TestCompare_AsClientv3: compare makes the very compare clientv3.Compare makes, for every
// target and result the store uses, with and without a range.
func TestCompare_AsClientv3(t *testing.T) {
	targets := []struct {
		name string
		make func(string) clientv3.Cmp
		v    any
	}{
		{"mod", clientv3.ModRevision, int64(42)},
		{"mod int", clientv3.ModRevision, 7},
		{"create", clientv3.CreateRevision, 0},
		{"version", clientv3.Version, int64(3)},
		{"value", clientv3.Value, "v\x00w"},
	}
	for _, tg := range targets {
		for _, result := range []string{"=", "!=", ">", "<"} {
			for _, prefix := range []bool{false, true} {
				want := clientv3.Compare(tg.make("k/a"), result, tg.v)
				got := compare(tg.make("k/a"), result, tg.v)
				if prefix {
					want, got = want.WithPrefix(), got.WithPrefix()
				}
				if !proto.Equal(got.GetCompare(), want.GetCompare()) {
					t.Errorf("%s %s (prefix %v): %v, want %v", tg.name, result, prefix, got.GetCompare(), want.GetCompare())
				}
			}
		}
	}
}

// TestCompare_Refuses: what clientv3.Compare panics on, compare panics on.
func TestCompare_Refuses(t *testing.T) {
	for name, f := range map[string]func(){
		"result":       func() { compare(clientv3.ModRevision("k"), "<=", 1) },
		"value int":    func() { compare(clientv3.Value("k"), "=", 1) },
		"mod string":   func() { compare(clientv3.ModRevision("k"), "=", "1") },
		"lease target": func() { compare(clientv3.LeaseValue("k"), "=", 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
