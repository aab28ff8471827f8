package testbin

import (
	"os/exec"
	"strings"
	"testing"
)

func TestBinaryName(t *testing.T) {
	for pkg, want := range map[string]string{
		"./cmd/shoelace":             "shoelace",
		"go.etcd.io/etcd/etcdutl/v3": "etcdutl",
		"github.com/x/cmd/v2tool":    "v2tool",
		"github.com/x/cmd/tool":      "tool",
	} {
		if got := binaryName(pkg); got != want {
			t.Errorf("binaryName(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a binary")
	}
	bins, err := Build(t.TempDir(), []string{"-ldflags", "-X main.version=testbin"}, "./cmd/shoelace-agent")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins[0], "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "testbin") {
		t.Fatalf("%s version: %v: %s", bins[0], err, out)
	}
	if _, err := Build(t.TempDir(), nil, "./cmd/no-such-command"); err == nil {
		t.Fatal("building a missing package succeeded")
	}
}
