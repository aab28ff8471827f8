package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/heapfloor"
	"github.com/shoelace-dev/shoelace/internal/svc"
	"github.com/shoelace-dev/shoelace/server"
	"github.com/shoelace-dev/shoelace/server/store"
)

// serverEnv is the environment variable of server flag name: SHOELACE_<NAME>.
func serverEnv(name string) string {
	return "SHOELACE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flagEnvEmpty reports whether flag name's value came from its environment variable env set
// but empty: not on the command line. urfave/cli takes such a variable for an empty string (and
// for false), where it ignores an empty number or duration, and the CLI's own variables are
// unset when empty; an EnvironmentFile line such as SHOELACE_ROOT= means "not set" too.
func (e *cliEnv) flagEnvEmpty(name, env string) bool {
	v, ok := os.LookupEnv(env)
	return ok && v == "" && !e.onCommandLine[name]
}

// flagString is string flag name's value, or def (its default) when it came from its
// environment variable env set but empty (flagEnvEmpty).
func (e *cliEnv) flagString(c *cli.Context, name, env, def string) string {
	if e.flagEnvEmpty(name, env) {
		return def
	}
	return c.String(name)
}

func serverCommand(e *cliEnv) *cli.Command {
	def := server.DefaultConfig()
	env := func(flag string) []string { return []string{serverEnv(flag)} }
	return &cli.Command{
		Name:      "server",
		Usage:     "run the HTTP API server (embedded etcd unless --etcd-endpoints)",
		UsageText: "shoelace server [--listen ADDR] [--data-dir DIR | --etcd-endpoints URL,…] [flags]",
		Description: `Serves the HTTP API in front of etcd. Every flag also reads SHOELACE_<FLAG>, such as
SHOELACE_LISTEN or SHOELACE_ETCD_ENDPOINTS. Without --etcd-endpoints the server runs an embedded
single-node etcd in --data-dir: never put several replicas behind one embedded store.
On first start against a store without tokens it writes an admin token to --admin-token-file
(mode 0600). Logs are JSON lines on stderr. SIGTERM or Ctrl-C drains and stops it.

EXAMPLES:
   shoelace server --data-dir /var/lib/shoelace-server   # where the packaged unit keeps it
   shoelace server --listen 0.0.0.0:7400 --tls-cert cert.pem --tls-key key.pem \
       --etcd-endpoints https://etcd1:2379,https://etcd2:2379 --etcd-cacert ca.pem

SERVICE (systemd, as root; the unit is the one the packages ship):
   shoelace server install      write shoelace-server.service and enable it (settings: /etc/shoelace/server.env)
   shoelace server start|stop|restart|status|uninstall`,
		Subcommands: serviceCommands(e),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: def.Listen, EnvVars: env("listen"), Usage: "`ADDR` (host:port) to serve on"},
			&cli.StringFlag{Name: "etcd-endpoints", EnvVars: env("etcd-endpoints"), Usage: "comma-separated etcd `URLS`; empty: embedded etcd"},
			&cli.StringFlag{Name: "data-dir", Value: def.DataDir, EnvVars: env("data-dir"), Usage: "`DIR` of the embedded etcd's data"},
			&cli.StringFlag{Name: "etcd-listen", EnvVars: env("etcd-listen"), Usage: "serve the embedded etcd's client API on loopback `ADDR` (such as 127.0.0.1:2379) for etcdctl and tools that read etcd; it has no access control of its own, so only loopback addresses are accepted (default: a unix socket in a directory of mode 0700, which only the server's user may reach)"},
			&cli.StringFlag{Name: "root", Value: def.Root, EnvVars: env("root"), Usage: "etcd key `PREFIX` of all of Shoelace's keys"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: env("tls-cert"), Usage: "serve HTTPS with this certificate `FILE` (with --tls-key)"},
			&cli.StringFlag{Name: "tls-key", EnvVars: env("tls-key"), Usage: "private key `FILE` of --tls-cert"},
			&cli.StringFlag{Name: "etcd-cacert", EnvVars: env("etcd-cacert"), Usage: "CA `FILE` that verifies the etcd cluster"},
			&cli.StringFlag{Name: "etcd-cert", EnvVars: env("etcd-cert"), Usage: "client certificate `FILE` for etcd"},
			&cli.StringFlag{Name: "etcd-key", EnvVars: env("etcd-key"), Usage: "client key `FILE` for etcd"},
			&cli.Float64Flag{Name: "rate-limit", Value: def.RateLimit, EnvVars: env("rate-limit"), Usage: "requests/s per token and replica, per token and instance for agent tokens (0: every rate limit off)"},
			&cli.Float64Flag{Name: "token-rate-limit", Value: def.TokenRateLimit, DefaultText: "max(10 × --rate-limit, 1000)", EnvVars: env("token-rate-limit"), Usage: "ceiling of an agent token's requests/s per replica, all its instances together (0: max(10 × --rate-limit, 1000))"},
			&cli.IntFlag{Name: "max-instances", Value: def.MaxInstances, EnvVars: env("max-instances"), Usage: "instance names one token may use at once per replica, and instance records it may have"},
			&cli.DurationFlag{Name: "instance-stale", Value: def.InstanceStale, EnvVars: env("instance-stale"), Usage: "an enrolled instance neither seen nor enrolled for that long may be enrolled again (taken over) by another agent; until then its name is refused (409); at least 5m"},
			&cli.IntFlag{Name: "max-long-polls", Value: def.MaxWaiters, EnvVars: env("max-long-polls"), Usage: "open long-polls per replica; when full, a token under its fair share takes the place of one of the token holding the most; at most four fifths of the connection cap"},
			&cli.IntFlag{Name: "max-long-polls-per-token", Value: def.MaxWaitersPerToken, EnvVars: env("max-long-polls-per-token"), Usage: "open long-polls per token and replica (0: only the fair share when full)"},
			&cli.IntFlag{Name: "max-value-bytes", Value: def.MaxValueBytes, EnvVars: env("max-value-bytes"), Usage: "largest value accepted, in bytes (at most 1 GiB)"},
			&cli.IntFlag{Name: "max-schema-bytes", Value: def.MaxSchemaBytes, EnvVars: env("max-schema-bytes"), Usage: "largest appliance schema accepted, in bytes (compiling one takes time that grows faster than its size)"},
			&cli.IntFlag{Name: "max-conns", Value: def.MaxConns, DefaultText: fmt.Sprint(server.DefaultMaxConns), EnvVars: env("max-conns"), Usage: fmt.Sprintf("open client connections at most; 0: %d, lowered to fit the open files limit less a reserve for etcd; at the cap a new connection takes the place of an idle one", server.DefaultMaxConns)},
			&cli.IntFlag{Name: "max-conns-per-addr", Value: def.MaxConnsPerAddr, EnvVars: env("max-conns-per-addr"), Usage: "open connections without a valid token per client address (0: no cap)"},
			&cli.DurationFlag{Name: "unauth-idle-timeout", Value: def.UnauthIdleTimeout, EnvVars: env("unauth-idle-timeout"), Usage: "close keep-alive connections without a valid token idle that long (until a whole request's headers arrive), and new connections that have sent no request for that long (0: as long as authenticated ones, 2m; a new connection then has the headers' 10s)"},
			&cli.StringFlag{Name: "proxy-protocol-from", EnvVars: env("proxy-protocol-from"), Usage: "comma-separated `ADDRS` (addresses or CIDR prefixes) of TCP load balancers that open connections with a PROXY protocol header (HAProxy's send-proxy-v2 or send-proxy): the client it names is the address rate limits, --max-conns-per-addr and logs use; from those peers a header is taken but not required, from any other it is refused (default: none)"},
			&cli.StringFlag{Name: "admin-token-file", EnvVars: env("admin-token-file"), Usage: "`FILE` that receives the first admin token (default: <data-dir>/admin.token)"},
			&cli.IntFlag{Name: "release-retention", Value: def.ReleaseRetention, EnvVars: env("release-retention"), Usage: "release records kept per appliance (and for shared/), the newest; older ones are pruned in the background"},
			&cli.StringFlag{Name: "release-max-age", Value: defaultReleaseMaxAge, EnvVars: env("release-max-age"), Usage: "`AGE` after which a release record is pruned: days (90d) or a duration (720h); 0: no age limit"},
			&cli.Int64Flag{Name: "min-free-disk", Value: def.MinFreeDisk, EnvVars: env("min-free-disk"), Usage: "free `BYTES` the embedded etcd's file system must keep: below it writes are refused (503, not applied) and reads go on, since etcd stops the server when a write of its data fails (0: no check; ignored with --etcd-endpoints)"},
			&cli.Int64Flag{Name: "release-max-bytes", Value: def.ReleaseMaxBytes, EnvVars: env("release-max-bytes"), Usage: "bytes of release records and copies kept, newest first (0: no byte limit)"},
			&cli.StringFlag{Name: "secrets-key-file", EnvVars: env("secrets-key-file"), Usage: "`FILE` (mode 0600) with a 32-byte key, 64 hex digits (openssl rand -hex 32), that seals secret values in release copies; the same on every replica. Further lines: older keys, which only open what they sealed (rotation). Without it, copies leave secret values out"},
			&cli.BoolFlag{Name: "ui", Value: def.UI, EnvVars: env("ui"), Usage: "serve the web console at /ui/ (sign in with a token); --ui=false: /ui/ is 404"},
			&cli.StringFlag{Name: "log-level", Value: def.LogLevel, EnvVars: env("log-level"), Usage: "debug, info, warn or error (the audit lines of writes are written at every level)"},
		},
		Action: e.server,
	}
}

