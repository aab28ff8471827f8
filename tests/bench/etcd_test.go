package bench

import (
	"os"
	"testing"
)

// storeKind is where the embedded etcd of a `shoelace server` process keeps its data in the
// write → file and throughput benchmarks (see embeddedServer): on the disk the rendered files
// are on, as the server runs by default, or on tmpfs.
type storeKind struct {
	name string
	desc string                    // how the table names it
	dir  func(b *testing.B) string // the server's --data-dir
}

var stores = []storeKind{
	{"tmpfs", "embedded etcd on tmpfs", tmpfsDir},
	{"durable", "embedded etcd on disk (the default)", func(b *testing.B) string { return b.TempDir() }},
}

// tmpfsDir is a directory of its own under /dev/shm, removed at the end of b.
func tmpfsDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "shoelace-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
