package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

// KVPair is one key of a listing (ls, tree, gets, get).
type KVPair struct {
	// Key is the key relative to the listed prefix for ls and tree (consul-template's
	// .Key; for ls it is the child's name), and the full key with a leading '/' for
	// confd's gets and get.
	Key string `json:"key" yaml:"key"`
	// Value is the key's value.
	Value string `json:"value" yaml:"value"`
	// Path is the full key in the view, without a leading '/' (consul-template's .Path).
	Path string `json:"path" yaml:"path"`
}

// nondeterministic are functions whose output changes on every render.
var nondeterministic = map[string]bool{
	"now": true, "datetime": true, "ago": true,
	"randAlphaNum": true, "randAlpha": true, "randAscii": true, "randNumeric": true,
	"randBytes": true, "randInt": true, "shuffle": true, "uuidv4": true,
	"bcrypt": true, "htpasswd": true, "encryptAES": true,
	"genPrivateKey": true, "genCA": true, "genCAWithKey": true, "genSelfSignedCert": true,
	"genSelfSignedCertWithKey": true, "genSignedCert": true, "genSignedCertWithKey": true,
	"getHostByName": true, "lookupIP": true, "lookupIPV4": true, "lookupIPV6": true, "lookupSRV": true,
}

// fileFuncsIn are the functions of a mode that read the local file system; they need
// Options.AllowFile.
func fileFuncsIn(mode string) map[string]bool {
	switch mode {
	case ModeConfd:
		return map[string]bool{"fileExists": true}
	case ModeConsulTemplate:
		return map[string]bool{"file": true}
	}
	return map[string]bool{"file": true, "fileExists": true}
}

// refusedIn are the functions a mode refuses at parse time, with the reason. Native mode
// refuses the peers' functions it cannot give either.
func refusedIn(mode string) map[string]string {
	switch mode {
	case ModeConfd:
		return confdRefused
	case ModeConsulTemplate:
		return ctRefused
	}
	return nativeRefused
}

var nativeRefused = mergeReasons(ctRefused, confdRefused, nativeDNSRefused)

