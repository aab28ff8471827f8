package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func embeddedConfig(dir string) store.Config {
	// The progress interval is global to etcd's package: keep every etcd of the test binary at
	// the same short one.
	return store.Config{DataDir: dir, Logger: quietLogger(), UnsafeFast: true, ProgressNotifyInterval: 200 * time.Millisecond}
}

func TestStore_EmbeddedRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	s, err := store.Open(ctx, embeddedConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Embedded() || s.ID() == "" || s.MaxRequestBytes() < 2*api.DefaultMaxValueBytes {
		t.Fatalf("embedded %v id %q max request %d", s.Embedded(), s.ID(), s.MaxRequestBytes())
	}
	id := s.ID()
	rev := mustPut(t, s, "shared/kept", "yes")

	// A second server on the same data dir is refused at once, with a reason.
	_, err = store.Open(ctx, embeddedConfig(dir))
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of one data dir: %v", err)
	}
	// Another data dir starts next to it.
	s2, err := store.Open(ctx, embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatalf("second embedded store: %v", err)
	}
	if s2.ID() == id {
		t.Errorf("two stores share id %s", id)
	}
	s2.Close()

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(ctx, embeddedConfig(dir))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	kv, _, err := s.Get(ctx, "shared/kept")
	if err != nil || kv.Value != "yes" || kv.ModRevision != rev {
		t.Fatalf("after restart: %+v %v", kv, err)
	}
	if s.ID() != id {
		t.Errorf("store id changed across a restart: %s, then %s", id, s.ID())
	}
	if _, err := s.ResetID(ctx); err != nil || s.ID() == id {
		t.Errorf("reset id: %s %v", s.ID(), err)
	}
}

