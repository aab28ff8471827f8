package store_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/server/store"
)

// exitLine starts an embedded etcd in a temp dir, has stop log through its logger what etcd logs
// as it stops (a Fatal or a Panic), checks that the process was made to exit with status 1, and
// returns the fields of the line that says why the server exits, the data dir, and the logs.
func exitLine(t *testing.T, stop func(e *store.EmbeddedEtcd, dir string)) (line map[string]string, dir, logs string) {
	t.Helper()
	var buf testbin.Buffer
	codes := make(chan int, 1)
	defer store.SetFatalExit(func(code int) { codes <- code })()
	dir = filepath.Join(t.TempDir(), "etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: dir, Logger: slog.New(slog.NewJSONHandler(&buf, nil)), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	stop(e, dir)
	select {
	case code := <-codes:
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
	default:
		t.Fatal("the process was not made to exit")
	}
	line = map[string]string{}
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "the server exits") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range m {
				line[k], _ = v.(string)
			}
		}
	}
	return line, dir, buf.String()
}

// A full disk under the embedded etcd stops the process (etcd exits on a write of its
// database or WAL that failed: it cannot go on with what it acknowledged half written). Before,
// the last line was etcd's own ("failed to commit tx", "no space left on device"), saying
// neither that the server stopped nor what to do; now the server's line says both, naming the
// data dir, and the process exits with status 1. (By hand, under a 150 MiB tmpfs: 32 puts of
// 930 KB filled it, bbolt's commit failed with ENOSPC, and etcd's logger exited.)
func TestEmbedded_FatalDiskFullSaysWhatToDo(t *testing.T) {
	line, dir, logs := exitLine(t, func(e *store.EmbeddedEtcd, dir string) {
		// What etcd's backend logs when bbolt's commit meets a full disk (batch_tx.go).
		full := &fs.PathError{Op: "write", Path: filepath.Join(dir, "member", "snap", "db"), Err: syscall.ENOSPC}
		store.EtcdLogger(e).Fatal("failed to commit tx", zap.Error(full))
	})
	if line["level"] != "ERROR" || line["data_dir"] != dir || !strings.Contains(line["error"], "no space left on device") ||
		!strings.Contains(line["action"], "free space") || !strings.Contains(line["action"], dir) || !strings.Contains(line["action"], "RUNBOOK") {
		t.Fatalf("the line that says why the server exits: %+v\nlogs:\n%s", line, logs)
	}
}

// etcd panics when it cannot open its database (storage/backend: "failed to open database"):
// with the packaged unit, after `etcdutl defrag` or a snapshot restore run as root, the db is
// root's and the service's user gets "permission denied". The server printed a Go panic and a
// goroutine dump; now it says that it stops, why, and to give the data dir back to its user.
func TestEmbedded_PanicOnAFileItMayNotOpenSaysWhatToDo(t *testing.T) {
	line, dir, logs := exitLine(t, func(e *store.EmbeddedEtcd, dir string) {
		db := filepath.Join(dir, "member", "snap", "db")
		denied := &fs.PathError{Op: "open", Path: db, Err: syscall.EACCES}
		store.EtcdLogger(e).Panic("failed to open database", zap.String("path", db), zap.Error(denied))
	})
	if line["data_dir"] != dir || !strings.Contains(line["error"], "failed to open database") || !strings.Contains(line["error"], "permission denied") ||
		!strings.Contains(line["action"], "chown -R") || !strings.Contains(line["action"], dir) {
		t.Fatalf("the line that says why the server exits: %v\nlogs:\n%s", line, logs)
	}
}
