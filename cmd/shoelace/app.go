package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/complete"
)

// cliEnv is what the commands share: the process's streams and what was on the command line.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// onCommandLine holds the names of the flags given on the command line (not from the environment).
	onCommandLine map[string]bool
	// noToken is set when a command that sends a token had none to send.
	noToken bool
	// addr is the server address the command talked to ("" before it connected).
	addr string
	// helpErr is the usage error of "help NAME" for a NAME that is no command.
	helpErr error
}

// addrHint is the hint of an error that says the address answered, but not as a Shoelace
// server's base URL does.
const addrHint = "check --addr (SHOELACE_ADDR), the server's base URL such as " + client.DefaultAddr

// run runs the shoelace command with args (args[0] is the program name).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &cliEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	app := newApp(e)
	var err error
	if len(args) < 2 || args[1] != complete.Command { // completion reads the words as typed
		if args, err = reorderArgs(cmdNode{flags: app.Flags, subs: app.Commands}, args); err != nil {
			return err
		}
	}
	e.onCommandLine = flagsOnCommandLine(args)
	err = app.RunContext(ctx, args)
	if err == nil {
		err = e.helpErr
	}
	var ae *api.Error
	if e.noToken && errors.As(err, &ae) && ae.HTTPStatus() == http.StatusUnauthorized {
		err = fmt.Errorf("%w (no token given: set --token-file or SHOELACE_TOKEN_FILE)", err)
	}
	var ans *client.AnswerError
	if errors.As(err, &ans) {
		// A Shoelace server answers JSON: this is another service at the address.
		ct := ans.ContentType
		if ct == "" {
			ct = "no Content-Type"
		}
		why := fmt.Sprintf(", not Shoelace's JSON: %v", ans.Err)
		if errors.Is(ans.Err, client.ErrForeignAnswer) {
			why = strings.TrimPrefix(ans.Err.Error(), client.ErrForeignAnswer.Error()) // ": " and what it lacks
		}
		err = &exitCodeError{code: exitError, err: fmt.Errorf(
			"%s is not answering as a Shoelace server (%s answered %d with %s%s): %s",
			e.addr, ans.Op, ans.Status, ct, why, addrHint)}
	}
	if ae, ok := foreignAnswer(err); ok {
		// Not "not found" (exit 3) nor "forbidden": the address is wrong, not the key or token.
		code := exitError
		var ec *exitCodeError
		if errors.As(err, &ec) && ae.HTTPStatus() >= 500 {
			// A command's own exit code (health: 6) stays for a proxy's 5xx page; a 4xx
			// (a wrong path such as --addr …/v1, another service) is the address to change.
			code = ec.code
		}
		hint := addrHint
		if strings.Contains(ae.Message, "Client sent an HTTP request to an HTTPS server") && strings.HasPrefix(e.addr, "http://") {
			// Go's HTTPS server answers a plain request with 400 and this text.
			hint = "the server speaks HTTPS: use https://" + strings.TrimPrefix(e.addr, "http://") + " in --addr (SHOELACE_ADDR)"
			code = exitError // a wrong scheme, not an outage: health too
		}
		err = &exitCodeError{code: code, err: fmt.Errorf("%s is not answering as a Shoelace server (%s): %s", e.addr, ae.Message, hint)}
	}
	return err
}

// flagsOnCommandLine returns the names of the flag arguments in args (before any "--").
func flagsOnCommandLine(args []string) map[string]bool {
	seen := map[string]bool{}
	for _, a := range args {
		if a == "--" {
			break
		}
		if len(a) > 1 && a[0] == '-' {
			name, _ := flagName(a)
			seen[name] = true
		}
	}
	return seen
}

const appDescription = `Shoelace keeps the configuration of every appliance in etcd behind one HTTP API.
This binary is the server ("shoelace server") and the CLI that pipelines and operators use.

Flags may come before or after positional arguments, and global flags may follow the
command: "shoelace kv get shared/ntp --addr https://shoelace:7400 --output json".
Every global flag also reads an environment variable (SHOELACE_ADDR, SHOELACE_TOKEN_FILE, …);
a flag on the command line wins over its variable.
Errors are one line on stderr, "shoelace: <message>".

EXAMPLES:
   export SHOELACE_ADDR=https://shoelace.internal:7400 SHOELACE_TOKEN_FILE=~/.shoelace-token
   shoelace kv put shared/system/ntp pool.ntp.org
   shoelace kv get shared/system/ntp
   printf 'line 1\nline 2\n' | shoelace kv put appliances/web/motd -
   shoelace appliance apply web-frontend -f web-frontend.yaml
   shoelace appliance get web-frontend --output json | jq .keys

` + exitCodesHelp

