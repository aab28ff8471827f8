package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxOutputBytes bounds what the agent keeps of a command's output for its log.
const maxOutputBytes = 16 << 10

// outputWait is how long the agent reads a command's output once the command ended (what it
// left running may hold the pipe open), and how long it waits for it to end once killed.
const outputWait = time.Second

// defaultPath is PATH for commands when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// CommandResult is what one run of a check or command did.
type CommandResult struct {
	Command  string
	Output   string // stdout and stderr interleaved, at most maxOutputBytes (the tail is cut)
	Dropped  int    // bytes of output cut (then Output ends with a note that says so)
	Duration time.Duration
	ExitCode int // -1 when it did not exit by itself
	TimedOut bool
}

// RunCommand runs command through the system's shell (/bin/sh -c; on Windows cmd /C) in its
// own process group (on Windows a job object), with a minimal environment (PATH and passEnv
// from the agent's, plus env), and kills the whole group when timeout expires or ctx
// ends. A non-zero exit, a timeout or a failure to start is an error; the result is filled in
// every case.
func RunCommand(ctx context.Context, command string, timeout time.Duration, env []string) (CommandResult, error) {
	return RunShell(ctx, "", command, timeout, env)
}

// RunShell is RunCommand through shell: "" for the system's (sh; on Windows cmd), or one that
// ValidShell accepts.
func RunShell(ctx context.Context, shell, command string, timeout time.Duration, env []string) (CommandResult, error) {
	return runShell(ctx, shell, command, timeout, env, false)
}

// runShell is RunShell; with check, what the command left running in its process group once
// it exited is killed: a check that left a process holding the staged file open could write it
// after the check was judged, and the file installed with it (a reload's command may start a
// daemon there, which is left alone).
func runShell(ctx context.Context, shell, command string, timeout time.Duration, env []string, check bool) (CommandResult, error) {
	res := CommandResult{Command: command, ExitCode: -1}
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, group := shellCommand(ctx, shell, command)
	cmd.Env = commandEnv(env)
	cmd.WaitDelay = outputWait
	// The output pipe is the agent's own, read until its end by a goroutine of its own: a daemon
	// the command started may keep it open and write to it long after (nohup app &). Closed
	// once the command ended (what os/exec does after WaitDelay), its next write would kill it
	// (SIGPIPE); it is read and dropped instead.
	out := &limitedBuffer{max: maxOutputBytes}
	pr, pw, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("output pipe: %w", err)
	}
	read := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, pr)
		pr.Close()
		close(read)
	}()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	err = cmd.Start()
	pw.Close() // the command's copy is all that holds it open now
	timedOut := false
	if err == nil {
		if err = group.started(cmd); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		} else {
			err = cmd.Wait()
		}
		timedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		if check || timedOut {
			// Also reap anything of the group that outlived the shell.
			group.kill()
		}
	}
	defer group.close()
	// What it wrote before it ended is in the pipe; what it left running may hold it open:
	// stop waiting for that after outputWait.
	select {
	case <-read:
	case <-time.After(outputWait):
	}
	res.Duration = time.Since(start)
	res.Output, res.Dropped = out.String(), out.droppedBytes()
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if timedOut {
		res.TimedOut = true
		return res, fmt.Errorf("timed out after %s; its process group was killed", timeout)
	}
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			if res.ExitCode < 0 {
				return res, fmt.Errorf("ended by %s", ee.ProcessState) // "signal: killed"
			}
			return res, fmt.Errorf("exited with status %d", res.ExitCode)
		}
		return res, err
	}
	return res, nil
}

