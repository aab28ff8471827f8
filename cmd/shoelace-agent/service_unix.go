//go:build !windows

package main

import "context"

// runService runs run: systemd starts the agent as a plain process.
func runService(ctx context.Context, run func(context.Context) error) error { return run(ctx) }
