package store_test

import (
	"context"
	"errors"
	"path/filepath"
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
