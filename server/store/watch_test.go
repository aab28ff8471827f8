package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

func next(tb testing.TB, ch <-chan store.Event, skipProgress bool) store.Event {
	tb.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				tb.Fatal("watch closed")
			}
			if skipProgress && ev.Progress {
				continue
			}
			sort.Strings(ev.Keys)
			sort.Strings(ev.SysKeys)
			return ev
		case <-timeout:
			tb.Fatal("no watch event in 20s")
		}
	}
}

func TestStore_Watch(t *testing.T) {
	s := openStore(t)
	other := openStore(t) // another root on the same etcd: never seen
	ctx := ctxT(t)
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, werr := s.Watch(wctx, start+1)

	r1 := mustPut(t, s, "shared/a", "1")
	mustPut(t, other, "shared/a", "x")
	r2, err := s.Txn(ctx, api.Txn{Ops: []api.Op{
		{Op: api.OpPut, Key: "appliances/web/x", Value: "x"},
		{Op: api.OpPut, Key: "appliances/web/y", Value: "y"},
		{Op: api.OpDelete, Key: "shared", Recurse: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := s.SysPut(ctx, "tokens/t", []byte("secret hash"), -1)
	if err != nil {
		t.Fatal(err)
	}
	r4, _, err := s.Delete(ctx, "appliances/web/x", false)
	if err != nil {
		t.Fatal(err)
	}
	r5, err := s.SysDelete(ctx, "tokens/t")
	if err != nil {
		t.Fatal(err)
	}

	want := []store.Event{
		{Revision: r1, Keys: []string{"shared/a"}},
		{Revision: r2, Keys: []string{"appliances/web/x", "appliances/web/y", "shared/a"}},
		{Revision: r3, SysKeys: []string{"tokens/t"}, Sys: []store.SysChange{{Key: "tokens/t", Value: []byte("secret hash")}}},
		{Revision: r4, Keys: []string{"appliances/web/x"}},
		{Revision: r5, SysKeys: []string{"tokens/t"}, Sys: []store.SysChange{{Key: "tokens/t", Deleted: true}}},
	}
	for i, w := range want {
		if got := next(t, ch, true); !reflect.DeepEqual(got, w) {
			t.Fatalf("event %d: got %+v, want %+v", i, got, w)
		}
	}

	// Nothing happens under this root: progress notifications carry the current revision.
	for {
		ev := next(t, ch, false)
		if !ev.Progress {
			t.Fatalf("unexpected event %+v", ev)
		}
		if ev.Revision >= r5 && len(ev.Keys) == 0 && len(ev.SysKeys) == 0 {
			break
		}
	}

	cancel()
	deadline := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("watch still open 5s after its ctx was canceled")
		}
	}
	if err := werr(); err != nil {
		t.Errorf("watch ended by its ctx reports %v", err)
	}
}

func TestStore_WatchReplaysFromRevision(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	r1 := mustPut(t, s, "a/1", "1")
	r2 := mustPut(t, s, "a/2", "2")
	ch, _ := s.Watch(ctx, r1)
	if got := next(t, ch, true); got.Revision != r1 || !reflect.DeepEqual(got.Keys, []string{"a/1"}) {
		t.Errorf("first event %+v, want a/1 at %d", got, r1)
	}
	if got := next(t, ch, true); got.Revision != r2 || !reflect.DeepEqual(got.Keys, []string{"a/2"}) {
		t.Errorf("second event %+v, want a/2 at %d", got, r2)
	}
}

func TestStore_WatchCompacted(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	r1 := mustPut(t, s, "a/1", "1")
	r2 := mustPut(t, s, "a/1", "2")
	if err := s.Compact(ctx, r2); err != nil {
		t.Fatal(err)
	}
	ch, werr := s.Watch(ctx, r1)
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("got event %+v from a compacted revision", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch from a compacted revision still open")
	}
	if err := werr(); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("got %v, want ErrCompacted", err)
	}
	// From the compaction on, it works.
	ch2, _ := s.Watch(ctx, r2)
	if got := next(t, ch2, true); got.Revision != r2 {
		t.Errorf("watch from the compacted revision: %+v", got)
	}
}

func TestStore_WatchEndsOnClose(t *testing.T) {
	s, err := store.Open(ctxT(t), testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ch, werr := s.Watch(ctxT(t), 0)
	s.Close()
	s.Close()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch open 10s after Close")
	}
	if err := werr(); err == nil {
		t.Error("a watch ended by Close reports no error")
	}
}

// ownEtcd starts an etcd of the test's own in dir, on addr ("": a free loopback port), that
// nothing else writes to, stopped when the test ends.
func ownEtcd(t *testing.T, dir, addr string) *store.EmbeddedEtcd {
	t.Helper()
	e, err := store.StartEmbedded(ctxT(t), store.EmbedConfig{Dir: dir, ClientAddr: addr, Logger: quietLogger(),
		LogLevel: "error", UnsafeFast: true, ProgressNotifyInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestStore_WatchOfAnIdleStore: etcd sends no progress notification to a watch that waits for a
// revision the store has not reached, requested or not. A watch of an idle store from its next
// revision heard nothing, ended as a silent member's would (ErrWatchSilent), and was started
// again, and again: it is open as long as the store is idle, and hears the next write.
func TestStore_WatchOfAnIdleStore(t *testing.T) {
	e := ownEtcd(t, filepath.Join(t.TempDir(), "etcd"), "")
	s := openStore(t, func(c *store.Config) {
		c.Endpoints = e.Endpoints()
		// Each silence check reads the store's revision within the interval: at 100 ms, a loaded
		// machine under the race detector missed it now and then (the watch ended, 4 runs in 24
		// with GOMAXPROCS=1 beside other processes).
		c.WatchProgressInterval = time.Second
	})
	ctx := ctxT(t)
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch, werr := s.Watch(ctx, rev+1)
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("the watch of an idle store ended: %v", werr())
		}
		t.Fatalf("the watch of an idle store sent %+v", ev)
	case <-time.After(5 * time.Second): // two silence checks and more
	}
	r := mustPut(t, s, "shared/a", "1")
	if got := next(t, ch, true); got.Revision != r {
		t.Fatalf("got %+v, want shared/a at %d", got, r)
	}
}

// TestStore_WatchOfAWriteThatLandsWhileItLooks: a watch that heard nothing reads the store's
// revision; a write that lands meanwhile is past the revision the watch waits for before its
// event reaches the watch. The watch ended as a frozen member's would (ErrWatchSilent, the
// caller watching again after a backoff, the write's wake-up late); it waits one more interval
// for the event, and sends it.
func TestStore_WatchOfAWriteThatLandsWhileItLooks(t *testing.T) {
	e := ownEtcd(t, filepath.Join(t.TempDir(), "etcd"), "")
	s := openStore(t, func(c *store.Config) {
		c.Endpoints = e.Endpoints()
		c.WatchProgressInterval = time.Second // as in TestStore_WatchOfAnIdleStore
	})
	ctx := ctxT(t)
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	landed := make(chan int64, 1)
	store.SetIdleHook(s, func() {
		select {
		case landed <- mustPut(t, s, "shared/a", "1"):
		default: // once
		}
	})
	ch, werr := s.Watch(ctx, rev+1)
	ev, ok := <-ch
	if !ok {
		t.Fatalf("the watch ended: %v", werr())
	}
	if r := <-landed; ev.Revision != r || ev.Progress {
		t.Fatalf("got %+v, want shared/a at %d", ev, r)
	}
}

// TestStore_WatchEndsWhenEtcdRestarts: the etcd client resumes a watch whose connection ended
// on its next connection, from the revision after the last it heard of, which an etcd
// restarted on the same data (or on older data, or another store on its address) has not
// reached: etcd sent nothing, and the watch, which checked for an ended connection at each
// answer, went on until the next write (or its silence), on a store it had not checked. It
// ends with ErrReconnected when the connection ends.
func TestStore_WatchEndsWhenEtcdRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	e := ownEtcd(t, dir, "")
	s := openStore(t, func(c *store.Config) {
		c.Endpoints = e.Endpoints()
		c.WatchProgressInterval = time.Minute // no silence within the test
	})
	ctx := ctxT(t)
	ch, werr := s.Watch(ctx, mustPut(t, s, "shared/a", "1"))
	next(t, ch, true) // open
	e.Close()
	ownEtcd(t, dir, strings.TrimPrefix(e.Endpoints()[0], "http://"))
	deadline := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case ev, ok := <-ch:
			if ok && !ev.Progress {
				t.Fatalf("the watch sent %+v after etcd restarted", ev)
			}
			open = ok
		case <-deadline:
			t.Fatal("the watch is open 10s after etcd restarted")
		}
	}
	if err := werr(); !errors.Is(err, store.ErrReconnected) {
		t.Fatalf("the watch ended with %v, want ErrReconnected", err)
	}
}

