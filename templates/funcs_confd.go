package templates

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/templates/internal/memkv"
)

// confd mode: confd v0.16.0's function map (resource/template/template_funcs.go and memkv's
// store functions) with its Go signatures, so that text/template converts and rejects
// arguments as confd does, and its results, edge cases included. confd's store holds every key
// as "/" + its path ("/db/host"); the functions below read the view as that store.

// confdPair and confdPairs are confd's memkv.KVPair and KVPairs.
type (
	confdPair  = memkv.KVPair
	confdPairs = memkv.KVPairs
)

// confdStatic are confd's functions that do not read the view.
var confdStatic = template.FuncMap{
	"base":       path.Base,
	"split":      strings.Split,
	"json":       confdJSON[map[string]any],
	"jsonArray":  confdJSON[[]any],
	"dir":        path.Dir,
	"map":        confdMap,
	"join":       func(l []string, sep string) (string, error) { return boundedJoin("join", l, sep) },
	"datetime":   time.Now,
	"toUpper":    strings.ToUpper,
	"toLower":    strings.ToLower,
	"contains":   strings.Contains,
	"replace":    func(s, old, new string, n int) (string, error) { return boundedReplace("replace", s, old, new, n) },
	"trimSuffix": strings.TrimSuffix,
	"lookupIP":   confdLookupIP,
	"lookupIPV4": func(host string) []string { return confdLookupFamily(host, ".") },
	"lookupIPV6": func(host string) []string { return confdLookupFamily(host, ":") },
	"lookupSRV":  confdLookupSRV,
	"base64Encode": func(s string) string {
		return base64.StdEncoding.EncodeToString([]byte(s))
	},
	"base64Decode": func(s string) (string, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		return string(b), err
	},
	"parseBool":      strconv.ParseBool,
	"reverse":        confdReverse,
	"sortByLength":   confdSortByLength,
	"sortKVByLength": confdSortKVByLength,
	"add":            func(a, b int) int { return a + b },
	"sub":            func(a, b int) int { return a - b },
	"div":            func(a, b int) int { return a / b },
	"mod":            func(a, b int) int { return a % b },
	"mul":            func(a, b int) int { return a * b },
	"seq":            confdSeq,
	"atoi":           strconv.Atoi,
	// Not confd's: appended to each printing action (confdCheckPrinted).
	confdPrintedName: confdPrinted,
}

// confdRefused are confd's functions that confd mode refuses at parse time, with the reason.
var confdRefused = map[string]string{
	"cget":   "confd's PGP-encrypted values are not supported; store the value under a path with a `secrets` segment and use getv",
	"cgets":  "confd's PGP-encrypted values are not supported; store the values under a path with a `secrets` segment and use gets",
	"cgetv":  "confd's PGP-encrypted values are not supported; store the value under a path with a `secrets` segment and use getv",
	"cgetvs": "confd's PGP-encrypted values are not supported; store the values under a path with a `secrets` segment and use getvs",
}

// nativeDNSRefused are confd's DNS lookups, which native mode refuses: it has no confd
// semantics to give them.
var nativeDNSRefused = map[string]string{
	"lookupIP":   dnsRefusal,
	"lookupIPV4": dnsRefusal,
	"lookupIPV6": dnsRefusal,
	"lookupSRV":  dnsRefusal,
}

const dnsRefusal = "DNS lookups at render time make the output depend on the network, not on the view, and Shoelace re-renders only when the view changes; put the addresses in keys, or set functions: confd, where they behave as in confd"

// confdResolver answers confd mode's lookups (a variable so that tests need no network).
var confdResolver = net.DefaultResolver

// confdLookupTimeout bounds one lookup: a render waits for it, and a DNS server that does not
// answer must not hold the agent's pass for the resolver's own retries (5 s per try and
// server). A lookup that takes longer fails, as one refused does: no address.
var confdLookupTimeout = 5 * time.Second

