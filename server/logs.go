package server

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// NewLogger returns the server's logger: JSON lines to w from level on, through a lineWriter,
// and the audit lines (see audit) at every level, through the same lineWriter but each written
// by its own goroutine after the logger's lock is released, so that the audit lines of
// concurrent writes share write(2)s.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	lw := newLineWriter(w)
	return slog.New(&logHandler{
		Handler: slog.NewJSONHandler(lw, &slog.HandlerOptions{Level: level}),
		audit:   alwaysEnabled{slog.NewJSONHandler(queueOnly{lw}, nil)},
		lw:      lw,
	})
}

// logHandler is NewLogger's handler. It keeps its audit handler apart for New (auditHandler);
// the handlers derived from it by WithAttrs and WithGroup are plain JSON handlers.
type logHandler struct {
	slog.Handler
	audit slog.Handler
	lw    *lineWriter
}

func (h *logHandler) auditHandler() (slog.Handler, func()) { return h.audit, h.lw.Sync }

// auditLogger writes the audit lines: whatever the log level, and each in the log (handed to
// the kernel) before it returns, so before the write it records is answered.
type auditLogger struct {
	l *slog.Logger
	// sync, when set, waits until the lines logged so far are written: l only queues them.
	sync func()
	// noSource, when set, is l's handler, which writes no source: LogAttrs hands it its
	// records itself, without the caller's pc that slog.Logger looks up for every record
	// (runtime.Callers, a tenth of an audit line's cost).
	noSource slog.Handler
}

// newAuditLogger is the audit logger of log: its handler's audit handler when it has one
// (NewLogger's), else its handler, at every level.
func newAuditLogger(log *slog.Logger) auditLogger {
	if h, ok := log.Handler().(interface{ auditHandler() (slog.Handler, func()) }); ok {
		ah, sync := h.auditHandler()
		return auditLogger{l: slog.New(ah), sync: sync, noSource: ah}
	}
	return auditLogger{l: slog.New(alwaysEnabled{log.Handler()})}
}

// LogAttrs writes one audit line.
func (a auditLogger) LogAttrs(ctx context.Context, msg string, attrs ...slog.Attr) {
	if a.noSource != nil {
		// As slog.Logger.LogAttrs makes it, with no pc (the handler writes none).
		r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
		r.AddAttrs(attrs...)
		_ = a.noSource.Handle(ctx, r)
	} else {
		a.l.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
	}
	if a.sync != nil {
		a.sync()
	}
}

// Info writes one audit line of key-value pairs.
func (a auditLogger) Info(msg string, args ...any) {
	a.l.Info(msg, args...)
	if a.sync != nil {
		a.sync()
	}
}

// lineWriter writes log lines to w, each line whole in one write. A line that comes while a
// write to w is on its way is queued, and goes with the next one, which the first of the lines'
// writers to find w free makes: under many concurrent writes their audit lines share write(2)s.
// Each line took a write(2) of its own before, one after the other under the logger's lock
// (about 3% of the server's CPU under 64 writers). A Write returns once its line is written;
// a queueOnly Write returns at once, and its writer calls Sync.
type lineWriter struct {
	w    io.Writer
	mu   sync.Mutex
	done sync.Cond // broadcast after each write to w
	// buf is the lines queued; spare the buffer of the last write, kept for the next queue.
	buf, spare []byte
	queued     uint64 // lines queued, all told
	written    uint64 // how many of them were handed to w
	writing    bool   // a write to w is on its way
}

func newLineWriter(w io.Writer) *lineWriter {
	l := &lineWriter{w: w}
	l.done.L = &l.mu
	return l
}

// lineWriterKeep is the most a lineWriter keeps of a buffer once its lines are written.
const lineWriterKeep = 64 << 10

// Write queues p and returns once it is written.
func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queueLocked(p)
	l.waitLocked(l.queued)
	return len(p), nil
}

// Sync returns once every line queued before it is written.
func (l *lineWriter) Sync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waitLocked(l.queued)
}

