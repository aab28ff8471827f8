package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/server/store"
)

// The rule that maps a confd keyspace onto an appliance (DESIGN.md, "Coming from confd"): the
// etcd key PREFIX/a/b becomes appliances/NAME/a/b, which a template in functions: confd reads as
// getv "/a/b", as confd with prefix PREFIX does.

func fromEtcdFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "from-etcd", Usage: "copy a confd keyspace from this etcd v3 (`URL`s, comma-separated) instead of reading FILE"},
		&cli.StringFlag{Name: "prefix", Usage: "with --from-etcd or --from-consul-export: the prefix whose keys are copied (confd's prefix, such as /production/web; the Consul prefix, or / for whole paths)"},
		&cli.StringFlag{Name: "appliance", Usage: "with --from-etcd or --from-consul-export: the appliance whose keys they become (appliances/`NAME`/…)"},
		&cli.StringFlag{Name: "etcd-cacert", Usage: "with --from-etcd: PEM `FILE` of the CA that signs etcd's certificate"},
		&cli.StringFlag{Name: "etcd-cert", Usage: "with --from-etcd: client certificate PEM `FILE`"},
		&cli.StringFlag{Name: "etcd-key", Usage: "with --from-etcd: client key PEM `FILE`"},
		&cli.StringFlag{Name: "etcd-user", EnvVars: []string{"SHOELACE_ETCD_USER"}, Usage: "with --from-etcd: the etcd user to read as, `USER[:PASSWORD]` (as etcdctl's --user), for an etcd with authentication on"},
		&cli.StringFlag{Name: "etcd-password", EnvVars: []string{"SHOELACE_ETCD_PASSWORD"}, Usage: "with --etcd-user: its `PASSWORD` (then --etcd-user is the name whole, as etcdctl's --password); the environment keeps it off the command line"},
		&cli.BoolFlag{Name: "skip-refused", Usage: "with --from-etcd or --from-consul-export: import the other keys when some are refused (they are listed)"},
		&cli.StringFlag{Name: "from-consul-export", Usage: "copy the keys of a `FILE` written by `consul kv export PREFIX` (- for stdin), as --from-etcd does; --prefix is the Consul prefix (web: web/a becomes appliances/NAME/a; /: every key keeps its path, appliances/NAME/web/a, which templates reading key \"web/a\" need)"},
	}
}

// refusedKey is an etcd key that cannot be imported, with why and the name it could have here.
type refusedKey struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	// Rename is the key it could be imported as, once renamed in etcd; "" when none fits.
	Rename string `json:"rename,omitempty"`
}

func (r refusedKey) String() string {
	s := fmt.Sprintf("refused %q: %s", r.Key, r.Reason)
	if r.Rename != "" {
		s += fmt.Sprintf("; rename it so that it becomes %s", r.Rename)
	}
	return s
}

