package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap/zapcore"
)

// RestoreRevisionBump is how far past the clock's microseconds Restore moves revisions forward
// (see restoredRevision), and how far past the snapshot's when the clock is behind it: beyond
// any index an agent can have seen, so every agent re-reads its view (etcd's own advice for
// restores).
const RestoreRevisionBump = 1_000_000_000

// restoredRevision is the revision where a restore made at now of a snapshot at revision
// snapRev moves the store's revisions: the Unix time of now in microseconds, plus
// RestoreRevisionBump. A fixed bump past the snapshot's revision moved a second restore of the
// same snapshot to where the first one had, and the second store's writes had the revisions of
// the first's again, which no record of the second restore said it lost. etcd makes far fewer
// than a million revisions a second (each is a raft entry applied and written to its
// database), so a store never passes the clock's microseconds plus the bump: a new store starts
// at 1, a restored one there, and both go on slower than the clock. A restore there is past
// every revision that the snapshot's store, or an earlier restore of the same snapshot, can
// have reached, and its record covers them all. The move is never less than
// RestoreRevisionBump past the snapshot's revision: a clock behind the snapshot's revision (or
// within RestoreRevisionBump of it: a snapshot of a store restored minutes before) cannot say
// the above, and the release pruner knows a restore by a jump of half that (freshMod).
func restoredRevision(snapRev int64, now time.Time) int64 {
	return max(now.UnixMicro(), snapRev) + RestoreRevisionBump
}

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

// Restore creates an embedded store in cfg.DataDir from a snapshot. Revisions are moved
// forward (see restoredRevision) and marked compacted, and the store gets a new id, so that agents and
// long-polls notice the store was replaced and re-read everything. It returns the new id.
func Restore(ctx context.Context, cfg RestoreConfig) (string, error) {
	if cfg.SnapshotPath == "" || cfg.DataDir == "" {
		return "", errors.New("restore: a snapshot file and a data dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	if cfg.Root, err = rootOf(cfg.Root); err != nil {
		return "", fmt.Errorf("restore: %w", err)
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
	zl, _ := newZapLogger(cfg.Logger, zapcore.WarnLevel, "etcd")
	// The snapshot's revision: every key it holds was created at or before it, and a key
	// created after the restore comes after the revision bump.
	st, err := snapshot.NewV3(zl).Status(cfg.SnapshotPath)
	if err != nil {
		return "", fmt.Errorf("restore %s: %w", cfg.SnapshotPath, err)
	}
	_, statErr := os.Stat(cfg.DataDir)
	madeDataDir := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	// undo removes what a refused restore made, so that it can be run again as it should be.
	undo := func() {
		if madeDataDir {
			os.RemoveAll(cfg.DataDir)
			return
		}
		os.RemoveAll(dir)
		os.Remove(dir + ".lock")
	}
	restored := restoredRevision(st.Revision, time.Now())
	// Name and peer URL as StartEmbedded gives them, so the restored member starts as one.
	peer := "http://127.0.0.1:0"
	err = snapshot.NewV3(zl).Restore(snapshot.RestoreConfig{
		SnapshotPath:        cfg.SnapshotPath,
		Name:                embeddedName,
		OutputDataDir:       dir,
		PeerURLs:            []string{peer},
		InitialCluster:      embeddedName + "=" + peer,
		InitialClusterToken: "etcd-cluster",
		RevisionBump:        uint64(restored - st.Revision),
		MarkCompacted:       true,
	})
	if err != nil {
		undo()
		return "", fmt.Errorf("restore %s: %w", cfg.SnapshotPath, err)
	}
	s, err := Open(ctx, Config{DataDir: cfg.DataDir, Root: cfg.Root, Logger: cfg.Logger})
	if err != nil {
		return "", fmt.Errorf("restore: start the restored store: %w", err)
	}
	defer s.Close()
	// Open gives a store without an id one: an id created now means that the snapshot holds
	// no Shoelace store under this root (taken of a server with another --root, or of an etcd
	// that no Shoelace server used), and a server on it would start empty.
	if err := s.checkRestoredRoot(ctx, st.Revision); err != nil {
		s.Close()
		undo()
		return "", fmt.Errorf("restore %s: %w; nothing was restored", cfg.SnapshotPath, err)
	}
	id, err := s.ResetID(ctx)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	// The writes after the snapshot are not in the restored store, whose revisions go on past
	// theirs (those of an earlier restore of the snapshot included): recorded, so that a revision of theirs is said to be lost, never found applied.
	lost := LostRange{Snapshot: st.Revision, Restored: restored, Time: time.Now().UTC().Truncate(time.Second)}
	data, _ := json.Marshal(lost)
	if _, err := s.SysPut(ctx, fmt.Sprintf("%s%020d", RestorePrefix, lost.Restored), data, -1); err != nil {
		return "", fmt.Errorf("restore: record the revisions it lost: %w", err)
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

// checkRestoredRoot fails when the store id under the store's root was created after the
// snapshot's revision snapRev, naming the roots of the Shoelace stores the snapshot holds.
func (s *Store) checkRestoredRoot(ctx context.Context, snapRev int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+storeIDKey)
	if err != nil {
		return s.etcdErr(ctx, "store id", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision <= snapRev {
		return nil
	}
	keys, err := s.cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		return s.etcdErr(ctx, "list the snapshot's keys", err)
	}
	var roots []string
	for _, kv := range keys.Kvs {
		if root, ok := strings.CutSuffix(string(kv.Key), "sys/"+storeIDKey); ok && strings.HasSuffix(root, "/") && root != s.root {
			roots = append(roots, root)
		}
	}
	switch len(roots) {
	case 0:
		return fmt.Errorf("the snapshot holds no Shoelace store (no key %s, nor any other root's): it is a snapshot of an etcd that no Shoelace server used", s.sysRoot+storeIDKey)
	case 1:
		return fmt.Errorf("the snapshot holds no Shoelace store under the root %s but one under %s: give --root %s", s.root, roots[0], roots[0])
	}
	return fmt.Errorf("the snapshot holds no Shoelace store under the root %s but some under %s: give --root with one of them", s.root, strings.Join(roots, ", "))
}

// RestorePrefix is where, under the system root, each restore records the revisions it lost
// (a LostRange, as JSON). A snapshot of a restored store holds the records of its restores.
const RestorePrefix = "restores/"

// LostRange is what a restore lost: the revisions after Snapshot, the revision of the snapshot
// it restored, up to Restored, where the restored store's revisions went on. A write after the
// snapshot and before the restore had one of them; the restored store has none of them.
type LostRange struct {
	Snapshot int64     `json:"snapshot_revision"`
	Restored int64     `json:"restored_revision"`
	Time     time.Time `json:"time"`
}

// Lost returns the range of a restore that lost revision rev, if one did (see LostRange).
func (s *Store) Lost(ctx context.Context, rev int64) (LostRange, bool, error) {
	recs, _, err := s.SysList(ctx, RestorePrefix)
	if err != nil {
		return LostRange{}, false, err
	}
	for _, data := range recs {
		var l LostRange
		if json.Unmarshal(data, &l) == nil && l.Snapshot < rev && rev <= l.Restored {
			return l, true, nil
		}
	}
	return LostRange{}, false, nil
}

// ReplicaPrefix is where, under the system root, each replica announces itself.
const ReplicaPrefix = "replicas/"
