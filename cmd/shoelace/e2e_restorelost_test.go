package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// restoredWithLoss is a store restored from a snapshot after a write of appliance web (lost,
// at revision lost) that followed it, served by s2, whose instance vm-1 reports the restored
// store's revision as applied; c2 is the CLI of s2 with the admin token.
type restoredWithLoss struct {
	s2            *testServer
	c2            *runner
	snapRev, lost int64
	// snap is the snapshot's file, and adminToken the file of an admin token it holds.
	snap, adminToken string
}

func restoreWithLoss(t *testing.T) restoredWithLoss {
	t.Helper()
	s, err := startServer(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	// Applies: each keeps a copy of the tree, which a rollback restores once etcd compacted it.
	apply := func(v string) int64 {
		file := filepath.Join(t.TempDir(), "web.yaml")
		writeFile(t, file, "keys:\n  a: \""+v+"\"\n")
		return revisionOf(t, c.ok("appliance", "apply", "web", "-f", file))
	}
	apply("1")
	en, err := adminClient(t, s).Enroll(context.Background(), "web", "vm-1", "")
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	st, err := snapshot.NewV3(zap.NewNop()).Status(snap) // what restore reads it at
	if err != nil {
		t.Fatal(err)
	}
	snapRev := st.Revision
	lost := apply("2")
	adminToken := s.adminTokenFile()
	tok, err := os.ReadFile(adminToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s2, c2 := serveRestored(t, snap, adminToken, tok)
	_, rev := healthOf(t, c2)
	if rev <= lost {
		t.Fatalf("restored store at revision %d, not past the lost write's %d", rev, lost)
	}
	// vm-1 (enrolled before the snapshot) reads its view of the restored store and applies it.
	req, err := http.NewRequest(http.MethodGet, s2.url()+"/v1/appliances/web", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+en.Token)
	req.Header.Set(api.HeaderInstance, "vm-1")
	req.Header.Set(api.HeaderApplied, fmt.Sprint(rev))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vm-1's view of the restored store: %s", resp.Status)
	}
	return restoredWithLoss{s2: s2, c2: c2, snapRev: snapRev, lost: lost, snap: snap, adminToken: adminToken}
}

// serveRestored restores snap into a new data dir, gives it the admin token tok (of the file
// adminToken) and starts a server on it, stopped at the test's end; c is its CLI with that token.
func serveRestored(t *testing.T, snap, adminToken string, tok []byte) (s *testServer, c *runner) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	if r := (&runner{t: t}).run("snapshot", "restore", snap, "--data-dir", dir); r.code != 0 {
		t.Fatalf("snapshot restore: %s", r)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := startServer(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	return s, &runner{t: t, env: []string{"SHOELACE_ADDR=" + s.url(), "SHOELACE_TOKEN_FILE=" + adminToken}}
}

// appliance wait --revision R of a write that a restore lost (after the snapshot, before the
// restore) printed "1 agent applied revision R": the restored store's revisions, moved past R,
// made every agent's report count as applied, though no agent ever saw the write. It says the
// restore lost it.
func TestE2E_WaitForARevisionTheRestoreLost(t *testing.T) {
	x := restoreWithLoss(t)
	r := x.c2.fails(exitError, fmt.Sprintf("revision %d was lost by a restore", x.lost), "appliance", "wait", "web", "--revision", fmt.Sprint(x.lost), "--for", "3s")
	for _, w := range []string{fmt.Sprintf("snapshot at revision %d", x.snapRev), "write it again"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("appliance wait of a lost revision: stderr %q, want it to say %q", r.stderr, w)
		}
	}
	// A revision the snapshot holds is applied as before.
	x.c2.ok("appliance", "wait", "web", "--revision", fmt.Sprint(x.snapRev), "--for", "3s")
}

// appliance rollback --to R of a revision a restore lost set the appliance's keys back to the
// snapshot's (the release copy before R) and recorded that as "rollback of web to revision R",
// a state R never had. It is refused, naming the restore's gap, and nothing is written.
func TestE2E_RollbackToARevisionTheRestoreLost(t *testing.T) {
	x := restoreWithLoss(t)
	x.c2.ok("kv", "put", "appliances/web/a", "3")
	r := x.c2.fails(exitError, fmt.Sprintf("revision %d was lost by a restore", x.lost), "appliance", "rollback", "web", "--to", fmt.Sprint(x.lost))
	for _, w := range []string{fmt.Sprintf("revisions %d to ", x.snapRev+1), "nothing was written"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("rollback to a lost revision: stderr %q, want it to say %q", r.stderr, w)
		}
	}
	if got := x.c2.ok("kv", "get", "appliances/web/a"); got != "3" {
		t.Errorf("after a refused rollback appliances/web/a = %q, want 3", got)
	}
	x.c2.fails(exitError, fmt.Sprintf("revision %d was lost by a restore", x.lost), "appliance", "diff", "web", "--from", fmt.Sprint(x.lost))
	// The snapshot's revision is the restored store's, and can be rolled back to.
	x.c2.ok("appliance", "rollback", "web", "--to", fmt.Sprint(x.snapRev))
	if got := x.c2.ok("kv", "get", "appliances/web/a"); got != "1" {
		t.Errorf("after a rollback to the snapshot's revision appliances/web/a = %q, want 1", got)
	}
}

