// Package testbin builds the project's commands for the tests that run them as a user would
// (end-to-end, HA, packaging, benchmarks). It imports only the standard library, so that using
// it links nothing into a test binary.
package testbin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Build builds each package — an import path, or a path relative to the module's root such as
// "./cmd/shoelace" — into dir (CGO_ENABLED=0, as released), with extra go build arguments
// such as "-ldflags", "-X main.version=v1". It returns the binaries' paths in the order given.
func Build(dir string, extra []string, pkgs ...string) ([]string, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, extra...)
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out.Bytes())
	}
	bins := make([]string, len(pkgs))
	for i, p := range pkgs {
		bins[i] = filepath.Join(dir, binaryName(p))
	}
	return bins, nil
}

// AgentFlags are the go build flags `make build` builds the agent with, less -ldflags:
// -trimpath, the urfave_cli_no_docs tag and -gcflags=PATTERN=-l for each package pattern of
// cmd/shoelace-agent/noinline.txt (the agent's cold packages, compiled without inlining).
func AgentFlags() ([]string, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	patterns, err := NoInline(filepath.Join(root, "cmd", "shoelace-agent", "noinline.txt"))
	if err != nil {
		return nil, err
	}
	flags := []string{"-trimpath", "-tags", "urfave_cli_no_docs"}
	for _, p := range patterns {
		flags = append(flags, "-gcflags="+p+"=-l")
	}
	return flags, nil
}

// NoInline reads the package patterns of a noinline.txt, as the Makefile and the scripts do: a
// line that starts with a letter or digit is a pattern; lines starting with # and blank lines
// are not. Any other line, or a pattern line with more than one field, is an error, so that
// what a shell or make would read differently is caught.
func NoInline(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var patterns []string
	for i, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0 || line[0] == '#':
		case isAlnum(line[0]) && len(fields) == 1:
			patterns = append(patterns, fields[0])
		default:
			return nil, fmt.Errorf("%s:%d: %q is neither a comment nor one package pattern at the line's start", path, i+1, line)
		}
	}
	if len(patterns) == 0 {
		return nil, fmt.Errorf("%s lists no package", path)
	}
	return patterns, nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// binaryName is the name go build gives a package's binary: its last element, less a
// major-version suffix ("go.etcd.io/etcd/etcdutl/v3" → "etcdutl").
func binaryName(pkg string) string {
	name := path.Base(pkg)
	if len(name) > 1 && name[0] == 'v' && strings.Trim(name[1:], "0123456789") == "" {
		name = path.Base(path.Dir(pkg))
	}
	return name
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}
