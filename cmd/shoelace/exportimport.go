package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// dump is the format of "shoelace export" and "shoelace import": every user key by its full
// path, and the secret keys the export left out. Only Keys and Omitted matter to import; the
// other fields say where and when the export was read.
type dump struct {
	// Revision is the store revision the export was read at.
	Revision int64 `json:"revision,omitempty"`
	// Store is the id of the store it was read from (X-Shoelace-Store).
	Store string `json:"store,omitempty"`
	// Exported is when it was read, RFC 3339 in UTC.
	Exported string `json:"exported,omitempty"`
	// Omitted lists the secret keys the export left out (no --include-secrets): a file with
	// omitted keys is partial, and import never treats it as a whole copy.
	Omitted []string `json:"omitted"`
	// Scoped is set when the export was made with a token that is not an admin token: Keys
	// hold only what that token could read, so a key missing from them may be a key it could
	// not see, and import --replace, which deletes what the file lacks, refuses the file.
	Scoped bool `json:"scoped,omitempty"`
	// Keys maps every exported key to its value, byte for byte.
	Keys keyMap `json:"keys"`
}

// checkDumpMemberNames refuses a top-level member of an export whose name is a field's in
// another case, which encoding/json would take for that field. Malformed JSON is left to the
// decoder.
func checkDumpMemberNames(data []byte) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil
	}
	fields := []string{"revision", "store", "exported", "omitted", "scoped", "keys"}
	for _, name := range slices.Sorted(maps.Keys(top)) {
		for _, f := range fields {
			if name != f && strings.EqualFold(name, f) {
				return fmt.Errorf("member %q is not %q: names are case-sensitive, write %q", name, f, f)
			}
		}
	}
	return nil
}

// keyMap is the "keys" object of an export. Decoding refuses a key that appears twice, which
// encoding/json would otherwise settle silently by keeping the last one.
type keyMap map[string]string

func (m *keyMap) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		*m = nil
		return nil
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf(`"keys" must be an object of key: "value"`)
	}
	out := keyMap{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string) // object keys are always strings
		var v *string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("value of %q must be a string: %w", k, err)
		}
		if v == nil {
			return fmt.Errorf("value of %q is null: every value must be a string", k)
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("key %q appears twice", k)
		}
		out[k] = *v
	}
	*m = out
	return nil
}

func exportCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "print every key as JSON (a logical backup)",
		UsageText: "shoelace export [--include-secrets] > all.json",
		Description: `Prints every user key, read at one revision, as JSON:
   {"revision":R,"store":"<store id>","exported":"<RFC 3339>","omitted":["secret/keys",…],
    "keys":{"full/key":"value",…}}
Values are kept byte for byte. Secret keys (a path segment "secrets") are left out unless
--include-secrets is given (use an admin token): what was left out is listed under "omitted"
and on stderr, what was included is listed on stderr. An export with omitted keys is partial,
and "shoelace import" says so. With a token that is not an admin token the export holds only
the keys that token may read and says "scoped": true (import --replace refuses it).
The server's own records (tokens, settings) are never exported.
--timeout bounds each wait for the server (the answer to start, each pause in it), not the
whole answer, which may take minutes for a large store across a slow link.

EXAMPLES:
   shoelace export > all.json
   shoelace export --include-secrets | gpg -e -r ops > all.json.gpg`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "include-secrets", Usage: "include the values of secret keys (admin token)"},
		},
		Action: e.export,
	}
}

