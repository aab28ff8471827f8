package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// Writes in flight when the server is told to stop (SIGTERM) while etcd is frozen are answered
// within the shutdown grace with the API's JSON error (503 outcome_unknown: etcd has the
// request and never confirmed it), not with their connections closed under them: one alone,
// and several at once (which the store sends together, in one batch).
func TestServe_WriteInFlightAtShutdownAnswered503(t *testing.T) {
	parallelShared(t)
	for _, n := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d writes", n), func(t *testing.T) { writesInFlightAtShutdown(t, n) })
	}
}

func writesInFlightAtShutdown(t *testing.T, n int) {
	p := faultproxy.Start(t, testutil.Etcd(t)[0])
	cfg := testConfig()
	cfg.EtcdEndpoints = []string{p.URL()}
	cfg.Root = testutil.Root(t)
	cfg.DataDir = t.TempDir()
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{url: "http://" + ln.Addr().String(), cancel: cancel, errc: make(chan error, 1)}
	go func() { s.errc <- Serve(ctx, ln, cfg, testutil.Logger()) }()
	t.Cleanup(func() { p.Thaw(); s.stop(t) })
	token := s.firstWrite(t, cfg.AdminTokenFile, "shared/k0", "")
	for i := range n {
		if res, body := s.req(t, token, "PUT", fmt.Sprintf("/v1/kv/shared/k%d", i), "1"); res.StatusCode != 200 {
			t.Fatalf("put: %d %s", res.StatusCode, body)
		}
	}

	p.Freeze()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answered := make(chan answer, n)
	for i := range n {
		go func() {
			req, _ := http.NewRequest("PUT", s.url+fmt.Sprintf("/v1/kv/shared/k%d", i), strings.NewReader("2"))
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := testClient.Do(req)
			if err != nil {
				answered <- answer{err: err}
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			answered <- answer{status: res.StatusCode, body: b, err: err}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the writes wait for the frozen etcd
	began := time.Now()
	cancel() // SIGTERM
	s.cancel = nil
	for range n {
		var a answer
		select {
		case a = <-answered:
		case <-time.After(30 * time.Second):
			t.Fatal("a write in flight was not answered")
		}
		took := time.Since(began)
		if a.err != nil {
			t.Fatalf("a write in flight at shutdown: %v after %v, want a 503 with a JSON error", a.err, took.Round(time.Millisecond))
		}
		var eb api.ErrorBody
		if a.status != http.StatusServiceUnavailable || json.Unmarshal(a.body, &eb) != nil || eb.Error == nil ||
			(eb.Error.Code != api.CodeOutcomeUnknown && eb.Error.Code != api.CodeUnavailable) {
			t.Fatalf("a write in flight at shutdown: %d %s, want 503 outcome_unknown or unavailable", a.status, a.body)
		}
		if took > shutdownTimeout {
			t.Fatalf("a write in flight was answered %v after shutdown began, want within the grace (%v)", took.Round(time.Millisecond), shutdownTimeout)
		}
		t.Logf("answered %d %s after %v", a.status, eb.Error.Code, took.Round(time.Millisecond))
	}
	select {
	case err := <-s.errc:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop")
	}
}
