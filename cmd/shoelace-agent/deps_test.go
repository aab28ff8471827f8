//go:build !windows

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent runs on every VM: it must talk HTTP only and link neither etcd nor gRPC.
func TestAgentLinksNoEtcdNorGRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shoelace-dev/shoelace/cmd/shoelace-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list printed too little: %q", out)
	}
	var own bool
	for _, d := range deps {
		if strings.HasPrefix(d, "go.etcd.io/") || strings.HasPrefix(d, "google.golang.org/grpc") {
			t.Errorf("shoelace-agent depends on %s", d)
		}
		own = own || d == "github.com/shoelace-dev/shoelace/agent"
	}
	if !own {
		t.Fatal("the dependency list lacks the agent package: the check would prove nothing")
	}
}