func mergeReasons(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// sprigFuncs is sprig's text/template function set, built once, with the functions that build
// from a count bounded (bounds.go).
var sprigFuncs = boundedSprig(sprig.TxtFuncMap(), "")

// modeStatic is each mode's functions that do not read the view.
var modeStatic = map[string]template.FuncMap{
	ModeNative:         nativeStatic(),
	ModeConfd:          confdStatic,
	ModeConsulTemplate: mergeFuncs(ctHelpers, ctSprig),
}

func mergeFuncs(maps ...template.FuncMap) template.FuncMap {
	out := template.FuncMap{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// parseFuncMap is a mode's function map, with the view functions bound to st: parsing needs
// only the names, and each execution resets st to its view (or rebinds them in a clone).
// Refused functions are there too, so that Parse can name them with the reason. With only not
// nil, the map holds only the names in it.
func parseFuncMap(t *Template, st *state, only map[string][]parse.Node) template.FuncMap {
	m := template.FuncMap{}
	keep := func(name string) bool {
		_, ok := only[name]
		return ok || only == nil
	}
	for k := range refusedIn(t.mode) {
		if keep(k) {
			name := k
			m[k] = func(...any) (string, error) { return "", fmt.Errorf("function %q is not supported", name) }
		}
	}
	for k, v := range modeStatic[t.mode] {
		if keep(k) {
			m[k] = v
		}
	}
	for k, v := range st.funcs() {
		if keep(k) {
			m[k] = v
		}
	}
	m[rangedName] = st.ranged // every range passes through it, and {{template}} calls this (boundExecution)
	m[templateName] = st.templateCall
	return t.deny(m)
}

// deny replaces in m the functions of consul-template's function_denylist (consul-template mode).
func (t *Template) deny(m template.FuncMap) template.FuncMap {
	if t.mode != ModeConsulTemplate {
		return m
	}
	for _, pat := range t.opts.FunctionDenylist {
		for name := range m {
			// range and template are the keywords', not functions a template calls: "r*" or
			// "*" made every range and {{template}} fail.
			if name != rangedName && name != templateName && globMatch(pat, name) {
				m[name] = ctDenied
			}
		}
	}
	return m
}

// ctDenied is what a function of function_denylist becomes, as in consul-template.
func ctDenied(...any) (string, error) { return "", errors.New("function is disabled") }

// globMatch is consul-template's glob for function_denylist: '*' matches any run of characters.
func globMatch(pat, s string) bool {
	parts := strings.Split(pat, "*")
	if len(parts) == 1 {
		return pat == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return true
}

// nativeStatic is sprig's functions, then Shoelace's and the peers' aliases, then
// consul-template's helpers, which take over where a name clashes (README.md, "Name clashes").
func nativeStatic() template.FuncMap {
	m := mergeFuncs(sprigFuncs, staticFuncs, ctHelpers)
	m["join"] = joinDispatch // consul-template's join SEP LIST, or confd's join LIST SEP
	m["trim"] = trimDispatch
	m["add"] = addDispatch
	return m
}

// trimDispatch is consul-template's trim CUTSET S for two arguments and sprig's trim S (surrounding
// space) for one, a call consul-template refuses.
func trimDispatch(args ...string) (string, error) {
	switch len(args) {
	case 1:
		return strings.TrimSpace(args[0]), nil
	case 2:
		return strings.Trim(args[1], args[0]), nil
	}
	return "", fmt.Errorf("trim: want 1 argument (sprig: s) or 2 (consul-template: cutset s); got %d", len(args))
}

var ctAdd = ctHelpers["add"].(func(b, a any) (any, error))

// addDispatch is consul-template's add for two numbers (`1.5 | add 1` is 2.5) and sprig's add
// (integers, strings converted) for any other call, which consul-template refuses.
func addDispatch(args ...any) (any, error) {
	if len(args) == 2 {
		_, ok1 := toCTNum(args[0])
		_, ok2 := toCTNum(args[1])
		if ok1 && ok2 {
			return ctAdd(args[0], args[1])
		}
	}
	return sprigFuncs["add"].(func(...any) int64)(args...), nil
}

// staticFuncs do not depend on the view. Where a name clashes with sprig, the entry here
// dispatches on the arguments (see README.md, "Name clashes").
var staticFuncs = template.FuncMap{
	// Shoelace. toJSON, toJSONPretty and toYAML are consul-template's (ctHelpers).
	"fromJSON": fromJSON,
	"fromYAML": fromYAML,

	// sprig, made deterministic.
	"values": sortedValues,

	// consul-template, on Shoelace's items.
	"explode":        explode,
	"byKey":          byKey,
	"sortByLength":   sortByLength,
	"sortKVByLength": sortKVByLength,

	// confd.
	"json":      jsonObject,
	"jsonArray": jsonArray,
	"datetime":  time.Now,
	"toUpper":   strings.ToUpper,
	"toLower":   strings.ToLower,
	"map":       createMap,
	"join":      joinDispatch,
	"replace":   replaceDispatch,
}

// funcs are the mode's functions bound to one execution's view.
func (s *state) funcs() template.FuncMap {
	switch s.t.mode {
	case ModeConfd:
		return s.confdFuncs()
	case ModeConsulTemplate:
		return s.consulFuncs()
	}
	return s.nativeFuncs()
}

// nativeFuncs are native mode's functions bound to one execution's view.
func (s *state) nativeFuncs() template.FuncMap {
	return template.FuncMap{
		// Shoelace.
		"key":       s.key,
		"keyOr":     s.keyOr,
		"exists":    s.exists,
		"ls":        s.ls,
		"keys":      s.keysDispatch,
		"tree":      s.tree,
		"env":       func(name string) string { return s.env(name) },
		"expandenv": func(str string) string { return os.Expand(str, s.env) },
		"appliance": func() string { return s.d.Appliance },
		"instance":  func() string { return s.d.Instance },
		"revision":  func() int64 { s.revision = true; return s.d.Revision },
		"file":      s.ctFile,

		// confd.
		"getv":       s.getv,
		"getvs":      s.getvs,
		"gets":       s.gets,
		"get":        s.getDispatch,
		"lsdir":      s.lsdir,
		"getenv":     s.getenv,
		"fileExists": s.fileExists,

		// consul-template.
		"keyOrDefault":    s.keyOrDefault,
		"keyExists":       s.exists,
		"safeLs":          s.safeLs,
		"safeTree":        s.safeTree,
		"envOrDefault":    s.ctEnvOrDefault,
		"mustEnv":         s.ctMustEnv,
		"loop":            s.loop,
		"scratch":         func() *ctScratch { return s.scratch },
		"executeTemplate": s.executeTemplate,
	}
}

// key returns the value of p; absent, the render fails.
func (s *state) key(p string) (string, error) {
	k, err := normKey(p)
	if err != nil {
		return "", err
	}
	v, ok := s.readKey(k)
	if !ok {
		return "", &MissingKeyError{Template: s.t.name, Key: k, Mode: s.t.mode}
	}
	return v, nil
}

// keyOr returns the value of p, or def when p is absent.
func (s *state) keyOr(p, def string) (string, error) {
	k, err := normKey(p)
	if err != nil {
		return "", err
	}
	if v, ok := s.readKey(k); ok {
		return v, nil
	}
	return def, nil
}

// keyOrDefault is consul-template's: the default also replaces an empty value.
func (s *state) keyOrDefault(p, def string) (string, error) {
	v, err := s.keyOr(p, def)
	if err == nil && v == "" {
		return def, nil
	}
	return v, err
}

func (s *state) exists(p string) (bool, error) {
	k, err := normKey(p)
	if err != nil {
		return false, err
	}
	_, ok := s.readKey(k)
	return ok, nil
}

// ls returns the direct children of prefix that hold a value, like consul-template's ls:
// a child that is only a "directory" (it has keys below it but no value) is left out.
func (s *state) ls(prefix string) ([]KVPair, error) {
	p, err := normPrefix(prefix)
	if err != nil {
		return nil, err
	}
	out := []KVPair{}
	for _, k := range s.below(p) {
		rel := relative(k, p)
		if strings.Contains(rel, "/") {
			continue
		}
		s.seen(k)
		out = append(out, KVPair{Key: rel, Value: s.d.Keys[k], Path: k})
	}
	return out, nil
}

// safeLs is ls that fails on an empty result (consul-template blocks instead).
func (s *state) safeLs(prefix string) ([]KVPair, error) {
	out, err := s.ls(prefix)
	if err == nil && len(out) == 0 {
		return nil, fmt.Errorf("safeLs: no keys directly below %q", prefix)
	}
	return out, err
}

// tree returns every key strictly below prefix, Key relative to it.
func (s *state) tree(prefix string) ([]KVPair, error) {
	p, err := normPrefix(prefix)
	if err != nil {
		return nil, err
	}
	ks := s.below(p)
	out := make([]KVPair, 0, len(ks))
	for _, k := range ks {
		s.seen(k)
		out = append(out, KVPair{Key: relative(k, p), Value: s.d.Keys[k], Path: k})
	}
	return out, nil
}

// safeTree is tree that fails on an empty result (consul-template blocks instead).
func (s *state) safeTree(prefix string) ([]KVPair, error) {
	out, err := s.tree(prefix)
	if err == nil && len(out) == 0 {
		return nil, fmt.Errorf("safeTree: no keys below %q", prefix)
	}
	return out, err
}

// childNames returns the sorted names of the direct children of prefix; dirsOnly keeps
// only those with keys below them (confd's lsdir).
func (s *state) childNames(prefix string, dirsOnly bool) ([]string, error) {
	p, err := normPrefix(prefix)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	for _, k := range s.below(p) {
		rel := relative(k, p)
		name, _, isDir := strings.Cut(rel, "/")
		if dirsOnly && !isDir {
			continue
		}
		if _, dup := set[name]; !dup {
			// Only the child's name is returned, so only its own path can make the result secret.
			s.seen(joinKey(p, name))
			set[name] = struct{}{}
		}
	}
	return sortedSet(set), nil
}

// keysDispatch is Shoelace's keys "prefix" for one string argument, sprig's keys (of dicts) otherwise.
func (s *state) keysDispatch(args ...any) ([]string, error) {
	if len(args) == 1 {
		if p, ok := args[0].(string); ok {
			return s.childNames(p, false)
		}
	}
	dicts := make([]map[string]any, 0, len(args))
	for i, a := range args {
		d, ok := a.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("keys: want one prefix string, or dicts (sprig); argument %d is %T", i+1, a)
		}
		dicts = append(dicts, d)
	}
	// Sorted, unlike sprig's (map order): a template's output must not change between renders.
	ks := sprigFuncs["keys"].(func(...map[string]any) []string)(dicts...)
	sort.Strings(ks)
	return ks, nil
}

// sortedValues is sprig's values, in the order of the sorted keys instead of map order.
func sortedValues(d map[string]any) []any {
	ks := make([]string, 0, len(d))
	for k := range d {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	out := make([]any, 0, len(d))
	for _, k := range ks {
		out = append(out, d[k])
	}
	return out
}

func (s *state) lsdir(prefix string) ([]string, error) { return s.childNames(prefix, true) }

// getv is confd's getv: the value of p, or the first default if p is absent.
func (s *state) getv(p string, def ...string) (string, error) {
	if len(def) > 0 {
		return s.keyOr(p, def[0])
	}
	return s.key(p)
}

// getDispatch is confd's get "/p" (a KVPair; fails if absent) for one argument and sprig's
// get $dict "k" for two.
func (s *state) getDispatch(args ...any) (any, error) {
	switch len(args) {
	case 1:
		p, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("get: want a key string (confd) or a dict and a key (sprig); got %T", args[0])
		}
		v, err := s.key(p)
		if err != nil {
			return nil, err
		}
		k, _ := normKey(p)
		return KVPair{Key: "/" + k, Value: v, Path: k}, nil
	case 2:
		d, ok1 := args[0].(map[string]any)
		k, ok2 := args[1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("get: want a dict and a key string (sprig); got %T and %T", args[0], args[1])
		}
		return sprigFuncs["get"].(func(map[string]any, string) any)(d, k), nil
	}
	return nil, fmt.Errorf("get: want 1 argument (confd: key) or 2 (sprig: dict, key); got %d", len(args))
}

// globMatches returns the keys matching a confd glob pattern (path.Match syntax, with an
// optional leading '/'), sorted by key, recording the literal prefix before the first
// wildcard as the listed prefix.
func (s *state) globMatches(pattern string) ([]string, error) {
	pat := strings.TrimPrefix(pattern, "/")
	if _, err := path.Match(pat, ""); err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	if !hasMeta(pat) {
		k, err := normKey(pat)
		if err != nil {
			return nil, err
		}
		if _, ok := s.readKey(k); ok {
			return []string{k}, nil
		}
		return nil, nil
	}
	segs := strings.Split(pat, "/")
	lit := 0
	for lit < len(segs) && !hasMeta(segs[lit]) {
		lit++
	}
	prefix, err := normPrefix(strings.Join(segs[:lit], "/"))
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	var out []string
	for _, k := range s.below(prefix) {
		if ok, _ := path.Match(pat, k); ok {
			s.seen(k)
			out = append(out, k)
		}
	}
	return out, nil
}

// joinKey joins a prefix ("" = root) and a relative key.
func joinKey(prefix, rel string) string {
	if prefix == "" {
		return rel
	}
	return prefix + "/" + rel
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// getvs is confd's getvs: the values of the keys matching a glob, sorted by value.
func (s *state) getvs(pattern string) ([]string, error) {
	ks, err := s.globMatches(pattern)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		out = append(out, s.d.Keys[k])
	}
	sort.Strings(out)
	return out, nil
}

// gets is confd's gets: KVPairs (Key with a leading '/') of the keys matching a glob, sorted by key.
func (s *state) gets(pattern string) ([]KVPair, error) {
	ks, err := s.globMatches(pattern)
	if err != nil {
		return nil, err
	}
	out := make([]KVPair, 0, len(ks))
	for _, k := range ks {
		out = append(out, KVPair{Key: "/" + k, Value: s.d.Keys[k], Path: k})
	}
	return out, nil
}

// getenv is confd's getenv (and consul-template's envOrDefault): the variable, or the
// default when it is empty or unset.
func (s *state) getenv(name string, def ...string) string {
	if v := s.env(name); v != "" {
		return v
	}
	if len(def) > 0 {
		return def[0]
	}
	return ""
}

func (s *state) file(name string) (string, error) {
	if !s.t.opts.AllowFile {
		return "", fmt.Errorf("file %q: reading local files is disabled for this template", name)
	}
	s.files[name] = struct{}{}
	if err := s.denied("file", name); err != nil {
		return "", err
	}
	b, err := readBounded(name, s.t.maxOutput(), func(fi os.FileInfo) error { return s.deniedOpened("file", name, fi) })
	if errors.Is(err, errAgentFile) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("file: %w", err)
	}
	return b, nil
}

func (s *state) fileExists(name string) (bool, error) {
	if !s.t.opts.AllowFile {
		return false, fmt.Errorf("fileExists %q: reading local files is disabled for this template", name)
	}
	s.files[name] = struct{}{}
	if err := s.denied("fileExists", name); err != nil {
		return false, err
	}
	_, err := os.Stat(name)
	return err == nil, nil
}

func fromJSON(s string) (any, error) {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("fromJSON: %w", err)
	}
	return v, nil
}

func fromYAML(s string) (any, error) {
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("fromYAML: %w", err)
	}
	return v, nil
}

