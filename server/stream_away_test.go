package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
	"github.com/shoelace-dev/shoelace/server/store"
)

// A replica restarted while etcd is away (the embedded etcd of the other replica restarting)
// is asked for a stream by agents whose index it has not seen: their first line needs the view,
// which the store cannot give. The stream must not stay silent past the client's 5 s for its
// first line: an agent took that for a proxy that buffers answers and left streaming for 10
// minutes (a fleet of 45 agents: 7 of them after one restart of both replicas). It starts with a
// heartbeat at the client's own index, and the view follows on the same stream once etcd is back.
func TestStream_StoreAwayAnswersBeforeFirstLineTimeout(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	index := a.put("appliances/web/x", "1")
	a.put("appliances/web/x", "2")
	agent := a.newToken(api.TokenRequest{Name: "agent", Appliance: "web"})

	// Replica b starts after those writes: the agent's index is below what its hub knows.
	p := faultproxy.Start(t, cfg.Endpoints[0])
	cfg.Endpoints = []string{p.URL()}
	cfg.RequestTimeout = store.DefaultRequestTimeout
	cfg.AttemptTimeout = store.DefaultAttemptTimeout
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	p.Down()
	defer p.Up()
	// The cut's end of file reaches the store's connection now, not during the stream's first
	// read (which it fails at once, a 503 the client retries: not what this test is about; CI
	// saw it under load). A read of its own takes it, or waits on the connection going again.
	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	b.s.st.Health(hctx)
	hcancel()

	c, err := client.New(b.srv.URL, client.Options{Token: agent})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	// etcd comes back after the client's 5 s for the stream's first line.
	up := time.AfterFunc(6*time.Second, p.Up)
	defer up.Stop()
	start := time.Now()
	var got *api.View
	meta, err := c.StreamView(ctx, "web", client.Poll{Index: index, Wait: time.Minute}, func(v *api.View, _ client.Meta) error {
		got = v
		return errGotView
	})
	took := time.Since(start).Round(time.Millisecond)
	if errors.Is(err, client.ErrNoStream) {
		t.Fatalf("stream while etcd is away: %v after %s: the agent would leave streaming for 10 minutes", err, took)
	}
	if !errors.Is(err, errGotView) || got == nil || got.Keys["x"] != "2" {
		t.Fatalf("stream while etcd is away, then back: %v after %s, view %+v, want the view with x=2 on the same stream", err, took, got)
	}
	if meta.Status != 200 {
		t.Fatalf("stream answered %d", meta.Status)
	}
}

var errGotView = errors.New("got the view")
