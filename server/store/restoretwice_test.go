package store_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/server/store"
)

// TestStore_RestoreTwiceCoversWhatTheFirstRestoreWrote: the same snapshot restored a second
// time, after writes to the store of the first restore, moved revisions forward by the same
// bump: the second store's revisions were those of the first's writes again, and no record of
// the second restore named them (its record ended where the first's did), so a revision of a
// write to the first store was taken as one the second passed. Every revision the first store
// reached is lost by the second restore, and the second store's writes come after them all.
func TestStore_RestoreTwiceCoversWhatTheFirstRestoreWrote(t *testing.T) {
	ctx := ctxT(t)
	s, err := store.Open(ctx, embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "appliances/web/a", "1")
	var buf bytes.Buffer
	if _, err := s.Snapshot(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(snap, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	lost := []int64{mustPut(t, s, "appliances/web/a", "lost by the first restore")}
	s.Close()

	// restore restores the snapshot into a new data dir and opens its store.
	restore := func() *store.Store {
		dir := t.TempDir()
		if _, err := store.Restore(ctx, store.RestoreConfig{SnapshotPath: snap, DataDir: dir, Logger: quietLogger()}); err != nil {
			t.Fatal(err)
		}
		r, err := store.Open(ctx, embeddedConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := restore()
	for i := range 5 {
		lost = append(lost, mustPut(t, first, "appliances/web/a", string(rune('b'+i))))
	}
	first.Close()

	second := restore()
	defer second.Close()
	for _, rev := range lost {
		l, ok, err := second.Lost(ctx, rev)
		if err != nil || !ok {
			t.Errorf("revision %d (a write after the snapshot, to the old store or to the first restore's): lost %v %v, want a record of the second restore", rev, ok, err)
			continue
		}
		if l.Snapshot >= rev || rev > l.Restored {
			t.Errorf("revision %d: the record %+v does not cover it", rev, l)
		}
	}
	next := mustPut(t, second, "appliances/web/a", "the second restore's first write")
	if last := lost[len(lost)-1]; next <= last {
		t.Errorf("the second restore's first write is at revision %d, not past %d, the first restore's last", next, last)
	}
	if _, ok, err := second.Lost(ctx, next); err != nil || ok {
		t.Errorf("revision %d of the second restore's store: lost %v %v, want not lost", next, ok, err)
	}
}
