//go:build !windows

package agent

import (
	"context"
	"os/exec"
	"sync/atomic"
	"syscall"
)

// unixModes says that files have Unix modes and owners to check (not Windows' ACLs).
const unixModes = true

// processGroup is the process group a command runs in: the shell and what it starts. Its id
// is set once the command started, and read by the cancel of ctx's end, from another goroutine.
type processGroup struct{ pid atomic.Int64 }

// passEnv are the variables of the agent's environment that commands get, besides PATH.
var passEnv = []string{"HOME", "LANG", "LC_ALL", "TZ"}

// maxEnvVar bounds a variable the agent sets for a check, command or health check, "NAME=value":
// Linux starts no program one of whose environment strings is over 128 KiB with its NUL
// (MAX_ARG_STRLEN).
const maxEnvVar = 128<<10 - 1

// Shells a template may name (shell:); the first is the default.
var shells = []string{"sh"}

// shellCommand runs command through /bin/sh -c (the only shell here), from /, in a process
// group of its own that ctx's end kills whole.
func shellCommand(ctx context.Context, _ string, command string) (*exec.Cmd, *processGroup) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g := &processGroup{}
	cmd.Cancel = func() error {
		g.kill()
		return nil
	}
	return cmd, g
}

// started records the started command's group (its pid is the group's id).
func (g *processGroup) started(cmd *exec.Cmd) error {
	g.pid.Store(int64(cmd.Process.Pid))
	return nil
}

// kill sends SIGKILL to the whole group: the negative pid names it.
func (g *processGroup) kill() {
	if pid := int(g.pid.Load()); pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (g *processGroup) close() {}

// Default locations of the agent's config and cache.
var (
	DefaultConfigPath = "/etc/shoelace/agent.yaml"
	DefaultCacheDir   = "/var/lib/shoelace"
)
