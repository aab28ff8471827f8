package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func applianceCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "appliance",
		Usage:     "list, read, apply, export, roll back and wait for appliances; set their schemas",
		UsageText: "shoelace appliance COMMAND NAME [arguments] [flags]",
		Description: `An appliance's view is shared/ overlaid by appliances/NAME/, addressed by paths relative
to those roots; the appliance's own value wins. Run "shoelace appliance COMMAND --help" for
each command's flags.

EXAMPLES:
   shoelace appliance ls
   shoelace appliance get web-frontend
   shoelace appliance apply web-frontend -f web-frontend.yaml
   shoelace appliance history web-frontend`,
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Usage:     "list the appliances the token may read",
				UsageText: "shoelace appliance ls [--output json]",
				Description: `Prints one appliance name per line: those whose view the token may read, or whose own
keys (appliances/NAME/) it may read or write (a write grant reads too) without a grant on shared/, as
the console lists them. With --output json, prints {"appliances":[…]}.

EXAMPLES:
   shoelace appliance ls
   shoelace appliance ls -o json | jq -r '.appliances[]'`,
				Action: e.applianceList,
			},
			{
				Name:      "get",
				Usage:     "print an appliance's view",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance get NAME [--output json] [--show-secrets]",
				Description: `Prints the view as sorted "path=value" lines. A value is printed as is unless it holds a
control character (such as a newline) or starts with a double quote: then it is printed as a
double-quoted string with Go/JSON escapes ("line 1\nline 2"). With --output json, prints
{"appliance","revision","keys":{…}}. The values of secret keys (a path segment "secrets") are
printed as "(secret)" unless --show-secrets is given, so that a view printed in a terminal or a
CI log does not leak them; "shoelace kv get KEY" prints one verbatim.

EXAMPLES:
   shoelace appliance get web-frontend
   shoelace appliance get web-frontend | grep '^system/ntp=' | cut -d= -f2-
   shoelace appliance get web-frontend -o json | jq -r '.keys["system/ntp"]'`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "show-secrets", Usage: "print the values of secret keys instead of (secret)"},
				},
				Action: e.applianceGet,
			},
			{
				Name:      "instances",
				Usage:     "list the agents of an appliance and the revision each has applied",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance instances NAME [--output json]",
				Description: `Prints a header line, then one line per agent that reported in the last 7 days, tab-separated:
INSTANCE (its X-Shoelace-Instance, by default its hostname), APPLIED (the last revision at
which all its templates were installed), LAST_SEEN (its last request, server time), REMOTE
(the address it came from), TOKEN (the token's name), ENROLLED (yes when it reports with an
instance token of its own) and LAST_ERROR (its pass's failure, "at revision N: …", or -). With
no agent yet, the header alone, and a note on stderr; exit 3 when the server holds nothing of
NAME (no key, release, instance, schema or rollout: a mistyped name). Needs a token that may
read the appliance's keys. With --output json, prints {"appliance","instances":[…]}.

EXAMPLES:
   rev=$(shoelace appliance apply web -f web.yaml | cut -d' ' -f2)
   shoelace appliance instances web -o json | jq --argjson r "$rev" '[.instances[] | select(.applied < $r) | .instance]'`,
				Action: e.applianceInstances,
			},
			{
				Name:      "forget",
				Usage:     "free an enrolled instance name at once: remove its record and revoke its instance token (admin only)",
				ArgsUsage: "NAME INSTANCE",
				UsageText: "shoelace appliance forget NAME INSTANCE",
				Description: `shoelace-agent run enrolls its instance once: its name is then held by its instance token,
and another enrollment of the name is refused while the instance was seen within the server's
--instance-stale (default 1h). forget removes the record of INSTANCE of appliance NAME and
revokes its instance token on every replica (its requests get 401, its long-polls end), so that
a replacement VM of the same name enrolls at once. An agent still running under the name falls
back to the appliance token and enrolls again. Prints the revision. Exit code 3 when the
instance has neither a record nor an instance token.

EXAMPLES:
   shoelace appliance forget web vm-17`,
				Action: e.applianceForget,
			},
			{
				Name:      "wait",
				Usage:     "wait until an appliance's agents have applied a revision (the end of a rollout)",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance wait NAME [--revision REV] [--min N] [--seen-within 10m] [--for 10m] [--interval 2s] [--output json]",
				Description: `Waits until every agent of NAME that is alive has applied REV or a later revision, and at
least --min of them (default 1) have. REV is what a write printed ("revision 42"). An agent
reports the revision it applied on each request for its view (see "shoelace appliance
instances"); it counts as alive when it reported within --seen-within of the newest report
(the server writes an unchanged report again only after a twelfth of its --instance-stale, five
minutes by default and at most, at the agent's next request for its view: a live agent with nothing new to
report may have been seen six minutes before the others, so keep --seen-within above that; a
VM that is gone drops out after it). Asks every --interval; the global --timeout bounds each
request; a server that is away or answers 503/429 is asked again until --for ends.
Prints "N agents applied revision REV" (with --output json {"appliance","revision","instances"})
and exits 0; after --for, exits 1 naming the agents still behind.
When the appliance's rollout started at or after REV (a write with --canary printed its
revision), or runs and --revision is left out, it waits for the rollout to end instead: exit 0
when it was promoted to every instance, exit 7 when it halted or was aborted, naming the
instance and its error. Exit 3 when the server holds nothing of NAME (no key, release,
instance, schema or rollout: a mistyped name). A REV that a snapshot restore lost (a write
after the snapshot, before the restore) exits 1 at once saying so: write it again.

EXAMPLES:
   rev=$(shoelace appliance apply web -f web.yaml | cut -d' ' -f2)
   shoelace appliance wait web --revision "$rev" --min 3 --for 5m`,
				Flags: []cli.Flag{
					&cli.Int64Flag{Name: "revision", DefaultText: "the running rollout", Usage: "the `REVISION` every agent must have applied (required unless a rollout runs)"},
					&cli.IntFlag{Name: "min", Value: 1, Usage: "at least `N` agents must have applied it"},
					&cli.DurationFlag{Name: "seen-within", Value: 10 * time.Minute, Usage: "agents that reported within this of the newest report count (above the six minutes an idle agent's report may be old)"},
					&cli.DurationFlag{Name: "for", Value: 10 * time.Minute, Usage: "give up after this long (exit 1)"},
					&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "how often to ask"},
				},
				Action: e.applianceWait,
			},
			rolloutCommand(e),
			{
				Name:      "apply",
				Usage:     "replace an appliance's own keys with a file's, in one transaction",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance apply NAME -f FILE|- [--cas REVISION | --dry-run]",
				Description: `Replaces every key under appliances/NAME/ with the keys of FILE, all or nothing. FILE is
JSON ({"keys":{"path":"value",…}}) or YAML (keys: with nested maps that flatten to a/b/c
paths; scalars keep their text, so port: 8080 is "8080"). YAML is recognized by a .yaml or
.yml name, otherwise by content (JSON starts with '{'). "-f -" reads stdin.
--cas R applies only if nothing under the appliance changed after revision R (exit code 4).
Prints the revision. An apply of exactly the keys the appliance holds writes nothing (no
revision, no release, no agent woken): it prints the revision of the last change of the
appliance's view, which appliance wait --revision takes as after a write, and stderr says so;
an apply that changes some keys puts only those (the others keep their version).
--dry-run writes nothing: it prints what the apply would do to the appliance as it is now, one
key per line as "appliance diff" does ("+ key=value" created, "~ key=value (was old)" changed,
"- key=old" deleted; secret values as (secret)),
and on stderr a summary with the revision it read, to give as --cas to the apply itself so that
it applies only onto the state that was reviewed. It starts no rollout: review without --canary,
then apply with it (the rollout's change is the one reviewed).

EXAMPLES:
   shoelace appliance apply web-frontend -f web-frontend.yaml
   shoelace appliance export web-frontend | shoelace appliance apply web-staging -f -
   shoelace appliance apply web-frontend -f web-frontend.yaml --dry-run   # review, then:
   shoelace appliance apply web-frontend -f web-frontend.yaml --cas 42`,
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "`FILE` with the keys (- for stdin)"},
					&cli.Int64Flag{Name: "cas", DefaultText: "unconditional", Usage: "apply only if the appliance is unchanged since `REVISION`"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print what the apply would put, change and delete; write nothing"},
				}, rolloutFlags()...),
				Action: e.applianceApply,
			},
			{
				Name:      "rollback",
				Usage:     "set an appliance's own keys back to what they were at a past revision",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance rollback NAME --to REVISION|previous [-m MESSAGE]",
				Description: `Reads the keys under appliances/NAME/ as they were at REVISION and applies them, all or
nothing: keys added since are deleted, changed ones restored. The apply is guarded: if the
appliance changes between the read and the write, nothing is written (exit 4). Secrets are
restored too, and never printed. Prints the revision. A rollback to the keys the appliance
holds already writes nothing (no revision, no release, no agent woken): it prints the revision
of the last change of the appliance's view, and stderr says so.
--to previous undoes the appliance's last release (see "shoelace appliance history"): it
restores the state just before it.
The keys at REVISION come from the store's history while it has them (1 h for the embedded
etcd; an external cluster's --auto-compaction-retention), then from the copy of the appliance
that each apply and rollback keeps with its release (--release-retention, --release-max-age);
after a snapshot restore, the snapshot's revision also from the restored store's first revision
while etcd keeps it, which holds the snapshot's keys (an appliance written with kv put has no copy).
A revision none of them gives is refused, naming the oldest revision that can be restored; so is one
whose copy left out secret values (a server without --secrets-key-file), and one that a
snapshot restore lost (after the snapshot, before the restore), naming the revisions it lost.
The rollback is itself a release, of kind rollback, whose message names the revision restored,
then -m, then (with --to previous) the release undone: "rollback of web-frontend to revision
41: bad TLS settings (undo release 42 (apply))".

EXAMPLES:
   shoelace appliance rollback web-frontend --to 42 -m "bad TLS settings"
   shoelace appliance rollback web-frontend --to previous
   rev=$(shoelace appliance apply web -f web.yaml | cut -d' ' -f2); shoelace appliance rollback web --to $((rev-1))`,
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "to", Usage: "the `REVISION` whose keys to restore, or previous (required)"},
				}, rolloutFlags()...),
				Action: e.applianceRollback,
			},
			{
				Name:      "history",
				Usage:     "list the releases that changed an appliance, newest first",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance history NAME [--limit 50] [--before REVISION] [--include-shared] [--output json]",
				Description: `Prints a header line, then one line per release (write) that changed the appliance's own
keys, newest first, tab-separated: REVISION, TIME (server time, UTC), KIND (apply, rollback,
put, delete, txn, import; rollout for a staged rollout's start, which changes no live key:
its promotion is a release of its own), TOKEN (who), SOURCE (--source of the write), CHANGES
(+created ~changed -deleted key counts) and MESSAGE (-m of the write). --include-shared adds the
releases that changed shared/. Releases are kept for the last --release-retention writes of each
appliance and at most
--release-max-age, long after etcd compacted their revisions; "shoelace appliance rollback
NAME --to REVISION" restores the state a release left. With more releases than --limit, the
last line on stderr gives the --before of the next page. With --output json, prints
{"revision","releases":[…],"next"} (key names per release, never values). Exit 3 when the
server holds nothing of NAME (no key, release, instance, schema or rollout: a mistyped name).

EXAMPLES:
   shoelace appliance history web-frontend
   shoelace appliance history web-frontend -o json | jq -r '.releases[] | select(.source == "deploy-web") | .revision'`,
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 50, Usage: "releases per page (1 to 1000)"},
					&cli.Int64Flag{Name: "before", DefaultText: "the newest first", Usage: "list releases older than `REVISION` (the next page)"},
					&cli.BoolFlag{Name: "include-shared", Usage: "also list the releases that changed shared/"},
				},
				Action: e.applianceHistory,
			},
			{
				Name:      "diff",
				Usage:     "print what changed in an appliance's own keys between two revisions",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance diff NAME --from REVISION [--to REVISION] [--show-secrets] [--output json]",
				Description: `Compares the keys under appliances/NAME/ at --from with those at --to (default: now), one key
per line: "+ key=value" added, "~ key=value (was old)" changed, "- key=value" removed. The
keys at a revision come from the store's history, or once compacted from the release copies
(see "shoelace appliance rollback"). The values of secret keys are printed as "(secret)" unless
--show-secrets is given (with an admin token). With --output json, prints {"appliance","from","to","added","changed",
"removed"}. Exit 3 when the server holds nothing of NAME (a mistyped name).

EXAMPLES:
   shoelace appliance diff web-frontend --from 42
   shoelace appliance diff web-frontend --from 42 --to 57 -o json | jq '.changed'`,
				Flags: []cli.Flag{
					requiredInt64Flag{&cli.Int64Flag{Name: "from", Usage: "the older `REVISION` (required)"}},
					&cli.Int64Flag{Name: "to", DefaultText: "now", Usage: "the newer `REVISION`"},
					&cli.BoolFlag{Name: "show-secrets", Usage: "print the values of secret keys instead of (secret)"},
				},
				Action: e.applianceDiff,
			},
			{
				Name:      "export",
				Usage:     "print an appliance's own keys in the format apply accepts",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance export NAME [--format json|yaml] [--include-secrets]",
				Description: `Prints the keys under appliances/NAME/ (not shared/) as {"keys":{…}} JSON, or YAML with
--format yaml, which "appliance apply" accepts back. Secret keys (a path segment "secrets")
are left out unless --include-secrets is given; stderr lists what was left out or included.
Note that applying an export made without its secrets removes them from the appliance.

EXAMPLES:
   shoelace appliance export web-frontend > web-frontend.json
   shoelace appliance export web-frontend --format yaml --include-secrets > backup.yaml`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "format", Value: "json", Usage: "json or yaml"},
					&cli.BoolFlag{Name: "include-secrets", Usage: "include the values of secret keys (admin token)"},
				},
				Action: e.applianceExport,
			},
			applianceSchemaCommand(e),
		},
	}
}