func newApp(e *cliEnv) *cli.App {
	app := &cli.App{
		Name:                 "shoelace",
		Usage:                "configuration server and CLI for appliances",
		UsageText:            "shoelace [global flags] command [command flags] [arguments...]",
		Description:          appDescription,
		Version:              version,
		Reader:               e.stdin,
		Writer:               e.stdout,
		ErrWriter:            e.stderr,
		Flags:                globalFlags(),
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {}, // run returns the error; main maps it to an exit code
		Commands: []*cli.Command{
			serverCommand(e),
			kvCommand(e),
			txnCommand(e),
			applianceCommand(e),
			tokenCommand(e),
			maintenanceCommand(e),
			healthCommand(e),
			statusCommand(e),
			versionCommand(e),
			exportCommand(e),
			importCommand(e),
			convertConsulTemplateCommand(e),
			snapshotCommand(e),
		},
	}
	app.Commands = append(app.Commands, complete.Commands(app, e.completeArgs, complete.Values{
		"log-level": {"debug", "info", "warn", "error"},
		"format":    {"json", "yaml"},
	})...)
	// "help NAME" (or "kv help NAME") for no such command: a usage error, as "NAME" itself is
	// (urfave/cli's own is exit 1, "No help topic for 'NAME'").
	app.CommandNotFound = func(c *cli.Context, name string) {
		e.helpErr = usagef("%sunknown command %q (see %s --help)", errPrefix(c), name, commandName(c))
	}
	app.Action = groupAction
	app.OnUsageError = usageErrorHandler
	walkCommands(app.Commands, func(c *cli.Command) {
		c.OnUsageError = usageErrorHandler
		// urfave/cli gives every command a "help" (and "h") subcommand: on a command without
		// subcommands it took an argument so named ("kv get help", "appliance get h").
		c.HideHelpCommand = len(c.Subcommands) == 0
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
	})
	return app
}

func walkCommands(cmds []*cli.Command, fn func(*cli.Command)) {
	for _, c := range cmds {
		fn(c)
		walkCommands(c.Subcommands, fn)
	}
}

