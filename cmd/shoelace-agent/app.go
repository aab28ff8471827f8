package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/complete"
	"github.com/shoelace-dev/shoelace/internal/sdnotify"
	"github.com/shoelace-dev/shoelace/internal/svc"
)

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func errorLine(err error) string {
	msg := strings.TrimSpace(err.Error())
	if strings.HasPrefix(msg, "shoelace-agent") {
		return msg // already says who speaks (internal/svc's errors do)
	}
	return "shoelace-agent: " + msg
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, complete.ErrUsage) {
		return 2
	}
	return 1
}

func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: agent.DefaultConfigPath, EnvVars: []string{"SHOELACE_AGENT_CONFIG"}, Usage: "agent config `FILE`"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"SHOELACE_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
	}
}

func withCommon(fs ...cli.Flag) []cli.Flag { return append(commonFlags(), fs...) }

// moveCommonFlags moves --config and --log-level written before the command name behind it,
// so that they work in either place (urfave/cli v2 parses a command's flags only after its name).
func moveCommonFlags(args []string) []string {
	if len(args) < 2 {
		return args
	}
	var moved, rest []string
	i := 1
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "config", "c", "log-level":
			moved = append(moved, a)
			if !hasValue && i+1 < len(args) {
				moved = append(moved, args[i+1])
				i++
			}
		default:
			rest = append(rest, a)
		}
	}
	if i >= len(args) || len(moved) == 0 {
		return args
	}
	out := append([]string{args[0]}, rest...)
	out = append(out, args[i])
	out = append(out, moved...)
	return append(out, args[i+1:]...)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: use debug, info, warn or error", level)}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// run is the whole program: it parses args, runs one command and returns its error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	load := func(c *cli.Context) (*agent.Config, *slog.Logger, error) {
		log, err := newLogger(logWriter(stderr), c.String("log-level"))
		if err != nil {
			return nil, nil, err
		}
		slog.SetDefault(log)
		confd := c.String("confdir")
		if confd != "" {
			if confd, err = filepath.Abs(confd); err != nil {
				return nil, nil, fmt.Errorf("--confdir: %w", err)
			}
		}
		cfg, err := agent.LoadConfigWith(c.String("config"), agent.Overrides{ConfdDir: confd})
		if err != nil {
			return nil, nil, err
		}
		if c.Command.Name != "validate" { // validate prints them
			for _, n := range cfg.Notes {
				log.Info("confd_dir", "note", n)
			}
			for _, w := range cfg.TemplatesDirWarnings() {
				log.Warn("templates_dir file not read", "problem", w)
			}
			for _, p := range cfg.Unparsed {
				log.Error(agent.UnparsedMessage, "problem", p)
			}
		}
		return cfg, log, nil
	}
	newAgent := func(c *cli.Context, opts agent.Options) (*agent.Agent, error) {
		cfg, log, err := load(c)
		if err != nil {
			return nil, err
		}
		opts.Logger = log
		opts.UserAgent = "shoelace-agent/" + version
		opts.Version = version
		if w := cfg.TokenWarning(); w != "" && c.Command.Name != "validate" { // validate prints its warnings
			log.Warn("token readable by others", "problem", w)
		}
		return agent.New(cfg, opts)
	}
	confdFlag := &cli.StringFlag{Name: "confdir", EnvVars: []string{"SHOELACE_AGENT_CONFDIR"},
		Usage: "render the confd resources of `DIR` (conf.d/*.toml, templates/) too, over the config's confd_dir"}
	stageFlag := &cli.StringFlag{Name: "stage", Usage: "render only the templates of this `STAGE`: system or application (default: all)"}

	var helpErr error
	app := &cli.App{
		Name:           "shoelace-agent",
		Usage:          "render an appliance's configuration from a Shoelace server into local files",
		UsageText:      "shoelace-agent COMMAND [--config FILE] [command options]",
		Description:    appDescription(agent.DefaultConfigPath),
		Version:        version,
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		// A flag error names the command and where its flags are, as shoelace's do.
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			if c != nil && c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
				return usageError{fmt.Sprintf("%s: %v (see shoelace-agent %s --help)", c.Command.Name, err, c.Command.Name)}
			}
			return usageError{err.Error()}
		},
		// "help NAME" for no such command: a usage error, as "NAME" itself is (it printed
		// nothing and exited 0).
		CommandNotFound: func(c *cli.Context, name string) {
			helpErr = usageError{fmt.Sprintf("unknown command %q (see shoelace-agent --help)", name)}
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageError{fmt.Sprintf("unknown command %q (see shoelace-agent --help)", c.Args().First())}
			}
			return usageError{"a command is required: run, once, render, validate, convert-confd, install, uninstall, start, stop, restart, status, version or completion"}
		},
		Commands: []*cli.Command{
			{
				Name:        "run",
				Usage:       runUsage(runtime.GOOS == "windows"),
				Description: runDescription,
				Flags:       withCommon(confdFlag),
				Action: func(c *cli.Context) error {
					hup := make(chan os.Signal, 1)
					signal.Notify(hup, syscall.SIGHUP)
					defer signal.Stop(hup)
					reload := make(chan struct{}, 1)
					go func() {
						for range hup {
							select {
							case reload <- struct{}{}:
							default:
							}
						}
					}()
					confd := c.String("confdir")
					if confd != "" {
						confd, _ = filepath.Abs(confd) // load, in newAgent, reports an error
					}
					// The agent is made inside the service (Windows'), so that a config error is
					// reported there (event log, a failed service restarted) rather than before the
					// service manager hears from the process, which it then reports only as a
					// start that timed out.
					return runService(c.Context, func(ctx context.Context) error {
						a, err := newAgent(c, agent.Options{ConfigPath: c.String("config"), ConfdDir: confd, Reload: reload,
							Notify: agent.Notifier{Ready: sdnotify.Ready, Reloading: sdnotify.Reloading, Stopping: sdnotify.Stopping, Status: sdnotify.Status}})
						if err != nil {
							return err
						}
						return a.Run(ctx)
					})
				},
			},
			{
				Name:        "once",
				Usage:       "fetch a fresh view, render the selected templates and exit 0 only when every one is in place",
				Description: onceDescription,
				Flags:       withCommon(stageFlag, confdFlag, &cli.BoolFlag{Name: "no-commands", Usage: "do not run the templates' commands (checks still run)"}),
				Action: func(c *cli.Context) error {
					if err := checkStage(c.String("stage")); err != nil {
						return err
					}
					a, err := newAgent(c, agent.Options{})
					if err != nil {
						return err
					}
					return a.Once(c.Context, c.String("stage"), c.Bool("no-commands"))
				},
			},
			{
				Name:        "render",
				Usage:       "print what would be written (a diff against each current file) and which commands would run; writes nothing",
				Description: renderDescription,
				Flags: withCommon(stageFlag, confdFlag,
					&cli.BoolFlag{Name: "dry", Value: true, Usage: "print only (render never writes)"},
					&cli.BoolFlag{Name: "show-secrets", Usage: "show the diff of templates that read secrets"}),
				Action: func(c *cli.Context) error {
					if !c.Bool("dry") {
						return usageError{"render only prints (--dry); use once to write files"}
					}
					if err := checkStage(c.String("stage")); err != nil {
						return err
					}
					a, err := newAgent(c, agent.Options{})
					if err != nil {
						return err
					}
					return a.Render(c.Context, stdout, agent.DryOptions{Stage: c.String("stage"), ShowSecrets: c.Bool("show-secrets")})
				},
			},
			{
				Name:        "validate",
				Usage:       "check the config and parse every template (like nginx -t)",
				Description: validateDescription,
				Flags:       withCommon(confdFlag),
				Action: func(c *cli.Context) error {
					a, err := newAgent(c, agent.Options{})
					if err != nil {
						return err
					}
					for _, w := range a.Warnings() {
						fmt.Fprintf(stdout, "warning: %s\n", w)
					}
					if u := a.Unparsed(); len(u) > 0 {
						// once and run render the others, as confd did: not an error to them.
						return &agent.ConfigError{Problems: u}
					}
					n := a.Templates()
					fmt.Fprintf(stdout, "%s: ok, %d %s\n", c.String("config"), n, plural(n, "template", "templates"))
					return nil
				},
			},
			{
				Name:        "convert-confd",
				Usage:       "print the agent.yaml templates equivalent to a confd directory's resources (functions: confd)",
				Description: convertConfdDescription,
				ArgsUsage:   "DIR",
				Flags:       commonFlags(), // accepted and ignored, as by version
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						msg := "convert-confd takes one argument, the confd directory (such as /etc/confd)"
						if strings.HasPrefix(c.Args().Get(1), "-") {
							msg += "; flags go before the directory"
						}
						return usageError{msg}
					}
					dir, err := filepath.Abs(c.Args().First())
					if err != nil {
						return err
					}
					return convertConfd(dir, stdout)
				},
			},
			{
				Name:        "version",
				Usage:       "print the version",
				Description: versionDescription,
				Flags:       commonFlags(), // accepted and ignored: DESIGN.md's synopsis gives every command --config
				Action: func(c *cli.Context) error {
					fmt.Fprintf(stdout, "shoelace-agent %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
					return nil
				},
			},
		},
	}
	app.Commands = append(app.Commands, complete.Commands(app, nil, complete.Values{
		"stage":     {agent.StageSystem, agent.StageApplication},
		"log-level": {"debug", "info", "warn", "error"},
	})...)
	for _, action := range svc.Actions {
		app.Commands = append(app.Commands, serviceCommand(action, stdout, stderr))
	}
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError // urfave/cli does not pass the app's down
		// urfave/cli gives every command a "help" (and "h") subcommand: on a command without
		// subcommands it took an argument so named ("convert-confd help" for ./help).
		c.HideHelpCommand = len(c.Subcommands) == 0
		if c.ArgsUsage == "" {
			c.Action = noArgs(c.Name, c.Action)
		}
	}
	if err := app.RunContext(ctx, moveCommonFlags(args)); err != nil {
		return err
	}
	return helpErr
}

