package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap/zapcore"
)

// RestoreRevisionBump is how far Restore moves revisions forward: beyond any index an agent
// can have seen, so every agent re-reads its view (etcd's own advice for restores).
const RestoreRevisionBump = 1_000_000_000

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// SnapshotPath is a file written by Store.Snapshot (or etcdctl snapshot save).
	SnapshotPath string
	// DataDir is the data dir of the embedded store to create; it must not hold an etcd yet.
	DataDir string
	// Root is the store's root prefix (default "/shoelace/"), where the new store id goes.
	Root string
	// Logger receives etcd's warnings (default slog.Default()).
	Logger *slog.Logger
}

// Restore creates an embedded store in cfg.DataDir from a snapshot. Revisions are bumped by
// RestoreRevisionBump and marked compacted, and the store gets a new id, so that agents and
// long-polls notice the store was replaced and re-read everything. It returns the new id.
func Restore(ctx context.Context, cfg RestoreConfig) (string, error) {
	if cfg.SnapshotPath == "" || cfg.DataDir == "" {
		return "", errors.New("restore: a snapshot file and a data dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, err := os.Stat(cfg.SnapshotPath); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	dir := EtcdDir(cfg.DataDir)
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("restore: %s already holds an etcd; move it away or choose another data dir", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("restore: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	zl, _ := newZapLogger(cfg.Logger, zapcore.WarnLevel, "etcd")
	// Name and peer URL as StartEmbedded gives them, so the restored member starts as one.
	peer := "http://127.0.0.1:0"
	err := snapshot.NewV3(zl).Restore(snapshot.RestoreConfig{
		SnapshotPath:        cfg.SnapshotPath,
		Name:                embeddedName,
		OutputDataDir:       dir,
		PeerURLs:            []string{peer},
		InitialCluster:      embeddedName + "=" + peer,
		InitialClusterToken: "etcd-cluster",
		RevisionBump:        RestoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("restore %s: %w", cfg.SnapshotPath, err)
	}
	s, err := Open(ctx, Config{DataDir: cfg.DataDir, Root: cfg.Root, Logger: cfg.Logger})
	if err != nil {
		return "", fmt.Errorf("restore: start the restored store: %w", err)
	}
	defer s.Close()
	id, err := s.ResetID(ctx)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	// The replicas that shared the store when the snapshot was taken are not this deployment's:
	// /v1/status would list them until their records aged out. The restored store's servers
	// announce themselves when they start.
	recs, _, err := s.SysList(ctx, ReplicaPrefix)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	if len(recs) > 0 {
		if _, err := s.SysApply(ctx, nil, nil, slices.Collect(maps.Keys(recs))); err != nil {
			return "", fmt.Errorf("restore: forget the snapshot's replica records: %w", err)
		}
	}
	return id, nil
}

// ReplicaPrefix is where, under the system root, each replica announces itself.
const ReplicaPrefix = "replicas/"
