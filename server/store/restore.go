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

	"github.com/shoelace-dev/shoelace/internal/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
	id, _, err := s.recordRestore(ctx, LostRange{Snapshot: st.Revision, Restored: restored, Time: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	return id, nil
}

// recordRestore records what a restore lost, in a store just restored from a snapshot, as
// Restore does for an embedded store and Restored for an external cluster that etcdutl
// restored: the restore's LostRange under RestorePrefix and a new store id, in one transaction,
// so that a revision of a write after the snapshot is said to be lost rather than found applied,
// and agents and long-polls re-read everything. The record's key is its Restored revision: a
// restore already recorded (Restored run twice at once) writes nothing and returns the store's
// id, with already true. The records of the replicas that shared the store when the snapshot
// was taken are dropped: they are not this deployment's, and /v1/status would list them until
// their records aged out. The restored store's servers announce themselves when they start.
func (s *Store) recordRestore(ctx context.Context, lost LostRange) (id string, already bool, err error) {
	key := fmt.Sprintf("%s%020d", RestorePrefix, lost.Restored)
	data, _ := json.Marshal(lost)
	id = newID()
	// A mod revision of 0 is a key that does not exist: the record and the id are written
	// together, or neither when an earlier run wrote the record.
	_, err = s.SysApply(ctx, []SysGuard{{Key: key, Rev: 0}}, map[string][]byte{storeIDKey: []byte(id), key: data}, nil)
	switch {
	case errors.Is(err, api.ErrConflict):
		// Another run recorded it (and dropped the replica records, which servers started
		// since may have written again): this one writes nothing.
		recs, _, err := s.SysList(ctx, storeIDKey)
		if err != nil {
			return "", false, err
		}
		return string(recs[storeIDKey]), true, nil
	case err != nil:
		return "", false, fmt.Errorf("record the revisions it lost and a new store id: %w", err)
	default:
		s.setID(id)
	}
	recs, _, err := s.SysList(ctx, ReplicaPrefix)
	if err != nil {
		return "", false, err
	}
	if len(recs) > 0 {
		if _, err := s.SysApply(ctx, nil, nil, slices.Collect(maps.Keys(recs))); err != nil {
			return "", false, fmt.Errorf("forget the snapshot's replica records: %w", err)
		}
	}
	return id, already, nil
}

// RestoredConfig configures Restored.
type RestoredConfig struct {
	// SnapshotPath is the snapshot file that etcdutl restored the cluster from.
	SnapshotPath string
	// Endpoints, CACert, Cert and Key reach the restored cluster, as Config's.
	Endpoints         []string
	CACert, Cert, Key string
	// Root is the store's root prefix (default "/shoelace/").
	Root string
	// Bump is etcdutl's --bump-revision (default RestoreRevisionBump, the runbook's).
	Bump int64
	// Logger receives the store's warnings (default slog.Default()).
	Logger *slog.Logger
}

// RestoredResult is what Restored recorded.
type RestoredResult struct {
	// ID is the store's new id (its id, when the restore was recorded already).
	ID string
	// Lost is the restore's record.
	Lost LostRange
	// Already says that an earlier run recorded the restore, and nothing was written.
	Already bool
}

// Restored records, on an external cluster that etcdutl restored from cfg.SnapshotPath with
// --bump-revision cfg.Bump, what Restore records on the embedded store it creates (see
// recordRestore): etcdutl knows nothing of Shoelace, and without the record a revision of a
// write after the snapshot was counted as applied by the agents of the restored store, and a
// rollback to it restored a state it never had. It refuses a cluster whose revision is not past
// the snapshot's plus the bump (not restored from that snapshot with that bump, which the
// record would misstate), and one that a Shoelace server serves (a leader or a replica record
// written since the restore): the server would keep the old id, and rollouts it leads would
// go on over the restore. A cluster whose restore from the snapshot is recorded already (see
// recordedRestore) is none of those: it writes nothing and returns the record, Already true.
func Restored(ctx context.Context, cfg RestoredConfig) (_ RestoredResult, err error) {
	if cfg.SnapshotPath == "" || len(cfg.Endpoints) == 0 {
		return RestoredResult{}, errors.New("snapshot restored: a snapshot file and the cluster's endpoints are required")
	}
	if cfg.Bump <= 0 {
		cfg.Bump = RestoreRevisionBump
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	zl, _ := newZapLogger(cfg.Logger, zapcore.WarnLevel, "etcd")
	st, err := snapshot.NewV3(zl).Status(cfg.SnapshotPath)
	if err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored %s: %w", cfg.SnapshotPath, err)
	}
	lost := LostRange{Snapshot: st.Revision, Restored: st.Revision + cfg.Bump}
	s, err := Open(ctx, Config{Endpoints: cfg.Endpoints, CACert: cfg.CACert, Cert: cfg.Cert, Key: cfg.Key, Root: cfg.Root, Logger: cfg.Logger, Once: true})
	if err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored: %w; nothing was written", err)
	}
	defer s.Close()
	rev, err := s.Revision(ctx)
	if err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored: %w", err)
	}
	// A root without a store was given one by Open (its id, the record of its look below):
	// taken back on every refusal, which says that nothing was written, as Restore removes what
	// it made. Only what this Open made, never an id some server made after the snapshot, nor
	// once the refusals are passed: the record's write gives the root its new id.
	refusing := true
	defer func() {
		if made := s.idMade.Load(); err != nil && refusing && made > 0 {
			if err := s.dropOpenedSince(ctx, made-1); err != nil {
				s.log.Warn("remove the keys that opening the cluster under the root made", "root", s.root, "err", err)
			}
		}
	}()
	if rec, id, ok, err := s.recordedRestore(ctx, lost.Snapshot, cfg.Bump); err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored: %w", err)
	} else if ok {
		return RestoredResult{ID: id, Lost: rec, Already: true}, nil
	}
	if rev < lost.Restored {
		return RestoredResult{}, fmt.Errorf("snapshot restored: the cluster is at revision %d, not past the snapshot's %d plus the bump %d (%d): it was not restored from %s with etcdutl snapshot restore --bump-revision %d --mark-compacted (give --bump as etcdutl's --bump-revision); nothing was written",
			rev, lost.Snapshot, cfg.Bump, lost.Restored, cfg.SnapshotPath, cfg.Bump)
	}
	if err := s.checkRestoredFrom(ctx, lost); err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored %s: %w; nothing was written", cfg.SnapshotPath, err)
	}
	if err := s.checkNotServed(ctx, lost.Restored); err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored: %w; nothing was written", err)
	}
	if err := s.checkRestoredRoot(ctx, st.Revision); err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored %s: %w; nothing was written", cfg.SnapshotPath, err)
	}
	refusing = false
	lost.Time = time.Now().UTC().Truncate(time.Second)
	id, already, err := s.recordRestore(ctx, lost)
	if err != nil {
		return RestoredResult{}, fmt.Errorf("snapshot restored: %w", err)
	}
	if already {
		recs, _, err := s.SysList(ctx, fmt.Sprintf("%s%020d", RestorePrefix, lost.Restored))
		if err != nil {
			return RestoredResult{}, fmt.Errorf("snapshot restored: %w", err)
		}
		for _, data := range recs {
			_ = json.Unmarshal(data, &lost)
		}
	}
	return RestoredResult{ID: id, Lost: lost, Already: already}, nil
}

