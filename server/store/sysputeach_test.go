package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// SysPutEach writes each put whose own guard holds and leaves out the others, on an external
// etcd and in process on an embedded one, alone and in batches with other writes.
func TestStore_SysPutEach(t *testing.T) {
	for _, c := range []struct {
		name string
		open func(t *testing.T) *store.Store
	}{
		{"external", func(t *testing.T) *store.Store { return testutil.Store(t) }},
		{"embedded", func(t *testing.T) *store.Store {
			cfg := testutil.StoreConfig(t)
			cfg.Endpoints, cfg.DataDir = nil, t.TempDir()
			return testutil.OpenStore(t, cfg)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			s := c.open(t)
			for k, v := range map[string]string{"tokens/present": "h1", "tokens/held": "h2"} {
				if _, err := s.SysPut(ctx, k, []byte(v), -1); err != nil {
					t.Fatal(err)
				}
			}
			puts := []store.SysPutIf{
				{Key: "instances/web/plain", Value: []byte("1")},
				{Key: "instances/web/absent-ok", Value: []byte("2"), Guard: "tokens/none"},
				{Key: "instances/web/absent-no", Value: []byte("3"), Guard: "tokens/present"},
				{Key: "instances/web/exists-ok", Value: []byte("4"), Guard: "tokens/present", Exists: true},
				{Key: "instances/web/exists-no", Value: []byte("5"), Guard: "tokens/none", Exists: true},
				{Key: "instances/web/is-ok", Value: []byte("6"), Guard: "tokens/held", Is: []byte("h2")},
				{Key: "instances/web/is-no", Value: []byte("7"), Guard: "tokens/held", Is: []byte("other")},
			}
			rev, err := s.SysPutEach(ctx, puts)
			if err != nil {
				t.Fatal(err)
			}
			m, at, err := s.SysList(ctx, "instances/web/")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"instances/web/plain": "1", "instances/web/absent-ok": "2", "instances/web/exists-ok": "4", "instances/web/is-ok": "6"}
			if len(m) != len(want) || at < rev {
				t.Errorf("written at %d (read at %d): %q, want %q", rev, at, m, want)
			}
			for k, v := range want {
				if string(m[k]) != v {
					t.Errorf("%s = %q, want %q", k, m[k], v)
				}
			}

			// Many at once, with plain writes beside them: batches nest them.
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Add(2)
				go func() {
					defer wg.Done()
					var ps []store.SysPutIf
					for j := range 10 {
						ps = append(ps, store.SysPutIf{Key: fmt.Sprintf("instances/db/vm-%d-%d", i, j), Value: []byte{byte('a' + j)}, Guard: "tokens/present", Exists: true})
					}
					if _, err := s.SysPutEach(ctx, ps); err != nil {
						t.Error(err)
					}
				}()
				go func() {
					defer wg.Done()
					if _, err := s.Put(ctx, fmt.Sprintf("shared/k%d", i), "v", -1); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			m, _, err = s.SysList(ctx, "instances/db/")
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 200 || string(m["instances/db/vm-19-9"]) != "j" {
				t.Errorf("%d records of 200 written together; vm-19-9 = %q", len(m), m["instances/db/vm-19-9"])
			}
		})
	}
}