func (e *cliEnv) applianceList(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	names, err := s.client.Appliances(s.ctx)
	if err != nil {
		return err
	}
	if s.json {
		if names == nil {
			names = []string{}
		}
		return printJSON(e.stdout, api.Appliances{Appliances: names})
	}
	for _, n := range names {
		if _, err := fmt.Fprintln(e.stdout, n); err != nil {
			return err
		}
	}
	return nil
}

func applianceName(c *cli.Context) (string, error) {
	a, err := wantArgs(c, 1, 1, "NAME")
	if err != nil {
		return "", err
	}
	if err := api.ValidateSegment("appliance name", a[0]); err != nil {
		return "", err
	}
	return a[0], nil
}

// connectAppliance reads the command's NAME argument and connects: the start of every
// command that acts on one appliance and has nothing else to check first.
func (e *cliEnv) connectAppliance(c *cli.Context) (string, *session, error) {
	name, err := applianceName(c)
	if err != nil {
		return "", nil, err
	}
	s, err := e.connect(c)
	return name, s, err
}

func (e *cliEnv) applianceGet(c *cli.Context) error {
	name, s, err := e.connectAppliance(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	v, _, err := s.client.View(s.ctx, name)
	if err != nil {
		return err
	}
	if !c.Bool("show-secrets") {
		masked := 0
		for k := range v.Keys {
			if api.IsSecret(api.ApplianceRoot(name) + "/" + k) { // every key of an appliance named secrets is
				v.Keys[k] = maskedSecret
				masked++
			}
		}
		if masked > 0 {
			fmt.Fprintf(e.stderr, "%s masked (use --show-secrets to print them)\n", counted(masked, "secret value"))
		}
	}
	if s.json {
		if v.Keys == nil {
			v.Keys = map[string]string{}
		}
		return printJSON(e.stdout, v)
	}
	_, err = io.WriteString(e.stdout, formatPairs(v.Keys))
	return err
}

func (e *cliEnv) applianceInstances(c *cli.Context) error {
	name, s, err := e.connectAppliance(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	l, _, err := s.client.Instances(s.ctx, name)
	if err != nil {
		return err
	}
	if s.json {
		if l.Instances == nil {
			l.Instances = []api.Instance{}
		}
		return printJSON(e.stdout, l)
	}
	// Tab-separated columns under one header line (tail -n +2 drops it; -o json for scripts).
	var b strings.Builder
	b.WriteString("INSTANCE\tAPPLIED\tLAST_SEEN\tREMOTE\tTOKEN\tENROLLED\tLAST_ERROR\n")
	if len(l.Instances) == 0 {
		fmt.Fprintf(e.stderr, "no agent of %s has reported yet (agents report on every long-poll, with X-Shoelace-Instance)\n", name)
	}
	for _, in := range l.Instances {
		enrolled, lastErr := "no", "-"
		if in.Enrolled {
			enrolled = "yes"
		}
		if in.Error != "" {
			lastErr = fmt.Sprintf("at revision %d: %s", in.ErrorRevision, oneLine(in.Error))
		}
		fmt.Fprintf(&b, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", in.Instance, in.Applied, in.LastSeen.Format(time.RFC3339Nano), in.Remote, in.Token, enrolled, lastErr)
	}
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

func (e *cliEnv) applianceForget(c *cli.Context) error {
	a, err := wantArgs(c, 2, 2, "NAME INSTANCE")
	if err != nil {
		return err
	}
	if err := api.ValidateSegment("appliance name", a[0]); err != nil {
		return err
	}
	if err := api.ValidateSegment("instance name", a[1]); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	rev, err := s.client.ForgetInstance(s.ctx, a[0], a[1])
	if err != nil {
		return err
	}
	return printRevision(e.stdout, s.json, rev)
}

// formatPairs renders keys as sorted "path=value" lines; a value with a control character or
// a leading double quote is written as a quoted string, so that every entry is one line.
func formatPairs(keys map[string]string) string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(quoteIfNeeded(keys[k]))
		b.WriteByte('\n')
	}
	return b.String()
}

func quoteIfNeeded(v string) string {
	if strings.HasPrefix(v, `"`) {
		return strconv.Quote(v)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u0085' {
			return strconv.Quote(v)
		}
	}
	return v
}

func (e *cliEnv) applianceApply(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	if err := checkRolloutFlags(c); err != nil {
		return err
	}
	cas, err := casFlag(c)
	if err != nil {
		return err
	}
	body, file, err := e.readFileFlag(c, "apply "+name)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("apply %s: %s is empty (to remove every key: shoelace kv rm %s --recurse)", name, file, api.ApplianceRoot(name))
	}
	if c.Bool("dry-run") && c.IsSet("cas") {
		return usagef("%s--dry-run reads the appliance as it is and prints the revision to give as --cas to the apply itself: give one of them", errPrefix(c))
	}
	if c.Bool("dry-run") && c.String("canary") != "" {
		return usagef("%s--dry-run starts no rollout: it prints what the apply would change in the live keys, which --canary leaves as they are until its rollout is promoted; run the dry run without --canary and its rollout flags (its changes are the rollout's), then apply with them", errPrefix(c))
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if c.Bool("dry-run") {
		p, err := s.client.PlanApply(s.ctx, name, body, contentTypeOf(file, body))
		if err != nil {
			return err
		}
		return e.printPlan(s.json, name, p)
	}
	res, err := s.client.ApplyResult(s.ctx, name, body, contentTypeOf(file, body), cas)
	if err != nil {
		return err
	}
	if c.String("canary") != "" && !res.Unchanged {
		return e.printRolloutStarted(s, name, res.Revision)
	}
	if res.Unchanged {
		return e.printUnchanged(s, res, "appliance "+name+" already holds exactly these keys", noRollout(c))
	}
	if s.json {
		return printJSON(e.stdout, res)
	}
	return printRevision(e.stdout, false, res.Revision)
}

// changeLine writes one key of a plan or a diff as the dry runs and appliance diff print it:
// mark '+' "+ KEY=value" (created), '~' "~ KEY=value (was was)" (changed), '-' "- KEY=value"
// (deleted: value is the old one). Values come rendered (quoted, masked).
func changeLine(b *strings.Builder, mark byte, key, value, was string) {
	if mark == '~' {
		fmt.Fprintf(b, "~ %s=%s (was %s)\n", key, value, was)
		return
	}
	fmt.Fprintf(b, "%c %s=%s\n", mark, key, value)
}

// printPlan prints an apply's dry run: the plan as JSON, or one line per key it would touch,
// in the format of appliance diff ("+ key=new", "~ key=new (was old)", "- key=old"; secret
// values masked), and a summary on stderr.
func (e *cliEnv) printPlan(asJSON bool, name string, p api.ApplyPlan) error {
	if asJSON {
		return printJSON(e.stdout, p)
	}
	var b strings.Builder
	for _, k := range p.Put {
		changeLine(&b, '+', k, quoteIfNeeded(p.New[k]), "")
	}
	for _, k := range p.Changed {
		changeLine(&b, '~', k, quoteIfNeeded(p.New[k]), quoteIfNeeded(p.Old[k]))
	}
	for _, k := range p.Deleted {
		changeLine(&b, '-', k, quoteIfNeeded(p.Old[k]), "")
	}
	if _, err := io.WriteString(e.stdout, b.String()); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "dry run of appliance %s at revision %d: would create %d, change %d, delete %d, leave %d as they are; nothing written (apply with --cas %d to apply only onto this state)\n",
		name, p.Revision, len(p.Put), len(p.Changed), len(p.Deleted), p.Unchanged, p.Revision)
	return nil
}

