package main

import (
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	rows, err := read(strings.NewReader(`{"target":"2. throughput","unit":"puts/s","figure":50,"baseline":100,"against":"raw etcd","ratio":true,"limit":0.6,"at_least":true}

{"target":"1. write → file p50","unit":"ms","figure":1.8,"baseline":2,"against":"confd","ratio":true,"limit":0.9,"note":"paired"}
{"target":"4. agent binary","unit":"MiB","figure":11.6,"limit":12}
`))
	if err != nil || len(rows) != 3 {
		t.Fatalf("read: %v %v", rows, err)
	}
	if ok, v := meets(rows[0]); ok || v != 0.5 {
		t.Errorf("0.5× against at least 0.6×: meets %v (%v)", ok, v)
	}
	if ok, _ := meets(rows[1]); !ok {
		t.Error("0.9× against at most 0.9×: does not meet")
	}
	if ok, _ := meets(rows[2]); !ok {
		t.Error("11.6 MiB against at most 12: does not meet")
	}
	out := table(rows)
	for _, want := range []string{
		"| 2. throughput | 50 puts/s | 100 puts/s (raw etcd) | 0.50× | ≥ 0.6× | **no** |",
		"| 1. write → file p50 — paired | 1.8 ms | 2 ms (confd) | 0.90× | ≤ 0.9× | yes |",
		"| 4. agent binary | 11.6 MiB | — | — | ≤ 12 MiB | yes |",
		"2 of 3 rows meet their target.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if _, err := read(strings.NewReader("{not json\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: %v", err)
	}
	if targetNumber("3. fan-out") != 3 || targetNumber("fan-out") != 0 {
		t.Error("targetNumber")
	}
}
