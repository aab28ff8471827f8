//go:build !windows

package agent

import (
	"log/slog"
	"os"
	"testing"
	"time"
)

// A burst of snapshots is written once, as its last one; close writes what is still pending.
func TestPersisterCoalescesABurst(t *testing.T) {
	dir := t.TempDir()
	// A long quiet time and a longer max: the burst below is one write, whatever the machine's speed.
	p := startPersisterAfter(slog.New(slog.DiscardHandler), time.Hour, time.Hour)
	for rev := int64(1); rev <= 100; rev++ {
		p.put(&cacheJob{dir: dir, c: Cached{Appliance: "web", Store: "s", Revision: rev, Keys: map[string]string{"a": "1"}}},
			&statusJob{dir: dir, s: &Status{Appliance: "web", Revision: rev}})
	}
	if _, err := os.Stat(CachePath(dir, "web")); !os.IsNotExist(err) {
		t.Fatalf("the cache was written before the burst settled: %v", err)
	}
	p.close()
	if p.flushes != 1 {
		t.Fatalf("%d writes for one burst, want 1", p.flushes)
	}
	c, err := LoadCache(dir, "web")
	if err != nil || c.Revision != 100 {
		t.Fatalf("cache = %+v, %v; want revision 100", c, err)
	}
	s, err := LoadStatus(dir, "web")
	if err != nil || s.Revision != 100 {
		t.Fatalf("status = %+v, %v; want revision 100", s, err)
	}
}

// Snapshots are written without close once puts pause, and during a steady stream at the
// latest after max.
func TestPersisterWritesAfterQuietOrMax(t *testing.T) {
	dir := t.TempDir()
	p := startPersisterAfter(slog.New(slog.DiscardHandler), 10*time.Millisecond, time.Hour)
	p.put(&cacheJob{dir: dir, c: Cached{Appliance: "web", Store: "s", Revision: 7, Keys: map[string]string{"a": "1"}}}, nil)
	waitCache(t, dir, 7)
	p.close()

	// A stream that never pauses for quiet is still written after max.
	p = startPersisterAfter(slog.New(slog.DiscardHandler), time.Hour, 20*time.Millisecond)
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-stopped // no put may follow close
		p.close()
	}()
	go func() {
		defer close(stopped)
		for rev := int64(8); ; rev++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				p.put(&cacheJob{dir: dir, c: Cached{Appliance: "web", Store: "s", Revision: rev, Keys: map[string]string{"a": "1"}}}, nil)
			}
		}
	}()
	waitCache(t, dir, 8)
}

// waitCache waits (generously) for the cache of web to reach revision rev or later.
func waitCache(t *testing.T, dir string, rev int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c, err := LoadCache(dir, "web"); err == nil && c.Revision >= rev {
			return
		}
	}
	t.Fatalf("the cache never reached revision %d", rev)
}