// contentTypeOf returns the content type of an apply body: YAML for a .yaml or .yml file,
// JSON for a .json file, otherwise JSON when the content starts with '{' and YAML if not.
func contentTypeOf(file string, body []byte) string {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".yaml", ".yml":
		return api.ContentTypeYAML
	case ".json":
		return "application/json"
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	trimmed = bytes.TrimPrefix(trimmed, []byte("\ufeff"))
	if len(trimmed) > 0 && trimmed[0] == '{' {
		// YAML's flow style starts with '{' too ({keys: {app: {port: 8080}}}): send it as
		// YAML when it is not JSON and is YAML, else as JSON, whose errors fit JSON.
		var doc any
		if !json.Valid(trimmed) && yaml.Unmarshal(trimmed, &doc) == nil {
			return api.ContentTypeYAML
		}
		return "application/json"
	}
	return api.ContentTypeYAML
}

func (e *cliEnv) applianceExport(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	format := c.String("format")
	if format != "json" && format != "yaml" {
		return usagef("--format %q: must be json or yaml", format)
	}
	if format == "yaml" && (e.onCommandLine[flagOutput] || e.onCommandLine["o"]) && c.String(flagOutput) == "json" {
		// Not from SHOELACE_OUTPUT, which a pipeline sets for all its commands: this command's
		// --format is the word for this one.
		return usagef("%s--format yaml and --output json ask for two formats: the export's is set by --format (json or yaml); drop --output json, or give --format json (see %s --help)", errPrefix(c), commandName(c))
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if c.Bool("include-secrets") {
		if err := requireAdmin(s, "appliance export --include-secrets"); err != nil {
			return err
		}
	}
	root := api.ApplianceRoot(name)
	l, _, err := s.client.List(s.ctx, root, false)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return err
	}
	keys, secrets := exportKeys(root, l.Entries, c.Bool("include-secrets"))
	if len(keys) == 0 && len(secrets.left) == 0 {
		return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("appliance %q has no keys of its own", name)}
	}
	if len(secrets.left) > 0 {
		fmt.Fprintf(e.stderr, "left out %s (use --include-secrets; applying this export removes them): %s\n",
			counted(len(secrets.left), "secret key"), strings.Join(secrets.left, ", "))
	}
	if len(secrets.included) > 0 {
		fmt.Fprintf(e.stderr, "included %s: %s\n", counted(len(secrets.included), "secret key"), strings.Join(secrets.included, ", "))
	}
	out, err := encodeExport(keys, format)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(out)
	return err
}

