package ha

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestRunbook_EtcdNoSpace raises etcd's NOSPACE alarm under a replica and runs the runbook's
// etcd-nospace procedure as written: writes are refused while the alarm is raised, and after the
// procedure the history is compacted, every member defragmented, the alarm gone, /health/deps no
// longer degraded and writes taken again. (The runbook used to say "etcdctl compact <revision from
// endpoint status>": the status table has no revision, and its RAFT INDEX is refused as a future
// revision.)
func TestRunbook_EtcdNoSpace(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	p := newPKI(t, dir)
	c := startClusterTLS(t, filepath.Join(dir, "etcd"), p)
	admin := filepath.Join(dir, "admin.token")
	r := startReplicasTLS(t, dir, c.endpoints(), map[string]string{"a": admin}, p)["a"]
	api := newClient(r.url(), waitAdminToken(t, map[string]string{"a": admin}))
	api.hc = p.httpClient(30 * time.Second)
	waitTokenAccepted(t, api)
	ctx := context.Background()
	for _, v := range []string{"1", "2", "3", "4"} {
		if status, _, err := api.put(ctx, "shared/churn", v); status != http.StatusOK {
			t.Fatalf("put: %d %v", status, err)
		}
	}

	l, err := c.waitLeader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.etcd.Server.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE,
		MemberID: uint64(l.etcd.Server.MemberID()), Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, _, _ := api.put(ctx, "shared/during-nospace", "x")
		if status == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write under the NOSPACE alarm: %d, want 503", status)
		}
		time.Sleep(200 * time.Millisecond)
	}

	bin := t.TempDir()
	if err := os.Symlink(etcdctlPath(), filepath.Join(bin, "etcdctl")); err != nil {
		t.Fatal(err)
	}
	env := append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ETCDCTL_ENDPOINTS="+c.endpoints(), "ETCDCTL_CACERT="+p.caFile,
		"ETCDCTL_CERT="+p.etcdClientCert, "ETCDCTL_KEY="+p.etcdClientKey)
	out, err := runBlock(t, runbookProcedure(t, "etcd-nospace"), dir, env)
	if err != nil {
		t.Fatalf("runbook procedure etcd-nospace: %v\n%s", err, out)
	}
	if !strings.Contains(out, "alarm:NOSPACE") || !strings.Contains(out, "compacted revision") {
		t.Errorf("etcd-nospace output lists no NOSPACE alarm or no compaction:\n%s", out)
	}
	if n := strings.Count(out, "Finished defragmenting etcd member"); n != len(c.members) {
		t.Errorf("etcd-nospace defragmented %d members, want %d", n, len(c.members))
	}
	if alarms := l.etcd.Server.Alarms(); len(alarms) != 0 {
		t.Errorf("alarms after etcd-nospace: %v", alarms)
	}

	var last string
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		status, _, _ := api.put(ctx, "shared/after-nospace", "x")
		resp, err := api.hc.Get(r.url() + "/health/deps")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if status == http.StatusOK && resp.StatusCode == http.StatusOK && !strings.Contains(last, "degraded") {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("after etcd-nospace: writes or /health/deps not back: %s", last)
}
