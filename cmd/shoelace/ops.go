package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/server"
)

// healthTimeout bounds "shoelace health" unless --timeout is given: container health checks
// want a quick answer.
const healthTimeout = 5 * time.Second

func maintenanceCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "maintenance",
		Usage:     "turn read-only maintenance mode on or off, or show it",
		ArgsUsage: "[on|off|status]",
		UsageText: "shoelace maintenance on|off|status",
		Description: `While maintenance is on, every replica refuses writes with 503 and a message that says
so (the CLI exits 6); reads and long-polls go on. The mode is stored in etcd, so it holds
for every replica and survives restarts. "on" and "off" need an admin token and print the
revision; "status" (the default) prints "on" or "off".
API: GET /v1/maintenance and PUT /v1/maintenance with {"on":true|false}.

EXAMPLES:
   shoelace maintenance on && shoelace snapshot save backup.db && shoelace maintenance off
   shoelace maintenance status -o json`,
		Action: e.maintenance,
	}
}

func (e *cliEnv) maintenance(c *cli.Context) error {
	a, err := wantArgs(c, 0, 1, "[on|off|status]")
	if err != nil {
		return err
	}
	mode := "status"
	if len(a) == 1 {
		mode = a[0]
	}
	if mode != "on" && mode != "off" && mode != "status" {
		return usagef("maintenance: %q is not on, off or status", mode)
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if mode == "status" {
		m, err := s.client.Maintenance(s.ctx)
		if err != nil {
			return err
		}
		if s.json {
			return printJSON(e.stdout, map[string]bool{"on": m.On})
		}
		_, err = fmt.Fprintln(e.stdout, onOff(m.On))
		return err
	}
	m, err := s.client.SetMaintenance(s.ctx, mode == "on")
	if err != nil {
		return err
	}
	if s.json {
		return printJSON(e.stdout, map[string]any{"on": m.On, "revision": m.Revision})
	}
	if mode == "on" {
		fmt.Fprintln(e.stderr, "maintenance is on: every replica refuses writes until \"shoelace maintenance off\"")
	} else {
		fmt.Fprintln(e.stderr, "maintenance is off: writes are accepted")
	}
	return printRevision(e.stdout, false, m.Revision)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func healthCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "health",
		Usage:     "check that the server answers /health (exit 0 when it answers 200)",
		UsageText: "shoelace health [--addr URL] [--timeout 5s] [--output json]",
		Description: `Asks GET /health, which needs no token: exit 0 when the server answers 200, 6 when it is
unreachable or unavailable, 1 when --addr or --ca-file is wrong (https:// of a plain HTTP
server, http:// of an HTTPS one, a certificate that does not verify, an address whose /health
is another service's 4xx, such as a path after the host). Gives up after 5s unless
--timeout says otherwise. Prints "ok", or the server's JSON answer ({"status","maintenance"})
with --output json.

EXAMPLES:
   shoelace health --addr http://127.0.0.1:7400 || echo "not healthy: exit $?"
   HEALTHCHECK CMD ["shoelace", "health", "--addr", "http://127.0.0.1:7400"]     # a Dockerfile's check`,
		Action: e.health,
	}
}

// unauthenticated builds a session without a token, for the endpoints that need none. It gives
// up after timeout unless --timeout (or SHOELACE_TIMEOUT) says otherwise.
func (e *cliEnv) unauthenticated(c *cli.Context, timeout time.Duration) (*session, error) {
	return e.connectTimeout(c, timeout, false)
}

// connectTimeout builds a session (with the token when withToken) that gives up after timeout
// unless --timeout (or SHOELACE_TIMEOUT) says otherwise.
func (e *cliEnv) connectTimeout(c *cli.Context, timeout time.Duration, withToken bool) (*session, error) {
	if c.IsSet(flagTimeout) {
		timeout = c.Duration(flagTimeout)
	}
	ctx, cancel := c.Context, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	s, err := e.connectWith(ctx, c, withToken)
	if err != nil {
		cancel()
		return nil, err
	}
	s.cancel = cancel
	return s, nil
}

func (e *cliEnv) health(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, err := e.unauthenticated(c, healthTimeout)
	if err != nil {
		return err
	}
	defer s.cancel()
	raw, err := s.client.Health(s.ctx, false)
	var te *client.TransportError
	if errors.As(err, &te) && !te.Sent && misconfigured(te) != "" {
		// https:// of a plain HTTP server, a certificate that does not verify: not an outage
		// that retrying outlives but --addr or --ca-file to change, exit 1 as for every command.
		return err
	}
	if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.HTTPStatus() == http.StatusUnauthorized {
		// /health needs no token: a 401 is a path under /v1 (--addr …/v1), where every request
		// without a token is refused, or another service's.
		return &exitCodeError{code: exitError, err: fmt.Errorf("%s is not answering as a Shoelace server (GET /health answered 401: %s): %s", s.client.Addr(), ae.Message, addrHint)}
	}
	if err != nil {
		return &exitCodeError{code: exitUnavailable, err: fmt.Errorf("health of %s: %w", s.client.Addr(), err)}
	}
	if !shoelaceHealth(raw) {
		// Another service's 200 in JSON ({"status":"UP"}): a probe must not pass against it.
		return &exitCodeError{code: exitError, err: fmt.Errorf(`%s is not answering as a Shoelace server (GET /health answered 200 with %.100q, not {"status":"ok","maintenance":…}): %s`,
			s.client.Addr(), raw, addrHint)}
	}
	if s.json {
		return printJSON(e.stdout, raw)
	}
	_, err = fmt.Fprintln(e.stdout, "ok")
	return err
}

