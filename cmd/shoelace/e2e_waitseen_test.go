package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An agent that has nothing new to report has its record's last_seen written again only every
// five minutes (a twelfth of --instance-stale, at most five minutes), at its first request
// after that: a live agent's last_seen is up to five minutes and a long-poll old. appliance wait
// counted as alive only the agents seen within --seen-within (5m by default) of the newest
// report, so right after a write, with the fast agents' reports fresh, a live agent seen 5m30s
// before was left out, and the wait said every agent applied the revision while it had not.
func TestE2E_WaitCountsAnAgentSeenAtTheLastRefresh(t *testing.T) {
	etcdAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	s, err := startServer(t.TempDir(), nil, "--etcd-listen", etcdAddr)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = s.stop() })
	c := newCLI(t, s)
	r0 := revisionOf(t, c.ok("kv", "put", "appliances/e2e-wait/a", "1"))
	agentToken := strings.TrimSpace(lastLine(c.ok("token", "create", "--name", "e2e-wait-agent", "--appliance", "e2e-wait")))
	report := func(instance string, applied int64) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.url()+"/v1/appliances/e2e-wait", nil)
		req.Header.Set("Authorization", "Bearer "+agentToken)
		req.Header.Set(api.HeaderInstance, instance)
		req.Header.Set(api.HeaderApplied, fmt.Sprint(applied))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("view request of %s: %s", instance, resp.Status)
		}
	}
	report("fast", r0)
	// slow's record as the server last wrote it, 5m30s ago: slow is alive, its long-polls
	// carry nothing new, and its record is not written again before five minutes have passed.
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	rec, _ := json.Marshal(api.Instance{Appliance: "e2e-wait", Instance: "slow", Applied: r0, Remote: "127.0.0.1", Token: "e2e-wait-agent",
		LastSeen: time.Now().UTC().Add(-5*time.Minute - 30*time.Second).Truncate(time.Second)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := etcd.Put(ctx, "/shoelace/sys/instances/e2e-wait/slow", string(rec)); err != nil {
		t.Fatal(err)
	}

	rev := revisionOf(t, c.ok("kv", "put", "appliances/e2e-wait/a", "2"))
	report("fast", rev)
	r := c.fails(exitError, fmt.Sprintf("slow (applied %d)", r0), "appliance", "wait", "e2e-wait", "--revision", fmt.Sprint(rev), "--for", "3s", "--interval", "500ms")
	if r.stdout != "" {
		t.Errorf("appliance wait printed %q while slow had not applied revision %d", r.stdout, rev)
	}
	report("slow", rev)
	if out := c.ok("appliance", "wait", "e2e-wait", "--revision", fmt.Sprint(rev), "--for", "30s", "--interval", "500ms"); out != fmt.Sprintf("2 agents applied revision %d\n", rev) {
		t.Errorf("appliance wait once both applied: %q", out)
	}
}

// lastLine is the last line of s, without its newline.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