// The help of each command: what it does, then EXAMPLES (the commands' help said only their
// one-line usage and flags). The service commands' are serviceDescription, per OS.
const (
	runDescription = `Renders every template from the appliance's view, then long-polls the server and renders
again whenever what a template reads changes: each changed file is checked, installed, and its
command and health run. The last-known-good view is kept in cache_dir and rendered from at
start when the server is unreachable. Enrolls the instance once (an instance token in
cache_dir). This is what the service runs; SIGTERM or Ctrl-C stops it.

EXAMPLES:
   shoelace-agent run --config /etc/shoelace/agent.yaml
   shoelace-agent run --config ./agent.yaml --log-level debug`

	onceDescription = `Fetches a fresh view from the server (never the cache, and writes none), renders the
selected templates (every one, or those of --stage) with their checks and commands, and exits
0 when every selected template is in place, 1 naming those that are not. Selecting no template
is an error. Never enrolls. Bake and first-boot scripts rely on it.

EXAMPLES:
   shoelace-agent once --stage system --no-commands     # bake a VM template
   shoelace-agent once --config /etc/shoelace/agent.yaml`

	renderDescription = `Fetches the view and prints, for each selected template, whether its file would change
and the diff against the file on disk, then the commands that would run. Writes nothing: use
once or run to install. The diff of a template that reads secrets is left out unless
--show-secrets. render gets the live view: on a VM that runs a staged rollout's candidate, a
line above the diffs says so (the diffs are then what the files go back to if it ends unpromoted).

EXAMPLES:
   shoelace-agent render --dry
   shoelace-agent render --stage application --config ./agent.yaml`

	validateDescription = `Loads the config (with templates_dir and confd_dir), checks every field and parses every
template, as nginx -t does. Prints warnings (an inline token others can read, no templates,
functions whose output changes on every render, …), then "FILE: ok, N templates"; exits 1
naming the file and line of an error.

EXAMPLES:
   shoelace-agent validate
   shoelace-agent validate --config ./agent.yaml && systemctl reload shoelace-agent`

	convertConfdDescription = `Reads DIR as confd does (confd.toml, conf.d/*.toml, templates/) and prints the templates:
entries of agent.yaml that render the same files, each with functions: confd and its
resource's keys, headed by the resource it comes from; notes on what has no equivalent are
comments. (Or set confd_dir: DIR in agent.yaml to read the resources as they are.)

EXAMPLES:
   shoelace-agent convert-confd /etc/confd > confd-templates.yaml`

	versionDescription = `Prints the agent's version, the Go version it was built with, and its OS and architecture.

EXAMPLES:
   shoelace-agent version`
)

