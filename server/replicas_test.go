package server

import (
	"context"
	"encoding/json"
	"slices"
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