// confdLookupIP is confd's lookupIP: the host's addresses as strings, sorted, nil when the
// lookup fails.
func confdLookupIP(host string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), confdLookupTimeout)
	defer cancel()
	ips, err := confdResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	sort.Strings(out)
	return out
}

// confdLookupFamily is confd's lookupIPV4 (sep ".") and lookupIPV6 (sep ":"): the addresses of
// lookupIP whose text holds sep.
func confdLookupFamily(host, sep string) []string {
	var out []string
	for _, ip := range confdLookupIP(host) {
		if strings.Contains(ip, sep) {
			out = append(out, ip)
		}
	}
	return out
}

// confdLookupSRV is confd's lookupSRV: the records sorted by target, port, priority and weight
// written one after the other, as text; empty (not nil) when the lookup fails.
func confdLookupSRV(service, proto, name string) []*net.SRV {
	ctx, cancel := context.WithTimeout(context.Background(), confdLookupTimeout)
	defer cancel()
	_, addrs, err := confdResolver.LookupSRV(ctx, service, proto, name)
	if err != nil {
		return []*net.SRV{}
	}
	sort.Sort(confdSRVs(addrs))
	return addrs
}

// confdSRVs sorts as confd's sortSRV does, with sort.Sort, so that records whose text is the
// same end up in confd's order.
type confdSRVs []*net.SRV

func (s confdSRVs) Len() int           { return len(s) }
func (s confdSRVs) Less(i, j int) bool { return srvText(s[i]) < srvText(s[j]) }
func (s confdSRVs) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }

func srvText(s *net.SRV) string {
	return fmt.Sprintf("%s%d%d%d", s.Target, s.Port, s.Priority, s.Weight)
}

func confdJSON[T any](data string) (T, error) {
	var v T
	err := json.Unmarshal([]byte(data), &v)
	return v, err
}

func confdMap(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("invalid map call")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, errors.New("map keys must be strings")
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// confdReverse reverses a []string or []confdPair in place; anything else (gets' confdPairs
// included) comes back unchanged, as in confd.
func confdReverse(v any) any {
	switch s := v.(type) {
	case []string:
		for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
			s[i], s[j] = s[j], s[i]
		}
	case []confdPair:
		for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
			s[i], s[j] = s[j], s[i]
		}
	}
	return v
}

type byLen []string

func (s byLen) Len() int           { return len(s) }
func (s byLen) Less(i, j int) bool { return len(s[i]) < len(s[j]) }
func (s byLen) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }

// confdSortByLength sorts in place with sort.Sort (not stable), as confd: equal lengths end up
// in the order confd gives them.
func confdSortByLength(s []string) []string {
	sort.Sort(byLen(s))
	return s
}

type kvByKeyLen []confdPair

func (s kvByKeyLen) Len() int           { return len(s) }
func (s kvByKeyLen) Less(i, j int) bool { return len(s[i].Key) < len(s[j].Key) }
func (s kvByKeyLen) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }

func confdSortKVByLength(s []confdPair) []confdPair {
	sort.Sort(kvByKeyLen(s))
	return s
}

// confdSeq is confd's seq: the integers first..last as a list (nil when first > last), within
// MaxItems.
func confdSeq(first, last int) ([]int, error) {
	if last < first {
		return nil, nil
	}
	n := uint64(last) - uint64(first) + 1
	if n == 0 { // first..last is every int
		n = ^uint64(0)
	}
	if err := checkItems("seq", n); err != nil {
		return nil, err
	}
	out := make([]int, 0, n)
	for k := uint64(0); k < n; k++ {
		out = append(out, first+int(k))
	}
	return out, nil
}

// confdFuncs are confd's store functions (memkv's), bound to one execution's view.
func (s *state) confdFuncs() template.FuncMap {
	return template.FuncMap{
		"exists":     s.confdExists,
		"ls":         s.confdLs,
		"lsdir":      s.confdLsdir,
		"get":        s.confdGet,
		"gets":       s.confdGets,
		"getv":       s.confdGetv,
		"getvs":      s.confdGetvs,
		"getenv":     s.getenv,
		"fileExists": s.confdFileExists,
	}
}