type secretReport struct{ left, included []string }

// exportKeys turns the entries under root into apply's keys (paths relative to root),
// leaving secret keys out unless includeSecrets.
func exportKeys(root string, entries []api.KV, includeSecrets bool) (map[string]string, secretReport) {
	keys := map[string]string{}
	var rep secretReport
	for _, kv := range entries {
		rel, ok := strings.CutPrefix(kv.Key, root+"/")
		if !ok || rel == "" {
			continue
		}
		if api.IsSecret(kv.Key) {
			if !includeSecrets {
				rep.left = append(rep.left, rel)
				continue
			}
			rep.included = append(rep.included, rel)
		}
		keys[rel] = kv.Value
	}
	sort.Strings(rep.left)
	sort.Strings(rep.included)
	return keys, rep
}

// encodeExport renders keys as apply's body: indented JSON, or YAML with flat quoted-as-needed keys.
func encodeExport(keys map[string]string, format string) ([]byte, error) {
	if format == "yaml" {
		out, err := encodeYAML(api.Apply{Keys: keys})
		if err != nil || readsBack(out, keys) {
			return out, err
		}
		m := &yaml.Node{Kind: yaml.MappingNode}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			m.Content = append(m.Content, yamlString(k), yamlString(keys[k]))
		}
		return encodeYAML(&yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: "keys"}, m}})
	}
	var buf bytes.Buffer
	enc := jsonEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(api.Apply{Keys: keys}); err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	return buf.Bytes(), nil
}

