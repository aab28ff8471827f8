package store_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/server/store"
)

// A replica started while its etcd refuses connections says why once (the runbook: "the replica
// logs it once (etcd endpoint check)"): the probe at start and the probes of the health checks
// that follow find the same problem, and only the first logs it. Before, the first health check
// logged it a second time.
func TestStore_EndpointProblemLoggedOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	l.Close() // nothing listens there: every connection is refused

	var logs testbin.Buffer
	ctx := ctxT(t)
	s, err := store.Open(ctx, store.Config{
		Endpoints:      []string{endpoint},
		Logger:         slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		DialTimeout:    300 * time.Millisecond,
		RequestTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open against a refused endpoint: %v", err)
	}
	defer s.Close()

	checks := func() int { return strings.Count(logs.String(), `"msg":"etcd endpoint check"`) }
	// The probe at start: a refused connection fails at once.
	deadline := time.Now().Add(20 * time.Second)
	for checks() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no etcd endpoint check logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Health checks, each of which probes the endpoint again (at most one probe a second), until
	// two of them have said what the probe found.
	said := 0
	for said < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("health never named the refused connection (%d times):\n%s", said, logs.String())
		}
		h, _ := s.Health(ctx)
		if strings.Contains(h.Error, "connection refused") {
			said++
		}
		time.Sleep(600 * time.Millisecond)
	}
	if n := checks(); n != 1 {
		t.Errorf("the refused connection was logged %d times, want once:\n%s", n, logs.String())
	}
}
