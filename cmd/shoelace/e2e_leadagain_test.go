package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// leadsWithin fails t unless the server of c says, within d, that it leads the rollouts, and
// returns how long that took.
func leadsWithin(t *testing.T, c *runner, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var st struct {
			Rollouts struct {
				Leading bool `json:"leading"`
			} `json:"rollouts"`
		}
		if r := c.run("status", "-o", "json"); r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.Rollouts.Leading {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("the server did not lead the rollouts within %s of being healthy", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A server killed (SIGKILL) on its embedded etcd, and one started on a store restored from a
// snapshot taken while it led, moved no rollout for about 12 s after it was healthy: the
// leader's key (sys/leaders/rollouts) of its previous life, or of the snapshot, held a lease
// that etcd keeps for its 10 s TTL after it starts, which no live replica kept alive. An
// embedded store is one replica's alone: at its start those leases are revoked, and the
// server leads at once.
func TestE2E_LeadsAtOnceAfterAKillOrARestore(t *testing.T) {
	dir := t.TempDir()
	s, err := startServer(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	leadsWithin(t, c, 30*time.Second)
	snap := filepath.Join(t.TempDir(), "backup.db")
	c.ok("snapshot", "save", snap) // taken while the server leads
	tok, err := os.ReadFile(s.adminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	adminToken := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(adminToken, tok, 0o600); err != nil {
		t.Fatal(err)
	}

	_ = s.cmd.Process.Signal(syscall.SIGKILL) // no hand-over: its lease stays in the store
	s.done <- <-s.done                        // for the deferred stop
	s, err = startServer(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c = &runner{t: t, env: []string{"SHOELACE_ADDR=" + s.url(), "SHOELACE_TOKEN_FILE=" + adminToken}}
	if took := leadsWithin(t, c, 30*time.Second); took > 4*time.Second {
		t.Errorf("after a kill the restarted server led the rollouts %s after it was healthy, want at once", took.Round(100*time.Millisecond))
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	restored := filepath.Join(t.TempDir(), "restored")
	if r := (&runner{t: t}).run("snapshot", "restore", snap, "--data-dir", restored); r.code != 0 {
		t.Fatalf("snapshot restore: %s", r)
	}
	s, err = startServer(restored, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c = &runner{t: t, env: []string{"SHOELACE_ADDR=" + s.url(), "SHOELACE_TOKEN_FILE=" + adminToken}}
	if took := leadsWithin(t, c, 30*time.Second); took > 4*time.Second {
		t.Errorf("after a restore the server led the rollouts %s after it was healthy, want at once", took.Round(100*time.Millisecond))
	}
}