func (e *cliEnv) export(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, idle, err := e.connectStreaming(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if c.Bool("include-secrets") {
		if err := requireAdmin(s, "export --include-secrets"); err != nil {
			return idle.explain(err)
		}
	}
	l, meta, err := s.client.List(s.ctx, "", false)
	if err != nil {
		return idle.explain(err)
	}
	scoped := e.warnIfNotAdmin(s, `the export holds only the keys this token may read (it says "scoped": true, and import --replace refuses it)`)
	d, included := buildDump(l.Entries, c.Bool("include-secrets"))
	d.Scoped = scoped
	d.Revision, d.Store = l.Revision, meta.Store
	d.Exported = time.Now().UTC().Format(time.RFC3339)
	if len(d.Omitted) > 0 {
		fmt.Fprintf(e.stderr, "left out %s (listed under \"omitted\"; use --include-secrets): %s\n",
			counted(len(d.Omitted), "secret key"), strings.Join(d.Omitted, ", "))
	}
	if len(included) > 0 {
		fmt.Fprintf(e.stderr, "included %s: %s\n", counted(len(included), "secret key"), strings.Join(included, ", "))
	}
	enc := jsonEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

// buildDump turns entries into an export, leaving secret keys out (listed in Omitted) unless
// includeSecrets; it also returns the secret keys it included. Both lists are sorted.
func buildDump(entries []api.KV, includeSecrets bool) (d dump, included []string) {
	d = dump{Keys: keyMap{}, Omitted: []string{}}
	for _, kv := range entries {
		if api.IsSecret(kv.Key) {
			if !includeSecrets {
				d.Omitted = append(d.Omitted, kv.Key)
				continue
			}
			included = append(included, kv.Key)
		}
		d.Keys[kv.Key] = kv.Value
	}
	sort.Strings(d.Omitted)
	sort.Strings(included)
	return d, included
}

func importCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "write an export into the store in one all-or-nothing transaction",
		ArgsUsage: "FILE",
		UsageText: "shoelace import FILE|- [--merge | --replace] [--dry-run] [--force]\n   shoelace import --from-etcd URL --prefix PREFIX --appliance NAME [--etcd-cacert FILE --etcd-cert FILE --etcd-key FILE] [--etcd-user USER[:PASSWORD] [--etcd-password PASSWORD]] [--merge] [--skip-refused] [--dry-run] [--force]\n   shoelace import --from-consul-export FILE --prefix PREFIX --appliance NAME [--merge] [--skip-refused] [--dry-run] [--force]",
		Description: `Writes the keys of FILE (as "shoelace export" prints it; "-" reads stdin) in ONE
transaction: all of it or nothing. Every key and value is checked before anything is written.
   (default) merge: puts every key of the file and leaves the store's other keys alone (into
               a store with no keys, each key is also guarded to be still absent);
               a key that holds the file's value already is not written but guarded at
               its revision, so that agents wake only for what changed;
   --replace   makes the store's keys exactly the file's: deletes every other key, except
               the secret keys the file lists as omitted, which are kept; a file exported
               with a token that is not an admin token ("scoped": true) is refused.
   --merge     the default, said explicitly.
The transaction is guarded: if another writer changes a key the import relies on after it
read the store, the server answers 409, nothing is written, and the import can be run again.
While a staged rollout of an appliance whose keys it writes runs, the import is refused (exit 7)
unless --force, which aborts that rollout (or its shared rollout group) first.
An import that needs more operations than the server takes in one transaction (10,000 by
default) is refused: it is never split. A file with "omitted" keys is partial: stderr lists
them, and the import is never reported as a whole copy.
Prints "revision N" (with --output json {"revision","mode","put","deleted","kept","omitted"})
and a summary on stderr. --dry-run prints what would be created (+), changed (~), deleted (-)
and kept (= an omitted secret), as appliance apply --dry-run does, and writes nothing.

--from-etcd copies a confd keyspace from a live etcd v3 instead: every key PREFIX/a/b becomes
appliances/NAME/a/b (what a template in functions: confd reads as getv "/a/b", as confd with
prefix PREFIX does), in one transaction in which each key it creates must still be absent. A key already
there with another value stops the import (exit 4) unless --merge. Keys that cannot be keys
here are listed with the reason and the name they could have (an empty segment, a trailing
'/', a value that is not UTF-8, a character outside the key rules); then nothing is written,
unless --skip-refused. --from-consul-export reads what "consul kv export PREFIX" wrote (- for
stdin) the same way, --prefix being the Consul prefix (/ keeps whole paths: web/a becomes
appliances/NAME/web/a, which templates reading key "web/a" need); Consul's folders are left out,
and Consul's flags are not kept (one line names the keys that had any).

EXAMPLES:
   shoelace import all.json
   shoelace import all.json --replace --dry-run
   shoelace export --addr https://old:7400 | shoelace import - --addr https://new:7400 --merge
   shoelace import --from-etcd https://etcd:2379 --prefix /production/web --appliance web --etcd-cacert ca.pem --dry-run
   shoelace import --from-consul-export web.json --prefix / --appliance web --dry-run`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "merge", Usage: "put the file's keys, leave the store's others (the default)"},
			&cli.BoolFlag{Name: "replace", Usage: "make the store's keys exactly the file's: delete the others (omitted secrets are kept)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would be put, deleted and kept; write nothing"},
			forceFlag(),
		}, fromEtcdFlags()...),
		Action: e.importKeys,
	}
}