func TestStore_ConcurrentOpensAgreeOnID(t *testing.T) {
	cfg := testConfig(t)
	var wg sync.WaitGroup
	ids := make([]string, 6)
	for i := range ids {
		wg.Go(func() {
			s, err := store.Open(context.Background(), cfg)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			ids[i] = s.ID()
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("ids: %q", ids)
		}
	}
	s := openStore(t, func(c *store.Config) { c.Root = cfg.Root })
	if v, _, err := s.SysGet(ctxT(t), "store-id"); err != nil || string(v) != ids[0] {
		t.Errorf("stored id %q (%v), want %s", v, err, ids[0])
	}
}

// Against an external cluster that is down, Open succeeds; calls fail fast with 503 until the
// cluster is back, and the store recovers by itself.
func TestStore_ExternalDownThenBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	ctx := ctxT(t)
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: dir, Logger: quietLogger(), LogLevel: "error", UnsafeFast: true, ProgressNotifyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	endpoints := e.Endpoints()
	e.Close()

	start := time.Now()
	s, err := store.Open(ctx, store.Config{
		Endpoints:      endpoints,
		Logger:         quietLogger(),
		DialTimeout:    300 * time.Millisecond,
		RequestTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open against a down cluster: %v", err)
	}
	defer s.Close()
	t.Logf("open took %s", time.Since(start))
	if s.ID() != "" {
		t.Fatalf("id %q without etcd", s.ID())
	}
	_, _, err = s.Get(ctx, "shared/x")
	wantCode(t, err, api.CodeUnavailable)
	hstart := time.Now()
	h, err := s.Health(ctx)
	t.Logf("health of a down cluster took %s", time.Since(hstart))
	wantCode(t, err, api.CodeUnavailable)
	if h.Reachable || h.Leader || h.Error == "" || len(h.Endpoints) == 0 {
		t.Errorf("health of a down cluster: %+v", h)
	}

	e, err = store.StartEmbedded(ctx, store.EmbedConfig{Dir: dir, ClientAddr: strings.TrimPrefix(endpoints[0], "http://"),
		Logger: quietLogger(), LogLevel: "error", UnsafeFast: true, ProgressNotifyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	back := time.Now()
	defer func() { t.Logf("id loaded %s after etcd came back", time.Since(back)) }()
	deadline := time.Now().Add(30 * time.Second)
	for s.ID() == "" {
		if time.Now().After(deadline) {
			t.Fatal("store id not loaded 30s after etcd came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The id is made a moment before the root checks' gate opens (see loadIDLoop): a put in
	// between is 503 "not checked yet; retry", as a client is told.
	for {
		_, err := s.Put(ctx, "shared/x", "back", -1)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "not checked yet") {
			t.Fatalf("put after etcd came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v, _, err := s.SysGet(ctx, "store-id"); err != nil || string(v) != s.ID() {
		t.Errorf("stored id %q (%v), ID() %q", v, err, s.ID())
	}
	h, err = s.Health(ctx)
	if err != nil || !h.Reachable || !h.Leader || h.Latency <= 0 {
		t.Errorf("health: %+v %v", h, err)
	}
}

func TestStore_BadTLSConfigRefused(t *testing.T) {
	_, err := store.Open(ctxT(t), store.Config{Endpoints: []string{"https://127.0.0.1:1"}, CACert: filepath.Join(t.TempDir(), "missing.pem")})
	if err == nil || !strings.Contains(err.Error(), "ca cert") {
		t.Fatalf("got %v", err)
	}
	_, err = store.Open(ctxT(t), store.Config{Endpoints: []string{"https://127.0.0.1:1"}, Cert: "c.pem"})
	if err == nil || !strings.Contains(err.Error(), "together") {
		t.Fatalf("got %v", err)
	}
	_, err = store.Open(ctxT(t), store.Config{Endpoints: []string{"http://127.0.0.1:1"}, Root: "noslash"})
	if err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("got %v", err)
	}
}

func TestStore_HealthAndSnapshot(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	h, err := s.Health(ctx)
	if err != nil || !h.Reachable || !h.Leader || h.Latency <= 0 || h.Error != "" {
		t.Fatalf("health: %+v %v", h, err)
	}
	mustPut(t, s, "shared/snap", "v")
	var buf bytes.Buffer
	n, err := s.Snapshot(ctx, &buf)
	if err != nil || n == 0 || n != int64(buf.Len()) {
		t.Fatalf("snapshot: %d bytes (buffer %d): %v", n, buf.Len(), err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("shared/snap")) {
		t.Error("snapshot lacks a key just written")
	}
}

func TestStore_CanceledContext(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Get(ctx, "shared/x")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		t.Errorf("a canceled call is an API error %v", ae)
	}
}

func TestStore_SnapshotRestore(t *testing.T) {
	const replicas = "replicas/" // store.ReplicaPrefix, where the server's replicas announce themselves
	ctx := ctxT(t)
	s, err := store.Open(ctx, embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustPut(t, s, "shared/a", "1")
	rev := mustPut(t, s, "appliances/web/x", "2")
	// The replicas of the deployment the snapshot is taken from, and a record that stays.
	for _, key := range []string{replicas + "r-1", replicas + "r-2", "settings/kept"} {
		if _, err := s.SysPut(ctx, key, []byte(`{"id":"x"}`), -1); err != nil {
			t.Fatal(err)
		}
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	var buf bytes.Buffer
	if _, err := s.Snapshot(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snap, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "shared/after", "not in the snapshot")

	dir := t.TempDir()
	id, err := store.Restore(ctx, store.RestoreConfig{SnapshotPath: snap, DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || id == s.ID() {
		t.Errorf("restored id %q, original %q", id, s.ID())
	}
	_, err = store.Restore(ctx, store.RestoreConfig{SnapshotPath: snap, DataDir: dir, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("restore over an existing store: %v", err)
	}

	r, err := store.Open(ctx, embeddedConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ID() != id {
		t.Errorf("reopened restored store has id %q, want %q", r.ID(), id)
	}
	v, err := r.View(ctx, "web")
	if err != nil || v.Keys["x"] != "2" || v.Keys["a"] != "1" || len(v.Keys) != 2 {
		t.Fatalf("restored view %+v %v", v, err)
	}
	// The old deployment's replicas are forgotten (status listed them until they aged out).
	if recs, _, err := r.SysList(ctx, replicas); err != nil || len(recs) != 0 {
		t.Errorf("replica records after the restore: %v %v, want none", recs, err)
	}
	if _, _, err := r.SysGet(ctx, "settings/kept"); err != nil {
		t.Errorf("another system record after the restore: %v", err)
	}
	if v.Revision < store.RestoreRevisionBump+rev {
		t.Errorf("restored revision %d, want >= %d", v.Revision, store.RestoreRevisionBump+rev)
	}
	// Every old revision is compacted: a watch from one says so.
	ch, werr := r.Watch(ctx, rev)
	for range ch {
	}
	if err := werr(); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("watch from a pre-restore revision: %v", err)
	}
}

// TestStore_EmbeddedClientAPIOnlyForItsUser: without --etcd-listen the embedded etcd serves its
// client API (and its peer listener) on unix sockets in a directory of mode 0700, removed at
// Close. It served on random 127.0.0.1 ports, and etcd has no access control of its own: any
// local user (nobody, another service's) found the port (ss -ltn) and read every secret with
// etcdctl, or wrote a token record of its own under sys/tokens/ and was admin.
func TestStore_EmbeddedClientAPIOnlyForItsUser(t *testing.T) {
	s, err := store.Open(ctxT(t), embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "shared/secrets/pw", "hunter2")
	eps := s.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "unix:///") {
		s.Close()
		t.Fatalf("the embedded etcd serves its client API at %v, want one unix socket", eps)
	}
	sock := strings.TrimPrefix(eps[0], "unix://")
	dir := filepath.Dir(sock)
	fi, err := os.Stat(dir)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Errorf("the client socket's directory %s has mode %v, want 0700", dir, fi.Mode().Perm())
	}
	// Its peer port too serves whoever connects (raft, lease renewals): a socket beside it.
	if _, err := os.Stat(filepath.Join(dir, "peer.sock")); err != nil {
		t.Errorf("the embedded etcd's peer listener is not a socket in %s: %v", dir, err)
	}
	// The socket serves etcd (the store's own client goes through it).
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	resp, err := cli.Get(ctxT(t), "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	cli.Close()
	if err != nil || resp.Count == 0 {
		t.Errorf("read through the socket: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Removed once etcd has stopped, which Close may leave to the background.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client socket's directory %s is still there after Close", dir)
		}
	}
}

// TestStore_ClientSocketNotWhereOthersMayRenameIt: a TMPDIR that others may write without the
// sticky bit (or a link to one) is passed over for the client socket's directory. There any
// user renamed the server's private directory away and made one of theirs at its name (mode
// 0777), where the server's next dial of its etcd would find their socket.
func TestStore_ClientSocketNotWhereOthersMayRenameIt(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unix modes")
	}
	// Short names: a TMPDIR too long for a socket's path is passed over anyway.
	open, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	link := open + ".link"
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	// A data dir whose own socket directory would be too long a path for a socket: the sockets
	// go to the temp dir.
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	for _, tmp := range []string{open, link} {
		t.Setenv("TMPDIR", tmp)
		s, err := store.Open(ctxT(t), embeddedConfig(long))
		if err != nil {
			t.Fatal(err)
		}
		eps := s.Endpoints()
		s.Close()
		if len(eps) != 1 || !strings.HasPrefix(eps[0], "unix:///") {
			t.Fatalf("TMPDIR %s: the embedded etcd serves its client API at %v, want one unix socket", tmp, eps)
		}
		if dir := filepath.Dir(filepath.Dir(strings.TrimPrefix(eps[0], "unix://"))); dir == open || dir == link {
			t.Errorf("TMPDIR %s: the client socket is at %s, in a directory of mode 0777 without the sticky bit", tmp, eps[0])
		}
	}
}

// The sockets are in a directory of the data dir's own, <data-dir>/etcd.socket, made under the
// data dir's lock: one left by a server killed before it could remove it (its socket file still
// there) is taken over at the next start, where a new one in the temp dir at every start left
// them piling up there.
func TestStore_ClientSocketBesideTheDataLeftByAKilledServer(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unix sockets for etcd")
	}
	data, err := os.MkdirTemp("", "sl") // short: the socket's path must fit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	own := filepath.Join(data, "etcd.socket")
	// What a killed server leaves: the directory, its sockets' files.
	if err := os.Mkdir(own, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"etcd.sock", "peer.sock"} {
		if err := os.WriteFile(filepath.Join(own, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	s, err := store.Open(ctxT(t), embeddedConfig(data))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "shared/a", "1")
	eps := s.Endpoints()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if want := "unix://" + filepath.Join(own, "etcd.sock"); len(eps) != 1 || eps[0] != want {
		t.Fatalf("the embedded etcd serves its client API at %v, want %s", eps, want)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the temp dir holds %v", left)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(own); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there after Close", own)
		}
	}
}

// A store whose root lies under another store's kv/ (a second server given --root
// /shoelace/kv/y/ on the first one's etcd) is refused: the first store's key writers would write
// its tokens and records (sys/), forging a restore record or a token. A root beside the other's
// keys, or beside the other store, opens.
func TestOpen_RefusesARootInsideAnotherStoresKeys(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	testutil.OpenStore(t, cfg)
	inner := cfg
	inner.Root = cfg.Root + "kv/y/"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, inner)
	if err == nil {
		s.Close()
		t.Fatalf("a store at %s opened inside the store at %s", inner.Root, cfg.Root)
	}
	if !strings.Contains(err.Error(), "lies inside the keys of the Shoelace store at root "+cfg.Root) {
		t.Fatalf("error %q does not name the store around it", err)
	}
	for _, root := range []string{cfg.Root + "other/", strings.TrimSuffix(cfg.Root, "/") + "-kv/y/"} {
		ok := cfg
		ok.Root = root
		testutil.OpenStore(t, ok)
	}
}

// A store made around an existing one (a server given --root /shoelace/ on an etcd where a
// store at /shoelace/kv/y/ was already) started: its key writers could then write the inner
// store's tokens and records, as when the inner one is made second (which its own start
// refuses). Either order is refused, naming both roots; so is a store made around it by a
// server of an earlier version (its id written after the inner store's). A key of the outer
// store's writers named like a store's id does not stop the outer one's start: it was written
// after the outer store was made, not before.
func TestOpen_RefusesARootAroundAnotherStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	refused := func(cfg store.Config, outer, inner string) {
		t.Helper()
		s, err := store.Open(ctx, cfg)
		if err == nil {
			s.Close()
			t.Fatalf("a store at %s opened with a store at %s inside its keys", outer, inner)
		}
		for _, root := range []string{outer, inner} {
			if !strings.Contains(err.Error(), root) {
				t.Errorf("error %q does not name %s", err, root)
			}
		}
	}

	// The inner store first, then the outer one, and the inner one again.
	cfg := testutil.StoreConfig(t)
	inner := cfg
	inner.Root = cfg.Root + "kv/shared/y/"
	testutil.OpenStore(t, inner).Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Keys before the inner store's, more than one page of the look below.
	for i := 0; i < 10_200; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%skv/a/%04d", cfg.Root, j), "x"))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	refused(cfg, cfg.Root, inner.Root)
	if resp, err := cli.Get(ctx, cfg.Root+"sys/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Errorf("the refused store wrote %v records of its own (%v)", resp.Count, err)
	}
	testutil.OpenStore(t, inner).Close()

	// The outer store made by a server that did not look (its id written after the inner's).
	if _, err := cli.Put(ctx, cfg.Root+"sys/store-id", "made-by-an-earlier-version"); err != nil {
		t.Fatal(err)
	}
	refused(cfg, cfg.Root, inner.Root)

	// The outer store first: the inner one is refused (storeAbove), the outer opens again, and
	// a key of its writers named like a store's id under its keys leaves it opening.
	cfg = testutil.StoreConfig(t)
	inner = cfg
	inner.Root = cfg.Root + "kv/shared/y/"
	outer := testutil.OpenStore(t, cfg)
	refused(inner, cfg.Root, inner.Root)
	if _, err := outer.Put(ctx, "shared/z/sys/store-id", "planted", -1); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	for range 2 { // the second start reads what the first recorded of its look
		testutil.OpenStore(t, cfg).Close()
	}
}

// A new store's first start looked below its root (kv/ empty, or holding keys of no store) but
// recorded nothing, for it had no id yet: its second start read the name of every key under
// kv/ again, those its writers had put since included, which a key writer could make as many
// and as large as the store holds (each page read them whole from etcd's database, within
// one request's time for them all). The look is recorded at the start that makes the id.
func TestOpen_NewStoreRecordsItsLookBelow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testutil.StoreConfig(t)
	testutil.OpenStore(t, cfg).Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, cfg.Root+"sys/below-checked")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatal("the first start of a new store did not record its look below: its next start reads every key its writers put")
	}
	id, err := cli.Get(ctx, cfg.Root+"sys/store-id")
	if err != nil || len(id.Kvs) == 0 {
		t.Fatalf("store id: %v", err)
	}
	if got, want := string(resp.Kvs[0].Value), fmt.Sprint(id.Kvs[0].CreateRevision); got != want {
		t.Errorf("below-checked = %s, want the id's creation revision %s", got, want)
	}
}

// The look for a store below the root read every key under kv/ within one request's time: a
// store of an earlier version with more keys than that time reads (its first start after the
// upgrade looks) was either not started (embedded etcd) or, on an external etcd, started as if
// etcd were away, the look skipped: a store inside its keys went unseen, at every start. Each
// page now has a request's time.
func TestOpen_LookBelowALargeStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	store.SetBelowPage(t, 3)
	cfg := testutil.StoreConfig(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := 0; i < 20_000; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%skv/a/%05d", cfg.Root, j), "x"))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// A store inside its keys, then the outer one's id, as a server of an earlier version made it.
	inner := cfg.Root + "kv/shared/y/"
	if _, err := cli.Put(ctx, inner+"sys/store-id", "inner"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, cfg.Root+"sys/store-id", "made-by-an-earlier-version"); err != nil {
		t.Fatal(err)
	}
	// 6,667 pages take well over a second on any machine; each alone, well under one, even
	// under -race on a busy CI host (at 300 ms a page, one read there did not answer in time).
	start := time.Now()
	cfg.RequestTimeout = time.Second
	s, err := store.Open(ctx, cfg)
	if err == nil {
		s.Close()
		t.Fatalf("a store with a store at %s inside its keys opened (the look took %s of a request's %s)", inner, time.Since(start), cfg.RequestTimeout)
	}
	if !strings.Contains(err.Error(), inner) {
		t.Errorf("error %q does not name %s", err, inner)
	}
}
