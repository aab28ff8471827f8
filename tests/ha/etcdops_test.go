package ha

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdctlPath is the etcdctl binary the procedures run: $SHOELACE_ETCDCTL (another build, such
// as the one ../shared/peers/build-peers.sh makes), else the one TestMain built from go.mod.
func etcdctlPath() string {
	if p := os.Getenv("SHOELACE_ETCDCTL"); p != "" {
		return p
	}
	return etcdctlBin
}

// TestRunbook_EtcdProcedures runs the runbook's etcd procedures as written against a 3-member
// cluster with mutual TLS and a replica on it: status, defragmentation and member replacement
// with etcdctl, and the whole-cluster restore from a snapshot with etcdutl.
func TestRunbook_EtcdProcedures(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	p := newPKI(t, dir)
	c := startClusterTLS(t, filepath.Join(dir, "etcd"), p)
	clusterStarted := time.Now()
	admin := filepath.Join(dir, "admin.token")
	ra := startReplicasTLS(t, dir, c.endpoints(), map[string]string{"a": admin}, p)["a"]
	waitFile(t, admin, 30*time.Second)
	api := newClient(ra.url(), admin)
	api.hc = p.httpClient(30 * time.Second)
	put := func(c *apiClient, key, value string) {
		t.Helper()
		for try := 0; ; try++ {
			status, _, err := c.put(context.Background(), key, value)
			if err == nil && status == http.StatusOK {
				return
			}
			if try == 50 {
				t.Fatalf("put %s: status %d, err %v", key, status, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	put(api, "appliances/web/release", "before-snapshot")

	bin := t.TempDir()
	tools := map[string]string{"shoelace": shoelaceBin, "etcdutl": etcdutlBin, "etcdctl": etcdctlPath()}
	for name, target := range tools {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{
		"ETCDCTL_ENDPOINTS":   c.endpoints(),
		"ETCDCTL_CACERT":      p.caFile,
		"ETCDCTL_CERT":        p.etcdClientCert,
		"ETCDCTL_KEY":         p.etcdClientKey,
		"SHOELACE_ADDR":       ra.url(),
		"SHOELACE_CA_FILE":    p.caFile,
		"SHOELACE_TOKEN_FILE": admin,
		"BACKUP_DIR":          filepath.Join(dir, "backups"),
	}
	run := func(t *testing.T, name string, extra map[string]string) string {
		t.Helper()
		env := append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		for k, v := range vars {
			env = append(env, k+"="+v)
		}
		for k, v := range extra {
			env = append(env, k+"="+v)
		}
		out, err := runBlock(t, runbookProcedure(t, name), dir, env)
		if err != nil {
			t.Fatalf("runbook procedure %q: %v\n%s", name, err, out)
		}
		return out
	}

	t.Run("etcdctl procedures", func(t *testing.T) {
		out := run(t, "etcd-status", nil)
		for _, m := range c.members {
			if !strings.Contains(out, m.clientURL) || !strings.Contains(out, m.name) {
				t.Errorf("etcd-status does not show member %s at %s", m.name, m.clientURL)
			}
		}
		leaders := 0
		for _, row := range etcdTableRows(out, "IS LEADER") {
			if row["IS LEADER"] == "true" {
				leaders++
			}
		}
		if leaders != 1 {
			t.Errorf("etcd-status shows %d leaders, want 1", leaders)
		}
		out = run(t, "etcd-defrag", nil)
		if n := strings.Count(out, "Finished defragmenting etcd member"); n != len(c.members) {
			t.Errorf("etcd-defrag defragmented %d members, want %d", n, len(c.members))
		}

		// m2 dies for good; the runbook replaces it with m3. etcd adds a voting member only when
		// the others have been connected for 5 s (its health interval): wait for that first.
		if wait := time.Until(clusterStarted.Add(6 * time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		old := c.members[2]
		old.kill()
		ports, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		nm := &member{name: "m3", dir: filepath.Join(c.dir, "m3"),
			clientURL: fmt.Sprintf("https://127.0.0.1:%d", ports[0]), peerURL: fmt.Sprintf("https://127.0.0.1:%d", ports[1])}
		out = run(t, "etcd-member-replace", map[string]string{"OLD_MEMBER": "m2", "NEW_MEMBER": "m3", "NEW_PEER_URL": nm.peerURL})
		var initial string
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "ETCD_INITIAL_CLUSTER="); ok {
				initial = strings.Trim(v, `"`)
			}
		}
		if !strings.Contains(initial, "m3="+nm.peerURL) || strings.Contains(initial, "m2=") {
			t.Fatalf("member add printed ETCD_INITIAL_CLUSTER=%q: want m3 and not m2", initial)
		}
		if err := c.startMember(nm, initial, embed.ClusterStateFlagExisting); err != nil {
			t.Fatal(err)
		}
		c.retired = append(c.retired, old)
		c.members[2] = nm
		select {
		case <-nm.etcd.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatal("new member m3 not ready after 30s")
		}
		put(api, "appliances/web/after-replace", "x")
		vars["ETCDCTL_ENDPOINTS"] = c.endpoints()
		out = run(t, "etcd-status", nil)
		names := map[string]bool{}
		for _, row := range etcdTableRows(out, "NAME") {
			names[row["NAME"]] = true
		}
		if !names["m3"] || names["m2"] || !strings.Contains(out, nm.clientURL) {
			t.Errorf("etcd-status after the replacement: members %v, want m3 and no m2", names)
		}
	})

	// Whole-cluster restore: a snapshot taken through Shoelace, a write after it, the cluster
	// lost, every member restored by the runbook's etcdutl procedure.
	_, _, hdr, err := api.do(context.Background(), http.MethodGet, "/v1/kv/appliances/web/release", nil)
	if err != nil {
		t.Fatal(err)
	}
	storeBefore := hdr.Get("X-Shoelace-Store")
	run(t, "backup-snapshot", nil)
	snap := newestFile(t, vars["BACKUP_DIR"], ".db")
	put(api, "appliances/web/release", "after-snapshot")
	put(api, "appliances/web/lost-by-restore", "x")
	ra.terminate()
	c.stop()
	for _, m := range c.members {
		run(t, "etcd-restore", map[string]string{"SNAPSHOT": snap, "CLUSTER_TOKEN": "shoelace-restored-test",
			"MEMBER": m.name, "PEER_URL": m.peerURL, "INITIAL_CLUSTER": c.initialCluster(), "ETCD_DATA_DIR": m.dir})
		if moved, _ := filepath.Glob(m.dir + ".before-restore.*"); len(moved) != 1 {
			t.Errorf("member %s: old data dir not kept aside: %v", m.name, moved)
		}
	}
	if err := c.startAll(embed.ClusterStateFlagNew); err != nil {
		t.Fatalf("start the restored cluster: %v", err)
	}
	// etcdutl keeps the snapshot's store id and records no loss: the runbook records the restore, as
	// shoelace snapshot restore does, so that X-Shoelace-Store changes and an agent that enrolled
	// again after the snapshot is not refused as a clone of itself.
	run(t, "etcd-restore-id", map[string]string{"SNAPSHOT": snap})
	rb := startReplicasTLS(t, dir, c.endpoints(), map[string]string{"b": filepath.Join(dir, "admin-b.token")}, p)["b"]
	after := newClient(rb.url(), admin)
	after.hc = p.httpClient(30 * time.Second)
	status, e, err := after.get(context.Background(), "appliances/web/release")
	if err != nil || status != http.StatusOK || e.Value != "before-snapshot" {
		t.Errorf("after the restore: release = %q (status %d, err %v), want before-snapshot", e.Value, status, err)
	}
	_, _, hdr, err = after.do(context.Background(), http.MethodGet, "/v1/kv/appliances/web/release", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := hdr.Get("X-Shoelace-Store"); storeBefore == "" || id == "" || id == storeBefore {
		t.Errorf("after the restore: X-Shoelace-Store %q, before it %q: want a new store id", id, storeBefore)
	}
	if idx, _ := strconv.ParseInt(hdr.Get("X-Shoelace-Index"), 10, 64); idx < 1_000_000_000 {
		t.Errorf("after the restore: X-Shoelace-Index %q, want the revision bumped by 1,000,000,000", hdr.Get("X-Shoelace-Index"))
	}
	if status, _, err := after.get(context.Background(), "appliances/web/lost-by-restore"); err != nil || status != http.StatusNotFound {
		t.Errorf("a key written after the snapshot: status %d, err %v; want 404", status, err)
	}
	put(after, "appliances/web/after-restore", "x") // the restored cluster takes writes
}

// etcdTableRows returns the rows of every etcdctl "-w table" table whose header has column,
// as column name → cell.
func etcdTableRows(out, column string) []map[string]string {
	var rows []map[string]string
	var header []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "│") {
			if !strings.Contains(line, "─") {
				header = nil
			}
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(strings.TrimSpace(line), "│"), "│") {
			cells = append(cells, strings.TrimSpace(c))
		}
		if slices.Contains(cells, column) {
			header = cells
			continue
		}
		if header == nil || len(cells) != len(header) {
			continue
		}
		row := map[string]string{}
		for i, h := range header {
			row[h] = cells[i]
		}
		rows = append(rows, row)
	}
	return rows
}
