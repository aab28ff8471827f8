package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"google.golang.org/grpc/grpclog"
)

// RouteGRPCLogs sends gRPC's own log (used by the etcd client and the embedded etcd's server)
// to l as JSON records with component "grpc", instead of plain text on stderr. gRPC's info and
// warning lines (reconnect attempts, mostly) come out at debug level, its errors as errors.
//
// gRPC keeps its logger in a global that is not synchronized: call RouteGRPCLogs once, at
// program start, before any store is opened or etcd started.
func RouteGRPCLogs(l *slog.Logger) {
	grpclog.SetLoggerV2(newGRPCLogger(l))
}

// grpcLogger is a grpclog.LoggerV2 writing to a slog.Logger.
type grpcLogger struct {
	l *slog.Logger
}

func newGRPCLogger(l *slog.Logger) *grpcLogger {
	return &grpcLogger{l: l.With(slog.String("component", "grpc"))}
}

func (g *grpcLogger) log(level slog.Level, msg string) {
	g.l.Log(context.Background(), level, msg)
}

func (g *grpcLogger) Info(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *grpcLogger) Infoln(args ...any) { g.log(slog.LevelDebug, sprintln(args...)) }
func (g *grpcLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *grpcLogger) Warning(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *grpcLogger) Warningln(args ...any) { g.log(slog.LevelDebug, sprintln(args...)) }
func (g *grpcLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *grpcLogger) Error(args ...any)   { g.log(slog.LevelError, fmt.Sprint(args...)) }
func (g *grpcLogger) Errorln(args ...any) { g.log(slog.LevelError, sprintln(args...)) }
func (g *grpcLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
}

// Fatal logs and exits, as grpclog's contract says.
func (g *grpcLogger) Fatal(args ...any) { g.log(slog.LevelError, fmt.Sprint(args...)); os.Exit(1) }
func (g *grpcLogger) Fatalln(args ...any) {
	g.log(slog.LevelError, sprintln(args...))
	os.Exit(1)
}
func (g *grpcLogger) Fatalf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// V reports whether verbosity level v is logged: only when l logs debug records, and then
// gRPC's own verbosity 0 (its default).
func (g *grpcLogger) V(v int) bool {
	return v <= 0 && g.l.Enabled(context.Background(), slog.LevelDebug)
}

func sprintln(args ...any) string {
	s := fmt.Sprintln(args...)
	return s[:len(s)-1]
}
