package heapfloor

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, roots, floor uint64
		want               int
	}{
		{4 * mib, 0, 64 * mib, 1500},                // 4 MiB may grow to 64
		{4 * mib, 2 * mib, 64 * mib, 1000},          // 4 + 6 × 10 = 64
		{0, 0, 64 * mib, 6300},                      // nothing measured yet: as 1 MiB
		{16 * 1024, 0, 64 * mib, 6300},              // a nearly empty heap: as 1 MiB
		{40 * mib, 0, 64 * mib, 100},                // 40 → 80 under GOGC's rule already reaches the floor
		{64 * mib, 0, 64 * mib, 100},                // at the floor
		{500 * mib, 0, 64 * mib, 100},               // above it: GOGC's rule, unchanged
		{1 * mib, 0, 1024 * mib, 10000},             // bounded
		{10 * mib, 0, 0, 100},                       // no floor
		{3 * mib, 0, 3*mib + 1, 100},                // just under it
		{2 * mib, 0, 8 * mib, 300},                  // 2 → 8
		{mib + mib/2, 0, 4 * mib, 166},              // rounded down
		{63 * mib, 0, 64 * mib, 100},                // 1/63 is under GOGC's default
		{6 * mib, mib, 1 << 40, maxPercent},         // a floor far above: bounded
		{2 * mib, 100 * mib, 64 * mib, basePercent}, // large roots: never under GOGC's default
	} {
		if got := percentFor(c.live, c.roots, c.floor); got != c.want {
			t.Errorf("percentFor(%d, %d, %d) = %d, want %d", c.live, c.roots, c.floor, got, c.want)
		}
	}
}

var keep []byte

// churn allocates total bytes of short-lived garbage and returns how many collections ran.
func churn(total int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range total / 4096 {
		keep = make([]byte, 4096)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

// With a small live heap, the process collects every few MiB allocated; with a floor of 256 MiB
// it collects at most once while it allocates 128 MiB. A live heap above the floor gives
// GOGC's rule back, as each collection finds it.
func TestSet_FewerCollectionsUnderTheFloor(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set: Set does nothing")
	}
	runtime.GC()
	without := churn(128 << 20)
	if !Set(256 << 20) {
		t.Fatal("Set refused without GOGC")
	}
	runtime.GC()
	with := churn(128 << 20)
	t.Logf("collections while allocating 128 MiB: %d without a floor, %d with 256 MiB", without, with)
	if without < 4 || with > 1 {
		t.Fatalf("%d collections without the floor, %d with it: want many, then at most 1", without, with)
	}
	mu.Lock()
	p := percent
	mu.Unlock()
	if p <= basePercent {
		t.Fatalf("percent %d under the floor, want above %d", p, basePercent)
	}

	// A live heap of 300 MiB, over the floor: the next collections set GOGC's default again.
	live := make([][]byte, 300)
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		runtime.GC()
		mu.Lock()
		p = percent
		mu.Unlock()
		if p == basePercent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("percent %d with a live heap over the floor, want %d", p, basePercent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(live)
	Set(0) // the floor off for what else runs in this process
}