// encodeYAML writes v as the export prints it.
func encodeYAML(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// readsBack reports whether the apply body out holds keys exactly, as the server reads it.
func readsBack(out []byte, keys map[string]string) bool {
	var back api.Apply
	return yaml.Unmarshal(out, &back) == nil && maps.Equal(back.Keys, keys)
}

// yamlString is s as a YAML string node: in the style yaml.v3 picks for it (plain, quoted, a
// literal block) when yaml.v3 reads that back as s, else double-quoted. yaml.v3 writes a
// string that starts with a newline, or whose first line starts with a tab, as a literal block
// that it reads back without the leading newlines, or not at all (a tab where it expects
// indentation).
func yamlString(s string) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(s); err == nil {
		n.Tag = "!!str" // "<<" is a merge key's tag otherwise
		if out, err := encodeYAML(map[string]*yaml.Node{"keys": {Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: "k"}, &n}}}); err == nil && readsBack(out, map[string]string{"k": s}) {
			return &n
		}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func (e *cliEnv) applianceRollback(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	if err := checkRolloutFlags(c); err != nil {
		return err
	}
	arg := c.String("to")
	to, perr := strconv.ParseInt(arg, 10, 64)
	switch {
	case arg == "":
		return usagef("%s--to REVISION is required (a positive revision, or previous)", errPrefix(c))
	case arg != "previous" && (perr != nil || to <= 0):
		return usagef("%s--to %q is not a revision: give a positive revision, or previous", errPrefix(c), arg)
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	note := ""
	if arg == "previous" {
		// The newest release that changed the live keys: a rollout's start changed nothing
		// live (its promotion is a release of its own), and rollouts that halted or were
		// aborted may be all a page holds.
		var last *api.Release
		for before := int64(0); last == nil; {
			h, err := s.client.ApplianceReleases(s.ctx, name, 1000, before, false)
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(h.Releases, func(r api.Release) bool { return r.Kind != api.KindRollout }); i >= 0 {
				last = &h.Releases[i]
			} else if h.Next == 0 || h.Next >= before && before != 0 {
				return fmt.Errorf("rollback %s: it has no release to undo (see shoelace appliance history %s)", name, name)
			} else {
				before = h.Next
			}
		}
		to = last.Revision - 1
		note = fmt.Sprintf("undo release %d (%s", last.Revision, last.Kind)
		if last.Message != "" {
			note += ": " + last.Message
		}
		note += ")"
	}
	res, n, err := s.client.Rollback(s.ctx, name, to, note)
	if errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("rollback %s: the appliance changed while rolling back; nothing was written (run it again): %w", name, err)
	}
	if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeCompacted {
		// A revision compacted with no copy kept, or lost by a restore.
		return fmt.Errorf("rollback %s: %w; nothing was written", name, err)
	}
	if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeInvalidRequest {
		// A --to ahead of the store, as a rule: say which command and where to find revisions.
		return fmt.Errorf("rollback %s: %w; nothing was written (shoelace appliance history %s lists its revisions)", name, err, name)
	}
	if err != nil {
		return err
	}
	if c.String("canary") != "" && !res.Unchanged {
		fmt.Fprintf(e.stderr, "rolling %s back to its %d keys at revision %d, as a staged rollout\n", name, n, to)
		return e.printRolloutStarted(s, name, res.Revision)
	}
	if res.Unchanged {
		return e.printUnchanged(s, res, fmt.Sprintf("appliance %s already holds exactly its %d keys of revision %d", name, n, to), noRollout(c))
	}
	fmt.Fprintf(e.stderr, "rolled %s back to its %d keys at revision %d\n", name, n, to)
	return printRevision(e.stdout, s.json, res.Revision)
}

