package store

import (
	"testing"
	"time"
)

func TestRestoredRevision(t *testing.T) {
	now := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	us := now.UnixMicro()
	for _, c := range []struct {
		name       string
		snap, want int64
	}{
		{"a store of small revisions: past the clock", 5000, us + RestoreRevisionBump},
		{"a snapshot ahead of the clock: past the snapshot", us + 7, us + 7 + RestoreRevisionBump},
		// A snapshot of a store restored ten minutes before: its revisions are the clock's of
		// then plus the bump; the move is still a whole bump (the pruner's sign of a restore).
		{"a snapshot within a bump of the clock", us - 600_000_000 + RestoreRevisionBump, us + 2*RestoreRevisionBump - 600_000_000},
	} {
		got := restoredRevision(c.snap, now)
		if got != c.want {
			t.Errorf("%s: %d; want %d", c.name, got, c.want)
		}
		if got-c.snap < RestoreRevisionBump {
			t.Errorf("%s: moved %d, less than %d", c.name, got-c.snap, RestoreRevisionBump)
		}
	}
}
