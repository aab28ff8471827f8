package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// fillReports resets b and adds a batch of reports of appliance web (round makes their applied
// revisions its own).
func fillReports(b *reportBatcher, names *[reportBatch]string, round int) {
	fillReportsBy(b, names, nil, round)
}

// fillReportsBy is fillReports with the instance tokens' principals of the enrolled instances
// (made by reportHolders; nil makes them anew).
func fillReportsBy(b *reportBatcher, names *[reportBatch]string, holders *[reportBatch]*principal, round int) {
	if holders == nil {
		holders = reportHolders(names)
	}
	at := time.Date(2026, 12, 3, 1, 2, 3, 0, time.UTC)
	b.reset()
	for i := range reportBatch {
		b.add(&pendingReport{in: api.Instance{Appliance: "web", Instance: names[i], LastSeen: at, Remote: "127.0.0.2",
			Token: "agent-web", Applied: int64(round*1000 + i), Enrolled: i%2 == 0}, by: holders[i]})
	}
}

// reportHolders are the principals whose reports fillReports makes: an instance token's for
// every other instance (enrolled ones report with one), none for the others.
func reportHolders(names *[reportBatch]string) *[reportBatch]*principal {
	var by [reportBatch]*principal
	for i := 0; i < reportBatch; i += 2 {
		by[i] = &principal{record: []byte(`{"name":"instance:web:` + names[i] + `"}`)}
	}
	return &by
}

func reportNames() *[reportBatch]string {
	var names [reportBatch]string
	for i := range names {
		names[i] = fmt.Sprintf("vm-%d", i)
	}
	return &names
}

// A batch of reports is written as before the batcher kept its memory: each record the
// report's JSON, under the guard of its instance token (the very record an enrolled instance's
// token was read from; none for another report), the later report of an instance winning; and
// a batch after a larger one holds only its own reports.
func TestReportBatcher_WritesAsBefore(t *testing.T) {
	names := reportNames()
	var b reportBatcher
	for round := range 3 {
		fillReports(&b, names, round)
		b.add(&pendingReport{in: api.Instance{Appliance: "web", Instance: "vm-3", Token: "agent-web", Applied: 7}}) // the later report wins
		puts := b.puts()
		if len(puts) != reportBatch || b.len() != reportBatch {
			t.Fatalf("%d puts for %d reports", len(puts), b.len())
		}
		for _, p := range puts {
			in := b.reports[b.at[p.Key]].in
			want, _ := json.Marshal(in)
			holder := []byte(`{"name":"instance:web:` + in.Instance + `"}`)
			if !bytes.Equal(p.Value, want) || p.Key != instancePrefix+"web/"+in.Instance ||
				p.Guard != tokenPrefix+instanceTokenName("web", in.Instance) || p.Exists ||
				in.Enrolled != bytes.Equal(p.Is, holder) || !in.Enrolled && p.Is != nil {
				t.Fatalf("put %+v (%s) for %+v, want value %s", p, p.Value, in, want)
			}
			if in.Instance == "vm-3" && in.Applied != 7 {
				t.Fatalf("vm-3's later report lost: %+v", in)
			}
		}
	}
	b.reset()
	b.add(&pendingReport{in: api.Instance{Appliance: "db", Instance: "one", Token: "agent-db"}})
	if puts := b.puts(); len(puts) != 1 || puts[0].Key != instancePrefix+"db/one" {
		t.Fatalf("a batch of one after a full one: %+v", puts)
	}
}
