package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A batch of reports is written as before (each record the report's JSON, under the guard of
// its instance token), and the batcher keeps its map, puts and JSON from one batch to the next:
// made anew for each batch they were about a kilobyte of garbage per report, while 10,000
// agents connecting at once report together.
func TestReportBatcher_ReusesItsMemory(t *testing.T) {
	at := time.Date(2026, 12, 3, 1, 2, 3, 0, time.UTC)
	var names [reportBatch]string
	for i := range names {
		names[i] = fmt.Sprintf("vm-%d", i)
	}
	fill := func(b *reportBatcher, round int) {
		b.reset()
		for i := range reportBatch {
			b.add(api.Instance{Appliance: "web", Instance: names[i], LastSeen: at, Remote: "127.0.0.2",
				Token: "agent-web", Applied: int64(round*1000 + i), Enrolled: i%2 == 0})
		}
	}
	var b reportBatcher
	fill(&b, 0)
	b.add(api.Instance{Appliance: "web", Instance: "vm-3", LastSeen: at, Token: "agent-web", Applied: 7}) // the later report wins
	puts := b.puts()
	if len(puts) != reportBatch {
		t.Fatalf("%d puts for %d reports", len(puts), reportBatch)
	}
	for _, p := range puts {
		in := b.reports[b.at[p.Key]]
		want, _ := json.Marshal(in)
		if !bytes.Equal(p.Value, want) || p.Key != instancePrefix+"web/"+in.Instance ||
			p.Guard != tokenPrefix+instanceTokenName("web", in.Instance) || p.Exists != in.Enrolled {
			t.Fatalf("put %+v (%s) for %+v, want value %s", p, p.Value, in, want)
		}
		if in.Instance == "vm-3" && in.Applied != 7 {
			t.Fatalf("vm-3's later report lost: %+v", in)
		}
	}
	// Every batch after the first allocates only each report's key and guard (two strings),
	// and what encoding/json allocates for the time in each (time.Time's MarshalJSON).
	round := 0
	n := testing.AllocsPerRun(5, func() {
		round++
		fill(&b, round)
		b.puts()
	})
	if per := n / reportBatch; per > 3.2 {
		t.Fatalf("%.1f allocations per report in a batch, want at most 3 (the batch's map, puts and JSON are kept)", per)
	} else {
		t.Logf("%.2f allocations per report in a batch", per)
	}
}