// parseDump reads an export: strict JSON (no unknown fields, no trailing data, no key twice),
// UTF-8 throughout, every key and value valid, omitted keys valid secret keys that are not
// also in "keys". Errors name the key and the rule.
func parseDump(data []byte) (dump, error) {
	var d dump
	// encoding/json would rewrite invalid UTF-8 and lone surrogate escapes to U+FFFD: refuse them.
	if err := api.CheckJSONText(data); err != nil {
		return d, fmt.Errorf("%w (an export is UTF-8 JSON)", err)
	}
	// encoding/json keeps the last of a member given twice: a second "keys" would drop the
	// first one's keys without a word, a second "omitted" the secrets --replace must keep.
	if err := api.CheckJSONMembers(data); err != nil {
		return d, err
	}
	// encoding/json also takes a member named in another case ("Keys") for the field, the
	// last one winning: {"keys":{…},"Keys":{}} would import no key, and with --replace delete
	// every one. Only the top level's names are fields (those of "keys" are the store's keys).
	if err := checkDumpMemberNames(data); err != nil {
		return d, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf(`not an export ({"keys":{…},"omitted":[…]}): %w`, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return d, errors.New("not an export: data after the JSON object")
	}
	if d.Keys == nil {
		return d, errors.New(`not an export: no "keys" object`)
	}
	if d.Revision < 0 {
		return d, fmt.Errorf("revision %d: must be >= 0", d.Revision)
	}
	if d.Exported != "" {
		if _, err := time.Parse(time.RFC3339, d.Exported); err != nil {
			return d, fmt.Errorf("exported %q: not an RFC 3339 time", d.Exported)
		}
	}
	// Every key refused is named, in order: the first alone (and a random one, in a map's
	// order) made a file with several mistakes take as many runs.
	var refused []error
	for _, k := range slices.Sorted(maps.Keys(d.Keys)) {
		var err error
		if rest, ok := strings.CutPrefix(k, "/"); ok && rest != "" {
			// A confd keyspace written out by hand: say where its keys go here, as kv does.
			err = confdKeyError(k, strings.TrimLeft(rest, "/"))
		} else if err = api.ValidateKey(k); err == nil {
			err = api.ValidateValue(k, []byte(d.Keys[k]), 0)
		}
		if err != nil {
			refused = append(refused, err)
		}
	}
	if len(refused) == 1 {
		return d, refused[0]
	}
	if len(refused) > 1 {
		lines := make([]string, 0, min(len(refused), 20)+1)
		for i, err := range refused {
			if i == 20 {
				lines = append(lines, fmt.Sprintf("… and %d more", len(refused)-i))
				break
			}
			lines = append(lines, fmt.Sprintf("[%d] %s", i+1, err))
		}
		code := api.CodeInvalidKey
		var ae *api.Error
		if errors.As(refused[0], &ae) {
			code = ae.Code
		}
		return d, api.Errorf(code, "%d keys refused, nothing written: %s", len(refused), strings.Join(lines, " "))
	}
	seen := make(map[string]bool, len(d.Omitted))
	for _, k := range d.Omitted {
		if err := api.ValidateKey(k); err != nil {
			return d, fmt.Errorf("omitted: %w", err)
		}
		if !api.IsSecret(k) {
			return d, fmt.Errorf("omitted key %q is not a secret key (no path segment %q): an export leaves out only secrets", k, api.SecretSegment)
		}
		if _, ok := d.Keys[k]; ok {
			return d, fmt.Errorf("key %q is both in \"keys\" and in \"omitted\"", k)
		}
		if seen[k] {
			return d, fmt.Errorf("omitted key %q appears twice", k)
		}
		seen[k] = true
	}
	if d.Omitted == nil {
		d.Omitted = []string{}
	}
	sort.Strings(d.Omitted)
	return d, nil
}

// applianceExport reports whether d looks like what "shoelace appliance export NAME" writes: keys
// but none under shared/ or appliances/, and no store named (as "shoelace export" names it).
func applianceExport(d dump) bool {
	if d.Store != "" || d.Exported != "" || len(d.Keys) == 0 {
		return false
	}
	for k := range d.Keys {
		if isViewKey(k) {
			return false
		}
	}
	return true
}

// isViewKey reports whether key k is under shared/ or appliances/, the keys views are made of.
func isViewKey(k string) bool {
	return strings.HasPrefix(k, "shared/") || strings.HasPrefix(k, "appliances/")
}

// Import modes.
const (
	modeEmpty   = "empty"   // no flag: the store must hold no keys
	modeMerge   = "merge"   // put the file's keys, leave the others
	modeReplace = "replace" // the store's keys become the file's (omitted secrets kept)
)

// importPlan is what an import will do, as one transaction.
type importPlan struct {
	Mode    string
	Put     []string // keys the transaction puts, sorted: the file's keys the store lacks or holds with another value
	Delete  []string // keys it deletes, sorted (replace only)
	Kept    []string // keys of the store kept because the file omitted them, sorted
	Missing []string // omitted keys the store does not have, sorted
	Txn     api.Txn
	// Of the file's keys: those the store lacks and those whose value differs (Put, a dry run
	// shows them as + and ~), and how many hold the file's value already (not put: guarded).
	Created, Changed []string
	Unchanged        int
	// New and Old are the values the keys would get and the ones the store holds, by key, for
	// a dry run's "+ KEY=new", "~ KEY=new (was old)" and "- KEY=old" lines.
	New, Old map[string]string
	// TooLarge says why the import is not split when its transaction is over the server's
	// limits, and what may be done; "" for a file's, which may be split.
	TooLarge string
}

// planImport decides what importing d into a store that holds current (read at one revision,
// with mod revisions) does in mode ("" means none was given: a merge, guarded as below when the
// store is empty).
//
// The transaction is guarded so that it commits only against the store the plan was made
// from; otherwise the server answers 409 and nothing is written:
//   - no mode, empty store: every key of the file is guarded "must not exist" (mod_revision
//     0), so that a key written by someone else since the listing is never overwritten; the
//     user runs the import again, which then merges.
//   - --merge: overwriting the file's keys and leaving the others is what was asked, whatever
//     happened in between; only the keys that hold the file's value already, which are not
//     written (a rewrite of an unchanged key would wake every agent that reads it for
//     nothing), are guarded at the mod_revision they were listed with, so that the store still
//     holds each of the file's keys with the file's value when the transaction commits.
//   - --replace: every key the store had is guarded at the mod_revision it was listed with, and
//     every key of the file the store did not have must still not exist. So a key deleted or
//     changed since the listing (including one about to be deleted, or a kept omitted secret),
//     or one of the file's keys created meanwhile, makes the whole transaction fail, rather
//     than mixing the other writer's change into a half-replaced store. Guards are per key, so
//     a key created meanwhile under a name neither listed nor in the file cannot be guarded;
//     the import lists the store again after it commits and reports any such key.
func planImport(d dump, current []api.KV, mode string) (importPlan, error) {
	if mode == "" {
		mode = modeMerge
		if len(current) == 0 {
			mode = modeEmpty
		}
	}
	p := importPlan{Mode: mode, New: d.Keys}
	have := make(map[string]int64, len(current))
	for _, kv := range current {
		have[kv.Key] = kv.ModRevision
	}
	names := make([]string, 0, len(d.Keys))
	for k := range d.Keys {
		names = append(names, k)
	}
	sort.Strings(names)
	values := make(map[string]string, len(current))
	for _, kv := range current {
		values[kv.Key] = kv.Value
	}
	p.Old = values
	var unchanged []string
	for _, k := range names {
		switch v, ok := values[k]; {
		case !ok:
			p.Created = append(p.Created, k)
		case v != d.Keys[k]:
			p.Changed = append(p.Changed, k)
		default:
			unchanged = append(unchanged, k)
			continue
		}
		p.Put = append(p.Put, k)
	}
	p.Unchanged = len(unchanged)
	omitted := make(map[string]bool, len(d.Omitted))
	for _, k := range d.Omitted {
		omitted[k] = true
		if _, ok := have[k]; ok {
			p.Kept = append(p.Kept, k)
		} else {
			p.Missing = append(p.Missing, k)
		}
	}
	if mode == modeReplace {
		for _, kv := range current {
			if _, inFile := d.Keys[kv.Key]; !inFile && !omitted[kv.Key] {
				p.Delete = append(p.Delete, kv.Key)
			}
		}
		sort.Strings(p.Delete)
	}
	for _, k := range p.Put {
		p.Txn.Ops = append(p.Txn.Ops, api.Op{Op: api.OpPut, Key: k, Value: d.Keys[k]})
	}
	for _, k := range p.Delete {
		p.Txn.Ops = append(p.Txn.Ops, api.Op{Op: api.OpDelete, Key: k})
	}
	switch mode {
	case modeEmpty:
		for _, k := range p.Put {
			p.Txn.Guards = append(p.Txn.Guards, api.Guard{Key: k, ModRevision: 0})
		}
	case modeMerge:
		for _, k := range unchanged {
			p.Txn.Guards = append(p.Txn.Guards, api.Guard{Key: k, ModRevision: have[k]})
		}
	case modeReplace:
		keys := make([]string, 0, len(current))
		for _, kv := range current {
			keys = append(keys, kv.Key)
		}
		for _, k := range p.Put {
			if _, ok := have[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p.Txn.Guards = append(p.Txn.Guards, api.Guard{Key: k, ModRevision: have[k]})
		}
	}
	return p, nil
}

// importResult is what import prints with --output json.
type importResult struct {
	Revision int64    `json:"revision"`
	Mode     string   `json:"mode"`
	Put      int      `json:"put"`
	Deleted  int      `json:"deleted"`
	Kept     int      `json:"kept"`    // omitted secret keys the store had, kept
	Omitted  []string `json:"omitted"` // the secret keys the file left out
	// Unchanged is how many of the keys to import held their value already: not put.
	Unchanged int  `json:"unchanged,omitempty"`
	DryRun    bool `json:"dry_run,omitempty"`
	// With --dry-run, the keys themselves.
	PutKeys     []string `json:"put_keys,omitempty"`
	DeletedKeys []string `json:"deleted_keys,omitempty"`
	KeptKeys    []string `json:"kept_keys,omitempty"`
	// PutKeys split: those the store lacks, and those whose value differs.
	CreatedKeys []string `json:"created_keys,omitempty"`
	ChangedKeys []string `json:"changed_keys,omitempty"`
	// Refused are the keys of --from-etcd or --from-consul-export that cannot be keys here.
	Refused []refusedKey `json:"refused,omitempty"`
}

// importMode reads --merge and --replace; both is a usage error.
func importMode(c *cli.Context) (string, error) {
	merge, replace := c.Bool("merge"), c.Bool("replace")
	switch {
	case merge && replace:
		return "", usagef("%s--merge and --replace exclude each other: give one", errPrefix(c))
	case merge:
		return modeMerge, nil
	case replace:
		return modeReplace, nil
	}
	return "", nil
}

func (e *cliEnv) importKeys(c *cli.Context) error {
	if c.String("from-etcd") != "" && c.String("from-consul-export") != "" {
		return usagef("import: give --from-etcd or --from-consul-export, not both")
	}
	if c.String("from-etcd") != "" || c.String("from-consul-export") != "" {
		return e.importFromEtcd(c)
	}
	for _, f := range []string{"prefix", "appliance", "etcd-cacert", "etcd-cert", "etcd-key", "skip-refused"} {
		if c.IsSet(f) {
			return usagef("import: --%s goes with --from-etcd or --from-consul-export", f)
		}
	}
	for _, f := range []string{"etcd-user", "etcd-password"} {
		// On the command line only: SHOELACE_ETCD_USER and SHOELACE_ETCD_PASSWORD may stay set.
		if e.onCommandLine[f] {
			return usagef("import: --%s goes with --from-etcd", f)
		}
	}
	a, err := wantArgs(c, 1, 1, "FILE|-")
	if err != nil {
		return err
	}
	mode, err := importMode(c)
	if err != nil {
		return err
	}
	if _, err := jsonOutput(c); err != nil {
		return err
	}
	var data []byte
	if a[0] == "-" {
		data, err = readAll(c.Context, e.stdin)
	} else {
		data, err = os.ReadFile(a[0])
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if len(bytes.TrimSpace(api.WithoutBOM(data))) == 0 {
		what := a[0]
		if what == "-" {
			what = "stdin"
		}
		return fmt.Errorf(`import: %s is empty: want an export as "shoelace export" prints it ({"keys":{…}}); nothing written`, what)
	}
	d, err := parseDump(api.WithoutBOM(data))
	if err != nil {
		return fmt.Errorf("import %s: %w", a[0], err)
	}
	if d.Scoped && mode == modeReplace {
		return fmt.Errorf(`import %s: the file was exported with a token that is not an admin token ("scoped": true) and holds only the keys that token could read: --replace would delete every other key of the store; nothing written: import it with --merge, or export again with an admin token`, a[0])
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	l, _, err := s.client.List(s.ctx, "", false)
	if err != nil {
		return fmt.Errorf("import: list the store: %w", err)
	}
	if mode == modeReplace {
		e.warnIfNotAdmin(s, "the import sees, and --replace deletes, only the keys this token may read")
	}
	p, err := planImport(d, l.Entries, mode)
	if err != nil {
		return err
	}
	if applianceExport(d) && slices.ContainsFunc(p.Delete, isViewKey) {
		// "shoelace appliance export NAME" writes {"keys":{…}} too, its keys relative to the
		// appliance: replacing the store with it would delete every appliance.
		return fmt.Errorf("import %s: no key of the file is under shared/ or appliances/ and it names no store: it looks like an appliance's export (shoelace appliance export NAME), whose keys are relative to the appliance, and --replace would delete every key of shared/ and appliances/; nothing written: apply it with shoelace appliance apply NAME -f %s", a[0], a[0])
	}
	// Keys outside shared/ and appliances/ are keys too, but no view holds them: said once the
	// import did (or would) write them.
	warnNoView := func() {
		if applianceExport(d) && len(p.Put) > 0 {
			fmt.Fprintf(e.stderr, "warning: no key of %s is under shared/ or appliances/, so no appliance sees them; if it is an appliance's export (shoelace appliance export NAME), apply it with shoelace appliance apply NAME -f %s\n", a[0], a[0])
		}
	}
	if len(d.Omitted) > 0 {
		fmt.Fprintf(e.stderr, "the file is partial: its export left out %s, so this is not a whole copy: %s\n",
			counted(len(d.Omitted), "secret key"), strings.Join(d.Omitted, ", "))
		if len(p.Kept) > 0 {
			fmt.Fprintf(e.stderr, "kept %s of this store that the file omitted: %s\n", counted(len(p.Kept), "secret key"), strings.Join(p.Kept, ", "))
		}
		if len(p.Missing) > 0 {
			fmt.Fprintf(e.stderr, "%d omitted secret keys are not in this store (set them yourself): %s\n", len(p.Missing), strings.Join(p.Missing, ", "))
		}
	}
	res := importResult{Mode: p.Mode, Put: len(p.Put), Deleted: len(p.Delete), Kept: len(p.Kept), Omitted: d.Omitted, Unchanged: p.Unchanged}
	summary := fmt.Sprintf("%s (%d put, %d deleted, %d omitted secrets kept)", counted(len(d.Keys), "key"), len(p.Put), len(p.Delete), len(p.Kept))
	if c.Bool("dry-run") { // its line says how many it would leave as they are
		warnNoView()
		// Over the server's limits, the dry run fails as the import would.
		tooLarge, after := overTxnLimits(p, writeLimits(s)), ""
		if tooLarge != nil {
			after = ", and the import is refused:"
		}
		if err := e.printDryRun(s.json, p, res, l.Revision, summary, after); err != nil {
			return err
		}
		return tooLarge
	}
	if p.Unchanged > 0 {
		summary += fmt.Sprintf("; %d already held the file's value: not written", p.Unchanged)
	}
	nothing := "the file has no keys and nothing is to be deleted"
	if len(d.Keys) > 0 {
		nothing = fmt.Sprintf("the store holds the file's %s with the file's values already and nothing is to be deleted", counted(len(d.Keys), "key"))
	}
	written, err := e.commitImport(s, p, &res, l.Revision, summary, nothing)
	if err != nil {
		return err
	}
	if written {
		warnNoView()
	}
	if written && p.Mode == modeReplace {
		e.reportStrays(s, d, p)
	}
	return e.printImport(s.json, res)
}

// commitImport writes p's transaction and sets res.Revision to its revision; with nothing to
// write it says so (nothing tells why) and res.Revision is readRev, the revision p was planned
// at. It reports whether it wrote.
func (e *cliEnv) commitImport(s *session, p importPlan, res *importResult, readRev int64, summary, nothing string) (bool, error) {
	if len(p.Txn.Ops) == 0 {
		fmt.Fprintf(e.stderr, "nothing to import: %s\n", nothing)
		res.Revision = readRev
		return false, nil
	}
	rev, err := s.client.Import(s.ctx, p.Txn)
	if err != nil {
		return false, importTxnError(p, err)
	}
	res.Revision = rev
	fmt.Fprintf(e.stderr, "imported %s\n", summary)
	return true, nil
}

// warnIfNotAdmin warns on stderr when the session's token is not an admin token: a listing of
// the root then holds only what the token's grants cover, with no sign of what it missed.
// GET /v1/tokens answers only admins; any answer other than 403 is taken as no reason to warn.
// It reports whether it warned.
func (e *cliEnv) warnIfNotAdmin(s *session, consequence string) bool {
	if _, err := s.client.TokensPage(s.ctx, false, 0, ""); errors.Is(err, api.ErrForbidden) {
		fmt.Fprintf(e.stderr, "warning: not an admin token: %s\n", consequence)
		return true
	}
	return false
}

// requireAdmin refuses what (exit 5) unless the session's token is an admin token; GET
// /v1/tokens answers only admins.
func requireAdmin(s *session, what string) error {
	_, err := s.client.TokensPage(s.ctx, false, 0, "") // the answer tells, not the tokens (without all: few)
	if errors.Is(err, api.ErrForbidden) {
		return &api.Error{Code: api.CodeForbidden, Status: 403, Message: what + " needs an admin token"}
	}
	return err
}

// importTxnError explains why the import's transaction was refused; nothing was written.
func importTxnError(p importPlan, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return fmt.Errorf("import: %w", err)
	}
	switch ae.Code {
	case api.CodeTooLarge, api.CodeBodyTooLarge:
		why := p.TooLarge
		if why == "" {
			why = "split the file yourself if separate transactions are acceptable"
		}
		return fmt.Errorf("import cannot be atomic: it needs one transaction of %d operations and %d guards, more than the server accepts; nothing was written and the import is not split (%s): %w",
			len(p.Txn.Ops), len(p.Txn.Guards), why, err)
	case api.CodeConflict:
		return fmt.Errorf("import: the store changed while importing, nothing was written (run the import again): %w", err)
	}
	return fmt.Errorf("import: nothing was written: %w", err)
}

// reportStrays lists the store after a --replace and warns about keys that are neither the
// file's nor kept: keys written by someone else under names the transaction could not guard.
func (e *cliEnv) reportStrays(s *session, d dump, p importPlan) {
	l, _, err := s.client.List(s.ctx, "", true)
	if err != nil {
		fmt.Fprintf(e.stderr, "warning: could not list the store after the import to check it: %v\n", err)
		return
	}
	kept := make(map[string]bool, len(p.Kept))
	for _, k := range p.Kept {
		kept[k] = true
	}
	var strays []string
	for _, k := range l.Keys {
		if _, ok := d.Keys[k]; !ok && !kept[k] {
			strays = append(strays, k)
		}
	}
	if len(strays) > 0 {
		fmt.Fprintf(e.stderr, "warning: %d keys not in the file are in the store now, written by someone else during or after the import: %s\n",
			len(strays), strings.Join(strays, ", "))
	}
}

func (e *cliEnv) printImport(asJSON bool, res importResult) error {
	if asJSON {
		return printJSON(e.stdout, res)
	}
	return printRevision(e.stdout, false, res.Revision)
}

// printDryRun prints the plan as appliance apply --dry-run does: "+ KEY=new" (created),
// "~ KEY=new (was old)" (changed) and "- KEY=old" (deleted) lines, secret values as (secret),
// then "= KEY" for omitted secrets kept (or JSON with the keys), and a summary on stderr. Keys
// that already hold the file's value are counted, not listed. Nothing is written.
func (e *cliEnv) printDryRun(asJSON bool, p importPlan, res importResult, rev int64, summary, after string) error {
	fmt.Fprintf(e.stderr, "dry run: would import %s in one transaction of %s and %s, against revision %d: create %d, change %d, delete %d, leave %d as they are; nothing written%s\n",
		summary, counted(len(p.Txn.Ops), "operation"), counted(len(p.Txn.Guards), "guard"), rev, len(p.Created), len(p.Changed), len(p.Delete), p.Unchanged, after)
	if asJSON {
		res.Revision, res.DryRun = rev, true
		res.PutKeys, res.DeletedKeys, res.KeptKeys = p.Put, p.Delete, p.Kept
		res.CreatedKeys, res.ChangedKeys, res.Unchanged = p.Created, p.Changed, p.Unchanged
		return printJSON(e.stdout, res)
	}
	var b strings.Builder
	value := func(k string, values map[string]string) string {
		if api.IsSecret(k) {
			return "(secret)"
		}
		return quoteIfNeeded(values[k])
	}
	for _, k := range p.Created {
		changeLine(&b, '+', k, value(k, p.New), "")
	}
	for _, k := range p.Changed {
		changeLine(&b, '~', k, value(k, p.New), value(k, p.Old))
	}
	for _, k := range p.Delete {
		changeLine(&b, '-', k, value(k, p.Old), "")
	}
	for _, k := range p.Kept {
		fmt.Fprintf(&b, "= %s\n", k)
	}
	_, err := io.WriteString(e.stdout, b.String())
	return err
}
