//go:build !windows

package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// recordingGo is a go command that writes each call's arguments to $GO_CALLS (one line a call,
// separated by \x1f), creates the file a build's -o names (empty) so that the scripts go on as
// after a real build, answers `go env GOARCH`, and does nothing else.
const recordingGo = `#!/bin/sh
(IFS="$(printf '\037')"; printf '%s\n' "$*") >>"$GO_CALLS"
if [ "$1" = env ]; then echo amd64; exit 0; fi
out=
while [ $# -gt 0 ]; do
	if [ "$1" = -o ]; then out="$2"; fi
	shift
done
case "$out" in
""|*/) ;;
*) mkdir -p "$(dirname "$out")" && : >"$out" ;;
esac
`

// Every build of the agent — make build and build-all (the Dockerfile builds through make
// build), scripts/release.sh and packaging/package.sh — passes the flags of
// cmd/shoelace-agent/noinline.txt that keep it within 12 MiB, as the size test builds it
// (internal/testbin.AgentFlags). Each runs on a copy of the files it reads, with a go that
// records what it was asked to build: a build line that leaves the flags out fails here, which
// the size test alone would not see while the agent still fits without them.
func TestAgentBuilds_TakeTheNoInlineFlags(t *testing.T) {
	want, err := testbin.AgentFlags()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range []string{"Makefile", "scripts/release.sh", "packaging/package.sh", "cmd/shoelace-agent/noinline.txt"} {
		copyFile(t, filepath.Join("..", f), filepath.Join(root, f))
	}
	fake := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(fake, []byte(recordingGo), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		env  []string
		want int // agent builds
	}{
		{"make build", []string{"make", "build", "GO=" + fake}, nil, 1},
		{"make build-all", []string{"make", "build-all", "GO=" + fake}, nil, 4},
		{"release.sh", []string{"bash", "scripts/release.sh"}, []string{"VERSION=v0.0.0-flags", "OUT=" + filepath.Join(root, "release")}, 4},
		{"package.sh", []string{"bash", "packaging/package.sh"}, []string{"VERSION=v0.0.0-flags", "ARCH=amd64", "FORMATS=deb", "DIST=" + filepath.Join(root, "pkg")}, 1},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			calls := filepath.Join(t.TempDir(), "calls")
			cmd := exec.Command(c.args[0], c.args[1:]...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), append(c.env, "GO_CALLS="+calls, "PATH="+filepath.Dir(fake)+":"+os.Getenv("PATH"))...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s with a recording go: %v\n%s", c.name, err, out)
			}
			b, err := os.ReadFile(calls)
			if err != nil {
				t.Fatal(err)
			}
			var agents int
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				args := strings.Split(line, "\x1f")
				if args[0] != "build" || !slices.Contains(args, "./cmd/shoelace-agent") {
					continue
				}
				agents++
				var missing []string
				for _, f := range want {
					if !slices.Contains(args, f) {
						missing = append(missing, f)
					}
				}
				if len(missing) > 0 {
					t.Errorf("%s builds the agent without %q:\ngo %s", c.name, missing, strings.Join(args, " "))
				}
			}
			if agents != c.want {
				t.Errorf("%s built the agent %d times, want %d; go was called so:\n%s", c.name, agents, c.want, b)
			}
		})
	}
}
