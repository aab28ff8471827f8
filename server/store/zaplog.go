package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

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

// etcdFatal is the embedded etcd's fatal and panic hook: etcd stops the process on an error it
// cannot go on from (a write of its database or WAL that failed: bbolt's commit, raft's save;
// a database it cannot open), and before, a full disk under --data-dir ended the server with
// etcd's own last line only ("failed to commit tx", "no space left on device"), and a database
// the server's user may not open with a Go panic, saying neither that the server stopped nor
// what to do. It logs what happened and what to do, then exits with status 1 (systemd's
// Restart=on-failure starts it again, and it serves once the cause is gone).
type etcdFatal struct {
	log *slog.Logger
	dir string
}

// fatalExit is how etcdFatal exits: os.Exit, a test's own.
var fatalExit = os.Exit

// OnWrite implements zapcore.CheckWriteHook.
func (f etcdFatal) OnWrite(ce *zapcore.CheckedEntry, fs []zapcore.Field) {
	var cause error
	for _, fd := range fs {
		if err, ok := fd.Interface.(error); ok && fd.Type == zapcore.ErrorType {
			cause = err
		}
	}
	what := ce.Message
	if cause != nil {
		what += ": " + cause.Error()
	}
	action := "the server stops with it; see its error above, fix the cause, then start the server again"
	if errors.Is(cause, syscall.ENOSPC) || strings.Contains(what, "no space left on device") {
		action = fmt.Sprintf("the file system of %s is full: free space on it (or grow it), then start the server again; "+
			"every write the server acknowledged is in etcd's WAL and is kept (RUNBOOK: Disk full under the embedded etcd)", f.dir)
	} else if errors.Is(cause, os.ErrPermission) || strings.Contains(what, "permission denied") {
		action = fmt.Sprintf("the server's user (uid %d) may not open a file under %s, as after etcdutl or a snapshot restore run as root: "+
			"give the data dir back to that user (chown -R --reference=%s %s; for the packaged service chown -R shoelace:shoelace on the data dir), then start the server again",
			os.Geteuid(), f.dir, filepath.Dir(f.dir), f.dir)
	}
	f.log.Error("the embedded etcd stopped on an error it cannot go on from; the server exits",
		slog.String("error", what), slog.String("data_dir", f.dir), slog.String("action", action))
	fatalExit(1)
}
