package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

func kvCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "kv",
		Usage:     "read and write single keys",
		UsageText: "shoelace kv get|put|ls|rm|history [arguments] [flags]",
		Description: `Keys are relative paths such as shared/system/ntp or appliances/web/port: 1–32 segments of
[A-Za-z0-9][A-Za-z0-9._-]* joined by '/'. Values are UTF-8 text, stored byte for byte.
Run "shoelace kv COMMAND --help" for each command's flags.

EXAMPLES:
   shoelace kv put shared/system/ntp pool.ntp.org
   shoelace kv get shared/system/ntp
   shoelace kv ls appliances/web
   shoelace kv rm appliances/web/old-setting`,
		Subcommands: []*cli.Command{
			{
				Name:      "get",
				Usage:     "print a key's value verbatim",
				ArgsUsage: "KEY",
				UsageText: "shoelace kv get KEY [--output json]",
				Description: `Prints the value exactly as stored: no newline is added. With --output json, prints
{"key","value","mod_revision","create_revision","version"}.

EXAMPLES:
   shoelace kv get shared/system/ntp
   shoelace kv get appliances/web/port --output json | jq .mod_revision`,
				Action: e.kvGet,
			},
			{
				Name:      "history",
				Usage:     "print a key's past values and the releases that changed it, newest first",
				ArgsUsage: "KEY",
				UsageText: "shoelace kv history KEY [--limit 50] [--show-secrets] [--output json]",
				Description: `Prints a header line, then one line per revision at which the key changed, newest first,
tab-separated: REVISION, TIME, KIND, TOKEN, SOURCE (of the release that wrote it), VALUE and
MESSAGE. Values come from etcd's history while it has them (1 h on the embedded store), walked
back from the key's current value to when it was last created; changes before that (an earlier
life of a key deleted and written again, or a key deleted now) and older ones come from the
release records, which keep no values: their VALUE is "?" ("(deleted)" for a delete). A staged
rollout's start (KIND rollout) changes no live key: its VALUE is "(staged)", the key keeping its
value until the rollout's promotion, a release of its own. The value a deleted key held is in
its appliance's past state: shoelace appliance diff NAME --from REV.
A secret key's values are printed as (secret) unless --show-secrets is given. With --output
json, prints {"key","revision","versions":[…],"compacted","releases":[…]}. A key of which
nothing is kept (never written, or older than etcd's history and the releases kept)
exits 3, as kv get of a missing key does.

EXAMPLES:
   shoelace kv history appliances/web/app/port
   shoelace kv history shared/system/ntp -o json | jq -r '.releases[] | "\(.revision) \(.token) \(.message // "")"'`,
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 50, Usage: "versions and releases at most (1 to 1000)"},
					&cli.BoolFlag{Name: "show-secrets", Usage: "print the values of a secret key instead of (secret)"},
				},
				Action: e.kvHistory,
			},
			{
				Name:      "put",
				Usage:     "write a key's value (- reads it from stdin, verbatim)",
				ArgsUsage: "KEY VALUE|-",
				UsageText: "shoelace kv put KEY VALUE|- [--cas REVISION]",
				Description: `Writes VALUE as given, or stdin as read (with "-"; a trailing newline is kept).
Prints the revision of the write. A put of the value the key holds already writes nothing (no
revision, no release, no agent woken): it prints the revision at which the key got that value
(its mod_revision), and stderr says that nothing was written.

--cas N writes only while the key's mod_revision is N (0: only if the key does not exist);
otherwise nothing is written and the exit code is 4. A VALUE that starts with '-' goes
after "--": shoelace kv put app/offset -- -5

--canary stages the change (see shoelace appliance rollout --help): for a key of an appliance,
one rollout of that appliance; for a shared/ key, one rollout per appliance with enrolled
instances, all of one group, and shared/ changes only when every one of them is promoted (a
halt or abort of any ends the group). Without --canary, a shared/ key reaches every instance of
every appliance at once. A put --canary of the value a key holds already starts no rollout (nor
group) and writes nothing (stderr says so), as appliance apply --canary of the same keys.

EXAMPLES:
   shoelace kv put shared/system/ntp pool.ntp.org
   shoelace kv put appliances/web/tls/cert - < cert.pem
   rev=$(shoelace kv get appliances/web/port -o json | jq .mod_revision)
   shoelace kv put appliances/web/port 8081 --cas "$rev"
   shoelace kv put shared/system/ntp time.example.net --canary 10% --bake 5m`,
				Flags: append([]cli.Flag{
					&cli.Int64Flag{Name: "cas", DefaultText: "unconditional", Usage: "write only if the key's mod_revision is `REVISION` (0: must not exist)"},
				}, rolloutFlags()...),
				Action: e.kvPut,
			},
			{
				Name:      "ls",
				Usage:     "list the keys under a prefix",
				ArgsUsage: "[PREFIX]",
				UsageText: "shoelace kv ls [PREFIX] [--output json]",
				Description: `Prints one key per line, every key under PREFIX (whole segments: "appliances/web" never
lists appliances/web-frontend/…). Without PREFIX, every key. With --output json, prints
{"revision","entries":[{"key","value",…}]}, values included. --timeout bounds each wait for the
server (the answer to start, each pause in it), not the whole listing, which may take long to cross
a slow link.

EXAMPLES:
   shoelace kv ls shared
   shoelace kv ls appliances/web --output json | jq -r '.entries[] | .key + "=" + .value'`,
				Action: e.kvList,
			},
			{
				Name:      "rm",
				Usage:     "delete a key, or every key under a prefix with --recurse",
				ArgsUsage: "KEY",
				UsageText: "shoelace kv rm KEY [--recurse]",
				Description: `Deletes KEY (exit code 3 when it does not exist). With --recurse, deletes KEY and every key
under it (whole segments; KEY may end in '/', as kv ls takes a prefix) and reports how many were
deleted on stderr. Prints the revision.

EXAMPLES:
   shoelace kv rm appliances/web/old-setting
   shoelace kv rm appliances/retired-app --recurse`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "recurse", Aliases: []string{"r"}, Usage: "delete every key under KEY too"},
					forceFlag(),
				},
				Action: e.kvRemove,
			},
		},
	}
}

