package ha

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The runbook's "agent behind" alert, against a real server and agent: quiet while the agent is
// up to date, however far other writes and the agents' reports move the store's revision, and
// firing while a view the agent received is not applied.
func TestRunbook_AgentBehindAlert(t *testing.T) {
	skipShort(t)
	const expr = "`shoelace_agent_view_revision > shoelace_agent_applied_revision`"
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(line, "| agent behind") {
			found = strings.Contains(line, expr)
			if !found {
				t.Fatalf("docs/RUNBOOK.md's agent behind alert is not the one this test checks (%s):\n%s", expr, line)
			}
		}
	}
	if !found {
		t.Fatal("docs/RUNBOOK.md has no agent behind alert")
	}

	r := newRunbookEnv(t)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	r.agentToken(t, "web-frontend-agents", tokFile)
	metricsAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	config, dst := r.agentConfig(t, dir, tokFile, "vm-1", "metrics_listen: "+metricsAddr+"\n")
	r.put("appliances/web-frontend/port", "8080")
	r.put("appliances/web-frontend/name", "web") // the appliance outlives the port's deletion
	a := startAgent(t, config)
	a.waitRendered(t, dst, "port=8080\n", 30*time.Second)

	// Writes the agent's appliance does not see, and time for its reports.
	for i := range 5 {
		r.put("appliances/other/x", fmt.Sprint(i))
	}
	var agentM, serverM map[string]float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		agentM, serverM = scrape(t, "http://"+metricsAddr+"/metrics"), scrape(t, r.vars["SHOELACE_ADDR"]+"/metrics")
		if serverM["shoelace_store_revision"] > agentM["shoelace_agent_applied_revision"]+4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's revision %v did not move past the agent's %v", serverM["shoelace_store_revision"], agentM["shoelace_agent_applied_revision"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if view, applied := agentM["shoelace_agent_view_revision"], agentM["shoelace_agent_applied_revision"]; view > applied {
		t.Errorf("an agent up to date fires the alert: view revision %v > applied %v", view, applied)
	}

	// A view the agent cannot render: the alert fires, and the file stays.
	if status, _, _, err := r.admin.do(t.Context(), http.MethodDelete, "/v1/kv/appliances/web-frontend/port", nil); err != nil || status != http.StatusOK {
		t.Fatalf("delete: %d %v", status, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		agentM = scrape(t, "http://"+metricsAddr+"/metrics")
		if agentM["shoelace_agent_view_revision"] > agentM["shoelace_agent_applied_revision"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a view the agent could not apply does not fire the alert: %v", agentM)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b, _ := os.ReadFile(dst); string(b) != "port=8080\n" {
		t.Errorf("the file after a failed render: %q", b)
	}
	r.put("appliances/web-frontend/port", "8081")
	a.waitRendered(t, dst, "port=8081\n", 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; {
		agentM = scrape(t, "http://"+metricsAddr+"/metrics")
		if agentM["shoelace_agent_view_revision"] == agentM["shoelace_agent_applied_revision"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the alert still fires after the agent applied the next view: %v", agentM)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape reads the samples without labels of a Prometheus text page.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	m := map[string]float64{}
	for sc := bufio.NewScanner(res.Body); sc.Scan(); {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// The runbook's alert on a replica whose revision lags, against two real replicas of one etcd
// cluster: it compares each replica with the highest revision of a minute before (here, of the
// scrapes before the last writes). It compared the replicas' revisions at one instant (max - min
// > 0), which two healthy replicas scraped at different moments fail whenever a write comes
// between the scrapes — and a fleet's agents write their reports all the time — so it fired
// without cause.
func TestRunbook_ReplicaRevisionAlert(t *testing.T) {
	skipShort(t)
	const expr = "`shoelace_store_revision < on(job) group_left() max by (job) (shoelace_store_revision offset 1m)`"
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(line, "| a replica's revision stuck") {
			found = strings.Contains(line, expr)
			if !found {
				t.Fatalf("docs/RUNBOOK.md's replica revision alert is not the one this test checks (%s):\n%s", expr, line)
			}
		}
	}
	if !found {
		t.Fatal("docs/RUNBOOK.md has no alert on a replica's revision stuck")
	}

	dir := t.TempDir()
	c := startCluster(t, filepath.Join(dir, "etcd"))
	tokenFiles := map[string]string{"a": filepath.Join(dir, "admin-a.token"), "b": filepath.Join(dir, "admin-b.token")}
	reps := startReplicas(t, dir, c.endpoints(), tokenFiles)
	ra, rb := reps["a"], reps["b"]
	ca := newClient(ra.url(), waitAdminToken(t, tokenFiles))
	waitTokenAccepted(t, ca)
	revision := func(r *replica) float64 { return scrape(t, r.url()+"/metrics")["shoelace_store_revision"] }
	put := func(i int) float64 {
		status, rev, err := ca.put(context.Background(), fmt.Sprintf("appliances/web/k%d", i), "v")
		if err != nil || status != http.StatusOK {
			t.Fatalf("put: status %d, %v", status, err)
		}
		return float64(rev)
	}
	// seen waits until replica r's watch has delivered rev: a healthy replica.
	seen := func(r *replica, rev float64) float64 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if got := revision(r); got >= rev {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s never showed revision %v", r.name, rev)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	rev := put(0)
	// The scrapes "a minute before": both replicas, at the revision of that moment.
	before := max(seen(ra, rev), seen(rb, rev))
	// Writes meanwhile, then the scrapes of now, at different moments with a write between them,
	// as Prometheus scrapes its targets.
	for i := 1; i <= 3; i++ {
		rev = put(i)
	}
	a := seen(ra, rev)
	b := seen(rb, put(4))
	if a == b {
		t.Fatalf("replicas scraped with a write between the scrapes show one revision (%v): the premise of this test does not hold", a)
	}
	t.Logf("healthy replicas scraped apart: revisions %v and %v (max - min > 0, the old alert, holds)", a, b)
	for name, now := range map[string]float64{"a": a, "b": b} {
		if now < before {
			t.Errorf("the alert fires for healthy replica %s: revision %v < %v, the highest of the scrapes before", name, now, before)
		}
	}
}
