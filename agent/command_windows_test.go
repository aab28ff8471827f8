//go:build windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

// On Windows commands run through cmd /C, and a timeout ends the whole job: the shell and what
// it started.
func TestRunCommandWindows(t *testing.T) {
	r, err := agent.RunCommand(context.Background(), `echo hello& exit /b 3`, 10*time.Second, nil)
	if err == nil || r.ExitCode != 3 || !strings.Contains(r.Output, "hello") {
		t.Fatalf("exit 3: %+v %v", r, err)
	}
	// What Windows' programs need to run is passed on (SystemRoot, ComSpec, TEMP, …).
	r, err = agent.RunCommand(context.Background(), `echo %SystemRoot%;%ComSpec%;%TEMP%;%PATHEXT%`, 10*time.Second, nil)
	if err != nil || strings.Contains(r.Output, "%") {
		t.Fatalf("environment: %+v %v", r, err)
	}
	start := time.Now()
	r, err = agent.RunCommand(context.Background(), `ping -n 30 127.0.0.1 >nul`, time.Second, nil)
	if err == nil || !r.TimedOut || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %+v %v after %s", r, err, time.Since(start))
	}
}

// A timeout kills what the command started too (its job object), not only cmd.exe: a process
// the shell started stops writing once the command timed out.
func TestRunCommandWindows_KillsTree(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ticks")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := agent.RunCommand(context.Background(), `"`+self+`" -test.run=^TestHelperTicker$`, 3*time.Second,
		[]string{"SHOELACE_TEST_TICKS=" + out})
	if err == nil || !r.TimedOut {
		t.Fatalf("want a timeout: %+v %v", r, err)
	}
	size := func() int64 {
		fi, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	if size() == 0 {
		t.Fatalf("the ticker never ran: %+v", r)
	}
	time.Sleep(time.Second) // a write under way when the job was killed
	before := size()
	time.Sleep(2 * time.Second) // the ticker writes every 100 ms
	if after := size(); after != before {
		t.Fatalf("the shell's child outlived the timeout: %s grew from %d to %d bytes", out, before, after)
	}
}

// A program that a command starts and leaves running (`start "" /b app.exe`, how a reload
// relaunches an application that is not a service) outlives the command that succeeded, as a
// background process does on Unix: only a timeout kills what the command started. Before, the
// job object was closed with kill-on-close set, which ended it as soon as the command returned.
func TestRunCommandWindows_StartedProgramOutlivesCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ticks")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(out+".stop", nil, 0o644) // the ticker ends at its next tick
		time.Sleep(500 * time.Millisecond)
	}()
	r, err := agent.RunCommand(context.Background(), `start "" /b "`+self+`" -test.run=^TestHelperTicker$`, 30*time.Second,
		[]string{"SHOELACE_TEST_TICKS=" + out})
	if err != nil {
		t.Fatalf("command: %+v %v", r, err)
	}
	size := func() int64 {
		fi, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	deadline := time.Now().Add(20 * time.Second)
	for size() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	before := size()
	time.Sleep(2 * time.Second) // the ticker writes every 100 ms
	if after := size(); after == before {
		t.Fatalf("the program the command started did not outlive it: %s stayed at %d bytes", out, before)
	}
}

// TestHelperTicker is the child of TestRunCommandWindows_KillsTree: it appends to a file every
// 100 ms for a minute, or until the file's name with .stop exists (and does nothing when not
// run as that child).
func TestHelperTicker(t *testing.T) {
	out := os.Getenv("SHOELACE_TEST_TICKS")
	if out == "" {
		return
	}
	for range 600 {
		if _, err := os.Stat(out + ".stop"); err == nil {
			return
		}
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("x")
		f.Close()
		time.Sleep(100 * time.Millisecond)
	}
}
