//go:build windows

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"

	"github.com/kardianos/service"
)

// runService runs run, under the Windows service manager when it started the agent (which
// then stops it through Stop, not a signal), else as a plain process.
func runService(ctx context.Context, run func(context.Context) error) error {
	if service.Interactive() {
		return run(ctx)
	}
	p := &program{run: run, parent: ctx}
	s, err := service.New(p, &service.Config{Name: "shoelace-agent"})
	if err != nil {
		return err
	}
	p.log, _ = s.SystemLogger(nil)
	if err := s.Run(); err != nil {
		return err
	}
	return p.err
}

// program is the agent as the service manager sees it: Start runs it, Stop ends it.
type program struct {
	run    func(context.Context) error
	parent context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error
	log    service.Logger
}

func (p *program) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.err = p.run(ctx)
		if ctx.Err() == nil {
			p.exit(p.err)
		}
	}()
	return nil
}

// exit ends the process when the agent stopped by itself (a config error, a fatal one): the
// service manager would otherwise show it running, doing nothing, until someone stops it. The
// process exits without telling the manager it stopped, which the manager takes for a failure
// and answers with the recovery action install set (restart after a second), as systemd's
// Restart=on-failure does. The reason goes to the Application event log: a service has no
// stderr anyone reads.
func (p *program) exit(err error) {
	msg := "shoelace-agent stopped by itself"
	if err != nil {
		msg = "shoelace-agent: " + err.Error()
	}
	if p.log != nil {
		_ = p.log.Error(msg)
	}
	os.Exit(1)
}

func (p *program) Stop(service.Service) error {
	p.cancel()
	p.wg.Wait()
	return nil
}

// serviceTakesConfig is true: install registers the service with --config FILE as given.
const serviceTakesConfig = true

// serviceUsage is the help of each service command.
var serviceUsage = map[string]string{
	"install":   "register the Windows service shoelace-agent (automatic start, restarted on failure) running run --config FILE (as Administrator)",
	"uninstall": "stop and remove the Windows service",
	"start":     "start the service",
	"stop":      "stop the service",
	"restart":   "restart the service",
	"status":    "show whether the service is registered, its start type and state, and what the agent last rendered",
}

// serviceDescription is the help's description of each service command, with EXAMPLES.
var serviceDescription = map[string]string{
	"install": `Registers the Windows service shoelace-agent (automatic start, restarted a second after it
fails) running shoelace-agent run --config FILE, the --config given here, and the event log
source shoelace-agent. Run as Administrator. Running it again with the same --config does
nothing.

EXAMPLES:
   shoelace-agent install --config C:/ProgramData/shoelace/agent.yaml
   shoelace-agent start`,
	"uninstall": `Stops the service and removes it.

EXAMPLES:
   shoelace-agent uninstall`,
	"start": `Starts the service.

EXAMPLES:
   shoelace-agent start`,
	"stop": `Stops the service and waits for it to stop; the files it rendered stay.

EXAMPLES:
   shoelace-agent stop`,
	"restart": `Restarts the service, which loads a changed config (Windows has no SIGHUP): validate it
first, since a service whose config does not load fails at every start.

EXAMPLES:
   shoelace-agent validate
   shoelace-agent restart`,
	"status": `Prints whether the service is registered, its start type and state, then what the agent
last recorded in cache_dir: the revision from the server and the one applied, the staged
rollout whose candidate it runs (on a VM of a rollout's cohort), the last sync, each template's
state and the last error. --json prints it all as one object.

EXAMPLES:
   shoelace-agent status
   shoelace-agent status --json`,
}

// logWriter is where the agent's JSON log lines go: stderr, or, when the service manager started
// the agent (which gives a service no stderr anyone reads), the Application event log, under the
// source shoelace-agent that install registers, each line as one event of its level.
func logWriter(stderr io.Writer) io.Writer {
	if service.Interactive() {
		return stderr
	}
	s, err := service.New(&program{}, &service.Config{Name: "shoelace-agent"})
	if err != nil {
		return stderr
	}
	l, err := s.SystemLogger(nil)
	if err != nil {
		return stderr
	}
	return eventLog{l}
}

// eventLog writes each JSON log line as one event, of the line's level.
type eventLog struct{ l service.Logger }

func (e eventLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	var err error
	switch {
	case bytes.Contains(p, []byte(`"level":"ERROR"`)):
		err = e.l.Error(line)
	case bytes.Contains(p, []byte(`"level":"WARN"`)):
		err = e.l.Warning(line)
	default:
		err = e.l.Info(line)
	}
	return len(p), err
}