// checkPathKey refuses keys that cannot travel in a URL path unchanged: empty segments, "."
// and "..", which an HTTP stack would clean into another key. The server checks every other
// rule and names it in its answer.
func checkPathKey(key string) error {
	if rest, ok := strings.CutPrefix(key, "/"); ok && strings.TrimLeft(rest, "/") != "" {
		return confdKeyError(key, strings.TrimLeft(rest, "/"))
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			if err := api.ValidateKey(key); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPathPrefix is checkPathKey for a prefix as given (arg; "shared/" as kv ls takes it): it
// returns the prefix without its trailing '/', or an error that names arg as a prefix ("//" and
// "shared//" were called the invalid keys "/" and "shared/"). A confd-style path keeps
// checkPathKey's word on it.
func checkPathPrefix(arg string) (string, error) {
	prefix := strings.TrimSuffix(arg, "/")
	if prefix == "" {
		return "", nil
	}
	if err := checkPathKey(prefix); err != nil {
		if !strings.HasPrefix(prefix, "/") || strings.Trim(prefix, "/") == "" {
			if _, perr := api.ValidatePrefix(arg); perr != nil {
				return "", perr
			}
		}
		return "", err
	}
	return prefix, nil
}

// confdKeyError explains a key written the confd way, with a leading '/' (rest is the key
// without it): keys here are relative and live under an appliance or shared/.
func confdKeyError(key, rest string) error {
	if api.HasPrefix(rest, api.AppliancesPrefix) || api.HasPrefix(rest, api.SharedPrefix) {
		return api.Errorf(api.CodeInvalidKey, "invalid key %q: keys have no leading '/': did you mean %s?", key, rest)
	}
	return api.Errorf(api.CodeInvalidKey, "invalid key %q: a leading '/' is a confd-style path; keys here have none and live under an appliance or shared/: "+
		"write %s/NAME/%s (one appliance's view) or %s/%s (every appliance's); a template in functions: confd reads either as getv %q. "+
		"To copy a whole confd keyspace: shoelace import --from-etcd URL --prefix PREFIX --appliance NAME",
		key, api.AppliancesPrefix, rest, api.SharedPrefix, rest, key)
}

func (e *cliEnv) kvGet(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "KEY")
	if err != nil {
		return err
	}
	if err := checkPathKey(a[0]); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	kv, _, err := s.client.Get(s.ctx, a[0])
	if err != nil {
		return withPrefixHint(s, a[0], err, "shoelace kv ls "+a[0]+" lists")
	}
	if s.json {
		return printJSON(e.stdout, kv)
	}
	_, err = io.WriteString(e.stdout, kv.Value)
	return err
}

func (e *cliEnv) kvPut(c *cli.Context) error {
	a, err := wantArgs(c, 2, 2, "KEY VALUE|-")
	if err != nil {
		return err
	}
	if err := checkPathKey(a[0]); err != nil {
		return err
	}
	cas, err := casFlag(c)
	if err != nil {
		return err
	}
	if err := checkRolloutFlags(c); err != nil {
		return err
	}
	if c.IsSet("cas") && c.String("canary") != "" {
		// The server refuses them too (400, exit 1); a flag conflict is a usage error here.
		return usagef("%s--cas and --canary do not go together: a rollout writes the live key only when it is promoted; give one of them", errPrefix(c))
	}
	value := []byte(a[1])
	if a[1] == "-" {
		if value, err = readAll(c.Context, e.stdin); err != nil {
			return fmt.Errorf("read value from stdin: %w", err)
		}
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if api.Under(a[0], api.SharedPrefix) && c.String("canary") != "" {
		g, err := s.client.PutSharedCanary(s.ctx, a[0], value, cas)
		if err != nil {
			return err
		}
		return e.printSharedRolloutStarted(s, g)
	}
	res, err := s.client.PutResult(s.ctx, a[0], value, cas)
	if err != nil {
		return err
	}
	if name, ok := api.ApplianceOf(a[0]); ok && c.String("canary") != "" {
		return e.printCanaryWrite(s, c, name, res)
	}
	if res.Unchanged {
		return e.printUnchanged(s, res, "key "+a[0]+" already holds this value", "")
	}
	return printRevision(e.stdout, s.json, res.Revision)
}

// casFlag returns --cas, or client.NoCAS when it is not set.
func casFlag(c *cli.Context) (int64, error) {
	if !c.IsSet("cas") {
		return client.NoCAS, nil
	}
	cas := c.Int64("cas")
	if cas < 0 {
		return 0, usagef("--cas %d: a revision is 0 or more", cas)
	}
	return cas, nil
}

func (e *cliEnv) kvList(c *cli.Context) error {
	a, err := wantArgs(c, 0, 1, "[PREFIX]")
	if err != nil {
		return err
	}
	prefix := ""
	if len(a) == 1 {
		if prefix, err = checkPathPrefix(a[0]); err != nil {
			return err
		}
	}
	// A listing is as large as what is under the prefix: --timeout bounds each wait for it.
	s, idle, err := e.connectStreaming(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	l, _, err := s.client.List(s.ctx, prefix, !s.json)
	if err != nil {
		return idle.explain(err)
	}
	if s.json {
		// As the API answers it: "entries" is there even when nothing is under the prefix.
		entries := l.Entries
		if entries == nil {
			entries = []api.KV{}
		}
		return printJSON(e.stdout, struct {
			Revision int64    `json:"revision"`
			Entries  []api.KV `json:"entries"`
		}{l.Revision, entries})
	}
	keys := l.Keys
	if len(keys) == 0 {
		for _, kv := range l.Entries {
			keys = append(keys, kv.Key)
		}
	}
	for _, k := range keys {
		if _, err := fmt.Fprintln(e.stdout, k); err != nil {
			return err
		}
	}
	return nil
}

func (e *cliEnv) kvRemove(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "KEY")
	if err != nil {
		return err
	}
	recurse := c.Bool("recurse")
	if recurse && strings.Trim(a[0], "/") == "" {
		// The root, as kv ls / lists it: its recursive delete is refused, as the server refuses
		// it. It was judged as a key first, and refused for an empty segment.
		return api.Errorf(api.CodeInvalidKey, "refusing to delete the root recursively: name a prefix")
	}
	if recurse {
		// A prefix, written as kv ls takes it (shared/x/).
		if a[0], err = checkPathPrefix(a[0]); err != nil {
			return err
		}
	} else if err := checkPathKey(a[0]); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	d, err := s.client.Delete(s.ctx, a[0], recurse)
	if err != nil {
		if !recurse {
			return withPrefixHint(s, a[0], err, "shoelace kv rm "+a[0]+" --recurse deletes")
		}
		return err
	}
	if s.json {
		return printJSON(e.stdout, d)
	}
	if recurse {
		fmt.Fprintf(e.stderr, "deleted %s\n", counted(int(d.Deleted), "key"))
	}
	return printRevision(e.stdout, false, d.Revision)
}

// withPrefixHint adds to err, when it says that key is not found and key is the prefix of other
// keys (a "directory", as kv get appliances/web names one), how many and the command that
// reaches them (cmd lists, cmd deletes…): it said only that the key was not found.
func withPrefixHint(s *session, key string, err error, cmd string) error {
	if !errors.Is(err, api.ErrNotFound) {
		return err
	}
	l, _, lerr := s.client.List(s.ctx, key, true)
	if lerr != nil || len(l.Keys) == 0 {
		return err
	}
	them := "them"
	if len(l.Keys) == 1 {
		them = "it"
	}
	return fmt.Errorf("%w; it is the prefix of %s: %s %s", err, counted(len(l.Keys), "key"), cmd, them)
}

// kvHistory prints a key's past values and the releases that changed it.
func (e *cliEnv) kvHistory(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "KEY")
	if err != nil {
		return err
	}
	if err := checkPathKey(a[0]); err != nil {
		return err
	}
	if err := historyLimit(c); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	h, err := s.client.KeyHistory(s.ctx, a[0], c.Int("limit"))
	if err != nil {
		return err
	}
	if len(h.Versions) == 0 && len(h.Releases) == 0 {
		// Nothing kept of the key: exit 3, as kv get of a key that does not exist, so that a
		// script's mistyped key is not read as one that never changed.
		return &exitCodeError{code: exitNotFound, err: fmt.Errorf("no version or release of %s is kept (never written, or older than etcd's history and the releases kept)", a[0])}
	}
	mask := api.IsSecret(a[0]) && !c.Bool("show-secrets")
	if mask {
		for i := range h.Versions {
			h.Versions[i].Value = maskedSecret
		}
	}
	if s.json {
		return printJSON(e.stdout, h)
	}
	values := map[int64]string{}
	revs := []int64{}
	for _, v := range h.Versions {
		values[v.ModRevision] = quoteIfNeeded(v.Value)
		revs = append(revs, v.ModRevision)
	}
	rels := map[int64]api.Release{}
	for _, r := range h.Releases {
		rels[r.Revision] = r
		if _, ok := values[r.Revision]; !ok {
			revs = append(revs, r.Revision)
			values[r.Revision] = "?"
			if _, _, d := r.Counts(); d > 0 {
				values[r.Revision] = "(deleted)"
			}
			if r.Kind == api.KindRollout {
				// A rollout's start names the keys its candidate changes, and changes no live
				// key: the key kept its value (its promotion is a release of its own).
				values[r.Revision] = "(staged)"
			}
		}
	}
	slices.Sort(revs)
	slices.Reverse(revs)
	var b strings.Builder
	b.WriteString("REVISION\tTIME\tKIND\tTOKEN\tSOURCE\tVALUE\tMESSAGE\n")
	for _, rev := range revs {
		r, ok := rels[rev]
		when := "-"
		if ok {
			when = r.Time.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(&b, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", rev, when, orDash(r.Kind), orDash(r.Token), orDash(r.Source), values[rev], oneLine(r.Message))
	}
	if _, err := io.WriteString(e.stdout, b.String()); err != nil {
		return err
	}
	if h.Cut && len(h.Versions) > 0 {
		fmt.Fprintf(e.stderr, "values older than revision %d are left out: the versions shown hold the server's bound of 4 MiB of values; the releases show who changed the key\n", h.Versions[len(h.Versions)-1].ModRevision)
	}
	if h.Compacted && len(h.Versions) > 0 {
		fmt.Fprintf(e.stderr, "values older than revision %d are compacted from etcd's history; the releases show who changed the key\n", h.Versions[len(h.Versions)-1].ModRevision)
	}
	return nil
}

// historyLimit checks the --limit of a history command: 1 to 1000 releases a page.
func historyLimit(c *cli.Context) error {
	if l := c.Int("limit"); l < 1 || l > 1000 {
		return usagef("%s--limit must be from 1 to 1000", errPrefix(c))
	}
	return nil
}
