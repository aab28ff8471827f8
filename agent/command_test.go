//go:build !windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

func TestRunCommand_OutputAndEnv(t *testing.T) {
	t.Setenv("SHOELACE_TOKEN", "must-not-leak")
	r, err := agent.RunCommand(context.Background(), `echo out; echo err >&2; echo "tok=$SHOELACE_TOKEN x=$X"; pwd`, 5*time.Second, []string{"X=1"})
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 0 || !strings.Contains(r.Output, "out") || !strings.Contains(r.Output, "err") || !strings.Contains(r.Output, "tok= x=1") {
		t.Fatalf("result = %+v", r)
	}
	if !strings.HasSuffix(r.Output, "\n/") {
		t.Fatalf("command did not run in /: %q", r.Output)
	}
}

func TestRunCommand_Failure(t *testing.T) {
	r, err := agent.RunCommand(context.Background(), "echo bad; exit 3", 5*time.Second, nil)
	if err == nil || r.ExitCode != 3 || !strings.Contains(err.Error(), "exited with status 3") || r.Output != "bad" {
		t.Fatalf("RunCommand = %+v, %v", r, err)
	}
}

func TestRunCommand_OutputBounded(t *testing.T) {
	r, err := agent.RunCommand(context.Background(), "head -c 1000000 /dev/zero | tr '\\0' a", 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Output) > 20<<10 || !strings.Contains(r.Output, "more bytes not kept") {
		t.Fatalf("output of %d bytes kept", len(r.Output))
	}
}

// A timeout kills the whole process group: the shell and what it started in the background.
func TestRunCommand_TimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	r, err := agent.RunCommand(context.Background(), "sleep 60 & echo $! > "+pidFile+"; wait", 300*time.Millisecond, nil)
	if err == nil || !r.TimedOut || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("RunCommand = %+v, %v", r, err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Signal 0 probes the process; a zombie is reaped by init shortly.
		err := syscall.Kill(pid, 0)
		if err == syscall.ESRCH {
			break
		}
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background child %d still alive after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A daemon left holding the output pipe does not hold the agent beyond a short delay.
func TestRunCommand_BackgroundDaemonDoesNotBlock(t *testing.T) {
	start := time.Now()
	_, err := agent.RunCommand(context.Background(), "(sleep 5 &) ; echo started", 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("waited %s for a background process", d)
	}
}

// A check or command ended by a signal (a crash, an OOM kill) was said to have "exited with
// status -1", a status no program exits with: the error names the signal.
func TestRunCommand_EndedBySignalSaysSo(t *testing.T) {
	for _, tc := range []struct{ command, want string }{
		{`kill -SEGV $$`, "ended by signal: segmentation fault"},
		{`kill -KILL $$`, "ended by signal: killed"},
	} {
		r, err := agent.RunCommand(context.Background(), tc.command, 5*time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "-1") {
			t.Errorf("%s: err = %v, want it to say %q", tc.command, err, tc.want)
		}
		if r.ExitCode != -1 || r.TimedOut {
			t.Errorf("%s: result %+v", tc.command, r)
		}
	}
}

// command_env passes the variables it names from the agent's environment to checks, commands
// and health checks (as the service's unit sets them); the others stay out, as before.
func TestAgent_CommandEnvPassesNamedVariables(t *testing.T) {
	t.Setenv("MY_PROXY", "http://proxy:3128")
	t.Setenv("NOT_NAMED", "leaked")
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`command_env: [MY_PROXY, UNSET_ONE]
templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    check: echo "check MY_PROXY=$MY_PROXY NOT_NAMED=$NOT_NAMED UNSET_ONE=${UNSET_ONE-unset}" >> $DIR/env
    command: echo "command MY_PROXY=$MY_PROXY NOT_NAMED=$NOT_NAMED" >> $DIR/env
    health: echo "health MY_PROXY=$MY_PROXY NOT_NAMED=$NOT_NAMED" >> $DIR/env
`)
	stop := runAgent(t, a)
	defer stop()
	want := "check MY_PROXY=http://proxy:3128 NOT_NAMED= UNSET_ONE=unset\ncommand MY_PROXY=http://proxy:3128 NOT_NAMED=\nhealth MY_PROXY=http://proxy:3128 NOT_NAMED=\n"
	waitFor(t, "the check, command and health check", fileIs(dir+"/env", want))
}

// What a check leaves running in its process group is killed once it exits: a process that kept
// the staged file open wrote it after the check was judged, into the file installed.
func TestAgent_CheckLeavesNothingRunning(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/f.conf
    check: exec 3>>"$SHOELACE_STAGED"; (sleep 0.3; echo evil >&3) >/dev/null 2>&1 &
`)
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // what the check left would have written by now
	if b, err := os.ReadFile(dir + "/f.conf"); err != nil || string(b) != "a=1\n" {
		t.Fatalf("f.conf: %q, %v; want what was rendered", b, err)
	}
}

// A program that a command leaves running with the command's output open (a daemon started
// with `nohup app &`) outlives the command and may go on writing: the agent closed its end of
// the pipe once the command ended, and the program's next write killed it (SIGPIPE).
func TestRunCommand_DaemonWritingAfterTheCommandLives(t *testing.T) {
	dir := t.TempDir()
	// The daemon writes once the command has been judged (go), then says it lived.
	daemon := `(while [ ! -e ` + dir + `/go ]; do sleep 0.05; done; echo daemon output; echo lived > ` + dir + `/lived) &`
	r, err := agent.RunCommand(context.Background(), daemon+" echo started", 30*time.Second, nil)
	if err != nil || r.Output != "started" {
		t.Fatalf("RunCommand = %+v, %v", r, err)
	}
	if err := os.WriteFile(dir+"/go", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(dir + "/lived"); err == nil && string(b) == "lived\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the program the command left running died when it wrote its output")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A group whose files' names make SHOELACE_DESTINATIONS longer than a program's environment
// may hold (128 KiB on Linux: 700 vhosts of one nginx) runs its command without the variable,
// saying so. Before, the command and health checks could not start ("fork/exec /bin/sh:
// argument list too long"): every reload of the group failed, and was rolled back.
func TestAgent_CommandOfAGroupTooLargeForItsVariableRuns(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	var b strings.Builder
	b.WriteString(header + "templates:\n")
	long := strings.Repeat("v", 190)
	for i := range 700 {
		b.WriteString("  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/" + long + strconv.Itoa(i) + "\n")
		b.WriteString("    command: echo \"command ${SHOELACE_DESTINATIONS-unset}\" >> $DIR/ran\n")
		b.WriteString("    health: echo \"health ${SHOELACE_DESTINATIONS-unset}\" >> $DIR/ran\n")
	}
	a, dir, logs := testAgent(t, srv, b.String())
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatalf("Once = %v, want the group installed and its command run", err)
	}
	if got := read(t, filepath.Join(dir, "ran")); got != "command unset\nhealth unset\n" {
		t.Fatalf("ran: %q, want the command and health check run without SHOELACE_DESTINATIONS", got)
	}
	if !strings.Contains(logs.String(), "SHOELACE_DESTINATIONS not set for the command") {
		t.Fatalf("no warning that SHOELACE_DESTINATIONS was not set:\n%.2000s", logs.String())
	}
}