// runUsage is run's help: how a changed config is loaded, by SIGHUP, or on Windows (win), which
// has no SIGHUP, by a restart of the service (the help said SIGHUP there too).
func runUsage(win bool) string {
	if win {
		return "render, then watch the server and re-render on change until stopped (Windows has no SIGHUP: shoelace-agent restart, as Administrator, loads a changed config; validate it first)"
	}
	return "render, then watch the server and re-render on change until stopped (SIGHUP reloads the config)"
}

// appDescription is the top-level help's description: where the config is read from (by
// default defaultConfig, which is this system's: on Windows under %ProgramData%), the usual
// commands, and the exit codes.
func appDescription(defaultConfig string) string {
	return `Every command reads the agent config from --config FILE (default ` + defaultConfig + `,
or $SHOELACE_AGENT_CONFIG); --config may come before or after the command.

EXAMPLES:
   shoelace-agent validate                       check the config and parse every template
   shoelace-agent once --stage system            bake: render the system templates, exit 0 when all are in place
   shoelace-agent render --dry                   show the diff each template would make, and the commands
   shoelace-agent run --config ./agent.yaml      render, then re-render on every change until stopped

EXIT CODES:
   0  success
   1  error (config, server, a template not in place)
   2  usage error (unknown command or flag, stray argument)`
}