// mapConfdKeys maps the keys of a confd keyspace under prefix (as read from etcd) onto the
// appliance's keys, and lists those that cannot be: the value at the prefix itself, an empty
// segment, a trailing '/', a value that is not UTF-8, a name outside the key rules.
func mapConfdKeys(kvs []store.ForeignKV, prefix, appliance string) (map[string]string, []refusedKey) {
	root := api.ApplianceRoot(appliance)
	keys := map[string]string{}
	var refused []refusedKey
	under := strings.TrimSuffix(prefix, "/") + "/"
	for _, kv := range kvs {
		k := string(kv.Key)
		if !strings.HasPrefix(k, under) {
			if k == strings.TrimSuffix(under, "/") {
				refused = append(refused, refusedKey{Key: k, Reason: "the prefix itself holds a value, which has no name below the prefix"})
			}
			continue // a sibling such as /production/web-old: not under the prefix
		}
		rel := k[len(under):]
		switch {
		case !utf8.ValidString(k):
			refused = append(refused, refusedKey{Key: k, Reason: "the key is not UTF-8 text", Rename: suggestKey(root, rel)})
		case rel == "":
			refused = append(refused, refusedKey{Key: k, Reason: "trailing '/': the key names a directory (as etcd v2 directories and some confd writers left them), not a value"})
		case strings.HasSuffix(rel, "/"):
			refused = append(refused, refusedKey{Key: k, Reason: "trailing '/': a key here names a value, never a directory", Rename: suggestKey(root, rel)})
		case strings.HasPrefix(rel, "/") || strings.Contains(rel, "//"):
			refused = append(refused, refusedKey{Key: k, Reason: "empty segment ('//'): every segment of a key must have a name", Rename: suggestKey(root, rel)})
		case !utf8.Valid(kv.Value):
			refused = append(refused, refusedKey{Key: k, Reason: "the value is not UTF-8 text (values here are text): store it base64-encoded and decode it in the template with base64Decode"})
		default:
			full := root + "/" + rel
			if err := api.ValidateKey(full); err != nil {
				refused = append(refused, refusedKey{Key: k, Reason: strings.TrimPrefix(err.Error(), "invalid key "), Rename: suggestKey(root, rel)})
				continue
			}
			keys[full] = string(kv.Value)
		}
	}
	// A rename that names a key the import takes, or another rename, would have the key renamed
	// as told overwrite that one in etcd ("a b" and "a-b" both becoming a-b): it gets a suffix.
	taken := make(map[string]bool, len(keys)+len(refused))
	for k := range keys {
		taken[k] = true
	}
	for i := range refused {
		r := &refused[i]
		if r.Rename == "" {
			continue
		}
		if base := r.Rename; taken[base] {
			r.Rename = ""
			for n := 2; n <= 100 && r.Rename == ""; n++ {
				if k := fmt.Sprintf("%s-%d", base, n); !taken[k] && api.ValidateKey(k) == nil {
					r.Rename = k
				}
			}
		}
		taken[r.Rename] = true
	}
	return keys, refused
}

// serverWriteLimits are the bounds of one write that GET /v1/status shows; each is 0 when the
// server does not say (an older server, or an answer that could not be read): not judged.
type serverWriteLimits struct {
	MaxValueBytes int   `json:"max_value_bytes"`
	MaxTxnOps     int   `json:"max_txn_ops"`
	MaxBodyBytes  int64 `json:"max_body_bytes"`
}

func writeLimits(s *session) serverWriteLimits {
	raw, err := s.client.Status(s.ctx)
	var st struct {
		Limits serverWriteLimits `json:"limits"`
	}
	if err != nil || json.Unmarshal(raw, &st) != nil {
		return serverWriteLimits{}
	}
	return st.Limits
}

// overTxnLimits is the error the import of p gets when the server refuses its transaction as
// too large (more operations or guards than lim.MaxTxnOps, a body over lim.MaxBodyBytes), so
// that a dry run fails as the import would; nil when it fits or the server does not say, and
// when it puts and deletes nothing (commitImport then sends nothing, whatever its guards).
func overTxnLimits(p importPlan, lim serverWriteLimits) error {
	if len(p.Txn.Ops) == 0 {
		return nil
	}
	var msg string
	switch {
	case lim.MaxTxnOps > 0 && len(p.Txn.Ops) > lim.MaxTxnOps:
		msg = fmt.Sprintf("txn has %d ops, over the limit of %d", len(p.Txn.Ops), lim.MaxTxnOps)
	case lim.MaxTxnOps > 0 && len(p.Txn.Guards) > lim.MaxTxnOps:
		msg = fmt.Sprintf("txn has %d guards, over the limit of %d", len(p.Txn.Guards), lim.MaxTxnOps)
	case lim.MaxBodyBytes > 0:
		// The body the import sends.
		if b, err := client.JSONBody(p.Txn); err == nil && int64(len(b)) > lim.MaxBodyBytes {
			msg = fmt.Sprintf("txn body is %d bytes, over the limit of %d bytes (--max-value-bytes plus 4 MiB)", len(b), lim.MaxBodyBytes)
		}
	}
	if msg == "" {
		return nil
	}
	return importTxnError(p, &api.Error{Code: api.CodeTooLarge, Status: http.StatusRequestEntityTooLarge, Message: msg})
}

