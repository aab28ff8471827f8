package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// recorder is a writer that keeps every write, and can hold the first one.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
	lines  map[string]int // line → times written
	hold   chan struct{}  // when set, the first write waits until it is closed
	held   chan struct{}  // closed when the first write waits
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	first := len(r.writes) == 0
	r.writes = append(r.writes, bytes.Clone(p))
	if r.lines == nil {
		r.lines = map[string]int{}
	}
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l != "" {
			r.lines[l]++
		}
	}
	r.mu.Unlock()
	if first && r.hold != nil {
		close(r.held)
		<-r.hold
	}
	return len(p), nil
}

func (r *recorder) has(line string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines[line] > 0
}

// Every line is written whole, once, in the order each writer wrote its lines, and is in the
// writer's output when Write (or Sync after a queued line) returns.
func TestLineWriter_LinesWholeOnceInOrder(t *testing.T) {
	rec := &recorder{}
	lw := newLineWriter(rec)
	const writers, lines = 8, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				line := fmt.Sprintf("writer %d line %d %s\n", g, i, strings.Repeat("x", i%50))
				if (g+i)%2 == 0 {
					lw.Write([]byte(line))
				} else {
					queueOnly{lw}.Write([]byte(line))
					lw.Sync()
				}
				if !rec.has(line) {
					t.Errorf("%q not written when its write returned", line)
					return
				}
			}
		}()
	}
	wg.Wait()
	next := make([]int, writers)
	var all bytes.Buffer
	for _, w := range rec.writes {
		if len(w) == 0 || w[len(w)-1] != '\n' {
			t.Fatalf("a write that does not end a line: %q", w)
		}
		all.Write(w)
	}
	for _, l := range strings.Split(strings.TrimSuffix(all.String(), "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &g, &i); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if want := fmt.Sprintf("writer %d line %d %s", g, i, strings.Repeat("x", i%50)); l != want {
			t.Fatalf("line %q, want %q", l, want)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	for g, n := range next {
		if n != lines {
			t.Errorf("writer %d: %d lines written, want %d", g, n, lines)
		}
	}
}

// The lines queued while a write is on its way go together in the next write.
func TestLineWriter_QueuedLinesShareAWrite(t *testing.T) {
	rec := &recorder{hold: make(chan struct{}), held: make(chan struct{})}
	lw := newLineWriter(rec)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		lw.Write([]byte("first\n"))
	}()
	<-rec.held
	const n = 10
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			queueOnly{lw}.Write([]byte(fmt.Sprintf("audit %d\n", i)))
			lw.Sync()
		}()
	}
	for {
		lw.mu.Lock()
		q := lw.queued
		lw.mu.Unlock()
		if q == n+1 {
			break
		}
	}
	close(rec.hold)
	wg.Wait()
	if len(rec.writes) != 2 || strings.Count(string(rec.writes[1]), "\n") != n {
		t.Fatalf("%d writes (%q), want the first and one of the %d lines queued behind it", len(rec.writes), rec.writes, n)
	}
}

// panicky panics on its first write.
type panicky struct {
	recorder
	once sync.Once
}

func (p *panicky) Write(b []byte) (int, error) {
	p.once.Do(func() { panic("the log's writer failed") })
	return p.recorder.Write(b)
}

// A writer that panics panics the call whose line it was writing, as it did under slog's own
// lock; the log goes on after it (no write left in progress, no lock left taken).
func TestLineWriter_WriterPanics(t *testing.T) {
	w := &panicky{}
	lw := newLineWriter(w)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the writer's panic did not reach the caller")
			}
		}()
		lw.Write([]byte("lost\n"))
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		lw.Write([]byte("after\n"))
		queueOnly{lw}.Write([]byte("audit after\n"))
		lw.Sync()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the log is stuck after its writer panicked")
	}
	if !w.has("after\n") || !w.has("audit after\n") {
		t.Fatalf("writes after the panic: %q", w.writes)
	}
}

// With NewLogger, a write's audit line is in the log when the write is answered, as the
// other lines are, whatever the level; lines under the level are not written.
func TestNewLogger_AuditLinesBeforeTheAnswer(t *testing.T) {
	var logs syncBuffer
	log := NewLogger(&logs, slog.LevelWarn)
	f := newFixtureLog(t, testutil.Store(t), log)
	for i := range 20 {
		key := fmt.Sprintf("appliances/web/k%d", i)
		rev := f.put(key, "secret-value")
		lines, _ := auditLines(t, &logs, 0)
		if len(lines) != i+1 {
			t.Fatalf("after write %d: %d audit lines", i, len(lines))
		}
		l := lines[i]
		if l["op"] != "put" || fmt.Sprint(l["keys"]) != "["+key+"]" || l["revision"] != float64(rev) || l["level"] != "INFO" || l["msg"] != "write" {
			t.Fatalf("audit line %v", l)
		}
	}
	log.Info("not at warn")
	log.Warn("at warn")
	out := logs.String()
	if strings.Contains(out, "secret-value") || strings.Contains(out, "not at warn") || !strings.Contains(out, `"msg":"at warn"`) {
		t.Fatalf("log:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(l)) {
			t.Fatalf("log line is not JSON: %s", l)
		}
	}
}

// An audit line that NewLogger's audit logger writes itself (without the caller's pc) is the
// line slog.Logger writes of the same record: every key and value, in the same order.
func TestAuditLogger_LineAsSlogWritesIt(t *testing.T) {
	var buf bytes.Buffer
	a := newAuditLogger(NewLogger(&buf, slog.LevelWarn))
	if a.noSource == nil {
		t.Fatal("NewLogger's audit logger goes through slog.Logger")
	}
	attrs := []slog.Attr{slog.Bool("audit", true), slog.String("request_id", "r1"), slog.String("token", "t<&>"),
		slog.Any("keys", []string{"a/b", "c\"d"}), slog.Int64("revision", 42), slog.String("message", "héllo\n")}
	a.LogAttrs(t.Context(), "write", attrs...)
	a.l.LogAttrs(t.Context(), slog.LevelInfo, "write", attrs...)
	a.sync()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	var got, want []string
	for i, into := range []*[]string{&got, &want} {
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			if s, ok := tok.(string); ok && len(*into) > 0 && (*into)[len(*into)-1] == "time" {
				if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
					t.Errorf("time %q: %v", s, err)
				}
				tok = "<time>"
			}
			*into = append(*into, fmt.Sprint(tok))
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit line\n got %s\nwant %s", lines[0], lines[1])
	}
}

// The lines that say how many lines were left out are lines of the budget too: a client that
// floods the log gets the budget's lines a second in all, those included. They came on top of
// it, one before nearly every line written: twice the budget.
func TestLineBudget_LeftOutLinesWithinTheBudget(t *testing.T) {
	const perSecond = 5
	var buf bytes.Buffer
	b := newLineBudget(slog.New(slog.NewJSONHandler(&buf, nil)), perSecond)
	start := time.Now()
	var written, tries int
	for time.Since(start) < 2*time.Second {
		tries++
		if b.take() {
			written++
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	counts := strings.Count(buf.String(), "log lines left out")
	// A second's lines at once, then perSecond a second.
	if most := int(perSecond * (elapsed.Seconds() + 1)); written+counts > most {
		t.Errorf("%d lines asked for in %v: %d written and %d saying what was left out; want at most %d in all", tries, elapsed, written, counts, most)
	}
	if written == 0 || counts == 0 {
		t.Errorf("%d lines written and %d saying what was left out; want some of both", written, counts)
	}
}