// confdVisible reports whether the view key k is one confd would have loaded for the
// template's resource: its store key "/" + k is one of the resource's keys or below one.
func (s *state) confdVisible(k string) bool {
	if s.t.confdKeys == nil {
		return true
	}
	sk := "/" + k
	for _, ck := range s.t.confdKeys {
		if ck == "/" || sk == ck || strings.HasPrefix(sk, ck+"/") {
			return true
		}
	}
	return false
}

// confdAny reports whether the template sees any key at all.
func (s *state) confdAny() bool {
	if s.t.confdKeys == nil {
		return len(s.d.Keys) > 0
	}
	for k := range s.d.Keys {
		if s.confdVisible(k) {
			return true
		}
	}
	return false
}

// confdBelow is below for confd's listings: the keys below base+prefix that the template sees,
// relative to base (a view path ending in '/', or "": see confdPrefixView).
func (s *state) confdBelow(base, prefix string) []string {
	ks := s.below(strings.TrimSuffix(base+prefix, "/"))
	if base == "" && s.t.confdKeys == nil {
		return ks
	}
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		if k = strings.TrimPrefix(k, base); s.confdVisible(k) {
			out = append(out, k)
		}
	}
	return out
}

// confdPrefixView is where a view imported with --prefix / (whole etcd paths) holds the keys of
// the template's confd prefix: "myapp/" for prefix /myapp, "" without a prefix.
func (s *state) confdPrefixView() string {
	p := s.t.confdPrefix
	if p == "" || api.ValidateKey(p) != nil {
		return ""
	}
	return p + "/"
}

// confdBase is the view path that confd's store of the template's resource is read below: its
// prefix's (confdPrefixView) when the view holds any key there or the prefix's own value, as one
// imported with --prefix / does (the own value read as the prefix's alone: before, the view was
// read as relative besides, the one key was also "/app", and the view's root read as the
// prefix's), so that one appliance holds the keys of resources with different prefixes as one etcd
// did for confd; else the view itself, imported with --prefix PREFIX (paths relative to it).
// Every read of an execution is of the one store, as confd reads PREFIX + path: before, each
// path the view lacked was read below the prefix, and a key at the root of a view imported
// with --prefix / (/database/url beside /myapp/database/url) was read in place of the
// prefix's. The listing of the prefix is recorded: a change there re-renders the template.
func (s *state) confdBase() string {
	if s.confdBaseOf == nil {
		base := ""
		if pv := s.confdPrefixView(); pv != "" {
			p := strings.TrimSuffix(pv, "/")
			if _, own := s.readKey(p); own || len(s.below(p)) > 0 || s.confdWholePaths() {
				base = pv
			}
		}
		s.confdBaseOf = &base
	}
	return *s.confdBaseOf
}

// confdWholePaths reports whether the view holds a key below another confd prefix rendered
// from it (Options.ConfdPrefixes): then it is one imported with --prefix /, and a prefix that
// holds none is read there, empty, as confd renders from nothing under its prefix. Before, the
// view was read as relative (imported with --prefix PREFIX): a resource whose keys were not
// imported yet, or deleted, saw every other prefix's keys at its root (ls "/" listed myapp and
// yourapp). The listings are recorded: a change there re-renders the template.
func (s *state) confdWholePaths() bool {
	for _, p := range s.t.confdOthers {
		if len(s.below(p)) > 0 {
			return true
		}
	}
	return false
}

