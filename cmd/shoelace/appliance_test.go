package main

import (
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestRolloutState(t *testing.T) {
	at := func(d time.Duration) time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Add(d) }
	all := []api.Instance{
		{Instance: "new", Applied: 42, LastSeen: at(0)},
		{Instance: "late", Applied: 41, LastSeen: at(-time.Minute)},
		{Instance: "gone", Applied: 7, LastSeen: at(-time.Hour)}, // a VM that was deleted: not waited for
	}
	alive, behind := rolloutState(all, 42, 5*time.Minute)
	if len(alive) != 2 || alive[0].Instance != "new" || alive[1].Instance != "late" {
		t.Errorf("alive = %+v, want new and late", alive)
	}
	if len(behind) != 1 || behind[0].Instance != "late" {
		t.Errorf("behind = %+v, want late", behind)
	}
	if alive, behind := rolloutState(nil, 42, time.Minute); len(alive) != 0 || len(behind) != 0 {
		t.Errorf("no instances: %v %v", alive, behind)
	}
}

// A message in a history listing cannot move the table's columns or rows, nor send the terminal
// an escape sequence (C0 ESC or the C1 CSI), whatever an older server let into a record.
func TestOneLine_ControlCharacters(t *testing.T) {
	got := oneLine("a\tb\nc\x1b[31md\u009b1me\u202ef")
	if want := "a b c [31md 1me f"; got != want {
		t.Errorf("oneLine = %q, want %q", got, want)
	}
}