// overServerLimit takes out of keys those whose value is over the server's --max-value-bytes
// (lim; a server that does not say is not judged), which the server would refuse, and lists
// them as refused under their names in the source.
func overServerLimit(lim serverWriteLimits, keys map[string]string, prefix, appliance string) []refusedKey {
	if lim.MaxValueBytes <= 0 {
		return nil
	}
	root := api.ApplianceRoot(appliance) + "/"
	var refused []refusedKey
	for k, v := range keys {
		if len(v) > lim.MaxValueBytes {
			delete(keys, k)
			refused = append(refused, refusedKey{Key: path.Join(prefix, strings.TrimPrefix(k, root)),
				Reason: fmt.Sprintf("the value is %d bytes, over the server's limit of %d bytes (--max-value-bytes)", len(v), lim.MaxValueBytes)})
		}
	}
	sort.Slice(refused, func(i, j int) bool { return refused[i].Key < refused[j].Key })
	return refused
}

// suggestKey makes rel a valid key under root: empty segments dropped, each byte outside
// [A-Za-z0-9._-] replaced by '-', a segment that starts with neither a letter nor a digit
// prefixed with "x", long segments cut; "" when nothing valid is left.
func suggestKey(root, rel string) string {
	var segs []string
	for _, s := range strings.Split(rel, "/") {
		if s == "" {
			continue
		}
		b := []byte(s)
		for i, c := range b {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				b[i] = '-'
			}
		}
		s = string(b)
		if c := s[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			s = "x" + s
		}
		if len(s) > api.MaxSegmentBytes {
			s = s[:api.MaxSegmentBytes]
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return ""
	}
	k := root + "/" + strings.Join(segs, "/")
	if api.ValidateKey(k) != nil {
		return ""
	}
	return k
}