// ConfdEmpty reports, for a confd-mode template with a prefix, whether it finds no key of d's
// view as it reads it: below its prefix when the view is one imported with --prefix / (its
// prefix, or another of Options.ConfdPrefixes, holds a key), else at the view's root, read as
// one imported with --prefix PREFIX (relative says which). confd renders such a resource from
// nothing: validate points it out. Which of the two it is, confdBase decides, as for a render:
// validate cannot tell of a view otherwise than the render reads it.
func (t *Template) ConfdEmpty(d Data) (empty, relative bool) {
	if t.mode != ModeConfd || t.confdPrefix == "" {
		return false, false
	}
	s := newState(t, d)
	base := s.confdBase()
	found := len(s.confdBelow(base, "")) > 0
	if base == "" {
		return !found, true
	}
	// The prefix's own value is read at "/", by a resource whose keys take in "/".
	_, own := d.Keys[strings.TrimSuffix(base, "/")]
	return !found && !(own && s.confdVisible("")), false
}

// confdKey returns the view key of a store key ("/db/host" → "db/host"), if it can be one.
func confdKey(k string) (string, bool) {
	rest, ok := strings.CutPrefix(k, "/")
	if !ok || api.ValidateKey(rest) != nil {
		return "", false
	}
	return rest, true
}

// confdLookup is memkv's Get: an exact store key, read below confdBase. The prefix's own
// value, which a view imported with --prefix / holds as the prefix's key, is at confdOwn:
// confd's store holds it as "/" (PREFIX with the prefix cut off), or at its whole path when
// the prefix ends in '/', for a resource whose keys load it ("/").
func (s *state) confdLookup(arg string) (string, bool) {
	if arg == "/" && s.t.confdOwn == "/" {
		if !s.confdVisible("") {
			return "", false
		}
		// Read where a view imported with --prefix / holds it, also when nothing is below
		// the prefix (confdBase reads that view below the prefix too): the real confd v0.16.0
		// renders a prefix that holds its own value alone.
		if base := s.confdBase(); base != "" {
			return s.readKey(strings.TrimSuffix(base, "/"))
		}
		return "", false
	}
	k, ok := confdKey(arg)
	if !ok || !s.confdVisible(k) {
		return "", false
	}
	v, ok := s.readKey(s.confdBase() + k)
	if !ok && arg == s.t.confdOwn {
		_, v, ok = s.confdOwnEntry()
	}
	return v, ok
}

// confdOwnEntry returns the prefix's own value as confd's store holds it at its whole path,
// for a prefix ending in '/' (confdOwn), when the view holds it where one imported with
// --prefix / does: the store path and the value. A view read as relative holds
// it at that very path. A key below the prefix at the same store path ("/app/app" for the
// prefix "/app/") hides it: confd holds one of the two, either from one run to the next.
func (s *state) confdOwnEntry() (sk, v string, ok bool) {
	own := s.t.confdOwn
	if own == "/" || own == "" || !s.confdVisible("") {
		return "", "", false
	}
	base := s.confdBase()
	if base == "" {
		return "", "", false
	}
	if k := own[1:]; s.confdVisible(k) {
		if _, dup := s.readKey(base + k); dup {
			return "", "", false
		}
	}
	if v, ok = s.readKey(strings.TrimSuffix(base, "/")); !ok {
		return "", "", false
	}
	return own, v, true
}

func (s *state) confdExists(key string) bool {
	_, ok := s.confdLookup(key)
	return ok
}

func (s *state) confdGet(key string) (confdPair, error) {
	v, ok := s.confdLookup(key)
	if !ok {
		return confdPair{}, s.confdMissing(key)
	}
	return confdPair{Key: key, Value: v}, nil
}

func (s *state) confdGetv(key string, def ...string) (string, error) {
	v, ok := s.confdLookup(key)
	if !ok {
		if len(def) > 0 {
			return def[0], nil
		}
		return "", s.confdMissing(key)
	}
	return v, nil
}

