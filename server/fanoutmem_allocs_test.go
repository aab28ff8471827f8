//go:build !race

package server

import "testing"

// The batcher keeps its index, reports, puts and JSON from one batch to the next: made anew for
// each batch they were about a kilobyte of garbage per report, while 10,000 agents connecting
// at once report together. (Not under the race detector, whose sync.Pool drops what is put
// back at random: encoding/json's buffers then allocate.)
func TestReportBatcher_ReusesItsMemory(t *testing.T) {
	names := reportNames()
	holders := reportHolders(names)
	var b reportBatcher
	fillReportsBy(&b, names, holders, 0)
	b.puts()
	// Every batch after the first allocates only each report's key and guard (two strings),
	// and what encoding/json allocates for the time in each (time.Time's MarshalJSON).
	round := 0
	n := testing.AllocsPerRun(5, func() {
		round++
		fillReportsBy(&b, names, holders, round)
		b.puts()
	})
	if per := n / reportBatch; per > 3.2 {
		t.Fatalf("%.1f allocations per report in a batch, want at most 3 (the batch's index, reports, puts and JSON are kept)", per)
	} else {
		t.Logf("%.2f allocations per report in a batch", per)
	}
}