func jsonObject(s string) (map[string]any, error) {
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return v, nil
}

func jsonArray(s string) ([]any, error) {
	var v []any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("jsonArray: %w", err)
	}
	return v, nil
}

// createMap is confd's map: pairs of string keys and values.
func createMap(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("map: want key/value pairs, got %d arguments", len(kv))
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("map: key %d is %T, want a string", i/2+1, kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// sortByLength returns a copy of ss sorted by length, shortest first (stable).
func sortByLength(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) < len(out[j]) })
	return out
}

// sortKVByLength returns a copy of kvs sorted by the length of their keys (stable).
func sortKVByLength(kvs []KVPair) []KVPair {
	out := append([]KVPair(nil), kvs...)
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].Key) < len(out[j].Key) })
	return out
}

// explode is consul-template's explode of Shoelace's items: nested maps by the Key's segments
// (a later key replaces a value or map at the same place, as in consul-template).
func explode(kvs []KVPair) (map[string]any, error) {
	out := map[string]any{}
	for _, kv := range kvs {
		if err := ctExplodeInto(out, kv.Key, kv.Value, kv.Key); err != nil {
			return nil, fmt.Errorf("explode: %w", err)
		}
	}
	return out, nil
}

// byKey is consul-template's byKey of Shoelace's items: grouped by the Key's first segment,
// the rest becoming the Key; items with nothing after the first segment are left out.
func byKey(kvs []KVPair) (map[string]map[string]KVPair, error) {
	out := map[string]map[string]KVPair{}
	for _, kv := range kvs {
		top, rest, _ := strings.Cut(kv.Key, "/")
		if rest == "" {
			continue
		}
		if out[top] == nil {
			out[top] = map[string]KVPair{}
		}
		kv.Key = rest
		out[top][rest] = kv
	}
	return out, nil
}

