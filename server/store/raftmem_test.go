package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/server/store"
)

// heapInUse is the process's live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settledGrowth is how much the live heap grew since before, once it is under bound or 10 s
// passed: etcd trims its in-memory log after a snapshot it takes in the background, which a
// busy host can delay past the last write's answer.
func settledGrowth(before uint64, bound int64) int64 {
	grew := int64(heapInUse()) - int64(before)
	for deadline := time.Now().Add(10 * time.Second); grew > bound && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		grew = int64(heapInUse()) - int64(before)
	}
	return grew
}

// The embedded etcd keeps a few hundred applied writes in memory, not etcd's 5000 for followers
// it never has, and replays about a thousand from its WAL at a start, not 10,000: a fleet's
// report batches (or large values) held hundreds of megabytes of an idle server's heap for good.
// 1200 writes of 64 KiB (75 MiB) leave under 30 MiB of heap behind, running and after a restart.
func TestEmbedded_KeepsFewWritesInMemory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	cfg := store.EmbedConfig{Dir: dir, Logger: quietLogger(), LogLevel: "error", UnsafeFast: true}
	ctx := context.Background()
	before := heapInUse()
	e, err := store.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("r", 64<<10)
	const writes = 1200
	for i := range writes {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i%10), value); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 30 << 20
	if grew := settledGrowth(before, bound); grew > bound {
		t.Errorf("the heap grew by %d MiB after %d writes of 64 KiB, want under %d MiB", grew>>20, writes, bound>>20)
	}
	cli.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = store.StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if grew := settledGrowth(before, bound); grew > bound {
		t.Errorf("the heap grew by %d MiB after a restart that replayed %d writes of 64 KiB, want under %d MiB", grew>>20, writes, bound>>20)
	}
}