// withEnv is env and the variables of the agent's environment that command_env names (those
// set), for a check, command or health check.
func (a *Agent) withEnv(env []string) []string {
	for _, k := range a.cfg.CommandEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func commandEnv(extra []string) []string {
	env := make([]string, 0, 8+len(extra))
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env = append(env, "PATH="+path)
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

// limitedBuffer keeps the first max bytes written and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room >= len(p) {
		b.buf.Write(p)
	} else {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

// cutNotePrefix starts the note that ends a cut output.
const cutNotePrefix = "\n[… "

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if b.dropped > 0 {
		s += fmt.Sprintf(cutNotePrefix+"%d more bytes not kept]", b.dropped)
	}
	return strings.TrimRight(s, "\n")
}

func (b *limitedBuffer) droppedBytes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// ValidShell checks a template's shell: "" (the system's) or one of this system's shells.
func ValidShell(shell string) error {
	if shell == "" || slices.Contains(shells, shell) {
		return nil
	}
	return fmt.Errorf("shell %q is not one of this system's: %s (the default is %s)", shell, strings.Join(shells, ", "), shells[0])
}

// shellVarRE finds a SHOELACE_ variable written for sh ($SHOELACE_STAGED, ${SHOELACE_STAGED})
// and for cmd (%SHOELACE_STAGED%).
var shellVarRE = regexp.MustCompile(`\$\{(SHOELACE_[A-Z_]+)\}|\$(SHOELACE_[A-Z_]+)|%(SHOELACE_[A-Z_]+)%`)

// agentVarRE finds a SHOELACE_ variable as sh ($X, ${X}), cmd (%X%) or PowerShell ($env:X)
// reads it.
var agentVarRE = regexp.MustCompile(`\$\{?(?:env:)?(SHOELACE_[A-Z0-9_]+)|%(SHOELACE_[A-Z0-9_]+)%`)

// agentVars are the variables the agent sets for a check and for a command or health command
// (commandEnv passes on none of its own SHOELACE_ variables).
var agentVars = map[string][]string{
	"check":   {"SHOELACE_STAGED", "SHOELACE_DESTINATION", "SHOELACE_APPLIANCE", "SHOELACE_INSTANCE", "SHOELACE_REVISION"},
	"command": {"SHOELACE_APPLIANCE", "SHOELACE_INSTANCE", "SHOELACE_REVISION", "SHOELACE_DESTINATIONS"},
}

// unsetVarProblem says, "" when nothing, that command (of kind "check", "command" or "health")
// names a SHOELACE_ variable that the agent does not set for it: a typo ($SHOELACE_STAGE) or
// the staged file in a command, which runs once it is in place. The shell expands it to
// nothing, so that `test -s "$SHOELACE_STAGE"` passes every file. Pure, as shellVarProblem.
func unsetVarProblem(kind, command string) string {
	set := agentVars[kind]
	what := "a check"
	if kind != "check" {
		set, what = agentVars["command"], "a command"
		if kind == "health" {
			what = "a health command"
		}
	}
	var unset []string
	for _, m := range agentVarRE.FindAllStringSubmatch(command, -1) {
		if name := m[1] + m[2]; !slices.Contains(set, name) && !slices.Contains(unset, name) {
			unset = append(unset, name)
		}
	}
	sets := strings.Join(set[:len(set)-1], ", ") + " and " + set[len(set)-1]
	switch len(unset) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("%s is not a variable the agent sets for %s, so it is empty there; the agent sets %s", unset[0], what, sets)
	}
	// Every one: warned of the first alone, the next went unseen until the command misbehaved.
	return fmt.Sprintf("%s and %s are not variables the agent sets for %s, so they are empty there; the agent sets %s",
		strings.Join(unset[:len(unset)-1], ", "), unset[len(unset)-1], what, sets)
}

// shellVarProblem says, "" when nothing, that command names one of the agent's variables
// (SHOELACE_STAGED, …) as another shell than shell (sh, cmd or powershell) writes it: cmd hands
// "$SHOELACE_STAGED" on as it is, and PowerShell reads it as a variable of its own, empty, so
// that the check tested a file of that name, or none, and failed (or passed) every time; sh does
// not expand %SHOELACE_STAGED%. Pure, so that it is tested on every system.
func shellVarProblem(shell, command string) string {
	for _, m := range shellVarRE.FindAllStringSubmatch(command, -1) {
		sh, cmd := m[1]+m[2], m[3]
		switch {
		case sh != "" && shell == "cmd":
			return fmt.Sprintf("%s is how sh names a variable, which cmd does not expand: write %%%s%% (or $env:%s with shell: powershell)", m[0], sh, sh)
		case sh != "" && shell == "powershell":
			return fmt.Sprintf("%s is a PowerShell variable of its own (empty), not the agent's: write $env:%s", m[0], sh)
		case cmd != "" && shell == "sh":
			return fmt.Sprintf("%s is how cmd names a variable, which sh does not expand: write \"$%s\"", m[0], cmd)
		}
	}
	return ""
}