// TestStore_WatchOfAStoreThatWentBack: etcd brought back from a copy of older data (a restore
// without --bump-revision) is below the revisions the store's answers carried before (Reached),
// even those no watch heard of. A watch from the revision after the store's own waited, idle, on
// a history that was gone; it ends for its caller to look at the store, until the caller says
// the store was rewound.
func TestStore_WatchOfAStoreThatWentBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	e := ownEtcd(t, dir, "")
	addr := strings.TrimPrefix(e.Endpoints()[0], "http://")
	s := openStore(t, func(c *store.Config) {
		c.Endpoints = e.Endpoints()
		// Each silence check reads the store's revision within the interval: at 100 ms a loaded
		// machine missed it now and then, and the rewound store's watch below ended (CI, once).
		c.WatchProgressInterval = time.Second
	})
	ctx := ctxT(t)
	old := mustPut(t, s, "shared/a", "old")
	e.Close()
	copyDir := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	e = ownEtcd(t, dir, addr)
	var last int64
	for i := range 5 {
		last = mustPut(t, s, "shared/a", fmt.Sprint(i))
	}
	if got := s.Reached(); got < last {
		t.Fatalf("Reached %d after a write at %d", got, last)
	}
	e.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	ownEtcd(t, dir, addr)
	rev, err := s.Revision(ctx)
	if err != nil || rev != old {
		t.Fatalf("revision %d (%v) of the copy, want %d", rev, err, old)
	}

	ch, werr := s.Watch(ctx, rev+1)
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("the watch of a store that went back sent %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of a store that went back is open after 5s")
	}
	if err := werr(); err == nil || errors.Is(err, store.ErrWatchSilent) || !strings.Contains(err.Error(), "went back") {
		t.Fatalf("the watch ended with %v, want one that says the store went back", err)
	}

	s.Rewound(rev)
	if got := s.Reached(); got != rev {
		t.Fatalf("Reached %d after Rewound(%d)", got, rev)
	}
	ch, werr = s.Watch(ctx, rev+1)
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("the watch of the rewound store ended: %v", werr())
		}
	case <-time.After(2500 * time.Millisecond): // a silence check and more
	}
	r := mustPut(t, s, "shared/a", "after")
	got, ok := <-ch
	for ok && got.Progress {
		got, ok = <-ch
	}
	if !ok {
		t.Fatalf("the watch of the rewound store ended: %v", werr())
	}
	if got.Revision != r || r != rev+1 {
		t.Fatalf("got %+v, want shared/a at %d (the revision after %d)", got, r, rev)
	}
}
