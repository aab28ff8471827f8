package main

import (
	"context"
	"slices"
	"time"

	"github.com/urfave/cli/v2"
)

// applianceArgCommands take an appliance NAME as their first argument: completion offers the
// appliances the token may read.
var applianceArgCommands = []string{
	"appliance get", "appliance instances", "appliance wait", "appliance apply", "appliance rollback",
	"appliance history", "appliance diff", "appliance export", "appliance forget",
	"appliance schema set", "appliance schema get", "appliance schema rm",
	"appliance rollout status", "appliance rollout promote", "appliance rollout abort",
}

// completeArgs lists the appliance names for the first argument of the commands that take one,
// asking the server (--addr, the token) for at most two seconds; nothing when it cannot.
func (e *cliEnv) completeArgs(c *cli.Context, path string, args []string) []string {
	if len(args) > 0 || !slices.Contains(applianceArgCommands, path) {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	s, err := e.connectWith(ctx, c, true)
	if err != nil {
		return nil
	}
	names, err := s.client.Appliances(ctx)
	if err != nil {
		return nil
	}
	return names
}
