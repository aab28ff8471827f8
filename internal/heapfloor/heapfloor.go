// Package heapfloor keeps Go's collector from running while the heap is small. With the default
// GOGC of 100 a process whose live heap is a few MiB collects each time it has allocated as
// much again: a server answering writes then collects every few hundred requests, and each
// collection takes a core's quarter and the assists of the requests that meet it, which is
// where the slowest writes of a run come from. Set raises the collector's percentage while the
// live heap is under the floor, so that the heap may grow to the floor before it is collected,
// and gives it back as the live heap nears the floor: above it, GOGC's rule applies unchanged
// and the memory a large heap may use is what it was.
//
// It reads the live heap after each collection (a cleanup of an object made unreachable for the
// purpose, run by the runtime once a cycle found it so) and sets the percentage with
// debug.SetGCPercent. A GOGC in the environment is the operator's choice: then Set does nothing.
package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// basePercent is GOGC's default, kept above the floor.
const basePercent = 100

// maxPercent bounds the percentage for a live heap much smaller than the floor.
const maxPercent = 10000

var (
	mu      sync.Mutex
	floor   uint64
	started bool
	percent = basePercent
	// What the pacer's goal is made of: the heap the last collection found live, and the roots
	// it scans (goroutine stacks, globals), which the percentage applies to as well.
	sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
)

// Set makes floor the heap size under which the collector does not run (as nearly as its pacer
// allows), from now on, for the whole process; a later call changes the floor. It reports false,
// and does nothing, when the environment sets GOGC.
func Set(bytes uint64) bool {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return false
	}
	mu.Lock()
	floor = bytes
	first := !started
	started = true
	mu.Unlock()
	tune()
	if first {
		arm()
	}
	return true
}

// sentinel is made unreachable for a collection to find: its cleanup runs once a cycle.
type sentinel struct{ _ *int }

// arm makes a sentinel whose cleanup tunes the percentage and arms the next one.
func arm() {
	runtime.AddCleanup(&sentinel{}, func(struct{}) {
		tune()
		arm()
	}, struct{}{})
}

// tune sets the percentage for the live heap the last collection found.
func tune() {
	mu.Lock()
	defer mu.Unlock()
	metrics.Read(sample)
	for _, s := range sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return // not measured by this runtime: GOGC's rule stays
		}
	}
	live, roots := sample[0].Value.Uint64(), sample[1].Value.Uint64()+sample[2].Value.Uint64()
	if p := percentFor(live, roots, floor); p != percent {
		debug.SetGCPercent(p)
		percent = p
	}
}

// percentFor is the percentage that lets a heap of live bytes, with roots bytes of stacks and
// globals to scan, grow to floor before the next collection (the pacer's goal is live +
// (live + roots) × percent/100), never under GOGC's default nor over maxPercent.
func percentFor(live, roots, floor uint64) int {
	live = max(live, 1<<20) // before the first collection, or a nearly empty heap
	if live >= floor {
		return basePercent
	}
	p := (floor - live) * 100 / (live + roots)
	return int(min(max(p, basePercent), maxPercent))
}
