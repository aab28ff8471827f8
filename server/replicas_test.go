package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestStatus_ListsReplicasSharingTheStore(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg), func(c *Config) { c.Listen = "127.0.0.1:7401" })
	b := newFixtureOn(t, testutil.OpenStore(t, cfg), func(c *Config) { c.Listen = "127.0.0.1:7402" })
	ids := func() []string {
		a.s.replicaBeat(context.Background())
		var h Status
		a.must(a.do("GET", "/v1/status", ""), 200, &h)
		if h.Replica != a.s.self.ID {
			t.Fatalf("status names replica %q, want %q", h.Replica, a.s.self.ID)
		}
		var out []string
		for _, r := range h.Replicas {
			if r.Version == "" || r.Started.IsZero() || r.LastSeen.IsZero() {
				t.Errorf("replica record %+v is incomplete", r)
			}
			out = append(out, r.ID)
		}
		return out
	}
	b.s.replicaBeat(context.Background()) // b's own beat runs in the background: make sure it has announced itself
	want := []string{a.s.self.ID, b.s.self.ID}
	slices.Sort(want)
	if got := ids(); !slices.Equal(got, want) {
		t.Fatalf("replicas = %v, want %v", got, want)
	}

	// A replica that stops withdraws its record; the other stops listing it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{a.s.self.ID}) {
		t.Fatalf("after b stopped, replicas = %v, want only %s", got, a.s.self.ID)
	}

	// A replica killed before it could withdraw its record, then started again on the same host
	// and address, replaces the record: it is listed once, as its new start.
	crashed := b.s.self
	crashed.Started, crashed.LastSeen = time.Now().UTC().Add(-time.Hour).Truncate(time.Second), time.Now().UTC().Truncate(time.Second)
	data, _ := json.Marshal(crashed)
	if _, err := a.s.st.SysPut(ctx, replicaPrefix+crashed.ID, data, -1); err != nil {
		t.Fatal(err)
	}
	c := newFixtureOn(t, testutil.OpenStore(t, cfg), func(c *Config) { c.Listen = "127.0.0.1:7402" })
	c.s.replicaBeat(context.Background())
	if c.s.self.ID != crashed.ID {
		t.Fatalf("the restarted replica's id is %s, want %s (the same host and address)", c.s.self.ID, crashed.ID)
	}
	if got := ids(); !slices.Equal(got, want) {
		t.Fatalf("after a restart, replicas = %v, want %v", got, want)
	}
	var h Status
	a.must(a.do("GET", "/v1/status", ""), 200, &h)
	for _, r := range h.Replicas {
		if r.ID == crashed.ID && !r.Started.Equal(c.s.self.Started) {
			t.Fatalf("the restarted replica is listed with its old start %s, want %s", r.Started, c.s.self.Started)
		}
	}
}

// Two replicas started with --listen 127.0.0.1:0 (the port the system picks) on one host are two
// replicas in /v1/status, each with the address it really listens on. Before, both were recorded
// under the id of "127.0.0.1:0", one record written over the other's, and listed as one replica
// that listens on port 0.
func TestStatus_ReplicasOnPortZeroAreListedApart(t *testing.T) {
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.EtcdListen = freeLoopback(t)
	a := serve(t, cfg)
	data, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	cfgB := testConfig()
	cfgB.Listen = "127.0.0.1:0"
	cfgB.EtcdEndpoints = []string{"http://" + cfg.EtcdListen}
	cfgB.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	b := serve(t, cfgB)

	var st Status
	waitFor(t, "both replicas in b's status", func() bool {
		res, body := b.req(t, token, "GET", "/v1/status", "")
		st = Status{}
		return res.StatusCode == 200 && json.Unmarshal(body, &st) == nil && len(st.Replicas) == 2
	})
	listens := []string{st.Replicas[0].Listen, st.Replicas[1].Listen}
	slices.Sort(listens)
	want := []string{strings.TrimPrefix(a.url, "http://"), strings.TrimPrefix(b.url, "http://")}
	slices.Sort(want)
	if !slices.Equal(listens, want) || st.Replicas[0].ID == st.Replicas[1].ID {
		t.Fatalf("replicas %+v, want two ids listening on %v", st.Replicas, want)
	}
}
