package store

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/grpclog"
)

func TestGRPCLogger_JSON(t *testing.T) {
	var buf bytes.Buffer
	var g grpclog.LoggerV2 = newGRPCLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	g.Infof("channel %d created", 1) // below info: dropped
	g.Warningln("reconnecting", "to", "etcd")
	g.Errorf("transport %s failed", "x")
	g.Error("a", "b")
	if g.V(0) {
		t.Error("V(0) with an info-level logger")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want the 2 errors:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"transport x failed", "ab"} {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatalf("not JSON: %s", lines[i])
		}
		if m["msg"] != want || m["level"] != "ERROR" || m["component"] != "grpc" {
			t.Errorf("line %d: %v", i, m)
		}
	}
	buf.Reset()
	g = newGRPCLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	g.Infoln("x", 1)
	if !g.V(0) || g.V(2) || !strings.Contains(buf.String(), `"msg":"x 1"`) {
		t.Errorf("debug logger: V(0)=%v V(2)=%v %s", g.V(0), g.V(2), buf.String())
	}
}