// applianceDiff is the body of `appliance diff -o json`.
type applianceDiff struct {
	Appliance string                       `json:"appliance"`
	From      int64                        `json:"from"`
	To        int64                        `json:"to"`
	Added     map[string]string            `json:"added"`
	Changed   map[string]map[string]string `json:"changed"`
	Removed   map[string]string            `json:"removed"`
}

// applianceDiff prints what changed in an appliance's own keys between two revisions.
func (e *cliEnv) applianceDiff(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	from, to := c.Int64("from"), c.Int64("to")
	switch {
	case !c.IsSet("from"):
		return usagef("%s--from REVISION is required", errPrefix(c))
	case from <= 0:
		return usagef("%s--from %d: a revision is 1 or more", errPrefix(c), from)
	case c.IsSet("to") && to <= from:
		return usagef("%s--to %d must be after --from %d", errPrefix(c), to, from)
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if c.Bool("show-secrets") {
		// A diff is pasted into tickets and CI logs: secret values only to an admin who asks.
		if err := requireAdmin(s, "appliance diff --show-secrets"); err != nil {
			return err
		}
	}
	known := false // the appliance exists: it had keys at a revision, or has releases
	at := func(rev int64) (map[string]string, int64, error) {
		keys, m, err := s.client.ApplianceAt(s.ctx, name, rev)
		if errors.Is(err, api.ErrNotFound) {
			if !known {
				// No keys then, or no such appliance (a mistyped name): its history says which.
				if _, err := s.client.ApplianceReleases(s.ctx, name, 1, 0, false); err != nil {
					return nil, 0, err
				}
				known = true
			}
			return map[string]string{}, m.Index, nil // no keys then
		}
		known = known || err == nil
		return keys, m.Index, err
	}
	old, now, err := at(from)
	if err != nil {
		return err
	}
	if !c.IsSet("to") {
		to = now
	}
	cur, _, err := at(to)
	if err != nil {
		return err
	}
	show := func(k, v string) string {
		if api.IsSecret(api.ApplianceRoot(name)+"/"+k) && !c.Bool("show-secrets") {
			return maskedSecret
		}
		return v
	}
	d := applianceDiff{Appliance: name, From: from, To: to, Added: map[string]string{}, Changed: map[string]map[string]string{}, Removed: map[string]string{}}
	for k, v := range cur {
		switch o, ok := old[k]; {
		case !ok:
			d.Added[k] = show(k, v)
		case o != v:
			d.Changed[k] = map[string]string{"from": show(k, o), "to": show(k, v)}
		}
	}
	for k, v := range old {
		if _, ok := cur[k]; !ok {
			d.Removed[k] = show(k, v)
		}
	}
	if s.json {
		return printJSON(e.stdout, d)
	}
	keys := make([]string, 0, len(old)+len(cur))
	for k := range d.Added {
		keys = append(keys, k)
	}
	for k := range d.Changed {
		keys = append(keys, k)
	}
	for k := range d.Removed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if v, ok := d.Added[k]; ok {
			changeLine(&b, '+', k, quoteIfNeeded(v), "")
		} else if ch, ok := d.Changed[k]; ok {
			changeLine(&b, '~', k, quoteIfNeeded(ch["to"]), quoteIfNeeded(ch["from"]))
		} else {
			changeLine(&b, '-', k, quoteIfNeeded(d.Removed[k]), "")
		}
	}
	fmt.Fprintf(e.stderr, "%s from revision %d to %d: %d added, %d changed, %d removed\n", name, from, to, len(d.Added), len(d.Changed), len(d.Removed))
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

// applianceHistory prints the releases that changed an appliance.
func (e *cliEnv) applianceHistory(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	if err := historyLimit(c); err != nil {
		return err
	}
	if before := c.Int64("before"); c.IsSet("before") && before < 1 {
		return usagef("%s--before %d: a revision is 1 or more", errPrefix(c), before)
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	h, err := s.client.ApplianceReleases(s.ctx, name, c.Int("limit"), c.Int64("before"), c.Bool("include-shared"))
	if err != nil {
		return err
	}
	if s.json {
		return printJSON(e.stdout, h)
	}
	if len(h.Releases) == 0 {
		if before := c.Int64("before"); before > 0 {
			fmt.Fprintf(e.stderr, "no release of %s older than revision %d is kept\n", name, before)
		} else {
			fmt.Fprintf(e.stderr, "no release of %s is kept\n", name)
		}
		return nil
	}
	var b strings.Builder
	b.WriteString("REVISION\tTIME\tKIND\tTOKEN\tSOURCE\tCHANGES\tMESSAGE\n")
	for _, r := range h.Releases {
		cr, ch, de := r.Counts()
		fmt.Fprintf(&b, "%d\t%s\t%s\t%s\t%s\t+%d ~%d -%d\t%s\n", r.Revision, r.Time.UTC().Format(time.RFC3339), r.Kind,
			orDash(r.Token), orDash(r.Source), cr, ch, de, oneLine(r.Message))
	}
	if _, err := io.WriteString(e.stdout, b.String()); err != nil {
		return err
	}
	if h.Next > 0 {
		fmt.Fprintf(e.stderr, "more releases: --before %d\n", h.Next)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s)
}

// oneLine keeps a free text on its line and column, and the terminal's state: tabs, line breaks
// and other control characters (escape sequences) become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
}

// maskedSecret stands for a secret's value where it is not asked for.
const maskedSecret = api.MaskedSecret

// applianceWait waits until the alive agents of an appliance have applied a revision.
func (e *cliEnv) applianceWait(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	rev, min := c.Int64("revision"), c.Int("min")
	seen, wait, every := c.Duration("seen-within"), c.Duration("for"), c.Duration("interval")
	switch {
	case rev < 0 || (rev == 0 && c.IsSet("revision")):
		return usagef("%s--revision REV must be the revision a write printed (revision 42)", errPrefix(c))
	case min < 1:
		return usagef("%s--min must be at least 1", errPrefix(c))
	}
	for _, f := range []string{"seen-within", "for", "interval"} {
		if d := c.Duration(f); d <= 0 {
			return usagef("%s--%s %s: must be more than 0", errPrefix(c), f, d)
		}
	}
	s, err := e.connectWith(c.Context, c, true)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	ask := c.Duration(flagTimeout)
	asked := rev // the revision the list of instances is asked for (0 of a server that takes none)
	if rev > 0 {
		// A revision a restore lost: the rollouts and reports after the restore are past it,
		// and none of them is its write.
		actx, cancel := askCtx(c.Context, ask)
		_, _, err := s.client.InstancesFor(actx, name, rev)
		cancel()
		ae := (*api.Error)(nil)
		switch {
		case errors.As(err, &ae) && ae.Code == api.CodeCompacted:
			return fmt.Errorf("appliance wait %s: %w", name, err)
		case ae != nil && ae.Code == api.CodeInvalidRequest && strings.HasPrefix(ae.Message, "unknown query parameter") && strings.Contains(ae.Message, "revision"):
			asked = 0 // a server of an older version, which records no restore
		}
	}
	// A write with --canary printed the revision of its rollout: follow the rollout to its end.
	if followed, err := e.waitRollout(c.Context, s, name, rev, every, ask, deadline); followed || err != nil {
		return err
	}
	if rev == 0 {
		actx, cancel := askCtx(c.Context, ask)
		defer cancel()
		if _, _, err := s.client.Instances(actx, name); errors.Is(err, api.ErrNotFound) {
			return err // a mistyped name: no --revision would help
		}
		return usagef("%s--revision REV is required when no rollout of %s runs: the revision a write printed (revision 42)", errPrefix(c), name)
	}
	failing := false
	said := time.Now() // when the last progress line was printed: the first comes after waitProgressEvery
	for {
		ctx, cancel := askCtx(c.Context, ask)
		l, storeRev, err := s.client.InstancesFor(ctx, name, asked)
		cancel()
		if err == nil && storeRev > 0 && rev > storeRev {
			// No agent can ever report it: waiting would only run out the clock.
			return fmt.Errorf("appliance wait %s: revision %d is ahead of the store (at revision %d): give the revision a write printed", name, rev, storeRev)
		}
		if err != nil && exitCode(err) != exitUnavailable {
			return err
		}
		if err != nil {
			// A replica restarting, a 503 or 429, a request timing out: a rollout gate waits on.
			if !time.Now().Before(deadline) {
				return fmt.Errorf("appliance wait %s: after %s the server still fails: %w", name, wait, err)
			}
			if !failing {
				fmt.Fprintf(e.stderr, "appliance wait %s: %v; asking again until %s\n", name, err, deadline.Format(time.TimeOnly))
				failing = true
			}
			if err := pauseUntil(c.Context, every, deadline); err != nil {
				return err
			}
			continue
		}
		failing = false
		alive, behind := rolloutState(l.Instances, rev, seen)
		if len(behind) == 0 && len(alive) >= min {
			if s.json {
				return printJSON(e.stdout, struct {
					Appliance string         `json:"appliance"`
					Revision  int64          `json:"revision"`
					Instances []api.Instance `json:"instances"`
				}{name, rev, alive})
			}
			_, err := fmt.Fprintf(e.stdout, "%s applied revision %d\n", counted(len(alive), "agent"), rev)
			return err
		}
		if now := time.Now(); now.Sub(said) >= waitProgressEvery && now.Add(every).Before(deadline) {
			fmt.Fprintf(e.stderr, "appliance wait %s: %s\n", name, waitProgress(alive, behind, rev, min))
			said = now
		}
		if !time.Now().Before(deadline) {
			if len(behind) == 0 {
				return fmt.Errorf("appliance wait %s: after %s, %s seen within %s of the newest report, want at least %d", name, wait, counted(len(alive), "agent"), seen, min)
			}
			lag := make([]string, 0, len(behind))
			for _, in := range behind {
				lag = append(lag, fmt.Sprintf("%s (applied %d)", in.Instance, in.Applied))
			}
			have := "have"
			if len(behind) == 1 {
				have = "has"
			}
			return fmt.Errorf("appliance wait %s: after %s, %d of %s %s not applied revision %d: %s", name, wait, len(behind), counted(len(alive), "agent"), have, rev, strings.Join(lag, ", "))
		}
		if err := pauseUntil(c.Context, every, deadline); err != nil {
			return err
		}
	}
}

// pauseUntil waits every, or until deadline when that comes first, so that appliance wait
// asks a last time when its --for ends (an --interval as long as --for included); the
// error of ctx when it ends first.
func pauseUntil(ctx context.Context, every time.Duration, deadline time.Time) error {
	t := time.NewTimer(min(every, time.Until(deadline)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitProgressEvery spaces appliance wait's progress lines on stderr.
const waitProgressEvery = 5 * time.Second

// waitProgress is one progress line of appliance wait: how many applied, and who is behind.
func waitProgress(alive, behind []api.Instance, rev int64, min int) string {
	line := fmt.Sprintf("%d of %s applied revision %d", len(alive)-len(behind), counted(len(alive), "agent"), rev)
	if len(alive) < min {
		line += fmt.Sprintf(" (want at least %d)", min)
	}
	if len(behind) > 0 {
		const most = 5
		names := make([]string, 0, most)
		for i, in := range behind {
			if i == most {
				names = append(names, fmt.Sprintf("and %d more", len(behind)-most))
				break
			}
			names = append(names, fmt.Sprintf("%s (applied %d)", in.Instance, in.Applied))
		}
		line += "; behind: " + strings.Join(names, ", ")
	}
	return line + "; waiting"
}

// rolloutState splits the instances that reported within seen of the newest report (alive;
// the server's clock on both sides) and returns them, and those of them below rev (behind).
func rolloutState(all []api.Instance, rev int64, seen time.Duration) (alive, behind []api.Instance) {
	var newest time.Time
	for _, in := range all {
		if in.LastSeen.After(newest) {
			newest = in.LastSeen
		}
	}
	for _, in := range all {
		if newest.Sub(in.LastSeen) > seen {
			continue
		}
		alive = append(alive, in)
		if in.Applied < rev {
			behind = append(behind, in)
		}
	}
	return alive, behind
}

// noRollout is what an unchanged apply's note adds when it was sent with --canary: the server
// starts no rollout of the tree the appliance already holds.
func noRollout(c *cli.Context) string {
	if c.String("canary") != "" {
		return ", no rollout started"
	}
	return ""
}
