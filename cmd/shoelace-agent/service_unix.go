//go:build !windows

package main

import (
	"context"
	"io"
)

// runService runs run: systemd starts the agent as a plain process.
func runService(ctx context.Context, run func(context.Context) error) error { return run(ctx) }

// serviceTakesConfig is false: the unit installed is the packaged one, whose ExecStart names the
// default config.
const serviceTakesConfig = false

// serviceUsage is the help of each service command.
var serviceUsage = map[string]string{
	"install":   "install the systemd unit (the one the packages ship) and enable it",
	"uninstall": "stop, disable and remove the systemd unit",
	"start":     "start the service",
	"stop":      "stop the service",
	"restart":   "restart the service",
	"status":    "show whether the service is installed, enabled and running, and what it last rendered",
}

// logWriter is where the agent's JSON log lines go: stderr (systemd's journal keeps them).
func logWriter(stderr io.Writer) io.Writer { return stderr }
