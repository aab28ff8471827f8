package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestStatus_ListsReplicasSharingTheStore(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
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
}
