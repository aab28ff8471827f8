// Package testutil holds test helpers shared across Shoelace's packages: one embedded etcd per
// test binary, a key root of each test's own on it, and stores opened on that root. Import it
// only from _test files.
//
// A package that uses it runs its tests through Main, so that the shared etcd is stopped and its
// files removed at the end:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
package testutil

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

var (
	mu        sync.Mutex
	shared    *store.EmbeddedEtcd
	sharedDir string

	rootSeq atomic.Int64

	// addrs remembers the client address of each etcd started by StartEtcd, by data dir, so
	// that a restart serves on the same address and existing clients reconnect.
	addrMu sync.Mutex
	addrs  = map[string]string{}
)

// Main runs the tests of a package, then runs cleanups (the package's own, in order), stops
// the shared etcd (if a test started it) and removes its files, and exits with the tests'
// status.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	mu.Lock()
	if shared != nil {
		shared.Close()
		shared = nil
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
		sharedDir = ""
	}
	mu.Unlock()
	os.Exit(code)
}

// Logger is a logger for tests: errors only, on stderr (which go test shows for failing tests).
// Records below error are dropped even when a caller bypasses the level check (the server's audit
// lines do), so that a failing test's output shows its errors, not every write.
func Logger() *slog.Logger {
	return slog.New(errorsOnly{slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})})
}

type errorsOnly struct{ slog.Handler }

func (h errorsOnly) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h errorsOnly) WithAttrs(as []slog.Attr) slog.Handler {
	return errorsOnly{h.Handler.WithAttrs(as)}
}
func (h errorsOnly) WithGroup(name string) slog.Handler { return errorsOnly{h.Handler.WithGroup(name)} }

// Etcd returns the client endpoints of the test binary's shared embedded etcd, starting it on
// first use (fast raft ticks, no fsync, a temporary dir, loopback ports, quiet logs). Tests
// sharing it must keep to their own Root. Use Main so that it is stopped at the end.
func Etcd(tb testing.TB) []string {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		return shared.Endpoints()
	}
	dir, err := os.MkdirTemp("", "shoelace-etcd-")
	if err != nil {
		tb.Fatalf("shared etcd: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := store.StartEmbedded(ctx, embedConfig(filepath.Join(dir, "etcd"), ""))
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("shared etcd: %v", err)
	}
	shared, sharedDir = e, dir
	return e.Endpoints()
}

func embedConfig(dir, addr string) store.EmbedConfig {
	return store.EmbedConfig{
		Dir:                    dir,
		ClientAddr:             addr,
		Logger:                 Logger(),
		LogLevel:               "error",
		ProgressNotifyInterval: 200 * time.Millisecond,
		UnsafeFast:             true,
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// Root returns a key root of the test's own, "/t/<test name>-<n>/", so that tests sharing one
// etcd never see each other's keys.
func Root(tb testing.TB) string {
	name := unsafeChars.ReplaceAllString(tb.Name(), "_")
	return fmt.Sprintf("/t/%s-%d/", strings.Trim(name, "_"), rootSeq.Add(1))
}

// StoreConfig returns a store.Config for the shared etcd (see Etcd) under a new Root, with
// quiet logs and short timeouts; change it and pass it to OpenStore.
func StoreConfig(tb testing.TB) store.Config {
	tb.Helper()
	return store.Config{
		Endpoints:      Etcd(tb),
		Root:           Root(tb),
		Logger:         Logger(),
		DialTimeout:    2 * time.Second,
		RequestTimeout: 10 * time.Second,
	}
}

// OpenStore opens cfg, failing the test on error, and closes it when the test ends.
func OpenStore(tb testing.TB, cfg store.Config) *store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Store opens a store on the shared etcd under a root of the test's own, closed when the test
// ends.
func Store(tb testing.TB) *store.Store {
	tb.Helper()
	return OpenStore(tb, StoreConfig(tb))
}

// StartEtcd starts an etcd of the test's own in dir (fast settings, quiet logs) and returns
// its client endpoints and a func that stops it (also called when the test ends; calling it
// twice is fine). Starting it again on the same dir keeps the data and serves on the same
// address, so clients of the first one reconnect: that is how tests lose and regain etcd.
func StartEtcd(tb testing.TB, dir string) (endpoints []string, stop func()) {
	tb.Helper()
	addrMu.Lock()
	addr := addrs[dir]
	addrMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var e *store.EmbeddedEtcd
	var err error
	for attempt := 0; ; attempt++ {
		e, err = store.StartEmbedded(ctx, embedConfig(dir, addr))
		// The old address may still be held for a moment after a stop: retry briefly.
		if err == nil || addr == "" || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("start etcd in %s: %v", dir, err)
	}
	endpoints = e.Endpoints()
	addrMu.Lock()
	addrs[dir] = strings.TrimPrefix(endpoints[0], "http://")
	addrMu.Unlock()
	var once sync.Once
	stop = func() { once.Do(func() { e.Close() }) }
	tb.Cleanup(stop)
	return endpoints, stop
}

// RestoredEtcd restores the snapshot file snap into a new etcd data dir as the runbook's
// "etcdutl snapshot restore --bump-revision bump --mark-compacted" does (neither when bump is
// 0), starts an etcd on it (StartEtcd) and returns its client endpoints.
func RestoredEtcd(tb testing.TB, snap string, bump uint64) []string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "etcd")
	// The name and peer URL StartEtcd starts its member with.
	peer := "http://127.0.0.1:0"
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: snap, Name: "shoelace", OutputDataDir: dir, PeerURLs: []string{peer},
		InitialCluster: "shoelace=" + peer, InitialClusterToken: "etcd-cluster",
		RevisionBump: bump, MarkCompacted: bump > 0,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ep, _ := StartEtcd(tb, dir)
	return ep
}