// shoelaceHealth says whether raw is a Shoelace server's /health answer: status "ok" and a
// maintenance flag.
func shoelaceHealth(raw json.RawMessage) bool {
	var h struct {
		Status      *string `json:"status"`
		Maintenance *bool   `json:"maintenance"`
	}
	return json.Unmarshal(raw, &h) == nil && h.Status != nil && *h.Status == "ok" && h.Maintenance != nil
}

func statusCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show the server's status and its etcd's (a read, write or admin token)",
		UsageText: "shoelace status [--output json]",
		Description: `Prints GET /v1/status (version, store id, revision, maintenance, open long-polls, the
replicas sharing the store, the release limits, and etcd's reachability, leader, latency and endpoints; it needs a
read, write or admin token, not an agent's) as "name: value" lines, or, with --output json,
the API's answer as it is (etcd's part under "etcd"). Exit 6 when the server or its etcd is
unavailable.

EXAMPLES:
   shoelace status
   shoelace status -o json | jq '.replicas'`,
		Action: e.status,
	}
}

func (e *cliEnv) status(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, err := e.connectTimeout(c, 10*time.Second, true)
	if err != nil {
		return err
	}
	defer s.cancel()
	health, err := s.client.Status(s.ctx)
	if err != nil {
		return fmt.Errorf("status of %s: %w", s.client.Addr(), err)
	}
	var etcd struct {
		Etcd server.DepsHealth `json:"etcd"`
	}
	_ = json.Unmarshal(health, &etcd)
	if s.json {
		if err := printJSON(e.stdout, health); err != nil {
			return err
		}
	} else {
		lines := []string{"addr: " + s.client.Addr()}
		lines = append(lines, flattenJSON("", withoutField(health, "replicas"))...)
		lines = append(lines, replicaLines(health)...)
		if _, err := io.WriteString(e.stdout, strings.Join(lines, "\n")+"\n"); err != nil {
			return err
		}
	}
	if d := etcd.Etcd; !d.Reachable || !d.Leader {
		return &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: fmt.Sprintf("etcd behind %s: %s", s.client.Addr(), cmp.Or(d.Error, "unreachable or without a leader"))}
	}
	return nil
}

// flattenJSON renders a JSON object as sorted "prefix.name: value" lines.
func flattenJSON(prefix string, raw json.RawMessage) []string {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return []string{strings.TrimSuffix(prefix, ".") + ": " + string(raw)}
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	var lines []string
	for _, k := range names {
		v := obj[k]
		if len(v) > 0 && v[0] == '{' {
			lines = append(lines, flattenJSON(prefix+k+".", v)...)
			continue
		}
		var str string
		if json.Unmarshal(v, &str) == nil {
			lines = append(lines, prefix+k+": "+quoteIfNeeded(str))
			continue
		}
		lines = append(lines, prefix+k+": "+string(v))
	}
	return lines
}

func versionCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the version of this binary",
		UsageText: "shoelace version [--output json]",
		Description: `Prints the version of this binary (the server's own is in shoelace status). With
--output json, prints {"version"}.

EXAMPLES:
   shoelace version`,
		Action: func(c *cli.Context) error {
			if _, err := wantArgs(c, 0, 0, ""); err != nil {
				return err
			}
			asJSON, err := jsonOutput(c)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, map[string]string{"version": version})
			}
			_, err = fmt.Fprintf(e.stdout, "shoelace %s\n", version)
			return err
		},
	}
}

// withoutField returns the JSON object raw without one of its fields.
func withoutField(raw json.RawMessage, name string) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return raw
	}
	delete(obj, name)
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}

// replicaLines prints the replicas that /v1/status saw sharing the store, one line each.
func replicaLines(health json.RawMessage) []string {
	var h struct {
		Replicas []struct {
			ID, Host, Listen, Version string
			LastSeen                  time.Time `json:"last_seen"`
		} `json:"replicas"`
	}
	if json.Unmarshal(health, &h) != nil {
		return nil
	}
	lines := []string{fmt.Sprintf("replicas seen: %d", len(h.Replicas))}
	for _, r := range h.Replicas {
		lines = append(lines, fmt.Sprintf("  %s: host %s, listen %s, version %s, last seen %s",
			r.ID, r.Host, r.Listen, r.Version, r.LastSeen.Format(time.RFC3339)))
	}
	return lines
}