// defaultReleaseMaxAge is --release-max-age's default.
const defaultReleaseMaxAge = "90d"

// serverConfigFrom fills the server's configuration from the flags (and their environment
// variables; one set but empty is as if unset, see flagEnvEmpty).
func (e *cliEnv) serverConfigFrom(c *cli.Context) (server.Config, error) {
	cfg := server.DefaultConfig()
	str := func(name, def string) string { return e.flagString(c, name, serverEnv(name), def) }
	age, err := server.ParseAge(str("release-max-age", defaultReleaseMaxAge))
	if err != nil {
		return cfg, fmt.Errorf("--release-max-age: %w", err)
	}
	cfg.ReleaseMaxAge = age
	cfg.ReleaseRetention = c.Int("release-retention")
	cfg.ReleaseMaxBytes = c.Int64("release-max-bytes")
	cfg.MinFreeDisk = c.Int64("min-free-disk")
	cfg.SecretsKeyFile = c.String("secrets-key-file")
	cfg.Listen = str("listen", cfg.Listen)
	cfg.EtcdEndpoints = splitList(c.String("etcd-endpoints"))
	cfg.DataDir = str("data-dir", cfg.DataDir)
	cfg.EtcdListen = c.String("etcd-listen")
	cfg.Root = str("root", cfg.Root)
	cfg.TLSCert, cfg.TLSKey = c.String("tls-cert"), c.String("tls-key")
	cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey = c.String("etcd-cacert"), c.String("etcd-cert"), c.String("etcd-key")
	cfg.RateLimit = c.Float64("rate-limit")
	cfg.TokenRateLimit = c.Float64("token-rate-limit")
	cfg.MaxInstances = c.Int("max-instances")
	cfg.InstanceStale = c.Duration("instance-stale")
	if d := cfg.InstanceStale; d > 0 && d < minInstanceStale {
		return cfg, fmt.Errorf("--instance-stale %s must be at least %s: an idle agent's last_seen is written again only every minute or so, at its next request for its view (one every 55 s), so a live agent would count as gone — drawn into no rollout, its name free to take over", d, minInstanceStale)
	}
	cfg.MaxWaiters = c.Int("max-long-polls")
	cfg.MaxWaitersPerToken = c.Int("max-long-polls-per-token")
	cfg.MaxValueBytes = c.Int("max-value-bytes")
	cfg.MaxSchemaBytes = c.Int("max-schema-bytes")
	cfg.MaxConns = c.Int("max-conns")
	cfg.MaxConnsPerAddr = c.Int("max-conns-per-addr")
	cfg.UnauthIdleTimeout = c.Duration("unauth-idle-timeout")
	if cfg.ProxyProtocolFrom, err = server.ParseProxyFrom(c.String("proxy-protocol-from")); err != nil {
		return cfg, err
	}
	cfg.AdminTokenFile = c.String("admin-token-file")
	cfg.LogLevel = str("log-level", cfg.LogLevel)
	if !e.flagEnvEmpty("ui", serverEnv("ui")) {
		cfg.UI = c.Bool("ui") // urfave/cli took SHOELACE_UI= for false
	}
	cfg.Version = version
	return cfg, nil
}

