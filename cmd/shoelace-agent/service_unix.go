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

// serviceDescription is the help's description of each service command, with EXAMPLES.
var serviceDescription = map[string]string{
	"install": `Writes the systemd unit the packages ship (shoelace-agent.service, which runs
shoelace-agent run --config /etc/shoelace/agent.yaml) and enables it: it starts at boot once
/etc/shoelace/token exists. Needs root.

EXAMPLES:
   sudo shoelace-agent install && sudo shoelace-agent start`,
	"uninstall": `Stops and disables the service and removes the unit that install wrote. When the
package's unit lies beneath it (the package was installed after install), only the unit install
wrote goes: the package's takes over, enabled and running as the service was.

EXAMPLES:
   sudo shoelace-agent uninstall`,
	"start": `Starts the service (systemctl start shoelace-agent). Fails, naming what is missing, when
systemd skips the start because /etc/shoelace/agent.yaml or /etc/shoelace/token does not exist yet
(the unit's ConditionPathExists).

EXAMPLES:
   sudo shoelace-agent start`,
	"stop": `Stops the service (systemctl stop shoelace-agent); the files it rendered stay.

EXAMPLES:
   sudo shoelace-agent stop`,
	"restart": `Restarts the service (systemctl restart shoelace-agent). To load a changed config, SIGHUP
(systemctl reload shoelace-agent) does it without a restart.

EXAMPLES:
   shoelace-agent validate
   sudo shoelace-agent restart`,
	"status": `Prints whether the service is installed, enabled and running, then what the agent last
recorded in cache_dir: the revision from the server and the one applied, the staged rollout
whose candidate it runs (on a VM of a rollout's cohort), the last sync, each template's state
and the last error. --json prints it all as one object.

EXAMPLES:
   shoelace-agent status
   shoelace-agent status --json | jq .agent.applied`,
}

// logWriter is where the agent's JSON log lines go: stderr (systemd's journal keeps them).
func logWriter(stderr io.Writer) io.Writer { return stderr }