// recordedRestore returns the record of the store's newest restore, and the store's id, when
// that restore was of the snapshot at revision snapRev and the cluster was not restored again
// since: a run of Restored after the one that recorded it, or after "snapshot restore", which
// records its own restore (at the clock's revision, not the snapshot's plus bump). The history
// checks refused such a run once the cluster had been compacted past the restore's revision
// (etcd's auto-compaction, with the servers started again), and always after "snapshot
// restore", as a cluster restored from another snapshot. One restored since by etcdutl from a
// later snapshot holds the record too, but its revision jumped by a bump past the record's: a
// jump of half of bump is taken as one (as the release pruner takes half of
// RestoreRevisionBump), and the run goes on to the checks, which refuse it.
func (s *Store) recordedRestore(ctx context.Context, snapRev, bump int64) (LostRange, string, bool, error) {
	recs, rev, err := s.SysListRevs(ctx, 0, []string{RestorePrefix, storeIDKey})
	if err != nil {
		return LostRange{}, "", false, err
	}
	var newest LostRange
	var mod int64
	for k, v := range recs {
		var l LostRange
		if strings.HasPrefix(k, RestorePrefix) && json.Unmarshal(v.Data, &l) == nil && l.Restored > newest.Restored {
			newest, mod = l, v.Rev
		}
	}
	if newest.Restored == 0 || newest.Snapshot != snapRev || rev-mod >= max(bump/2, 1) {
		return LostRange{}, "", false, nil
	}
	return newest, string(recs[storeIDKey].Data), true, nil
}