// commandPath is the path of the running command below the program, such as "kv get";
// "" for the program itself.
func commandPath(c *cli.Context) string {
	var names []string
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name != "" && ctx.Command.Name != c.App.Name {
			names = append([]string{ctx.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}

// commandName is the full name of the running command, such as "shoelace kv get".
func commandName(c *cli.Context) string {
	if p := commandPath(c); p != "" {
		return c.App.Name + " " + p
	}
	return c.App.Name
}

// errPrefix is what an error of the running command starts with: "kv get: ", or "" at the top.
func errPrefix(c *cli.Context) string {
	if p := commandPath(c); p != "" {
		return p + ": "
	}
	return ""
}

func usageErrorHandler(c *cli.Context, err error, _ bool) error {
	if flag, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok && commandPath(c) == "kv put" &&
		len(flag) > 1 && (flag[1] >= '0' && flag[1] <= '9' || flag[1] == '.') {
		// A negative number such as -5 is a value, which goes after "--".
		return usagef("%s%v (a VALUE that starts with '-' goes after \"--\": %s KEY -- %s)", errPrefix(c), err, commandName(c), flag)
	}
	if flag, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		if short, value, ok := gluedValue(c, flag); ok {
			// kubectl's -ojson: the flag package reads it as a flag named "ojson".
			return usagef("%s%v (a flag's value goes after a space: -%s %s)", errPrefix(c), err, short, value)
		}
	}
	if flag, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok && commandPath(c) == "kv put" &&
		strings.ContainsFunc(strings.TrimLeft(flag, "-"), func(r rune) bool { return (r < 'a' || r > 'z') && r != '-' }) {
		// No flag name here has more than lower-case letters and '-': -Xmx512m, "--verbose --port 80"
		// and -Djava.awt.headless=true are values.
		return usagef("%s%v (a VALUE that starts with '-' goes after \"--\": %s KEY -- VALUE)", errPrefix(c), err, commandName(c))
	}
	if m := invalidFlagValue.FindStringSubmatch(err.Error()); m != nil {
		if what := flagValueProblem(c, m[2], m[3]); what != "" {
			name := "--" + m[2]
			if len(m[2]) == 1 {
				name = "-" + m[2]
			}
			return usagef("%s%s %q %s (see %s --help)", errPrefix(c), name, m[1], what, commandName(c))
		}
	}
	return usagef("%s%v (see %s --help)", errPrefix(c), err, commandName(c))
}

// invalidFlagValue matches the flag package's error for a value of the wrong kind, which names
// the flag with one dash and says only "parse error": `invalid value "5" for flag -interval:
// parse error`, `invalid boolean value "maybe" for -recurse: parse error`.
var invalidFlagValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-([A-Za-z0-9-]+): (.*)$`)

// flagValueProblem says what is wrong with a value given to the running command's flag name,
// whose parse failed with problem: what the flag takes, or that the number is out of range;
// "" when the flag is not one of those kinds.
func flagValueProblem(c *cli.Context, name, problem string) string {
	for _, f := range runningFlags(c) {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		if strings.Contains(problem, "out of range") {
			return "is out of range"
		}
		switch f.(type) {
		case *cli.DurationFlag:
			return "is not a duration: give its unit, such as 30s or 5m"
		case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
			return "is not a whole number"
		case *cli.Float64Flag:
			return "is not a number"
		case *cli.BoolFlag:
			return "is not true or false"
		}
		return ""
	}
	return ""
}

// gluedValue reads arg (-ojson) as a one-letter flag of the running command that takes a value,
// and the value written against it (o, json); ok is false when arg is not one.
func gluedValue(c *cli.Context, arg string) (short, value string, ok bool) {
	name, _ := strings.CutPrefix(arg, "-")
	if len(name) < 2 || strings.HasPrefix(name, "-") || strings.ContainsFunc(name, unicode.IsSpace) {
		// A word with a space in it was quoted whole ("-m x"): a value, not a flag glued to one.
		return "", "", false
	}
	for _, f := range runningFlags(c) {
		if v, isValue := f.(cli.DocGenerationFlag); !isValue || !v.TakesValue() {
			continue
		}
		if slices.Contains(f.Names(), name[:1]) {
			return name[:1], name[1:], true
		}
	}
	return "", "", false
}

// runningFlags are the flags the running command takes: the global ones, which every command
// takes, and those of the command and the commands above it.
func runningFlags(c *cli.Context) []cli.Flag {
	flags := slices.Clone(c.App.Flags)
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil {
			flags = append(flags, ctx.Command.Flags...)
		}
	}
	return flags
}

// groupAction runs for a command that only groups subcommands: it refuses unknown ones.
func groupAction(c *cli.Context) error {
	name := commandName(c)
	if c.NArg() > 0 {
		return usagef("%sunknown command %q (see %s --help)", errPrefix(c), c.Args().First(), name)
	}
	_ = cli.ShowSubcommandHelp(c)
	if c.Command == nil || c.Command.Name == "" {
		_ = cli.ShowAppHelp(c)
	}
	return usagef("%smissing command (see %s --help)", errPrefix(c), name)
}

// Global flag names.
const (
	flagAddr      = "addr"
	flagTokenFile = "token-file"
	flagToken     = "token"
	flagCAFile    = "ca-file"
	flagOutput    = "output"
	flagMessage   = "message"
	flagSource    = "source"
	flagTimeout   = "timeout"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagAddr, Value: client.DefaultAddr, EnvVars: []string{"SHOELACE_ADDR"},
			Usage: "server address, http:// or https://"},
		&cli.StringFlag{Name: flagTokenFile, EnvVars: []string{"SHOELACE_TOKEN_FILE"},
			Usage: "file holding the API token (mode 0600; preferred over --token)"},
		&cli.StringFlag{Name: flagToken, EnvVars: []string{"SHOELACE_TOKEN"},
			Usage: "API token (visible in the process list: prefer --token-file)"},
		&cli.StringFlag{Name: flagCAFile, EnvVars: []string{"SHOELACE_CA_FILE"},
			Usage: "PEM bundle that verifies the server's TLS certificate"},
		&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Value: "text", EnvVars: []string{"SHOELACE_OUTPUT"},
			Usage: "output format: text or json"},
		&cli.StringFlag{Name: flagMessage, Aliases: []string{"m"}, EnvVars: []string{"SHOELACE_MESSAGE"},
			Usage: "message recorded with writes (X-Shoelace-Message)"},
		&cli.StringFlag{Name: flagSource, EnvVars: []string{"SHOELACE_SOURCE"},
			Usage: "source recorded with writes, such as a pipeline id (X-Shoelace-Source)"},
		&cli.DurationFlag{Name: flagTimeout, Value: 30 * time.Second, EnvVars: []string{"SHOELACE_TIMEOUT"},
			Usage: "give up on the server after this long (0: never)"},
	}
}

// jsonOutput reports whether --output json was asked for; it refuses unknown formats.
func jsonOutput(c *cli.Context) (bool, error) {
	switch o := c.String(flagOutput); o {
	case "text", "":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, usagef("--output %q: must be text or json", o)
	}
}

// session is what a command that talks to the server needs.
type session struct {
	ctx    context.Context
	cancel context.CancelFunc
	client *client.Client
	json   bool
}

// connect checks the output format, reads the token and builds the client, with --timeout
// applied to the session's context. The caller must call s.cancel.
func (e *cliEnv) connect(c *cli.Context) (*session, error) {
	ctx, cancel := c.Context, context.CancelFunc(func() {})
	if d := c.Duration(flagTimeout); d > 0 {
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	s, err := e.connectWith(ctx, c, true)
	if err != nil {
		cancel()
		return nil, err
	}
	s.cancel = cancel
	return s, nil
}

// connectStreaming is connect for a command whose answer may take longer than --timeout to
// stream (snapshot save, export, kv ls): --timeout bounds each wait for the server instead (the answer
// to start, each pause in it), so that an answer that keeps coming is taken whole however long
// it takes; a store of a few hundred MiB across a slow link took longer than 30 s, and the
// runbook's hourly backups failed while the server was sending all along. The caller must call
// s.cancel, and give the command's error to idle.explain.
func (e *cliEnv) connectStreaming(c *cli.Context) (*session, *idleTimer, error) {
	ctx, cancel := context.WithCancel(c.Context)
	idle := newIdleTimer(c.Duration(flagTimeout), cancel)
	s, err := e.connectVia(ctx, c, true, func(rt http.RoundTripper) http.RoundTripper {
		return idleTransport{rt: rt, idle: idle}
	})
	if err != nil {
		idle.stop()
		cancel()
		return nil, nil, err
	}
	s.cancel = func() {
		idle.stop()
		cancel()
	}
	return s, idle, nil
}

// idleTimer cancels a transfer that has made no progress for d (0: never), where a deadline
// would end one that is slow but going on.
type idleTimer struct {
	d     time.Duration
	t     *time.Timer
	fired atomic.Bool
}

func newIdleTimer(d time.Duration, cancel context.CancelFunc) *idleTimer {
	it := &idleTimer{d: d}
	if d > 0 {
		it.t = time.AfterFunc(d, func() {
			it.fired.Store(true)
			cancel()
		})
	}
	return it
}

// touch starts the wait for the server again.
func (it *idleTimer) touch() {
	if it.t != nil && !it.fired.Load() {
		it.t.Reset(it.d)
	}
}

func (it *idleTimer) stop() {
	if it.t != nil {
		it.t.Stop()
	}
}

// explain returns err, or, when the timer ended the transfer (which ends it as Ctrl-C would),
// why: the server sent nothing for --timeout (exit 6).
func (it *idleTimer) explain(err error) error {
	if err == nil || !it.fired.Load() {
		return err
	}
	return &exitCodeError{code: exitUnavailable, err: fmt.Errorf("the server sent nothing for %s (--timeout %s): gave up", it.d, it.d)}
}

// idleTransport passes requests on to rt and starts idle's wait again at each answer and at
// each read of its body.
type idleTransport struct {
	rt   http.RoundTripper
	idle *idleTimer
}

func (t idleTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	t.idle.touch()
	resp.Body = idleBody{ReadCloser: resp.Body, idle: t.idle}
	return resp, nil
}

type idleBody struct {
	io.ReadCloser
	idle *idleTimer
}

func (b idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.idle.touch()
	}
	return n, err
}

// connectWith builds a session on ctx, with the token when withToken.
func (e *cliEnv) connectWith(ctx context.Context, c *cli.Context, withToken bool) (*session, error) {
	return e.connectVia(ctx, c, withToken, nil)
}

// connectVia is connectWith whose transport is wrap's (nil: the CLI's own).
func (e *cliEnv) connectVia(ctx context.Context, c *cli.Context, withToken bool, wrap func(http.RoundTripper) http.RoundTripper) (*session, error) {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return nil, err
	}
	if d := c.Duration(flagTimeout); d < 0 {
		// Not "never": a deadline computed in a script that ran out would wait forever.
		return nil, usagef("--timeout %s: a timeout is 0 (never give up) or more", d)
	}
	token := ""
	if withToken {
		if token, err = e.token(c); err != nil {
			return nil, err
		}
		e.noToken = token == ""
	}
	// --message and --source go with writes only: one a write cannot send (a multi-line commit
	// message in SHOELACE_MESSAGE) refuses the command's writes, never its reads.
	var refuseWrites error
	for _, f := range []struct {
		flag, header string
		max          int
	}{{flagMessage, api.HeaderMessage, api.MaxMessageBytes}, {flagSource, api.HeaderSource, api.MaxSourceBytes}} {
		if err := api.CheckReleaseText(f.header, c.String(f.flag), f.max); err != nil && refuseWrites == nil {
			refuseWrites = usagef("--%s: %s (a release record keeps it on one line)", f.flag, api.AsError(err).Message)
		}
	}
	e.addr = c.String(flagAddr)
	if err := checkAddr(e.addr); err != nil {
		return nil, usagef("--addr: %v", err)
	}
	var rt http.RoundTripper = http1Transport()
	if wrap != nil {
		rt = wrap(rt)
	}
	cl, err := client.New(e.addr, client.Options{
		HTTPClient:   &http.Client{Transport: rt},
		Token:        token,
		CAFile:       c.String(flagCAFile),
		Retries:      2,
		Message:      c.String(flagMessage),
		Source:       c.String(flagSource),
		UserAgent:    "shoelace/" + version,
		WriteQuery:   rolloutQuery(c),
		RefuseWrites: refuseWrites,
		// A write on a connection the server closes as idle as it goes out exited 7,
		// outcome unknown, for a write the server never read.
		FreshConnForWrites: true,
		// An export or listing is as large as what the store holds: the operator's own
		// command reads it whole, however large (the agent's bound is for small VMs).
		MaxAnswerBytes: -1,
	})
	if err != nil {
		return nil, usagef("--addr/--ca-file: %v", err)
	}
	return &session{ctx: ctx, cancel: func() {}, client: cl, json: asJSON}, nil
}

// http1Transport is the CLI's transport: net/http's default, speaking HTTP/1.1 only. Over
// HTTP/2, net/http sends a request again by itself after a stream reset (PROTOCOL_ERROR,
// REFUSED_STREAM) or a GOAWAY, and one without a body (kv rm, an empty kv put) without asking
// for it anew, even once it was written whole: a write the server may have applied would go
// twice. Over HTTP/1.1 it sends a write again only when none of it was written. One command
// sends its requests one after another: HTTP/2 gains it nothing.
func http1Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	return tr
}

// token returns the API token from --token-file or --token. When both are set, the one given
// on the command line wins over the one from the environment; both on the same footing is an error.
func (e *cliEnv) token(c *cli.Context) (string, error) {
	file, tok := c.String(flagTokenFile), c.String(flagToken)
	if file != "" && tok != "" {
		fileCLI, tokCLI := e.onCommandLine[flagTokenFile], e.onCommandLine[flagToken]
		switch {
		case fileCLI && !tokCLI:
			tok = ""
		case tokCLI && !fileCLI:
			file = ""
		default:
			return "", usagef("both --token-file and --token are set: use one (SHOELACE_TOKEN_FILE, SHOELACE_TOKEN)")
		}
	}
	if file == "" {
		return strings.TrimSpace(tok), nil
	}
	return readTokenFile(file)
}

// readTokenFile reads a token file, refusing one that group or others may read.
func readTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", usagef("token file: %v", err)
	}
	if fi.IsDir() {
		return "", usagef("token file %s is a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", usagef("token file %s is accessible by group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("token file: %v", err)
	}
	// A BOM (Notepad's UTF-8) is no part of the token: sent, it made the token unknown (401).
	tok := strings.TrimSpace(string(api.WithoutBOM(b)))
	if tok == "" {
		return "", usagef("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", usagef("token file %s holds more than one word: it must hold only the token", path)
	}
	return tok, nil
}

// args checks that the command got between min and max positional arguments (max < 0: no limit).
func wantArgs(c *cli.Context, min, max int, names string) ([]string, error) {
	n := c.NArg()
	usage := commandName(c)
	if names != "" {
		usage += " " + names
	}
	if n < min {
		return nil, usagef("%smissing argument (usage: %s)", errPrefix(c), usage)
	}
	if max >= 0 && n > max {
		extra := c.Args().Slice()[max:]
		hint := ""
		for _, a := range extra {
			if b, err := strconv.ParseBool(a); err == nil && (a == "true" || a == "false") {
				// "--ui false": a flag that is on or off takes its value after '=' only.
				for i := 1; i < len(os.Args); i++ {
					if prev := os.Args[i-1]; os.Args[i] == a && len(prev) > 1 && prev[0] == '-' && prev != "--" && !strings.Contains(prev, "=") {
						hint = fmt.Sprintf("; %q is not the value of the flag before it: write %s=%t", a, prev, b)
						break
					}
				}
				break
			}
		}
		if hint == "" && hasFlag(c, "file") && c.String("file") == "" {
			// "shoelace txn change.json": the file of a command that reads one goes after -f.
			hint = fmt.Sprintf("; give the file with -f: -f %s", extra[0])
		}
		return nil, usagef("%stoo many arguments %q (usage: %s)%s", errPrefix(c), extra, usage, hint)
	}
	return c.Args().Slice(), nil
}

// hasFlag says whether c's command has a flag named name.
func hasFlag(c *cli.Context, name string) bool {
	if c.Command == nil {
		return false
	}
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// jsonEncoder returns an encoder that leaves <, > and & as they are.
func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	return jsonEncoder(w).Encode(v)
}

// printRevision prints the result of a write: "revision 42" or {"revision":42}.
func printRevision(w io.Writer, asJSON bool, rev int64) error {
	if asJSON {
		return printJSON(w, map[string]int64{"revision": rev})
	}
	_, err := fmt.Fprintf(w, "revision %d\n", rev)
	return err
}

// readFileFlag reads the file -f names (- reads stdin) for op: its bytes, and its name for
// messages ("stdin" for -). Without -f it is a usage error.
func (e *cliEnv) readFileFlag(c *cli.Context, op string) (body []byte, name string, err error) {
	name = c.String("file")
	switch name {
	case "":
		return nil, "", usagef("%smissing -f FILE (or -f - for stdin)", errPrefix(c))
	case "-":
		if body, err = readAll(c.Context, e.stdin); err != nil {
			return nil, "", fmt.Errorf("%s: read stdin: %w", op, err)
		}
		return api.WithoutBOM(body), "stdin", nil
	}
	if body, err = os.ReadFile(name); err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	return api.WithoutBOM(body), name, nil
}

// readAll reads r (stdin) to its end, or until ctx ends: a read of a terminal, or of a pipe
// whose writer lives on, blocks in the kernel, where Ctrl-C's cancellation does not reach it.
// The read left behind ends with the process.
func readAll(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := io.ReadAll(r)
		done <- result{data, err}
	}()
	select {
	case res := <-done:
		return res.data, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkAddr refuses an --addr that can only be a mistake, as a usage error: a query or a
// fragment (the query went out with every request, refused as an unknown parameter; the
// fragment was dropped), a user or password (the token goes in --token-file, and the address
// is printed in errors), or a port that is no port (which failed as "cannot reach the
// server", exit 6, as if retrying could help). client.New says what else is wrong.
func checkAddr(addr string) error {
	a := strings.TrimSpace(addr)
	if a == "" {
		return nil
	}
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil {
		return nil
	}
	const want = "give scheme://host:port, and a base path only if a proxy serves Shoelace under one"
	switch {
	case u.User != nil:
		return fmt.Errorf("server address %q holds a user or password: give the token with --token-file (SHOELACE_TOKEN_FILE); %s", u.Redacted(), want)
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("server address %q has a query (?%s): %s", addr, u.RawQuery, want)
	case u.Fragment != "" || strings.HasSuffix(a, "#"):
		return fmt.Errorf("server address %q has a fragment (#%s): %s", addr, u.Fragment, want)
	}
	if p := u.Port(); p != "" {
		if !api.ValidPort(p) {
			return fmt.Errorf("server address %q: port %s is not a port (1 to 65535)", addr, p)
		}
	}
	return nil
}
