package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReadForeign_Bounded: a read of a foreign etcd brings back at most MaxBytes; a prefix that
// holds more fails with a message that says to import a narrower one, instead of taking the
// memory of the machine that runs the import.
func TestReadForeign_Bounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ee, cli := foreignEtcd(ctx, t)
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/big/k%02d", i), strings.Repeat("v", 1000)); err != nil {
			t.Fatal(err)
		}
	}
	f := ForeignEtcd{Endpoints: ee.Endpoints(), MaxBytes: 10000}
	if _, _, err := ReadForeign(ctx, f, "/big"); err == nil || !strings.Contains(err.Error(), `the keys that start with "/big" are over 10000 bytes`) || !strings.Contains(err.Error(), "import a narrower prefix") {
		t.Fatalf("20 kB under a bound of 10 kB: %v", err)
	}
	f.MaxBytes = 0
	kvs, _, err := ReadForeign(ctx, f, "/big")
	if err != nil || len(kvs) != 20 {
		t.Fatalf("default bound: %d keys, %v", len(kvs), err)
	}
}

// foreignEtcd starts an etcd of its own for a test of reads of a foreign etcd (an import's),
// and a client of it; both end with the test.
func foreignEtcd(ctx context.Context, t *testing.T) (*EmbeddedEtcd, *clientv3.Client) {
	t.Helper()
	ee, err := StartEmbedded(ctx, EmbedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ee.Close() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: ee.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return ee, cli
}
