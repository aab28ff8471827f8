package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Most of the store's own tests share one embedded etcd through this small copy of
// internal/testutil's, older than the tests that use testutil (which this external test package
// may import). It starts at the first test that asks for it, not in TestMain: under go test
// -json, M.Run replaces os.Stderr, which etcd's serving goroutines read, and a start before
// M.Run races with that write.
var (
	etcdOnce   sync.Once
	sharedEtcd *store.EmbeddedEtcd
	etcdDir    string
	etcdErr    error
	rootSeq    atomic.Int64
)

// etcd returns the shared embedded etcd, started on first use.
func etcd(tb testing.TB) *store.EmbeddedEtcd {
	tb.Helper()
	etcdOnce.Do(func() {
		if etcdDir, etcdErr = os.MkdirTemp("", "store-test-"); etcdErr != nil {
			return
		}
		sharedEtcd, etcdErr = store.StartEmbedded(context.Background(), store.EmbedConfig{
			Dir:                    filepath.Join(etcdDir, "etcd"),
			Logger:                 quietLogger(),
			LogLevel:               "error",
			ProgressNotifyInterval: 200 * time.Millisecond,
			UnsafeFast:             true,
		})
	})
	if etcdErr != nil {
		tb.Fatalf("shared etcd: %v", etcdErr)
	}
	return sharedEtcd
}

// TestMain stops both shared etcds at the end: this one, and internal/testutil's, which some of
// the tests use (it left its data dir, 120 MB, in the temp dir at every run).
func TestMain(m *testing.M) {
	testutil.Main(m, func() {
		if sharedEtcd != nil {
			sharedEtcd.Close()
		}
		if etcdDir != "" {
			os.RemoveAll(etcdDir)
		}
	})
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func testRoot(tb testing.TB) string {
	return fmt.Sprintf("/t/%s-%d/", unsafeChars.ReplaceAllString(tb.Name(), "_"), rootSeq.Add(1))
}

func testConfig(tb testing.TB) store.Config {
	return store.Config{
		Endpoints: etcd(tb).Endpoints(),
		Root:      testRoot(tb),
		Logger:    quietLogger(),
		MaxTxnOps: 50,
	}
}

// openStore opens a store on the shared etcd under a root of the test's own.
func openStore(tb testing.TB, mod ...func(*store.Config)) *store.Store {
	tb.Helper()
	cfg := testConfig(tb)
	for _, f := range mod {
		f(&cfg)
	}
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
