package store_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/server/store"
)

// A client that keeps a watch open (another replica on this server's embedded etcd) makes etcd
// wait for it on close; CloseWithin gives up waiting, etcd stops in the background once the
// client goes, and a new etcd on the same dir waits for that instead of failing on the lock.
func TestEmbedded_CloseWithinAClientsWatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	cfg := store.EmbedConfig{Dir: dir, Logger: quietLogger(), LogLevel: "error", UnsafeFast: true}
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	wch := cli.Watch(wctx, "x", clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		t.Fatalf("watch not created: %+v", resp)
	}

	// etcd waits its request timeout (5 s with the fast test ticks) for the watch to end.
	if err := e.CloseWithin(time.Second); !errors.Is(err, store.ErrStillClosing) {
		t.Fatalf("CloseWithin = %v, want ErrStillClosing while a client's watch is open", err)
	}
	restarted := make(chan error, 1)
	go func() {
		e2, err := store.StartEmbedded(ctx, cfg)
		if err == nil {
			err = e2.Close()
		}
		restarted <- err
	}()
	cancel()
	cli.Close()
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("start on the same dir after the old etcd closed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no start on the same dir within a minute")
	}
	if err := e.Close(); err != nil { // idempotent, and done by now
		t.Fatal(err)
	}
}

// An embedded etcd started on a port the kernel picks serves its whole client API there, as
// with --etcd-listen: its HTTP/JSON gateway (/v3/…, what curl and tools without gRPC read etcd
// through) answers, and the member advertises that port. The gateway dials the address etcd was
// configured with, so port 0 left it answering every request with a dial error of 127.0.0.1:0.
func TestEmbedded_PickedPortServesTheJSONGateway(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	e, err := store.StartEmbedded(context.Background(), store.EmbedConfig{Dir: dir, Logger: quietLogger(), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := e.Endpoints()[0]
	post := func(path, body string) string {
		t.Helper()
		resp, err := http.Post(ep+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s%s: %d %s, want 200", ep, path, resp.StatusCode, b)
		}
		return string(b)
	}
	if got := post("/v3/kv/range", `{"key":"eA=="}`); !strings.Contains(got, `"revision"`) {
		t.Fatalf("range through the gateway answered %s, want a header with the revision", got)
	}
	if got := post("/v3/cluster/member/list", `{}`); !strings.Contains(got, `"`+ep+`"`) {
		t.Fatalf("member list answered %s, want the client URL %s advertised", got, ep)
	}
}
