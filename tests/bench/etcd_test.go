package bench

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// etcdKind is one etcd the latency benchmarks run every path on.
type etcdKind struct {
	name      string
	desc      string // how the table names it
	endpoints func(testing.TB) []string
}

// etcds are the etcds of the latency benchmarks:
//   - nofsync: the tests' shared etcd (10 ms raft ticks, no fsync), where the paths' own costs
//     show most;
//   - durable: a single-node etcd as `shoelace server` embeds it by default and as
//     ../shared/FACTS.md measured confd on (default raft ticks, the WAL fsynced on every
//     commit, on the same disk as the rendered files).
var etcds = []etcdKind{
	{"nofsync", "etcd without fsync (as on tmpfs)", testutil.Etcd},
	{"durable", "durable etcd (as shoelace server embeds it)", durableEtcd},
}

var (
	durableOnce sync.Once
	durable     *store.EmbeddedEtcd
	durableDir  string
	durableErr  error
)

// durableEtcd starts the durable etcd on first use; stopDurable (from TestMain) stops it.
func durableEtcd(tb testing.TB) []string {
	durableOnce.Do(func() {
		if durableDir, durableErr = os.MkdirTemp("", "shoelace-bench-etcd-"); durableErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		durable, durableErr = store.StartEmbedded(ctx, store.EmbedConfig{
			Dir: filepath.Join(durableDir, "etcd"), Logger: testutil.Logger(), LogLevel: "error",
			// etcd keeps this in a package variable: keep the shared etcd's setting.
			ProgressNotifyInterval: 200 * time.Millisecond,
		})
	})
	if durableErr != nil {
		tb.Fatalf("durable etcd: %v", durableErr)
	}
	return durable.Endpoints()
}

func stopDurable() {
	if durable != nil {
		durable.Close()
	}
	if durableDir != "" {
		os.RemoveAll(durableDir)
	}
}
