package store_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// BenchmarkStore_ReleasesRead reads every release record of a store holding 50,000 (200
// appliances' histories) with one write between reads: "decode-all" decodes every record each
// time, as every read did until 2026-12-04 (the baseline); "changed-only" decodes only what
// came since the last read, as reads do now.
func BenchmarkStore_ReleasesRead(b *testing.B) {
	s := openStore(b)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd(b).Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	const records = 50000
	var ops []clientv3.Op
	for i := range records {
		app := fmt.Sprintf("app-%03d", i%200)
		id := store.NewReleaseID(time.Now())
		rec, err := json.Marshal(api.Release{ID: id, Time: time.Now(), Token: "pipeline", Remote: "10.0.0.1:5", Message: "deploy build 1234", Kind: api.KindTxn,
			Changes: []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: app, Changed: []string{"appliances/" + app + "/db/host", "appliances/" + app + "/db/port"}, ChangedCount: 2}}})
		if err != nil {
			b.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(s.Root()+"sys/releases/"+id, string(rec)))
		if len(ops) == 100 || i == records-1 {
			if _, err := cli.Txn(ctxT(b)).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	for _, mode := range []string{"decode-all", "changed-only"} {
		b.Run(mode, func(b *testing.B) {
			releases(b, s)
			for b.Loop() {
				b.StopTimer()
				if _, err := s.Put(relCtx(b, api.KindPut), "appliances/web/k", "v", -1); err != nil {
					b.Fatal(err)
				}
				if mode == "decode-all" {
					store.DropHeldReleases(s)
				}
				b.StartTimer()
				if rs := releases(b, s); len(rs) < records {
					b.Fatalf("%d releases read, want %d or more", len(rs), records)
				}
			}
		})
	}
}
