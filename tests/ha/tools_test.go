package ha

// TestMain builds etcd's etcdutl binary from go.mod (the runbook's etcd-restore and
// defrag-embedded-etcdutl procedures run it). These imports are what its main package needs, so
// that `go mod tidy` keeps them in go.mod and go.sum.
import (
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/etcd/etcdutl/v3/etcdutl"
	_ "go.etcd.io/etcd/pkg/v3/cobrautl"
)