// The same snapshot restored a second time, after writes to the first restore's store, moved
// revisions as far as the first restore had: the second store's revisions were those of the
// first's writes again, and no record of the second restore named them, so appliance wait
// --revision R of a write to the first store counted the agents' reports of the second, and
// rollback --to R restored a state R never had. R is lost as the first restore's writes are.
func TestE2E_WaitAndRollbackToARevisionOfAnEarlierRestore(t *testing.T) {
	x := restoreWithLoss(t)
	mine := revisionOf(t, x.c2.ok("kv", "put", "appliances/web/a", "written to the first restore"))
	if err := x.s2.stop(); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(x.adminToken)
	if err != nil {
		t.Fatal(err)
	}
	_, c3 := serveRestored(t, x.snap, x.adminToken, tok)
	for range 3 {
		c3.ok("kv", "put", "appliances/web/a", "written to the second restore")
	}
	if _, rev := healthOf(t, c3); rev <= mine {
		t.Fatalf("the second restore's store at revision %d, not past the first's write at %d", rev, mine)
	}
	lost := fmt.Sprintf("revision %d was lost by a restore", mine)
	r := c3.fails(exitError, lost, "appliance", "wait", "web", "--revision", fmt.Sprint(mine), "--for", "3s")
	if w := fmt.Sprintf("snapshot at revision %d", x.snapRev); !strings.Contains(r.stderr, w) {
		t.Errorf("appliance wait of a revision of the first restore: stderr %q, want it to say %q", r.stderr, w)
	}
	r = c3.fails(exitError, lost, "appliance", "rollback", "web", "--to", fmt.Sprint(mine))
	if !strings.Contains(r.stderr, "nothing was written") {
		t.Errorf("rollback to a revision of the first restore: stderr %q, want it to say nothing was written", r.stderr)
	}
	c3.fails(exitError, lost, "appliance", "diff", "web", "--from", fmt.Sprint(mine))
	if got := c3.ok("kv", "get", "appliances/web/a"); got != "written to the second restore" {
		t.Errorf("after a refused rollback appliances/web/a = %q", got)
	}
}

// After a restore, the refusal of a lost revision said that "a rollback to the snapshot's
// revision restores what the store holds of that time", but an appliance written with kv put
// (no release copy of its tree) could not be rolled back to it: 410, "kept no copy of its tree:
// the oldest revision that can be restored is R2", R2 being where the restore moved revisions,
// itself refused as lost. The restored store holds the snapshot's keys at R2 (etcd's restore
// compacts there): a revision up to the snapshot's, after the appliance's last change before
// it, is read there; the oldest revision named is one that can be restored.
func TestE2E_RollbackToTheSnapshotsRevisionWithoutACopy(t *testing.T) {
	s, err := startServer(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/web/a", "1")
	unchanged := revisionOf(t, c.ok("kv", "put", "appliances/other/x", "1"))
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap)
	st, err := snapshot.NewV3(zap.NewNop()).Status(snap)
	if err != nil {
		t.Fatal(err)
	}
	c.ok("kv", "put", "appliances/web/a", "lost")
	adminToken := s.adminTokenFile()
	tok, err := os.ReadFile(adminToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	_, c2 := serveRestored(t, snap, adminToken, tok)
	c2.ok("kv", "put", "appliances/web/a", "2")
	c2.ok("kv", "put", "appliances/web/b", "2")
	if got := c2.ok("appliance", "diff", "web", "--from", fmt.Sprint(st.Revision)); !strings.Contains(got, "~ a=2 (was 1)") || !strings.Contains(got, "+ b=2") {
		t.Errorf("appliance diff web --from the snapshot's revision = %q, want a changed from 1 and b added", got)
	}
	// A revision before the snapshot's, after the appliance's last change, is the same tree.
	c2.ok("appliance", "diff", "web", "--from", fmt.Sprint(unchanged))
	c2.ok("appliance", "rollback", "web", "--to", fmt.Sprint(st.Revision))
	if got := c2.ok("kv", "get", "appliances/web/a"); got != "1" {
		t.Errorf("after a rollback to the snapshot's revision appliances/web/a = %q, want 1", got)
	}
	c2.fails(exitNotFound, "not found", "kv", "get", "appliances/web/b")
	// Before the appliance's last change before the snapshot nothing gives its tree: the
	// oldest revision named can be restored.
	r := c2.fails(exitError, "the oldest revision that can be restored is ", "appliance", "diff", "web", "--from", "1")
	_, oldest, _ := strings.Cut(r.stderr, "the oldest revision that can be restored is ")
	oldest = strings.TrimRight(oldest, "\n")
	c2.ok("appliance", "diff", "web", "--from", oldest)
}
