package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// offlineSnapshot writes a snapshot of the stopped store in dataDir to path, for servers
// that do not serve GET /v1/snapshot.
func offlineSnapshot(t *testing.T, dataDir, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: dataDir, Root: store.DefaultRoot,
		Logger: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatalf("open the stopped store: %v", err)
	}
	defer st.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := st.Snapshot(ctx, f); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
}