// checkRestoredFrom refuses a cluster that etcdutl did not restore from the snapshot of lost
// with the bump of lost: etcdutl's --mark-compacted compacts the cluster at exactly the
// snapshot's revision plus the bump, and its history goes on from there. The check of the
// cluster's revision alone let another file through (an earlier backup of the same store, the
// cluster restored from a later one), and the record then said the wrong revisions were lost.
func (s *Store) checkRestoredFrom(ctx context.Context, lost LostRange) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	k := s.sysRoot + storeIDKey
	_, err := s.cli.Get(ctx, k, clientv3.WithRev(lost.Restored-1), clientv3.WithCountOnly())
	switch {
	case err == nil:
		return fmt.Errorf("the cluster keeps its history before revision %d (the snapshot's %d plus the bump %d): it was not restored from this snapshot with etcdutl snapshot restore --bump-revision %d --mark-compacted (but from an earlier snapshot, or not by etcdutl)",
			lost.Restored, lost.Snapshot, lost.Restored-lost.Snapshot, lost.Restored-lost.Snapshot)
	case !errors.Is(err, rpctypes.ErrCompacted):
		return s.etcdErr(ctx, "read the cluster's history", err)
	}
	_, err = s.cli.Get(ctx, k, clientv3.WithRev(lost.Restored), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("the cluster is compacted past revision %d (the snapshot's %d plus the bump %d): it was not restored from this snapshot but from a later one, or it was compacted since (etcd's --auto-compaction-retention); give the snapshot it was restored from",
			lost.Restored, lost.Snapshot, lost.Restored-lost.Snapshot)
	case err != nil:
		return s.etcdErr(ctx, "read the cluster's history", err)
	}
	return nil
}

// dropOpenedSince deletes the system keys that Open writes in a root without a store (the
// store id and the record of its look below the root) if they were created after revision
// rev, each while it is as read.
func (s *Store) dropOpenedSince(ctx context.Context, rev int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for _, k := range []string{s.sysRoot + storeIDKey, s.sysRoot + belowCheckedKey} {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return s.etcdErr(ctx, "read "+k, err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision <= rev {
			continue
		}
		_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", resp.Kvs[0].ModRevision)).Then(clientv3.OpDelete(k)).Commit()
		if err != nil {
			return s.etcdErr(ctx, "remove "+k, err)
		}
	}
	return nil
}

// restoredServeWindow is how recently a replica record written since a restore must have been
// refreshed for checkNotServed to take it as a live server's: replicas refresh theirs every
// 15 s, and one killed leaves its record behind.
const restoredServeWindow = 2 * time.Minute

// checkNotServed fails when a Shoelace server serves the store since its restore at revision
// restored: a leader's key (held by a lease its replica keeps alive) or a recent replica
// record written after it. Those of the snapshot are older than the restore.
func (s *Store) checkNotServed(ctx context.Context, restored int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for _, prefix := range []string{"leaders/", ReplicaPrefix} {
		resp, err := s.cli.Get(ctx, s.sysRoot+prefix, clientv3.WithPrefix())
		if err != nil {
			return s.etcdErr(ctx, "read the replicas' records", err)
		}
		for _, kv := range resp.Kvs {
			if kv.ModRevision <= restored {
				continue
			}
			var rec struct {
				LastSeen time.Time `json:"last_seen"`
			}
			if prefix == ReplicaPrefix && (json.Unmarshal(kv.Value, &rec) != nil || time.Since(rec.LastSeen) > restoredServeWindow) {
				continue
			}
			return fmt.Errorf("a Shoelace server serves the restored store (%s, written at revision %d, after the restore): stop every server on the cluster first (systemctl stop shoelace-server), then run this again", strings.TrimPrefix(string(kv.Key), s.sysRoot), kv.ModRevision)
		}
	}
	return nil
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
	restores, err := s.Restores(ctx)
	if err != nil {
		return LostRange{}, false, err
	}
	for _, l := range restores {
		if l.Snapshot < rev && rev <= l.Restored {
			return l, true, nil
		}
	}
	return LostRange{}, false, nil
}

// Restores returns the records of the restores the store went through (see LostRange).
func (s *Store) Restores(ctx context.Context) ([]LostRange, error) {
	recs, _, err := s.SysList(ctx, RestorePrefix)
	if err != nil {
		return nil, err
	}
	var out []LostRange
	for _, data := range recs {
		var l LostRange
		if json.Unmarshal(data, &l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

// ReplicaPrefix is where, under the system root, each replica announces itself.
const ReplicaPrefix = "replicas/"