// confdMissing is the error of reading the store path key, which confd would not find. It
// says why when the key is written otherwise than confd's store has it ("db/host" or
// "/db/host/" for "/db/host"), when the view holds it but the resource's keys do not load
// it, or when it repeats the prefix that the path is already relative to; otherwise it names
// the view key and the functions of confd that make it optional.
func (s *state) confdMissing(key string) error {
	e := &MissingKeyError{Template: s.t.name, Key: key, Mode: s.t.mode, Path: key}
	if c := path.Clean("/" + s.t.opts.Prefix); s.t.confdPrefix == "" && c != "/" {
		e.Hint = fmt.Sprintf("the prefix %q has an empty segment, so that confd cuts nothing off the keys it loads: paths are whole (%q), as a view imported with --prefix / holds them", s.t.opts.Prefix, c+"/…")
		return e
	}
	if key == "/" && s.t.confdOwn != "/" && s.t.confdOwn != "" {
		e.Hint = fmt.Sprintf("the prefix %s ends in '/', which confd cuts off the keys below it but not off the prefix's own value: confd's store holds that at %q, not \"/\"", s.t.opts.Prefix, s.t.confdOwn)
		return e
	}
	if key == "/" {
		e.Hint = "it is the value at the prefix itself, which a view imported with --prefix PREFIX cannot hold: import with --prefix / to keep it (with keys = [\"/\"] to load it), or give a default (getv \"/\" \"DEFAULT\")"
		return e
	}
	k, ok := confdKey(key)
	if !ok {
		if c := path.Clean("/" + key); c != key && c != "/" {
			if _, ok := confdKey(c); ok {
				e.Hint = fmt.Sprintf("confd finds a key only by its exact path, which starts with '/' and does not end with one: write %q", c)
			}
		}
		return e
	}
	base := s.confdBase()
	e.Key = base + k
	_, inView := s.d.Keys[base+k]
	switch p := s.t.confdPrefix; {
	case inView && !s.confdVisible(k):
		e.Hint = fmt.Sprintf("the view holds it, but the resource's keys (%s) do not load it, and confd would not either: add %q (or a prefix of it) to keys",
			strings.Join(s.t.confdKeys, ", "), "/"+k)
	case !inView && p != "" && strings.HasPrefix(k, strings.TrimSuffix(p, "/")+"/"):
		rest := strings.TrimPrefix(k, strings.TrimSuffix(p, "/")+"/")
		if _, ok := s.d.Keys[base+rest]; ok {
			e.Hint = fmt.Sprintf("paths are relative to the prefix %s, as in confd, which would read %s here: write %q",
				path.Clean("/"+p), path.Join("/", p, key), "/"+rest)
		}
	}
	return e
}

// confdCandidatesIn returns the keys a listing of the store path or pattern c (cleaned, or the
// literal part of a pattern) can see below base, recording the prefix it lists: the keys below
// c, or the whole view (below base) when c is the root; relative to base.
func (s *state) confdCandidatesIn(base, c string) []string {
	if p, ok := strings.CutPrefix(c, "/"); ok {
		if p == "" {
			return s.confdBelow(base, "")
		}
		if vp, err := api.ValidatePrefix(p); err == nil && vp == p {
			return s.confdBelow(base, p)
		}
		// No view key can be below a path that is not a valid prefix.
		return nil
	}
	return s.confdBelow(base, "")
}

func terms(p string) []string { return strings.Split(path.Clean(p), "/") }

func hasTerms(prefix, t []string) bool {
	if len(t) < len(prefix) {
		return false
	}
	for i := range prefix {
		if prefix[i] != t[i] {
			return false
		}
	}
	return true
}

// confdLs is memkv's List: the names of the entries below filePath (a key's own base name when
// the key itself is filePath), sorted.
func (s *state) confdLs(fp string) []string {
	set := map[string]bool{}
	if !strings.HasPrefix(path.Clean(fp), "/") {
		return []string{} // every store key starts with "/"
	}
	if _, ok := s.confdLookup(fp); ok {
		set[path.Base(fp)] = true
	}
	prefix := terms(fp)
	s.confdListed(fp, func(sk string) bool {
		if sk != fp && hasTerms(prefix, terms(path.Dir(sk))) {
			set[strings.Split(strings.TrimPrefix(strings.TrimPrefix(sk, fp), "/"), "/")[0]] = true
			return true
		}
		return false
	})
	return sortedNamesOf(set)
}