// minInstanceStale is the shortest --instance-stale: the server writes a live instance's
// unchanged report (its last_seen) again every twelfth of it but at least a minute apart, at the
// agent's next request for its view, which an idle agent makes every 55 s; its last_seen is up to
// about two minutes old, with no sign that anything is wrong.
const minInstanceStale = 5 * time.Minute

// splitList splits a comma-separated list, trimming spaces; "" is an empty list.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

var routeGRPCLogs sync.Once

// serverHeapFloor is the Go heap a server lets grow before it collects (unless GOGC is set): a
// few MiB are live in a replica with no long-polls, and collecting every few MiB allocated
// put a collection beside about one write in forty under load, and among a third of the
// slowest (BENCHMARKS.md, "Twenty-fourth round"). Above it GOGC's rule is unchanged.
const serverHeapFloor = 64 << 20

func (e *cliEnv) server(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, "[flags]"); err != nil {
		return err
	}
	cfg, err := e.serverConfigFrom(c)
	if err != nil {
		return usagef("server: %s", err.Error())
	}
	if err := cfg.Validate(); err != nil {
		return usagef("server: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	level, err := server.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		return usagef("server: %v", err)
	}
	logger := server.NewLogger(e.stderr, level)
	// The standard log package (used by some dependencies) and gRPC's own log go to the same
	// JSON stream. gRPC's logger is a process global: set it once.
	slog.SetDefault(logger)
	routeGRPCLogs.Do(func() { store.RouteGRPCLogs(logger) })
	debugPprof(logger)
	heapfloor.Set(serverHeapFloor)
	if err := server.Run(c.Context, cfg, logger); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// serviceNotes are the service commands' descriptions, before their example.
var serviceNotes = map[string]string{
	"install": `Writes shoelace-server.service, the systemd unit the packages ship (its settings in
/etc/shoelace/server.env, its store in /var/lib/shoelace-server), and enables it; start it with
shoelace server start. Needs root.`,
	"uninstall": "Stops and disables the shoelace-server service and removes the unit that install wrote. When the package's unit lies beneath it, only the unit install wrote goes: the package's takes over, enabled and running as the service was.",
	"start":     "Starts the shoelace-server service (systemctl start shoelace-server).",
	"stop":      "Stops the shoelace-server service: it drains its long-polls first.",
	"restart":   "Restarts the shoelace-server service, which reads /etc/shoelace/server.env again.",
	"status":    "Prints whether the shoelace-server service is installed, enabled and running.",
}

// serviceCommands manage the server's systemd service: install|uninstall|start|stop|restart|status.
func serviceCommands(e *cliEnv) []*cli.Command {
	usage := map[string]string{
		"install":   "install the shoelace-server systemd unit (the one the packages ship) and enable it",
		"uninstall": "stop, disable and remove the shoelace-server systemd unit",
		"start":     "start the shoelace-server service",
		"stop":      "stop the shoelace-server service",
		"restart":   "restart the shoelace-server service",
		"status":    "show whether the shoelace-server service is installed, enabled and running",
	}
	var cmds []*cli.Command
	for _, action := range svc.Actions {
		cmds = append(cmds, &cli.Command{
			Name:        action,
			Usage:       usage[action],
			UsageText:   "shoelace server " + action,
			Description: serviceNotes[action] + "\n\nEXAMPLES:\n   sudo shoelace server " + action,
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return &usageError{fmt.Sprintf("server %s takes no arguments", action)}
				}
				return svc.Control(c.Context, svc.ServerUnit(), action, e.stdout)
			},
		})
	}
	return cmds
}
