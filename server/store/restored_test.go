package store_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStore_RestoredRefusalsLeaveNoKeys: each of Restored's four refusals of a cluster says
// nothing was written, and takes back the store id (and the record of its look below) that
// opening the cluster under a root without a store made there; a run that records the restore
// keeps the root's id. Two of the refusals (the cluster restored from another snapshot, and one
// a server serves) had no test under such a root.
func TestStore_RestoredRefusalsLeaveNoKeys(t *testing.T) {
	ctx := ctxT(t)
	s, err := store.Open(ctx, embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	save := func(name string) string {
		t.Helper()
		var buf bytes.Buffer
		if _, err := s.Snapshot(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	older := save("older.db")
	mustPut(t, s, "shared/a", "1")
	newer := save("newer.db")
	s.Close()

	// client reaches the etcd restored from snap as the runbook's etcdutl restores it.
	client := func(snap string, bump uint64) *clientv3.Client {
		t.Helper()
		cli, err := clientv3.New(clientv3.Config{Endpoints: testutil.RestoredEtcd(t, snap, bump)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	plain, bumped := client(newer, 0), client(newer, store.RestoreRevisionBump)
	// A server's leader record under the other root, written after the restore.
	if _, err := bumped.Put(ctx, "/served/sys/leaders/x", "{}"); err != nil {
		t.Fatal(err)
	}
	count := func(cli *clientv3.Client, prefix string) int64 {
		t.Helper()
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	for _, c := range []struct {
		name, snap, root, want string
		cli                    *clientv3.Client
	}{
		{"restored without the bump", newer, "/other/", "not past the snapshot's", plain},
		{"restored from another snapshot", older, "/other/", "not restored from this snapshot", bumped},
		{"served", newer, "/served/", "a Shoelace server serves the restored store", bumped},
		{"another root", newer, "/other/", "holds no Shoelace store under the root /other/", bumped},
	} {
		before := count(c.cli, c.root)
		_, err := store.Restored(ctx, store.RestoredConfig{SnapshotPath: c.snap, Endpoints: c.cli.Endpoints(), Root: c.root, Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was written") {
			t.Errorf("%s: %v; want it to say %q and that nothing was written", c.name, err, c.want)
		}
		if n := count(c.cli, c.root); n != before {
			t.Errorf("%s: %d keys under %s, %d before", c.name, n, c.root, before)
		}
	}
	res, err := store.Restored(ctx, store.RestoredConfig{SnapshotPath: newer, Endpoints: bumped.Endpoints(), Logger: quietLogger()})
	if err != nil || res.Already || res.ID == "" {
		t.Fatalf("restored: %+v, %v", res, err)
	}
	if n := count(bumped, store.DefaultRoot+"sys/store-id"); n != 1 {
		t.Errorf("after the restore was recorded: %d store ids, want 1", n)
	}
}
