package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// Paths of the binaries TestMain builds from this checkout.
var (
	shoelaceBin string
	agentBin    string
	// etcdutlBin is etcd's offline tool (snapshot restore, defrag), built from go.mod's etcdutl.
	etcdutlBin string
	// etcdctlBin is etcd's client tool, built from go.mod's etcdctl (a tool dependency), so that
	// the runbook's etcdctl procedures run wherever the tests do.
	etcdctlBin string
	// repoRoot is the module root, where docs/RUNBOOK.md lives.
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shoelace-ha-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Join(wd, "..", "..")
	shoelaceBin = filepath.Join(dir, "shoelace")
	agentBin = filepath.Join(dir, "shoelace-agent")
	etcdutlBin = filepath.Join(dir, "etcdutl")
	etcdctlBin = filepath.Join(dir, "etcdctl")
	if _, err := testbin.Build(dir, nil, "./cmd/shoelace", "./cmd/shoelace-agent", "go.etcd.io/etcd/etcdutl/v3", "go.etcd.io/etcd/etcdctl/v3"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// syncBuffer collects a child's (or a logger's) output while the test reads it.
type syncBuffer = testbin.Buffer

// tail is the last n bytes of s, for failure messages.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// skipShort skips the slow end-to-end tests under -short only.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end HA test: skipped with -short")
	}
}