// noArgs refuses positional arguments: no command takes any, and a mistyped flag value (such as
// "once system" for "once --stage system") must not silently widen what a command does.
func noArgs(name string, action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if name != "version" && c.IsSet("config") && c.String("config") == "" {
			// It read "open : no such file or directory".
			return usageError{fmt.Sprintf("--config is empty (or SHOELACE_AGENT_CONFIG is set but empty): name the agent's config file, or leave both out for %s", agent.DefaultConfigPath)}
		}
		if c.Args().Len() > 0 {
			got := strings.Join(c.Args().Slice(), " ")
			if a := c.Args().First(); c.Args().Len() == 1 && (strings.HasSuffix(a, ".yaml") || strings.HasSuffix(a, ".yml")) {
				// "validate agent.yaml", as nginx -t -c and most tools take a config.
				return usageError{fmt.Sprintf("%s takes no arguments, got %q: give the config with --config %s", name, got, a)}
			}
			example := "--config FILE"
			if slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "stage") }) {
				example = "--stage system"
			}
			return usageError{fmt.Sprintf("%s takes no arguments, got %q (options are flags, such as %s; see shoelace-agent %s --help)",
				name, got, example, name)}
		}
		return action(c)
	}
}

func checkStage(s string) error {
	if s != "" && s != agent.StageSystem && s != agent.StageApplication {
		return usageError{fmt.Sprintf("--stage %q: use %s or %s", s, agent.StageSystem, agent.StageApplication)}
	}
	return nil
}