// confdListed calls add with the store key of each entry a listing of fp may hold (the view's
// keys below it, and the prefix's own entry), and marks the view's keys that add takes as read.
func (s *state) confdListed(fp string, add func(sk string) bool) {
	base := s.confdBase()
	for _, k := range s.confdCandidatesIn(base, path.Clean(fp)) {
		if add("/" + k) {
			s.seen(base + k)
		}
	}
	if sk, _, ok := s.confdOwnEntry(); ok {
		add(sk)
	}
}

// confdLsdir is memkv's ListDir: the names of the "directories" below filePath, sorted. As in
// confd, `lsdir "/"` is always empty.
func (s *state) confdLsdir(fp string) []string {
	set := map[string]bool{}
	if !strings.HasPrefix(path.Clean(fp), "/") {
		return []string{}
	}
	prefix := terms(fp)
	s.confdListed(fp, func(sk string) bool {
		if !strings.HasPrefix(sk, fp) {
			return false
		}
		items := terms(path.Dir(sk))
		if hasTerms(prefix, items) && len(items) > len(prefix) {
			set[items[len(prefix)]] = true
			return true
		}
		return false
	})
	return sortedNamesOf(set)
}

func sortedNamesOf(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// confdGets is memkv's GetAll: the pairs whose store key matches the path.Match pattern,
// sorted by key.
func (s *state) confdGets(pat string) (confdPairs, error) {
	out := confdPairs{}
	if _, err := path.Match(pat, ""); err != nil {
		// confd fails on the first key it tries; with no key at all it returns nothing.
		if s.confdAny() {
			return nil, err
		}
		return out, nil
	}
	base := s.confdBase()
	for _, k := range s.confdCandidatesIn(base, globLiteral(pat)) {
		sk := "/" + k
		if ok, _ := path.Match(pat, sk); ok {
			s.seen(base + k)
			out = append(out, confdPair{Key: sk, Value: s.d.Keys[base+k]})
		}
	}
	if ok, _ := path.Match(pat, "/"); ok {
		if v, ok := s.confdLookup("/"); ok {
			out = append(out, confdPair{Key: "/", Value: v})
		}
	}
	if sk, v, ok := s.confdOwnEntry(); ok {
		if ok, _ := path.Match(pat, sk); ok {
			out = append(out, confdPair{Key: sk, Value: v})
		}
	}
	sort.Sort(out)
	return out, nil
}

// globLiteral is the part of a pattern before the segment with its first wildcard ("/" + the
// literal segments), or "" when the pattern does not start with a literal "/".
func globLiteral(pat string) string {
	if !strings.HasPrefix(pat, "/") {
		return ""
	}
	segs := strings.Split(pat[1:], "/")
	n := 0
	for n < len(segs) && !hasMeta(segs[n]) {
		n++
	}
	if n == len(segs) {
		// No wildcard: the pattern is one key; list its parent.
		n--
	}
	return path.Clean("/" + strings.Join(segs[:n], "/"))
}

func (s *state) confdGetvs(pattern string) ([]string, error) {
	ps, err := s.confdGets(pattern)
	if err != nil {
		return []string{}, err
	}
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Value)
	}
	sort.Strings(out)
	return out, nil
}

// confdFileExists is confd's fileExists: false only when the file does not exist (a file it
// may not stat counts as existing). Parse refuses it unless Options.AllowFile.
func (s *state) confdFileExists(name string) (bool, error) {
	if !s.t.opts.AllowFile {
		return false, fmt.Errorf("fileExists %q: reading local files is disabled for this template", name)
	}
	s.files[name] = struct{}{}
	if err := s.denied("fileExists", name); err != nil {
		return false, err
	}
	_, err := os.Stat(name)
	return !os.IsNotExist(err), nil
}
