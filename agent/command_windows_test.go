//go:build windows

package agent_test

import (
	"context"
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
	start := time.Now()
	r, err = agent.RunCommand(context.Background(), `ping -n 30 127.0.0.1 >nul`, time.Second, nil)
	if err == nil || !r.TimedOut || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %+v %v after %s", r, err, time.Since(start))
	}
}
