package store

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that hands etcd's zap records to a slog.Handler, so that etcd's
// own logs come out as the same JSON lines as everything else. Records below min are dropped,
// and everything is dropped once muted is set (a clean embed.Close logs error lines that
// mean nothing to an operator).
type slogCore struct {
	h     slog.Handler
	min   zapcore.Level
	attrs []slog.Attr
	muted *atomic.Bool
}

// newZapLogger returns a zap logger writing to l at level min and above, tagged with component,
// and the flag that mutes it.
func newZapLogger(l *slog.Logger, min zapcore.Level, component string) (*zap.Logger, *atomic.Bool) {
	muted := new(atomic.Bool)
	c := &slogCore{
		h:     l.Handler(),
		min:   min,
		attrs: []slog.Attr{slog.String("component", component)},
		muted: muted,
	}
	return zap.New(c), muted
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= c.min && !c.muted.Load() && c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	n := *c
	n.attrs = append(append([]slog.Attr(nil), c.attrs...), fieldAttrs(fs)...)
	return &n
}

// benign are etcd messages that are warnings or errors in general but expected of a single-node
// embedded etcd that Shoelace alone talks to; they are logged at debug level.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
	// Logged once on a fresh data dir, before the first raft term is stored.
	"failed to update storage version": true,
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if benign[e.Message] {
		e.Level = zapcore.DebugLevel
	}
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	if benign[e.Message] {
		e.Level = zapcore.DebugLevel
	}
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	r.AddAttrs(c.attrs...)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(fieldAttrs(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func fieldAttrs(fs []zapcore.Field) []slog.Attr {
	if len(fs) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	return attrs
}