func (l *lineWriter) queueLocked(p []byte) {
	l.buf = append(l.buf, p...)
	l.queued++
}

// waitLocked returns once the first n lines are written, writing what is queued itself
// whenever no write is on its way; l.mu must be held (it is released while writing). A
// line's writer always waits for it (Write, or Sync after a queueOnly Write): the queue never
// holds a line nobody will write.
func (l *lineWriter) waitLocked(n uint64) {
	for l.written < n {
		if l.writing {
			l.done.Wait()
			continue
		}
		l.flushLocked()
	}
}

// flushLocked hands the lines queued to w; l.mu must be held, and is released while w writes.
// However the write ends, even in a panic of w's, l.mu is held again and the write is over:
// its lines count as written, and the next writer goes.
func (l *lineWriter) flushLocked() {
	l.writing = true
	buf, upTo := l.buf, l.queued
	l.buf, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		if cap(buf) <= lineWriterKeep {
			l.spare = buf[:0]
		}
		l.written = upTo
		l.writing = false
		l.done.Broadcast()
	}()
	// A log write that fails has nowhere to be reported: slog's handlers drop the error too.
	_, _ = l.w.Write(buf)
}

// queueOnly is a lineWriter's writer that only queues: its writer calls Sync (auditLogger).
type queueOnly struct{ l *lineWriter }

func (q queueOnly) Write(p []byte) (int, error) {
	q.l.mu.Lock()
	q.l.queueLocked(p)
	q.l.mu.Unlock()
	return len(p), nil
}

// clientLinesPerSecond bounds the log lines a replica writes for clients that presented no
// valid token or went over a rate limit: request lines (and their errors) and net/http's lines
// about connections (a failed TLS handshake). Such clients cost no more than a refusal each, so
// one of them wrote 20,000 lines a second: gigabytes an hour, and under systemd, journald's rate
// limit (10,000 lines in 30 s by default) then dropped every line of the service, the audit lines
// of writes among them, for as long as the flood went on.
const clientLinesPerSecond = 100

// lineBudget is the replica's budget of such lines: at most clientLinesPerSecond (a second's
// worth at once; Config.clientLines in tests); the lines over it are left out and counted, and the next one written is
// preceded by a line that says how many were, a line of the budget too.
type lineBudget struct {
	lim  *rate.Limiter
	left atomic.Int64 // lines left out since the last one written
	log  *slog.Logger
	// perSecond is the budget's rate, for the line that says what was left out.
	perSecond float64
}

func newLineBudget(log *slog.Logger, perSecond float64) *lineBudget {
	if perSecond <= 0 {
		perSecond = clientLinesPerSecond
	}
	// A burst of 2 at least: a line after some were left out takes two, with the one saying so.
	return &lineBudget{lim: rate.NewLimiter(rate.Limit(perSecond), max(2, int(perSecond))), log: log, perSecond: perSecond}
}

// take reports whether one more line may be written now, and writes the line that says how
// many were left out before it: both within the budget.
func (b *lineBudget) take() bool {
	need := 1
	if b.left.Load() > 0 {
		need = 2
	}
	if !b.lim.AllowN(time.Now(), need) {
		b.left.Add(1)
		return false
	}
	if n := b.left.Swap(0); n > 0 {
		// Left out since this one looked (rare): the line saying so needs one more.
		if need == 1 && !b.lim.Allow() {
			b.left.Add(n + 1)
			return false
		}
		b.log.Warn("log lines left out: clients without a valid token or over a rate limit made more than the replica writes (the metrics count their requests)",
			"left_out", n, "lines_per_second", b.perSecond)
	}
	return true
}

// errorLog is the http.Server's ErrorLog: its lines go to the log at Warn, within b, but for a
// handler's panic, which is always written.
func (b *lineBudget) errorLog() *log.Logger { return log.New(budgetedLog{b}, "", 0) }

type budgetedLog struct{ b *lineBudget }

func (w budgetedLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if strings.Contains(msg, "panic") || w.b.take() {
		w.b.log.Warn(msg)
	}
	return len(p), nil
}