// importFromEtcd copies a confd keyspace from a live etcd v3 into an appliance, in one guarded
// transaction: each key it creates must still be absent, and each it changes (--merge) must
// still hold what was read, when the transaction commits.
func (e *cliEnv) importFromEtcd(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, "--from-etcd URL --prefix PREFIX --appliance NAME"); err != nil {
		return usagef("import: --from-etcd reads no FILE: give either FILE or --from-etcd")
	}
	if c.Bool("replace") {
		return usagef("import: --replace does not go with --from-etcd: it adds the keyspace's keys (with --merge, changing those that differ)")
	}
	prefix, appliance := c.String("prefix"), c.String("appliance")
	if prefix == "" || appliance == "" {
		if c.String("from-consul-export") != "" {
			return usagef("import: --from-consul-export needs --prefix (the Consul prefix whose keys are copied; / keeps their whole paths, as templates that read key \"web/db/host\" need) and --appliance NAME")
		}
		return usagef("import: --from-etcd needs --prefix (the confd prefix, such as /production/web) and --appliance NAME")
	}
	if err := api.ValidateSegment("appliance name", appliance); err != nil {
		return usagef("import: --appliance: %v", err)
	}
	fromConsul := c.String("from-consul-export")
	for _, f := range []string{"etcd-cacert", "etcd-cert", "etcd-key"} {
		if fromConsul != "" && c.IsSet(f) {
			return usagef("import: --%s goes with --from-etcd: --from-consul-export reads a file", f)
		}
	}
	if (c.String("etcd-cert") == "") != (c.String("etcd-key") == "") {
		return usagef("import: --etcd-cert and --etcd-key must be given together: a client certificate that etcd trusts and its key")
	}
	etcdUser, etcdPassword, err := e.etcdCredentials(c, fromConsul != "")
	if err != nil {
		return err
	}
	if fromConsul != "" {
		// Consul's keys have no leading '/': read them as a confd keyspace rooted at '/'.
		prefix = "/" + strings.TrimPrefix(prefix, "/")
	}
	if !strings.HasPrefix(prefix, "/") {
		return usagef("import: --prefix %q: a confd prefix starts with '/' (such as /production/web)", prefix)
	}
	for _, seg := range strings.Split(prefix, "/") {
		// path.Clean would make "/.." the whole keyspace, and "/a/../b" another prefix
		// than the one written: a confd prefix has no such segment.
		if seg == ".." || seg == "." {
			return usagef("import: --prefix %q: a %q segment is not allowed: give the prefix as confd has it, such as /production/web", prefix, seg)
		}
	}
	prefix = path.Clean(prefix)
	// The prefix as messages name it: a Consul prefix as Consul names its keys (web, not the
	// /web it is read as).
	shown := prefix
	if fromConsul != "" && prefix != "/" {
		shown = prefix[1:]
	}
	if _, err := jsonOutput(c); err != nil {
		return err
	}
	var endpoints []string
	for _, ep := range strings.Split(c.String("from-etcd"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			if shown, ok := endpointWithUser(ep); ok {
				// Not ep itself: the error is printed, and the password must not be.
				return usagef("import: --from-etcd URL %q has a user or password, which the import does not send: give the user with --etcd-user USER (its password in SHOELACE_ETCD_PASSWORD, or --etcd-password), or read as the user a client certificate names (--etcd-cacert, --etcd-cert, --etcd-key); leave them out of the URL", shown)
			}
			endpoints = append(endpoints, ep)
		}
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	// The range of the prefix as etcd reads it: the keys below it, the prefix itself, and
	// siblings that start alike (/production/web-old), which mapConfdKeys leaves out.
	var kvs []store.ForeignKV
	var etcdRev int64
	if fromConsul != "" {
		var folders []string
		var flags map[string]uint64
		kvs, flags, err = readConsulExport(c.Context, e, fromConsul)
		kvs, folders = withoutConsulFolders(kvs)
		if len(folders) > 0 {
			fmt.Fprintf(e.stderr, "left out %s, since a folder (a key ending in / with no value, as Consul's UI makes one) holds nothing: %s\n",
				counted(len(folders), "Consul folder"), strings.Join(folders, ", "))
		}
		// consul kv export web lists webx/… too (Consul's prefixes are raw strings), and a file
		// may hold more than the prefix: say what of it is not imported. Consul's flags are a
		// number an application keeps beside a value (consul lock marks its lock keys with one):
		// a Shoelace key has none, so say whose are not kept.
		var outside, flagged []string
		for _, kv := range kvs {
			switch k := string(kv.Key); {
			case !inPrefix(k, prefix):
				outside = append(outside, strings.TrimPrefix(k, "/"))
			case flags[k] != 0:
				flagged = append(flagged, fmt.Sprintf("%s (flags %d)", strings.TrimPrefix(k, "/"), flags[k]))
			}
		}
		if n := len(outside); n > 0 {
			fmt.Fprintf(e.stderr, "left out %s of %s outside %s/ (consul kv export lists every key that starts alike): %s\n",
				counted(n, "key"), fromConsul, strings.Trim(prefix, "/"), strings.Join(capped(outside, 10), ", "))
		}
		if n := len(flagged); n > 0 {
			have := " have"
			if n == 1 {
				have = " has"
			}
			fmt.Fprintf(e.stderr, "%s Consul flags, which a Shoelace key does not keep (their values are imported): %s\n",
				counted(n, "key")+have, strings.Join(capped(flagged, 10), ", "))
		}
	} else {
		kvs, etcdRev, err = store.ReadForeign(s.ctx, store.ForeignEtcd{Endpoints: endpoints, CACert: c.String("etcd-cacert"),
			Cert: c.String("etcd-cert"), Key: c.String("etcd-key"), Username: etcdUser, Password: etcdPassword}, prefix)
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	kvs, roots := store.WithoutStoreKeys(kvs)
	for _, r := range roots {
		fmt.Fprintf(e.stderr, "left out the keys under %s: a Shoelace store's own keys (its tokens, releases and appliances), never a confd keyspace\n", r)
	}
	keys, refused := mapConfdKeys(kvs, prefix, appliance)
	lim := writeLimits(s)
	refused = append(refused, overServerLimit(lim, keys, prefix, appliance)...)
	for i, r := range refused {
		if fromConsul != "" {
			// As consul kv export wrote it, and as it is renamed in Consul: not as read, rooted at '/'.
			r.Key = strings.TrimPrefix(r.Key, "/")
			refused[i] = r
		}
		fmt.Fprintf(e.stderr, "%s\n", r)
	}
	source := fmt.Sprintf("etcd %s at revision %d", strings.Join(endpoints, ","), etcdRev)
	if fromConsul != "" {
		source = "consul export " + fromConsul
	}
	fmt.Fprintf(e.stderr, "%s: %s under %s, %d refused\n", source, counted(len(keys)+len(refused), "key"), shown, len(refused))
	if len(keys)+len(refused) == 0 {
		// A mistyped prefix reads nothing: that is no import, whatever the appliance holds.
		// confd's default backend (-backend etcd) keeps its keys in etcd's v2 keyspace, which
		// etcd's v3 API, that the import reads, does not see: the prefix is then right.
		hint := "give the prefix as confd has it, such as /production/web (etcdctl get --prefix --keys-only PREFIX lists its keys); " +
			"if confd ran with -backend etcd, its default, its keys are in etcd's v2 keyspace, which the import reads through etcd's v3 API and does not see " +
			"(ETCDCTL_API=2 etcdctl ls --recursive PREFIX lists them): write them into etcd's v3 keyspace first, as -backend etcdv3 reads them"
		if fromConsul != "" {
			hint = "give the prefix as consul kv export was given it, or / for every key of the file"
			if tops := firstSegments(kvs, 5); len(tops) > 0 {
				hint += "; the file's keys start with " + strings.Join(tops, ", ")
			}
		}
		return &exitCodeError{code: exitNotFound, err: fmt.Errorf("import: no key under %s in the %s, nothing written: %s", shown, source, hint)}
	}
	// A dry run shows the plan of the keys it could write even when the import would be
	// refused (keys refused, keys holding other values), then fails as the import would.
	dry := c.Bool("dry-run")
	var refusal error
	if len(refused) > 0 && !c.Bool("skip-refused") {
		where := "etcd"
		if fromConsul != "" {
			where = "Consul"
		}
		refusal = fmt.Errorf("import: %s refused (listed above), nothing written: rename them in %s, or give --skip-refused to import the %d others", counted(len(refused), "key"), where, len(keys))
		if !dry {
			return refusal
		}
	}
	root := api.ApplianceRoot(appliance)
	l, _, err := s.client.List(s.ctx, root, false)
	if err != nil {
		return fmt.Errorf("import: list %s: %w", root, err)
	}
	p, conflicts := planFromEtcd(keys, l.Entries, c.Bool("merge"))
	// --prefix names the keys: a narrower one imports them under other names, so the import
	// cannot be split as a file can.
	p.TooLarge = "its keys are named by --prefix, so a narrower one would import them under other names; a server with a larger --max-value-bytes takes a larger body"
	if len(conflicts) > 0 {
		hold := "hold"
		if len(conflicts) == 1 {
			hold = "holds"
		}
		conflict := &exitCodeError{code: exitConflict, err: fmt.Errorf("import: %s of %s already %s other values, nothing written (give --merge to overwrite them): %s",
			counted(len(conflicts), "key"), root, hold, strings.Join(conflicts, ", "))}
		switch {
		case !dry:
			return conflict
		case refusal == nil:
			refusal = conflict
		default: // a dry run names both
			fmt.Fprintf(e.stderr, "%s\n", strings.TrimPrefix(errorLine(conflict), "shoelace: import: "))
		}
	}
	if tooLarge := overTxnLimits(p, lim); tooLarge != nil {
		switch {
		case !dry:
			return tooLarge
		case refusal == nil:
			refusal = tooLarge
		default: // a dry run names each reason
			fmt.Fprintf(e.stderr, "%s\n", strings.TrimPrefix(errorLine(tooLarge), "shoelace: "))
		}
	}
	res := importResult{Mode: p.Mode, Put: len(p.Put), Omitted: []string{}, Unchanged: p.Unchanged, Refused: refused}
	summary := fmt.Sprintf("%s from %s into %s (%d already there)", counted(len(p.Put), "key"), shown, root, p.Unchanged)
	if dry {
		after := ""
		if refusal != nil {
			after = ", and the import is refused:"
		}
		if err := e.printDryRun(s.json, p, res, l.Revision, summary, after); err != nil {
			return err
		}
		return refusal
	}
	nothing := root + " holds every key already"
	if len(keys) == 0 {
		nothing = fmt.Sprintf("every key under %s was refused (listed above) and --skip-refused left it out", shown)
	}
	if _, err := e.commitImport(s, p, &res, l.Revision, summary, nothing); err != nil {
		return err
	}
	return e.printImport(s.json, res)
}

// endpointWithUser reports whether endpoint ep names a user (and maybe a password) before its
// host, and ep as an error may show it: its host, nothing before the last '@' (where a
// password with a "://" or an unescaped '@' may have left a part of it).
// url.Parse alone missed ep without a scheme ("root:s3cret@host:2379", which it reads as
// scheme "root") and ep it cannot parse (a password with a '%' or '/' not escaped): those
// passed, and the read's error printed them whole, password included. An etcd endpoint has no
// '@' of its own.
func endpointWithUser(ep string) (string, bool) {
	at := strings.LastIndex(ep, "@")
	if at < 0 {
		return "", false
	}
	host, _, _ := strings.Cut(ep[at+1:], "/")
	return "…@" + host, true
}

// etcdCredentials reads --etcd-user USER[:PASSWORD] and --etcd-password as etcdctl reads its
// --user and --password: with a password given apart, the user is the whole value, colons
// included; else the password is what follows the first colon. A password without a user, or
// a user without a password, is a usage error; so is either with --from-consul-export (given on
// the command line: SHOELACE_ETCD_USER and SHOELACE_ETCD_PASSWORD may be set for other imports).
// No error holds the password.
func (e *cliEnv) etcdCredentials(c *cli.Context, fromConsul bool) (user, password string, err error) {
	user, password = c.String("etcd-user"), c.String("etcd-password")
	if fromConsul {
		for _, f := range []string{"etcd-user", "etcd-password"} {
			if e.onCommandLine[f] {
				return "", "", usagef("import: --%s goes with --from-etcd: --from-consul-export reads a file", f)
			}
		}
		return "", "", nil
	}
	if user == "" {
		if e.onCommandLine["etcd-password"] {
			return "", "", usagef("import: --etcd-password goes with --etcd-user USER: the etcd user whose password it is")
		}
		return "", "", nil // SHOELACE_ETCD_PASSWORD alone: no user to read as
	}
	if password == "" {
		user, password, _ = strings.Cut(user, ":")
	}
	if user == "" {
		return "", "", usagef("import: --etcd-user: the user's name is empty: give USER or USER:PASSWORD")
	}
	if password == "" {
		return "", "", usagef("import: --etcd-user %q has no password: give USER:PASSWORD, --etcd-password, or SHOELACE_ETCD_PASSWORD (which keeps it off the command line)", user)
	}
	return user, password, nil
}

// planFromEtcd plans the transaction that writes keys into a store whose keys under the
// appliance are current: a key that holds the value already is left alone; one that is absent
// is put, guarded to be still absent; one that holds another value is a conflict, or with merge
// is put, guarded at the revision it was read at.
func planFromEtcd(keys map[string]string, current []api.KV, merge bool) (importPlan, []string) {
	p := importPlan{Mode: modeMerge, New: keys, Old: make(map[string]string, len(current))}
	have := make(map[string]api.KV, len(current))
	for _, kv := range current {
		have[kv.Key] = kv
		p.Old[kv.Key] = kv.Value
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var conflicts []string
	for _, k := range names {
		cur, ok := have[k]
		switch {
		case ok && cur.Value == keys[k]:
			p.Unchanged++
			continue
		case ok && !merge:
			conflicts = append(conflicts, k)
			continue
		case ok:
			p.Changed = append(p.Changed, k)
		default:
			p.Created = append(p.Created, k)
		}
		p.Put = append(p.Put, k)
		p.Txn.Ops = append(p.Txn.Ops, api.Op{Op: api.OpPut, Key: k, Value: keys[k]})
		p.Txn.Guards = append(p.Txn.Guards, api.Guard{Key: k, ModRevision: cur.ModRevision})
	}
	return p, conflicts
}

// firstSegments lists the distinct first segments of keys (each as "seg/", or the key itself when
// it has one segment), sorted, at most n of them and "…" when there are more.
func firstSegments(kvs []store.ForeignKV, n int) []string {
	seen := map[string]bool{}
	var out []string
	for _, kv := range kvs {
		k := strings.TrimPrefix(string(kv.Key), "/")
		if i := strings.IndexByte(k, '/'); i >= 0 {
			k = k[:i+1]
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return capped(out, n)
}

// capped is list with at most n of its names, "…" after them when it had more.
func capped(list []string, n int) []string {
	if len(list) > n {
		return append(list[:n:n], "…")
	}
	return list
}

// withoutConsulFolders leaves out of kvs (read by readConsulExport) the folders of Consul's KV:
// keys that end in '/' with no value, which its UI creates and consul kv export lists like any
// key. They hold nothing, so they are no key to refuse. It returns the rest and the folders'
// names as Consul writes them.
func withoutConsulFolders(kvs []store.ForeignKV) ([]store.ForeignKV, []string) {
	out := kvs[:0:0]
	var folders []string
	for _, kv := range kvs {
		if strings.HasSuffix(string(kv.Key), "/") && len(kv.Value) == 0 {
			folders = append(folders, strings.TrimPrefix(string(kv.Key), "/"))
			continue
		}
		out = append(out, kv)
	}
	return out, folders
}

// consulKV is one entry of `consul kv export`: the key, its flags, and its value in base64.
type consulKV struct {
	Key   string `json:"key"`
	Flags uint64 `json:"flags"`
	Value string `json:"value"`
}

// maxConsulExportBytes bounds what --from-consul-export reads, as a read of a foreign etcd is.
var maxConsulExportBytes = store.DefaultForeignMaxBytes

// readConsulExport reads what `consul kv export` wrote (file, or stdin for "-") as keys rooted
// at '/', so that they map onto an appliance as a confd keyspace does.
func readConsulExport(ctx context.Context, e *cliEnv, file string) ([]store.ForeignKV, map[string]uint64, error) {
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, nil, fmt.Errorf("read the consul export: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := readAll(ctx, io.LimitReader(r, int64(maxConsulExportBytes)+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read the consul export: %w", err)
	}
	if len(data) > maxConsulExportBytes {
		return nil, nil, fmt.Errorf("%s is over %d bytes, more than one import can hold: export a narrower prefix (consul kv export web/db)", file, maxConsulExportBytes)
	}
	data = api.WithoutBOM(data)
	// encoding/json keeps the last of a member given twice ("value" twice in one entry), and
	// takes a member named in another case ("Key") for the field.
	var entries []consulKV
	if err := api.CheckJSONMembersOf(data, &entries); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, nil, fmt.Errorf("%s is not what consul kv export writes (a JSON list of {\"key\",\"flags\",\"value\"}): %w", file, err)
	}
	out := make([]store.ForeignKV, 0, len(entries))
	var flags map[string]uint64
	first := make(map[string]int, len(entries))
	for i, en := range entries {
		// Consul never exports a key twice: a file that does (two exports joined, an edit)
		// would import whichever came last.
		if j, ok := first[en.Key]; ok {
			return nil, nil, fmt.Errorf("%s: entries %d and %d are both the key %q: give each key once", file, j+1, i+1, en.Key)
		}
		first[en.Key] = i
		v, err := base64.StdEncoding.DecodeString(en.Value)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: entry %d (%q): the value is not base64: %w", file, i+1, en.Key, err)
		}
		out = append(out, store.ForeignKV{Key: []byte("/" + en.Key), Value: v})
		if en.Flags != 0 {
			if flags == nil {
				flags = map[string]uint64{}
			}
			flags["/"+en.Key] = en.Flags
		}
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].Key) < string(out[j].Key) })
	return out, flags, nil
}

// inPrefix reports whether key (rooted at '/') is prefix or below it, as an import of prefix
// takes it.
func inPrefix(key, prefix string) bool {
	return prefix == "/" || key == prefix || strings.HasPrefix(key, strings.TrimSuffix(prefix, "/")+"/")
}