func serviceCommand(action string, stdout, stderr io.Writer) *cli.Command {
	usage := serviceUsage[action]
	flags := commonFlags()
	if action == "status" {
		flags = append(flags, &cli.BoolFlag{Name: "json", Usage: "print the service state and what the agent last recorded as one JSON object"})
	}
	return &cli.Command{
		Name:        action,
		Usage:       usage,
		Description: serviceDescription[action],
		Flags:       flags,
		Action: func(c *cli.Context) error {
			if action == "install" && !serviceTakesConfig && c.String("config") != agent.DefaultConfigPath {
				// The unit is the packaged one: it always runs with the default config.
				fmt.Fprintf(stderr, "shoelace-agent: warning: the installed unit runs \"shoelace-agent run --config %s\", not %s: "+
					"put the config there, or override ExecStart in a drop-in (systemctl edit shoelace-agent)\n", agent.DefaultConfigPath, c.String("config"))
			}
			if action == "status" {
				return printStatus(c.Context, c.String("config"), c.IsSet("config"), c.Bool("json"), stdout)
			}
			if cfg, err := filepath.Abs(c.String("config")); err == nil {
				svc.ServiceArgs = []string{"run", "--config", cfg}
			}
			return svc.Control(c.Context, svc.AgentUnit(), action, stdout)
		},
	}
}

// statusJSON is what status --json prints: the service's state, and the agent's own record of its
// last sync (revision, per-template state, last error), each with the error that kept it from
// being read, if any.
type statusJSON struct {
	Service      *serviceJSON  `json:"service"`
	ServiceError string        `json:"service_error,omitempty"`
	Agent        *agent.Status `json:"agent"`
	AgentError   string        `json:"agent_error,omitempty"`
}

type serviceJSON struct {
	Name      string `json:"name"`
	Installed bool   `json:"installed"`
	Packaged  bool   `json:"packaged"`
	Path      string `json:"path,omitempty"`
	Enabled   string `json:"enabled,omitempty"`
	Active    string `json:"active,omitempty"`
	Running   bool   `json:"running"`
}

// printStatus prints the service's state and the agent's own record of its last sync, as text or
// JSON. Either may be missing (no systemd here, nothing synced yet): that is said, not fatal; it
// fails (exit 1) only when neither could be read. Where the service takes its config (Windows),
// the record read is that of the config the service runs with, unless one is given (explicit).
func printStatus(ctx context.Context, configPath string, explicit, asJSON bool, w io.Writer) error {
	var out statusJSON
	st, err := (&svc.Manager{}).CheckedStatus(ctx, svc.AgentUnit())
	if err != nil {
		out.ServiceError = err.Error()
	} else {
		out.Service = &serviceJSON{Name: st.Name, Installed: st.Installed(), Packaged: st.Packaged, Path: st.Path,
			Enabled: st.Enabled, Active: st.Active, Running: st.Running()}
		if p := configFromCommandLine(st.Path); serviceTakesConfig && !explicit && p != "" {
			configPath = p
		}
	}
	cfg, err := agent.ParseConfigFile(configPath)
	if err == nil {
		out.Agent, err = agent.LoadStatus(cfg.CacheDir, cfg.Appliance)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("no status recorded yet in %s: the agent has not run (run or once) with this config", cfg.CacheDir)
		}
	}
	if err != nil {
		out.AgentError = err.Error()
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		switch {
		case out.Service != nil:
			fmt.Fprintln(w, st.String())
		default:
			// Not known, which is not "not installed": a package may have installed and enabled
			// the unit on a machine where systemd does not run (yet).
			fmt.Fprintf(w, "service: state unknown: %s\n", strings.TrimPrefix(out.ServiceError, svc.AgentUnit().Command+" status: "))
		}
		printAgentStatus(w, out.Agent, out.AgentError)
	}
	if out.Service == nil && out.Agent == nil {
		return fmt.Errorf("status: %s", out.AgentError)
	}
	return nil
}

