package bench

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// Row is one line of the table `make bench` prints: one target of issue 20 with its figure, the
// baseline measured in the same run, and whether it meets its limit. With Ratio the limit
// applies to Figure ÷ Baseline (Shoelace against confd, raw etcd, bare net/http…); without,
// to Figure itself (a size, a time) and the baseline is only printed beside it.
type Row struct {
	Target   string  `json:"target"`   // what is measured, e.g. "write → file p50, paired, durable etcd"
	Unit     string  `json:"unit"`     // of Figure and Baseline: "ms", "MiB", "puts/s", "bytes"…
	Figure   float64 `json:"figure"`   // Shoelace's
	Baseline float64 `json:"baseline"` // the baseline's, same run (0: none)
	Against  string  `json:"against"`  // what the baseline is: "confd", "raw etcd", "net/http"…
	Ratio    bool    `json:"ratio"`    // the limit is on Figure/Baseline
	// Limit is the target: Figure/Baseline (Ratio) or Figure must be at most Limit, or at least
	// Limit with AtLeast (throughput).
	Limit   float64 `json:"limit"`
	AtLeast bool    `json:"at_least,omitempty"`
	Note    string  `json:"note,omitempty"`
}

var rowsMu sync.Mutex

// record appends r to the file named by $SHOELACE_BENCH_ROWS (JSON lines, read by
// scripts/benchtable), and reports it as a benchmark metric either way.
func record(b *testing.B, r Row) {
	b.Helper()
	if r.Ratio && r.Baseline > 0 {
		b.ReportMetric(r.Figure/r.Baseline, "ratio")
	}
	path := os.Getenv("SHOELACE_BENCH_ROWS")
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	rowsMu.Lock()
	defer rowsMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatalf("bench rows: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		b.Fatalf("bench rows: %v", err)
	}
}

// quick says whether this is `make bench-quick` (SHOELACE_BENCH_QUICK=1): each benchmark runs a
// small version of itself, so that the whole table comes out in under two minutes.
func quick() bool { return os.Getenv("SHOELACE_BENCH_QUICK") == "1" }