// joinDispatch is sprig's join SEP LIST (also consul-template's), or confd's join LIST SEP
// when the first argument is a list and the second a string.
func joinDispatch(a, b any) (string, error) {
	if sep, ok := b.(string); ok {
		switch l := a.(type) {
		case []string:
			return boundedJoin("join", l, sep)
		case []any:
			parts := make([]string, 0, len(l))
			for _, v := range l {
				parts = append(parts, fmt.Sprint(v))
			}
			return boundedJoin("join", parts, sep)
		}
	}
	sep, ok := a.(string)
	if !ok {
		return "", fmt.Errorf("join: want a separator and a list (sprig) or a list and a separator (confd); got %T and %T", a, b)
	}
	return sprigFuncs["join"].(func(string, any) (string, error))(sep, b)
}

// replaceDispatch is sprig's replace OLD NEW SRC (three arguments) or confd's
// replace S OLD NEW N (four, strings.Replace).
func replaceDispatch(args ...any) (string, error) {
	str := func(i int) (string, error) {
		s, ok := args[i].(string)
		if !ok {
			return "", fmt.Errorf("replace: argument %d is %T, want a string", i+1, args[i])
		}
		return s, nil
	}
	var ss [3]string
	switch len(args) {
	case 3, 4:
		for i := range 3 {
			s, err := str(i)
			if err != nil {
				return "", err
			}
			ss[i] = s
		}
	default:
		return "", fmt.Errorf("replace: want 3 arguments (sprig: old new src) or 4 (confd: s old new n); got %d", len(args))
	}
	if len(args) == 3 {
		return boundedReplace("replace", ss[2], ss[0], ss[1], -1)
	}
	n, err := toInt(args[3])
	if err != nil {
		return "", fmt.Errorf("replace: argument 4: %w", err)
	}
	return boundedReplace("replace", ss[0], ss[1], ss[2], n)
}

func toInt(v any) (int, error) {
	switch n := v.(type) {
	case int:
		return n, nil
	case int64:
		return int(n), nil
	case int32:
		return int(n), nil
	case float64:
		if n == float64(int(n)) {
			return int(n), nil
		}
	case string:
		i, err := strconv.Atoi(n)
		if err == nil {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%v (%T) is not an integer", v, v)
}
