package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// snapshot restored run again on a cluster whose restore from FILE it had recorded, once the
// cluster was compacted past the restore's revision (etcd's auto-compaction, with a server on
// it), exited 1 saying "compacted past revision … give the snapshot it was restored from":
// the history check ran before the record was looked at. Operators re-run runbook steps: the
// run says the restore is recorded already, naming the record, and writes nothing, even with
// the servers started again; another snapshot, and a cluster restored from another snapshot
// since, stay refused.
func TestE2E_SnapshotRestoredAgainAfterTheClusterIsCompacted(t *testing.T) {
	ep, stopEtcd := testutil.StartEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	s, err := startServer(t.TempDir(), nil, "--etcd-endpoints", ep[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	apply := func(c *runner, v string) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "web.yaml")
		writeFile(t, file, "keys:\n  a: \""+v+"\"\n")
		c.ok("appliance", "apply", "web", "-f", file)
	}
	older := filepath.Join(t.TempDir(), "older.db")
	c.ok("snapshot", "save", older)
	apply(c, "1")
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	stopEtcd()

	ep2 := testutil.RestoredEtcd(t, snap, store.RestoreRevisionBump)
	(&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0])
	rec := restoreRecord(t, ep2)
	s2, err := startServer(s.dataDir, nil, "--etcd-endpoints", ep2[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s2.stop()
	c2 := newCLI(t, s2)
	apply(c2, "2")
	id, _ := healthOf(t, c2)
	compactAll(t, ep2)
	replicas := keysUnder(t, ep2, store.DefaultRoot+"sys/"+store.ReplicaPrefix)

	// Run again, with the server up and the cluster compacted since: recorded already.
	again := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0])
	for _, want := range []string{"recorded already", fmt.Sprintf("snapshot revision %d", rec.Snapshot),
		fmt.Sprintf("restored at revision %d", rec.Restored), rec.Time.Format(time.RFC3339), "nothing was written"} {
		if !strings.Contains(again, want) {
			t.Errorf("snapshot restored run again after a compaction printed %q, want it to say %q", again, want)
		}
	}
	if n := restoreRecords(t, ep2); n != 1 {
		t.Errorf("after snapshot restored run again: %d restore records, want 1", n)
	}
	if got, _ := healthOf(t, c2); got != id {
		t.Errorf("after snapshot restored run again the store id is %s, want %s as before", got, id)
	}
	if n := keysUnder(t, ep2, store.DefaultRoot+"sys/"+store.ReplicaPrefix); n != replicas || n == 0 {
		t.Errorf("after snapshot restored run again: %d replica records, want the serving replica's %d kept", n, replicas)
	}
	var js struct {
		Already  bool      `json:"already_recorded"`
		Restored int64     `json:"restored_revision"`
		Time     time.Time `json:"time"`
	}
	out := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0], "--output", "json")
	if err := json.Unmarshal([]byte(out), &js); err != nil || !js.Already || js.Restored != rec.Restored || !js.Time.Equal(rec.Time) {
		t.Errorf("snapshot restored --output json run again: %q (%v), want already_recorded, restored_revision %d and time %s", out, err, rec.Restored, rec.Time)
	}
	// Another snapshot of the same store: refused as before.
	(&runner{t: t}).fails(exitError, "not restored from this snapshot", "snapshot", "restored", older, "--etcd-endpoints", ep2[0])

	// A cluster restored since from a later snapshot (which holds the first restore's record):
	// the first file is refused, the later one is recorded.
	later := filepath.Join(t.TempDir(), "later.db")
	c2.ok("snapshot", "save", later)
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	ep3 := testutil.RestoredEtcd(t, later, store.RestoreRevisionBump)
	(&runner{t: t}).fails(exitError, "not restored from this snapshot", "snapshot", "restored", snap, "--etcd-endpoints", ep3[0])
	if n := restoreRecords(t, ep3); n != 1 {
		t.Errorf("after snapshot restored of the earlier file: %d restore records, want the later snapshot's 1", n)
	}
	if out := (&runner{t: t}).ok("snapshot", "restored", later, "--etcd-endpoints", ep3[0]); !strings.Contains(out, "recorded the restore") {
		t.Errorf("snapshot restored of the later file printed %q, want it to record the restore", out)
	}
}

// snapshot restore records its restore itself; snapshot restored of the same file against that
// store's etcd (a server's --etcd-listen) exited 1 saying the cluster is compacted past the
// file's revision plus etcdutl's bump: the restore moved revisions to the clock's
// microseconds plus the bump, not the file's. It says the restore is recorded already.
func TestE2E_SnapshotRestoredOfAnEmbeddedRestore(t *testing.T) {
	s, err := startServer(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	file := filepath.Join(t.TempDir(), "web.yaml")
	writeFile(t, file, "keys:\n  a: \"1\"\n")
	c.ok("appliance", "apply", "web", "-f", file)
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	(&runner{t: t}).ok("snapshot", "restore", snap, "--data-dir", dir)
	etcdAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := startServer(dir, nil, "--etcd-listen", etcdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.stop()
	ep := []string{"http://" + etcdAddr}
	rec := restoreRecord(t, ep)
	out := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep[0])
	for _, want := range []string{"recorded already", fmt.Sprintf("snapshot revision %d", rec.Snapshot),
		fmt.Sprintf("restored at revision %d", rec.Restored), rec.Time.Format(time.RFC3339)} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshot restored of a snapshot restore's store printed %q, want it to say %q", out, want)
		}
	}
	if n := restoreRecords(t, ep); n != 1 {
		t.Errorf("after snapshot restored of a snapshot restore's store: %d restore records, want 1", n)
	}
}

// restoreRecord returns the one restore record under the default root of the etcd at ep.
func restoreRecord(t *testing.T, ep []string) store.LostRange {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), store.DefaultRoot+"sys/"+store.RestorePrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d restore records, want 1", len(resp.Kvs))
	}
	var l store.LostRange
	if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// compactAll compacts the etcd at ep at its revision, as its auto-compaction does.
func compactAll(t *testing.T, ep []string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	resp, err := cli.Get(ctx, "x", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}