// printAgentStatus prints the agent's record of its last sync as text: what status --json holds.
func printAgentStatus(w io.Writer, s *agent.Status, loadErr string) {
	if s == nil {
		fmt.Fprintf(w, "agent: %s\n", loadErr)
		return
	}
	src := "server"
	if s.FromCache {
		src = "last-known-good cache (server unreachable)"
	}
	const stamp = "2006-01-02T15:04:05Z"
	if s.Revision == 0 {
		// Recorded by a first sync that failed: no view came yet.
		fmt.Fprintf(w, "appliance %s, instance %s: no view yet, updated %s\n", s.Appliance, s.Instance, s.Updated.Format(stamp))
	} else {
		fmt.Fprintf(w, "appliance %s, instance %s: revision %d from the %s, applied %d, updated %s\n",
			s.Appliance, s.Instance, s.Revision, src, s.Applied, s.Updated.Format(stamp))
	}
	if s.NotEnrolled != "" {
		fmt.Fprintf(w, "  NOT enrolled: %s\n", s.NotEnrolled)
	}
	if s.Rollout != "" {
		fmt.Fprintf(w, "  rollout %s: this instance runs its candidate (a canary of a staged rollout)\n", s.Rollout)
	}
	if !s.LastSync.IsZero() {
		fmt.Fprintf(w, "  last sync with the server: %s (store %s)\n", s.LastSync.Format(stamp), s.Store)
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "  last error: %s\n", s.LastError)
	}
	if s.CacheError != "" {
		fmt.Fprintf(w, "  last-known-good view NOT saved (a start while the server is away has an older one, or none): %s\n", s.CacheError)
	}
	for _, t := range s.Templates {
		var state string
		switch {
		case t.InPlace:
			state = fmt.Sprintf("in place (revision %d)", t.Revision)
		case t.Error != "":
			state = "NOT in place: " + t.Error
		default:
			state = "not rendered (not selected by the last once --stage)"
		}
		fmt.Fprintf(w, "  %s: %s\n", t.Destination, state)
	}
}

// convertConfd prints the templates of the confd directory dir as agent.yaml entries. The
// entries are checked as the agent would check them (their templates parsed in confd mode),
// so that a function confd mode refuses is said now.
func convertConfd(dir string, w io.Writer) error {
	// Said of the argument: confd_dir, which ReadConfdDir's errors name, is not in play here.
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("convert-confd: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("convert-confd: %s is not a directory", dir)
	}
	r, err := agent.ReadConfdDir(dir)
	if err != nil {
		return err
	}
	if len(r.Templates) == 0 {
		return fmt.Errorf("%s: no confd resources (conf.d/*.toml)", dir)
	}
	// Only the templates matter: the rest of the config is made valid (a cache_dir of mode 0700).
	cache, err := os.MkdirTemp("", "shoelace-convert-")
	if err != nil {
		return err
	}
	defer os.Remove(cache)
	check := agent.Config{Server: "http://localhost", Appliance: "convert", Token: "-", CacheDir: cache, Path: dir}
	// confd's fileExists always worked; here it needs allow_file: true, which the entries of
	// the templates that call it get.
	for i := range r.Templates {
		check.Templates = []agent.Template{r.Templates[i]}
		if err := check.Validate(); err == nil && len(check.Unparsed) == 1 && strings.Contains(check.Unparsed[0], "allow_file: true") {
			r.Templates[i].AllowFile = true
		}
	}
	check.Templates = append([]agent.Template(nil), r.Templates...)
	if err := check.Validate(); err != nil {
		return err
	}
	if len(check.Unparsed) > 0 {
		return &agent.ConfigError{Problems: check.Unparsed}
	}
	out, err := r.YAML()
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// plural picks the word that fits n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
