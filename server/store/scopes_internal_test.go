package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// scopes names the ranges of the release scopes a write touches: each appliance's subtree, or
// the whole KV space for any other key (shared/ is in every view), each once, whatever the keys,
// deletes and prefixes.
func TestScopes_EachScopeOnce(t *testing.T) {
	s := &Store{kvRoot: "/r/kv/"}
	r := rand.New(rand.NewPCG(5, 6))
	names := []string{"appliances/a/k", "appliances/a/d/e", "appliances/b/k", "appliances/b", "appliances/web-x/k",
		"appliances/c", "shared/x", "other", "appliances", "appliances/b/"}
	for n := range 500 {
		eff := &effect{}
		want := map[string]bool{}
		for range 1 + r.IntN(6) {
			key := names[r.IntN(len(names))]
			abs := s.kvRoot + key
			switch r.IntN(3) {
			case 0:
				eff.puts = append(eff.puts, keyValue{abs, "v"})
			case 1:
				eff.dels = append(eff.dels, abs)
			default:
				abs = strings.TrimSuffix(abs, "/") + "/"
				eff.prefixes = append(eff.prefixes, abs)
			}
			if name, ok := api.ApplianceOf(strings.TrimSuffix(strings.TrimPrefix(abs, s.kvRoot), "/")); ok {
				want[s.kvRoot+api.ApplianceRoot(name)+"/"] = true
			} else {
				want[s.kvRoot] = true
			}
		}
		got := s.scopes(eff)
		var keys []string
		for _, sp := range got {
			if sp.end != clientv3.GetPrefixRangeEnd(sp.key) {
				t.Fatalf("case %d: span %q ends at %q", n, sp.key, sp.end)
			}
			keys = append(keys, sp.key)
		}
		slices.Sort(keys)
		var wantKeys []string
		for k := range want {
			wantKeys = append(wantKeys, k)
		}
		slices.Sort(wantKeys)
		if !slices.Equal(keys, wantKeys) {
			t.Fatalf("case %d (%s): scopes %q, want %q", n, fmt.Sprint(eff.puts, eff.dels, eff.prefixes), keys, wantKeys)
		}
	}
}
