//go:build !windows

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testbin"
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

// The agent is baked into every VM template: built as `make build` builds it, it stays within
// issue 20's 12 MiB (BENCHMARKS.md, row 4), with little to spare, so that a change that pulls
// in a heavy package fails here rather than in the next benchmark run.
//
// The size moves by whole pages: .text, then the read-only data, then the writable data each
// start on a 4 KiB boundary, so a few hundred bytes of code can add 4 KiB (`readelf -SW` shows
// how close each section's end is to the next page). To make room: text/template's
// MethodByName makes the linker keep every exported method of the types it may reach, so an
// exported method that only tests call still costs its code (unexport it or move it into a
// _test.go file); an error line with fewer arguments costs less code. The cold packages of
// noinline.txt are compiled without inlining (that took 229 KB off); a package that only runs at
// start or through a template function may join them.
func TestAgentBinaryWithin12MiB(t *testing.T) {
	const flags = `-trimpath -tags urfave_cli_no_docs -ldflags "$(LDFLAGS)"`
	const ldflags = `-s -w -X main.version=$(VERSION)`
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "GOFLAGS_BUILD := "+flags) || !strings.Contains(string(mk), "LDFLAGS   := "+ldflags) {
		t.Fatalf("the Makefile no longer builds with %s and LDFLAGS %s: make this test build as it does", flags, ldflags)
	}
	// As the Makefile: -trimpath, the tag and noinline.txt's -gcflags (scripts'
	// TestAgentBuilds_TakeTheNoInlineFlags holds make build to the same file), then -ldflags.
	agentFlags, err := testbin.AgentFlags()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "shoelace-agent")
	args := append(append([]string{"build"}, agentFlags...), "-ldflags", "-s -w -X main.version=v1.2.3-size-check", "-o", bin, ".")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 12 << 20
	if fi.Size() > limit {
		t.Fatalf("shoelace-agent (linux/amd64, as make build builds it) is %d bytes, over the 12 MiB limit (%d) by %d", fi.Size(), limit, fi.Size()-limit)
	}
	t.Logf("shoelace-agent: %d bytes, %d under 12 MiB", fi.Size(), limit-fi.Size())
}

// noinline.txt names the agent's cold packages, compiled without inlining to keep it small: each
// of its patterns must match a package the agent links (for some target; a stale line would hide
// that the list no longer does what its comment says) and none may match what the agent runs on
// each change: the standard library (but coldStd), this module (but coldOwn), fsnotify and x/sys.
func TestAgentNoInline_ColdPackagesOnly(t *testing.T) {
	patterns, err := testbin.NoInline("noinline.txt")
	if err != nil {
		t.Fatal(err)
	}
	matched := map[string]bool{}
	for _, target := range []string{"linux/amd64", "windows/amd64", "darwin/arm64"} {
		cmd := exec.Command("go", "list", "-deps", "-tags", "urfave_cli_no_docs", "-f", "{{.ImportPath}} {{.Standard}}", ".")
		goos, goarch, _ := strings.Cut(target, "/")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", target, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			pkg, std, _ := strings.Cut(line, " ")
			hot := std == "true" && !coldStd[pkg] || strings.HasPrefix(pkg, "github.com/shoelace-dev/shoelace/") && !coldOwn[pkg] ||
				strings.HasPrefix(pkg, "github.com/fsnotify/") || strings.HasPrefix(pkg, "golang.org/x/sys/")
			for _, p := range patterns {
				if !matchPattern(p, pkg) {
					continue
				}
				matched[p] = true
				if hot {
					t.Errorf("noinline.txt's %s matches %s (%s), which the agent runs on each change: it must keep its inlining", p, pkg, target)
				}
			}
		}
	}
	for _, p := range patterns {
		if !matched[p] {
			t.Errorf("noinline.txt's %s matches no package the agent links", p)
		}
	}
}

// coldOwn are the packages of this module that the agent runs only when a person asks, or once
// at start: install, uninstall and the service's setup (internal/svc), shell completion
// (internal/complete), and the command line itself (this package: its commands call the agent
// package, where every pass runs); and the template functions (templates), which a render calls
// through text/template's reflection, as it calls sprig's. noinline.txt may name them.
var coldOwn = map[string]bool{
	"github.com/shoelace-dev/shoelace/internal/svc":       true,
	"github.com/shoelace-dev/shoelace/internal/complete":  true,
	"github.com/shoelace-dev/shoelace/cmd/shoelace-agent": true,
	"github.com/shoelace-dev/shoelace/templates":          true,
}

// coldStd are the packages of the standard library that the agent does not run on a change:
// math/big, which only a TLS handshake's certificate and key parsing (the arithmetic itself is
// crypto/internal/fips140's) and the template functions (sprig, shopspring/decimal) call; flag
// and text/tabwriter, which only urfave/cli imports; log/syslog, which only kardianos/service
// imports. noinline.txt may name them (a pattern, as "...", that matches any other package of the
// standard library still fails).
var coldStd = map[string]bool{
	"math/big":       true,
	"flag":           true,
	"text/tabwriter": true,
	"log/syslog":     true,
}

// matchPattern is go's rule for an import path pattern (go help packages): "..." matches any
// string, and a pattern ending in /... also matches the path before it.
func matchPattern(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok && pkg == base {
		return true
	}
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\.\.\.`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(pkg)
}
