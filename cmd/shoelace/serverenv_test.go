package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/server"
)

// serverConfigFor parses `shoelace server ARGS` as run does, and returns the configuration the
// server would start with.
func serverConfigFor(t *testing.T, args ...string) (server.Config, error) {
	t.Helper()
	e := &cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	app := newApp(e)
	var cfg server.Config
	for _, cmd := range app.Commands {
		if cmd.Name == "server" {
			cmd.Action = func(c *cli.Context) error {
				var err error
				cfg, err = e.serverConfigFrom(c)
				if err == nil {
					err = cfg.Validate()
				}
				return err
			}
		}
	}
	argv, err := reorderArgs(cmdNode{flags: app.Flags, subs: app.Commands}, append([]string{"shoelace", "server"}, args...))
	if err != nil {
		return cfg, err
	}
	e.onCommandLine = flagsOnCommandLine(argv)
	err = app.RunContext(context.Background(), argv)
	return cfg, err
}

// A server variable set but empty (SHOELACE_ROOT= in a systemd EnvironmentFile) is as if unset,
// as the empty number and duration variables and every CLI variable are: SHOELACE_LISTEN=,
// SHOELACE_DATA_DIR=, SHOELACE_ROOT= and SHOELACE_RELEASE_MAX_AGE= stopped the server (exit 2)
// with an error naming the flag, SHOELACE_LOG_LEVEL= and SHOELACE_UI= set info and false. The
// flag given empty on the command line is still refused.
func TestServerConfig_EmptyVariableIsUnset(t *testing.T) {
	for _, v := range []string{"LISTEN", "DATA_DIR", "ROOT", "RELEASE_MAX_AGE", "LOG_LEVEL", "UI", "ETCD_ENDPOINTS", "TLS_CERT",
		"ADMIN_TOKEN_FILE", "INSTANCE_STALE", "RATE_LIMIT", "MAX_INSTANCES"} {
		t.Setenv("SHOELACE_"+v, "")
	}
	got, err := serverConfigFor(t)
	if err != nil {
		t.Fatalf("server with empty variables: %v", err)
	}
	def := server.DefaultConfig()
	def.Version = version
	if got.Listen != def.Listen || got.DataDir != def.DataDir || got.Root != def.Root || got.LogLevel != def.LogLevel ||
		!got.UI || got.ReleaseMaxAge != 90*24*time.Hour || len(got.EtcdEndpoints) != 0 || got.InstanceStale != def.InstanceStale {
		t.Errorf("server with empty variables: %+v, want the defaults", got)
	}

	// A variable with a value, and a flag over an empty variable, are taken.
	t.Setenv("SHOELACE_ROOT", "/other/")
	t.Setenv("SHOELACE_UI", "false")
	if got, err := serverConfigFor(t, "--listen", "127.0.0.1:7411"); err != nil || got.Root != "/other/" || got.UI || got.Listen != "127.0.0.1:7411" {
		t.Errorf("SHOELACE_ROOT=/other/ SHOELACE_UI=false --listen 127.0.0.1:7411: root %q, ui %v, listen %q, %v", got.Root, got.UI, got.Listen, err)
	}
	for _, args := range [][]string{{"--listen="}, {"--root", ""}, {"--release-max-age="}} {
		if _, err := serverConfigFor(t, args...); err == nil {
			t.Errorf("server %q: taken, want the empty flag refused", args)
		}
	}
}
