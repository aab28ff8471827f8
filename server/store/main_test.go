package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// The store's own tests cannot use internal/testutil (it imports store), so they share one
// embedded etcd through this small copy of it.
var (
	sharedEtcd *store.EmbeddedEtcd
	rootSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "store-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedEtcd, err = store.StartEmbedded(context.Background(), store.EmbedConfig{
		Dir:                    filepath.Join(dir, "etcd"),
		Logger:                 quietLogger(),
		LogLevel:               "error",
		ProgressNotifyInterval: 200 * time.Millisecond,
		UnsafeFast:             true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	sharedEtcd.Close()
	os.RemoveAll(dir)
	os.Exit(code)
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
		Endpoints: sharedEtcd.Endpoints(),
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
