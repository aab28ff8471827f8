// Command benchtable prints the table of `make bench`: one row per target that the benchmarks of
// tests/bench recorded (JSON lines, see tests/bench/table_test.go), with the figure, its
// baseline from the same run, the ratio and whether it meets the target, as Markdown.
//
//	go run ./scripts/benchtable ROWS.jsonl
//
// It exits 0 whatever the figures; 1 when the file cannot be read or holds no row.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// row mirrors tests/bench.Row.
type row struct {
	Target   string  `json:"target"`
	Unit     string  `json:"unit"`
	Figure   float64 `json:"figure"`
	Baseline float64 `json:"baseline"`
	Against  string  `json:"against"`
	Ratio    bool    `json:"ratio"`
	Limit    float64 `json:"limit"`
	AtLeast  bool    `json:"at_least"`
	Note     string  `json:"note"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtable ROWS.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err, "(did the benchmarks run with SHOELACE_BENCH_ROWS set?)")
		os.Exit(1)
	}
	defer f.Close()
	rows, err := read(f)
	if err == nil && len(rows) == 0 {
		err = fmt.Errorf("%s holds no row", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	// In the order of the targets (rows start with their number), stable within one.
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(targetNumber(a.Target), targetNumber(b.Target)) })
	host, _ := os.Hostname()
	fmt.Printf("make bench, %s, %s/%s, %d CPUs, host %s, commit %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), host, commit())
	fmt.Print(table(rows))
}

// targetNumber is the number a row's target starts with ("3. fan-out…"), or 0.
func targetNumber(t string) int {
	n, _, ok := strings.Cut(t, ".")
	if !ok {
		return 0
	}
	i, err := strconv.Atoi(n)
	if err != nil {
		return 0
	}
	return i
}

func read(r io.Reader) ([]row, error) {
	var rows []row
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var x row
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		rows = append(rows, x)
	}
	return rows, sc.Err()
}

// meets says whether x is at or within its target, and the value compared.
func meets(x row) (bool, float64) {
	v := x.Figure
	if x.Ratio {
		if x.Baseline <= 0 {
			return false, 0
		}
		v = x.Figure / x.Baseline
	}
	if x.AtLeast {
		return v >= x.Limit, v
	}
	return v <= x.Limit, v
}

func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| target | Shoelace | baseline (same run) | ratio | limit | meets |\n|---|---|---|---|---|---|\n")
	missed := 0
	for _, x := range rows {
		ok, _ := meets(x)
		base := "—"
		if x.Against != "" {
			base = fmt.Sprintf("%s %s (%s)", num(x.Baseline), x.Unit, x.Against)
		}
		ratio := "—"
		if x.Baseline > 0 {
			ratio = fmt.Sprintf("%.2f×", x.Figure/x.Baseline)
		}
		op := "≤"
		if x.AtLeast {
			op = "≥"
		}
		limit := fmt.Sprintf("%s %s %s", op, num(x.Limit), x.Unit)
		if x.Ratio {
			limit = fmt.Sprintf("%s %s×", op, num(x.Limit))
		}
		mark := "yes"
		if !ok {
			mark, missed = "**no**", missed+1
		}
		target := x.Target
		if x.Note != "" {
			target += " — " + x.Note
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s | %s |\n", target, num(x.Figure), x.Unit, base, ratio, limit, mark)
	}
	fmt.Fprintf(&b, "\n%d of %d rows meet their target.\n", len(rows)-missed, len(rows))
	return b.String()
}

// num prints a figure with three significant digits at most, without a trailing ".0".
func num(f float64) string {
	s := fmt.Sprintf("%.3g", f)
	if strings.ContainsAny(s, "e") {
		s = fmt.Sprintf("%.0f", f)
	}
	return s
}

func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
