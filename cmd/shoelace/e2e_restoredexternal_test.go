package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// An external etcd cluster restored by etcdutl (the runbook's procedure) kept no record of the
// revisions it lost, and the store's old id: appliance wait --revision R of a write after the
// snapshot counted the restored store's agents as having applied it. snapshot restored records
// the restore as snapshot restore does, once, and refuses a cluster restored without the bump.
func TestE2E_SnapshotRestoredOfAnExternalCluster(t *testing.T) {
	ep, stopEtcd := testutil.StartEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	s, err := startServer(t.TempDir(), nil, "--etcd-endpoints", ep[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	apply := func(c *runner, v string) int64 {
		file := filepath.Join(t.TempDir(), "web.yaml")
		writeFile(t, file, "keys:\n  a: \""+v+"\"\n")
		return revisionOf(t, c.ok("appliance", "apply", "web", "-f", file))
	}
	apply(c, "1")
	if _, err := adminClient(t, s).Enroll(context.Background(), "web", "vm-1", ""); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	st, err := snapshot.NewV3(zap.NewNop()).Status(snap)
	if err != nil {
		t.Fatal(err)
	}
	lost := apply(c, "2")
	idBefore, _ := healthOf(t, c)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	stopEtcd()

	// Restored without the bump: refused, nothing written.
	plain := testutil.RestoredEtcd(t, snap, 0)
	r := (&runner{t: t}).fails(exitError, "not past the snapshot's", "snapshot", "restored", snap, "--etcd-endpoints", plain[0])
	if !strings.Contains(r.stderr, "nothing was written") {
		t.Errorf("snapshot restored of a cluster without the bump: stderr %q, want it to say nothing was written", r.stderr)
	}
	if n := restoreRecords(t, plain); n != 0 {
		t.Errorf("after a refused snapshot restored: %d restore records, want 0", n)
	}

	ep2 := testutil.RestoredEtcd(t, snap, store.RestoreRevisionBump)
	// Another root than the snapshot's store: refused, and the cluster keeps no key under it.
	(&runner{t: t}).fails(exitError, "give --root "+store.DefaultRoot, "snapshot", "restored", snap, "--etcd-endpoints", ep2[0], "--root", "/other/")
	if n := keysUnder(t, ep2, "/other/"); n != 0 {
		t.Errorf("after snapshot restored with another root: %d keys under it, want 0", n)
	}
	out := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0])
	want := fmt.Sprintf("revisions %d to %d lost", st.Revision+1, st.Revision+store.RestoreRevisionBump)
	if !strings.Contains(out, want) || !strings.Contains(out, "recorded the restore") {
		t.Errorf("snapshot restored printed %q, want it to say %q", out, want)
	}
	again := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0])
	if !strings.Contains(again, "recorded already") {
		t.Errorf("snapshot restored run twice printed %q, want it to say the restore was recorded already", again)
	}
	if n := restoreRecords(t, ep2); n != 1 {
		t.Errorf("after snapshot restored twice: %d restore records, want 1", n)
	}

	s2, err := startServer(s.dataDir, nil, "--etcd-endpoints", ep2[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s2.stop()
	c2 := newCLI(t, s2)
	if id, _ := healthOf(t, c2); id == idBefore {
		t.Errorf("after snapshot restored the store id is still %s", id)
	}
	// A server serves the restored store: a third run says it is recorded already, writing
	// nothing (a run that would record refuses, TestStore_RestoredRefusalsLeaveNoKeys).
	if again := (&runner{t: t}).ok("snapshot", "restored", snap, "--etcd-endpoints", ep2[0]); !strings.Contains(again, "recorded already") {
		t.Errorf("snapshot restored run with a server up printed %q, want it to say the restore was recorded already", again)
	}
	c2.fails(exitError, fmt.Sprintf("revision %d was lost by a restore", lost), "appliance", "wait", "web", "--revision", fmt.Sprint(lost), "--for", "3s")
}

// restoreRecords counts the restore records under the default root of the etcd at ep.
func restoreRecords(t *testing.T, ep []string) int {
	t.Helper()
	return keysUnder(t, ep, store.DefaultRoot+"sys/"+store.RestorePrefix)
}

// keysUnder counts the keys under prefix of the etcd at ep.
func keysUnder(t *testing.T, ep []string, prefix string) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// A run refused for the cluster's revision (restored without the bump, or with another) said
// nothing was written, but opening the cluster under a root without a store had given that
// root a store id and the record of its look below: a stray store, whose keys a later check of
// another root counted. What the open made is taken back on every refusal, as on a wrong root.
func TestE2E_SnapshotRestoredRefusedForItsRevisionLeavesNoKeys(t *testing.T) {
	ep, stopEtcd := testutil.StartEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	s, err := startServer(t.TempDir(), nil, "--etcd-endpoints", ep[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	stopEtcd()
	plain := testutil.RestoredEtcd(t, snap, 0)
	(&runner{t: t}).fails(exitError, "not past the snapshot's", "snapshot", "restored", snap, "--etcd-endpoints", plain[0], "--root", "/other/")
	if n := keysUnder(t, plain, "/other/"); n != 0 {
		t.Errorf("after snapshot restored refused for the cluster's revision under another root: %d keys under it, want 0", n)
	}
}

// A run given another snapshot than the one etcdutl restored the cluster from (an earlier
// backup of the same store) recorded that one's revisions as lost: the cluster's revision was
// checked to be past the file's plus the bump, and a cluster restored from a later snapshot is.
// etcdutl's --mark-compacted compacts the cluster at exactly the snapshot's revision plus the
// bump: another file is refused, nothing written.
func TestE2E_SnapshotRestoredOfAnotherSnapshotRefused(t *testing.T) {
	ep, stopEtcd := testutil.StartEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	s, err := startServer(t.TempDir(), nil, "--etcd-endpoints", ep[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	older := filepath.Join(t.TempDir(), "older.db")
	c.ok("snapshot", "save", older)
	file := filepath.Join(t.TempDir(), "web.yaml")
	writeFile(t, file, "keys:\n  a: \"1\"\n")
	c.ok("appliance", "apply", "web", "-f", file)
	newer := filepath.Join(t.TempDir(), "newer.db")
	c.ok("snapshot", "save", newer)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	stopEtcd()
	ep2 := testutil.RestoredEtcd(t, newer, store.RestoreRevisionBump)
	(&runner{t: t}).fails(exitError, "not restored from", "snapshot", "restored", older, "--etcd-endpoints", ep2[0])
	if n := restoreRecords(t, ep2); n != 0 {
		t.Errorf("after snapshot restored of another snapshot: %d restore records, want 0", n)
	}
	(&runner{t: t}).ok("snapshot", "restored", newer, "--etcd-endpoints", ep2[0])
}

// snapshot restored of a cluster that does not answer (etcd not started again yet, a wrong
// port) logged "etcd not reachable yet; retrying in the background", a server's start, and then
// said "etcd answers, but the store's --root is not checked yet": the run opened the cluster as
// a server does, which serves while etcd is away and checks the root once it answers. The run
// says that etcd did not answer and why (here the connection refused), as unavailable (exit 6),
// nothing written.
func TestE2E_SnapshotRestoredOfAClusterThatDoesNotAnswer(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	r := (&runner{t: t}).fails(exitUnavailable, "connection refused", "snapshot", "restored", snap, "--etcd-endpoints", "http://"+dead)
	for _, bad := range []string{"etcd answers", "retrying in the background"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("snapshot restored of an etcd that does not answer: stderr %q, want nothing of %q", r.stderr, bad)
		}
	}
	if !strings.Contains(r.stderr, "nothing was written") {
		t.Errorf("snapshot restored of an etcd that does not answer: stderr %q, want it to say nothing was written", r.stderr)
	}
}
