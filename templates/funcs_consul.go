package templates

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"dario.cat/mergo"
	"github.com/BurntSushi/toml"
	"github.com/Masterminds/sprig/v3"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	yamlv2 "gopkg.in/yaml.v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// consul-template v0.41.1's helpers that work on plain values (its template/funcs.go), with
// its signatures and results: the piped value is the last argument. They are the functions of
// consul-template mode, and native mode takes them over where a name clashes (see README.md).
var ctHelpers = template.FuncMap{
	"base64Decode":          ctBase64Decode(base64.StdEncoding, "base64Decode"),
	"base64Encode":          ctBase64Encode(base64.StdEncoding),
	"base64URLDecode":       ctBase64Decode(base64.URLEncoding, "base64URLDecode"),
	"base64URLEncode":       ctBase64Encode(base64.URLEncoding),
	"contains":              func(v, l any) (bool, error) { return ctIn(l, v) },
	"containsAll":           ctContainsSome(true, true),
	"containsAny":           ctContainsSome(false, false),
	"containsNone":          ctContainsSome(true, false),
	"containsNotAll":        ctContainsSome(false, true),
	"explodeMap":            ctExplodeMap,
	"mergeMap":              func(dst, src map[string]any) (map[string]any, error) { return ctMergeMap(dst, src) },
	"mergeMapWithOverride":  func(dst, src map[string]any) (map[string]any, error) { return ctMergeMap(dst, src, mergo.WithOverride) },
	"in":                    ctIn,
	"indent":                ctIndent,
	"join":                  func(sep string, a []string) (string, error) { return boundedJoin("join", a, sep) },
	"trim":                  func(cutset, s string) (string, error) { return strings.Trim(s, cutset), nil },
	"trimPrefix":            func(prefix, s string) (string, error) { return strings.TrimPrefix(s, prefix), nil },
	"trimSuffix":            func(suffix, s string) (string, error) { return strings.TrimSuffix(s, suffix), nil },
	"trimSpace":             func(s string) (string, error) { return strings.TrimSpace(s), nil },
	"parseBool":             ctParse("parseBool", false, strconv.ParseBool),
	"parseFloat":            ctParse("parseFloat", 0.0, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }),
	"parseInt":              ctParse("parseInt", int64(0), func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }),
	"parseUint":             ctParse("parseUint", uint64(0), func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }),
	"parseJSON":             ctParseJSON,
	"parseYAML":             ctParseYAML,
	"regexReplaceAll":       ctRegexReplaceAll,
	"regexMatch":            ctRegexMatch,
	"replaceAll":            func(from, to, s string) (string, error) { return boundedReplace("replaceAll", s, from, to, -1) },
	"sha256Hex":             func(s string) (string, error) { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]), nil },
	"md5sum":                func(s string) (string, error) { return fmt.Sprintf("%x", md5.Sum([]byte(s))), nil },
	"hmacSHA256Hex":         ctHMACSHA256Hex,
	"timestamp":             ctTimestamp,
	"toLower":               func(s string) (string, error) { return strings.ToLower(s), nil },
	"toUpper":               func(s string) (string, error) { return strings.ToUpper(s), nil },
	"toJSON":                ctToJSON,
	"toJSONPretty":          ctToJSONPretty,
	"toUnescapedJSON":       func(v any) (string, error) { return ctUnescapedJSON("toUnescapedJSON", v, "") },
	"toUnescapedJSONPretty": func(v any) (string, error) { return ctUnescapedJSON("toUnescapedJSONPretty", v, "  ") },
	"toTitle":               ctToTitle,
	"toTOML":                ctToTOML,
	"toYAML":                ctToYAML,
	"split":                 ctSplit,
	"splitToMap":            ctSplitToMap,
	"add":                   ctArith("add", func(a, b int64) int64 { return a + b }, func(a, b uint64) uint64 { return a + b }, func(a, b float64) float64 { return a + b }),
	"subtract":              ctArith("subtract", func(a, b int64) int64 { return a - b }, func(a, b uint64) uint64 { return a - b }, func(a, b float64) float64 { return a - b }),
	"multiply":              ctArith("multiply", func(a, b int64) int64 { return a * b }, func(a, b uint64) uint64 { return a * b }, func(a, b float64) float64 { return a * b }),
	"divide":                ctArith("divide", func(a, b int64) int64 { return a / b }, func(a, b uint64) uint64 { return a / b }, func(a, b float64) float64 { return a / b }),
	"modulo":                ctArith("modulo", func(a, b int64) int64 { return a % b }, func(a, b uint64) uint64 { return a % b }, nil),
	"minimum":               ctMinMax("minimum", func(c int) bool { return c < 0 }),
	"maximum":               ctMinMax("maximum", func(c int) bool { return c > 0 }),
}

// ctRefused are consul-template's functions that consul-template mode (and native mode, which
// knows their names) refuses at parse time, with the reason.
var ctRefused = func() map[string]string {
	const consul = "it queries Consul's catalog, which Shoelace does not have; put what the template needs in keys"
	const nomad = "it queries Nomad, which Shoelace does not talk to; put what the template needs in keys"
	const vault = "it reads Vault, which Shoelace does not talk to; store the value under a path with a `secrets` segment and read it with key"
	m := map[string]string{
		"plugin":      "it runs a program at every render, whose output is not part of the view (and the agent often runs as root); render the file and run the program from the template's command",
		"writeToFile": "it writes files as a side effect of rendering, outside the agent's atomic write, owner and backup handling; use a second template",
		"sockaddr":    "it reads the host's network interfaces, which are not part of the view, so the output would change without the agent noticing; put the addresses in keys",
		"byMeta":      consul, "byPort": consul, "byTag": consul,
		"secret": vault, "secrets": vault, "pkiCert": vault,
	}
	for _, n := range []string{"datacenters", "exportedServices", "node", "nodes", "partitions", "peerings", "service", "connect", "services", "caRoots", "caLeaf"} {
		m[n] = consul
	}
	for _, n := range []string{"nomadServices", "nomadService", "nomadVarList", "nomadVarListSafe", "nomadVar", "nomadVarExists"} {
		m[n] = nomad
	}
	for _, n := range []string{"spew_dump", "spew_printf", "spew_sdump", "spew_sprintf"} {
		m[n] = "a debugging aid that prints Go internals and memory addresses, not stable output; use toJSONPretty"
	}
	return m
}()

// ctSprig is sprig's hermetic function set under "sprig_" names, as consul-template exposes it.
var ctSprig = func() template.FuncMap {
	m := template.FuncMap{}
	for k, v := range sprig.HermeticTxtFuncMap() {
		m["sprig_"+k] = v
	}
	return boundedSprig(m, "sprig_")
}()

// ctKeyPair is one item of consul-template's ls and tree (its dependency.KeyPair). Consul's
// indexes, flags and sessions have no equivalent here: they are zero, and a template that names
// them is refused at parse time (see ctRefusedFields).
type ctKeyPair struct {
	Path  string
	Key   string
	Value string

	CreateIndex uint64
	ModifyIndex uint64
	LockIndex   uint64
	Flags       uint64
	Session     string
}

// ctRefusedFields are fields of consul-template's key pairs that have no value here.
var ctRefusedFields = map[string]bool{"CreateIndex": true, "ModifyIndex": true, "LockIndex": true, "Flags": true, "Session": true}

func ctBase64Decode(enc *base64.Encoding, name string) func(string) (string, error) {
	return func(s string) (string, error) {
		b, err := enc.DecodeString(s)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return string(b), nil
	}
}

func ctBase64Encode(enc *base64.Encoding) func(string) (string, error) {
	return func(s string) (string, error) { return enc.EncodeToString([]byte(s)), nil }
}

// ctIn reports whether l holds v: an element of a list or array (numbers compared by kind
// class, strings by type and value), or a substring of a string.
func ctIn(l, v any) (bool, error) {
	lv, vv := reflect.ValueOf(l), reflect.ValueOf(v)
	switch lv.Kind() {
	case reflect.Slice, reflect.Array:
		for e := range ctItems(l, lv) {
			switch {
			case isIntKind(e.Kind()):
				if isIntKind(vv.Kind()) && vv.Int() == e.Int() {
					return true, nil
				}
			case isFloatKind(e.Kind()):
				if isFloatKind(vv.Kind()) && vv.Float() == e.Float() {
					return true, nil
				}
			case e.Kind() == reflect.String:
				if vv.Type() == e.Type() && vv.String() == e.String() {
					return true, nil
				}
			}
		}
	case reflect.String:
		if vv.Type() == lv.Type() && strings.Contains(lv.String(), vv.String()) {
			return true, nil
		}
	}
	return false, nil
}

// ctItems yields the items of l, a slice or array (lv its value), as ctIn reads them: an item of
// a list of interfaces as the value it holds. It panics on an array, or a slice of another type,
// of interfaces, as ctIn always did.
func ctItems(l any, lv reflect.Value) iter.Seq[reflect.Value] {
	return func(yield func(reflect.Value) bool) {
		var ifaces []any
		if reflect.TypeOf(l).Elem().Kind() == reflect.Interface {
			ifaces = l.([]any)
		}
		for i := 0; i < lv.Len(); i++ {
			e := lv.Index(i)
			if ifaces != nil {
				e = reflect.ValueOf(ifaces[i])
			}
			if !yield(e) {
				return
			}
		}
	}
}

func isIntKind(k reflect.Kind) bool   { return k >= reflect.Int && k <= reflect.Int64 }
func isUintKind(k reflect.Kind) bool  { return k >= reflect.Uint && k <= reflect.Uint64 }
func isFloatKind(k reflect.Kind) bool { return k == reflect.Float32 || k == reflect.Float64 }

// ctContainsSome builds containsAll (true, true), containsAny (false, false), containsNone
// (true, false) and containsNotAll (false, true).
// A list l is indexed once, so that vs and l of MaxItems each (`containsAll (concat (until N))
// (until N)`) take linear time: before, ctIn searched l for each of vs, hours in one call, which
// MaxRenderTime (checked between calls) did not stop.
func ctContainsSome(whenNoneHit, invert bool) func([]any, any) (bool, error) {
	return func(vs []any, l any) (bool, error) {
		if len(vs) == 0 {
			return whenNoneHit, nil
		}
		in := func(v any) bool { ok, _ := ctIn(l, v); return ok }
		if idx, ok := ctIndexList(l); ok { // as ctIn, panics on an array of interfaces
			in = idx.has
		}
		for _, v := range vs {
			if in(v) != invert {
				return !whenNoneHit, nil
			}
		}
		return whenNoneHit, nil
	}
}

// ctListIndex holds what ctIn finds in a list: its ints, floats and strings (by type and value).
type ctListIndex struct {
	l       any
	ints    map[int64]bool
	floats  map[float64]bool
	strs    map[ctTypedString]bool
	hasStrs bool
}

type ctTypedString struct {
	t reflect.Type
	s string
}

// ctIndexList indexes l when it is a list or array, as ctIn reads its items.
func ctIndexList(l any) (*ctListIndex, bool) {
	lv := reflect.ValueOf(l)
	if k := lv.Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, false
	}
	x := &ctListIndex{l: l, ints: map[int64]bool{}, floats: map[float64]bool{}, strs: map[ctTypedString]bool{}}
	for e := range ctItems(l, lv) {
		switch {
		case isIntKind(e.Kind()):
			x.ints[e.Int()] = true
		case isFloatKind(e.Kind()):
			x.floats[e.Float()] = true
		case e.Kind() == reflect.String:
			x.hasStrs = true
			x.strs[ctTypedString{e.Type(), e.String()}] = true
		}
	}
	return x, true
}

// has answers ctIn(x.l, v).
func (x *ctListIndex) has(v any) bool {
	vv := reflect.ValueOf(v)
	switch {
	case !vv.IsValid():
		if x.hasStrs { // ctIn's answer (it asks a string item for the type of nil)
			ok, _ := ctIn(x.l, v)
			return ok
		}
		return false
	case isIntKind(vv.Kind()):
		return x.ints[vv.Int()]
	case isFloatKind(vv.Kind()):
		return x.floats[vv.Float()]
	case vv.Kind() == reflect.String:
		return x.strs[ctTypedString{vv.Type(), vv.String()}]
	}
	return false
}

func ctMergeMap(dst, src map[string]any, opts ...func(*mergo.Config)) (map[string]any, error) {
	if err := mergo.Map(&dst, src, opts...); err != nil {
		return nil, err
	}
	return dst, nil
}

// ctExplodeInto sets v at the path k ('/'-separated) of m, making maps on the way; full is the
// key being exploded, for the error.
func ctExplodeInto(m map[string]any, k string, v any, full string) error {
	top, rest, nested := strings.Cut(k, "/")
	if !nested {
		if k != "" {
			m[k] = v
		}
		return nil
	}
	if _, ok := m[top]; !ok {
		m[top] = map[string]any{}
	}
	sub, ok := m[top].(map[string]any)
	if !ok {
		return fmt.Errorf("not a map: %q: %q already has value %q", full, top, m[top])
	}
	return ctExplodeInto(sub, rest, v, k)
}

func ctExplodeMap(in map[string]any) (map[string]any, error) {
	out := map[string]any{}
	ks := make([]string, 0, len(in))
	for k := range in {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if err := ctExplodeInto(out, k, in[k], k); err != nil {
			return nil, fmt.Errorf("explodeMap: %w", err)
		}
	}
	return out, nil
}

// ctExplode is consul-template's explode of ls or tree items.
func ctExplode(pairs []*ctKeyPair) (map[string]any, error) {
	out := map[string]any{}
	for _, p := range pairs {
		if err := ctExplodeInto(out, p.Key, p.Value, p.Key); err != nil {
			return nil, fmt.Errorf("explode: %w", err)
		}
	}
	return out, nil
}

// ctByKey groups tree items by their first segment, the rest becoming the Key.
func ctByKey(pairs []*ctKeyPair) (map[string]map[string]*ctKeyPair, error) {
	out := map[string]map[string]*ctKeyPair{}
	for _, p := range pairs {
		top, rest, _ := strings.Cut(p.Key, "/")
		if rest == "" {
			continue
		}
		if out[top] == nil {
			out[top] = map[string]*ctKeyPair{}
		}
		np := *p
		np.Key = rest
		out[top][rest] = &np
	}
	return out, nil
}

// ctIndent puts spaces before every line that is not empty.
func ctIndent(spaces int, s string) (string, error) {
	if spaces < 0 {
		return "", errors.New("indent value must be a positive integer")
	}
	if err := indentedSize("indent", spaces, s); err != nil {
		return "", err
	}
	pad := strings.Repeat(" ", spaces)
	var b strings.Builder
	atStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if atStart && c != '\n' {
			b.WriteString(pad)
		}
		b.WriteByte(c)
		atStart = c == '\n'
	}
	return b.String(), nil
}

func ctLoopBounds(args []any) (start, stop int64, err error) {
	to64 := func(v any) (int64, error) {
		rv := reflect.ValueOf(v)
		switch {
		case isIntKind(rv.Kind()):
			return rv.Int(), nil
		case isUintKind(rv.Kind()):
			return int64(rv.Uint()), nil
		case rv.Kind() == reflect.String:
			return ctParse("parseInt", int64(0), func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) })(rv.String())
		}
		return 0, fmt.Errorf("loop: bad argument type: %T", v)
	}
	var a, b any
	switch len(args) {
	case 1:
		a, b = 0, args[0]
	case 2:
		a, b = args[0], args[1]
	default:
		return 0, 0, fmt.Errorf("loop: wrong number of arguments, expected 1 or 2, but got %d", len(args))
	}
	if start, err = to64(a); err != nil {
		return 0, 0, err
	}
	if stop, err = to64(b); err != nil {
		return 0, 0, err
	}
	return start, stop, nil
}

// ctParse builds consul-template's parseX: "" gives the zero value, anything else must parse.
func ctParse[T any](name string, zero T, parse func(string) (T, error)) func(string) (T, error) {
	return func(s string) (T, error) {
		if s == "" {
			return zero, nil
		}
		v, err := parse(s)
		if err != nil {
			return zero, fmt.Errorf("%s: %w", name, err)
		}
		return v, nil
	}
}

func ctParseJSON(s string) (any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	return v, nil
}

// ctParseYAML decodes YAML as consul-template does (yaml.v2: maps are map[any]any).
func ctParseYAML(s string) (any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	var v any
	if err := yamlv2.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	return v, nil
}

func ctRegexReplaceAll(re, repl, s string) (string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return "", err
	}
	return boundedRegexReplace("regexReplaceAll", r, s, repl, false)
}

func ctRegexMatch(re, s string) (bool, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return false, err
	}
	return r.MatchString(s), nil
}

func ctHMACSHA256Hex(message, key string) (string, error) {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(message))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctNow is the clock of timestamp; tests replace it.
var ctNow = func() time.Time { return time.Now().UTC() }

func ctTimestamp(format ...string) (string, error) {
	switch len(format) {
	case 0:
		return ctNow().Format(time.RFC3339), nil
	case 1:
		if format[0] == "unix" {
			return strconv.FormatInt(ctNow().Unix(), 10), nil
		}
		return ctNow().Format(format[0]), nil
	}
	return "", fmt.Errorf("timestamp: wrong number of arguments, expected 0 or 1, but got %d", len(format))
}

// ctToJSON is consul-template's toJSON: encoding/json's Marshal, so <, > and & are escaped.
func ctToJSON(v any) (string, error) {
	if err := ctNoPairs("toJSON", v); err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toJSON: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func ctToJSONPretty(v any) (string, error) {
	if err := ctNoPairs("toJSONPretty", v); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", fmt.Errorf("toJSONPretty: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func ctUnescapedJSON(name string, v any, indent string) (string, error) {
	if err := ctNoPairs(name, v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return strings.TrimRight(b.String(), "\r\n"), nil
}

// ctNoPairs fails when v holds consul-template key pairs (the items of ls and tree): encoded
// whole, they carry Consul's indexes, which a view does not have, so the bytes would differ.
func ctNoPairs(name string, v any) error {
	if ctHoldsPair(reflect.ValueOf(v), 0) {
		return fmt.Errorf("%s of a whole Consul key pair is not supported in Shoelace: consul-template encodes its Consul indexes with it, which a view does not have; encode .Key, .Value or .Path (or tree … | explode)", name)
	}
	return nil
}

func ctHoldsPair(v reflect.Value, depth int) bool {
	if !v.IsValid() || depth > 32 {
		return false
	}
	if v.Type() == reflect.TypeFor[*ctKeyPair]() || v.Type() == reflect.TypeFor[ctKeyPair]() {
		return true
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		return !v.IsNil() && ctHoldsPair(v.Elem(), depth+1)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if ctHoldsPair(v.Index(i), depth+1) {
				return true
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if ctHoldsPair(it.Value(), depth+1) {
				return true
			}
		}
	}
	return false
}

// ctToTitle is consul-template's toTitle. A cases.Caser keeps state: one per call, as
// consul-template does, so that concurrent renders do not share it.
func ctToTitle(s string) (string, error) {
	return cases.Title(language.Und, cases.NoLower).String(s), nil
}

// ctToYAML is consul-template's toYAML (yaml.v2's layout), without surrounding space.
func ctToYAML(v any) (string, error) {
	if err := ctNoPairs("toYAML", v); err != nil {
		return "", err
	}
	b, err := yamlv2.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toYAML: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func ctToTOML(v any) (string, error) {
	if err := ctNoPairs("toTOML", v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return "", fmt.Errorf("toTOML: %w", err)
	}
	return string(bytes.TrimSpace(b.Bytes())), nil
}

// ctSplit is consul-template's split SEP S: a list, surrounding space trimmed, empty for "".
func ctSplit(sep, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []string{}, nil
	}
	return strings.Split(s, sep), nil
}

func ctSplitToMap(sep1, sep2, s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	m := map[string]string{}
	if s == "" {
		return m, nil
	}
	for _, item := range strings.Split(s, sep1) {
		if k, v, ok := strings.Cut(item, sep2); ok {
			m[k] = v
		}
	}
	return m, nil
}

// ctNum is a number argument of consul-template's math helpers, by kind class.
type ctNum struct {
	kind byte // 'i', 'u' or 'f'
	i    int64
	u    uint64
	f    float64
}

func toCTNum(v any) (ctNum, bool) {
	rv := reflect.ValueOf(v)
	switch {
	case isIntKind(rv.Kind()):
		return ctNum{kind: 'i', i: rv.Int()}, true
	case isUintKind(rv.Kind()):
		return ctNum{kind: 'u', u: rv.Uint()}, true
	case isFloatKind(rv.Kind()):
		return ctNum{kind: 'f', f: rv.Float()}, true
	}
	return ctNum{}, false
}

func (n ctNum) int() int64 {
	if n.kind == 'u' {
		return int64(n.u)
	}
	return n.i
}

func (n ctNum) float() float64 {
	switch n.kind {
	case 'i':
		return float64(n.i)
	case 'u':
		return float64(n.u)
	}
	return n.f
}

// natural is the number as its own kind's widest type (int64, uint64 or float64).
func (n ctNum) natural() any {
	switch n.kind {
	case 'i':
		return n.i
	case 'u':
		return n.u
	}
	return n.f
}

// ctArgs converts (b, a) — the piped value a comes last — or names the one that is not a number.
func ctArgs(name string, b, a any) (ctNum, ctNum, error) {
	na, ok := toCTNum(a)
	if !ok {
		return na, na, fmt.Errorf("%s: unknown type for %v (%T)", name, a, a)
	}
	nb, ok := toCTNum(b)
	if !ok {
		return na, nb, fmt.Errorf("%s: unknown type for %v (%T)", name, b, b)
	}
	return na, nb, nil
}

// ctArith builds consul-template's add, subtract, multiply, divide and modulo: `a | f b` is
// a op b; two signed (or mixed signed and unsigned) integers give an int64, two unsigned a
// uint64, a float on either side a float64 (modulo refuses floats).
func ctArith(name string, fi func(a, b int64) int64, fu func(a, b uint64) uint64, ff func(a, b float64) float64) func(b, a any) (any, error) {
	return func(b, a any) (any, error) {
		na, nb, err := ctArgs(name, b, a)
		if err != nil {
			return nil, err
		}
		switch {
		case na.kind == 'f' || nb.kind == 'f':
			if ff == nil {
				bad := a
				if nb.kind == 'f' && na.kind != 'f' {
					bad = b
				}
				return nil, fmt.Errorf("%s: unknown type for %v (%T)", name, bad, bad)
			}
			return ff(na.float(), nb.float()), nil
		case na.kind == 'u' && nb.kind == 'u':
			return fu(na.u, nb.u), nil
		}
		return fi(na.int(), nb.int()), nil
	}
}

// ctMinMax builds minimum and maximum: the winner keeps its own kind.
func ctMinMax(name string, aWins func(cmp int) bool) func(b, a any) (any, error) {
	return func(b, a any) (any, error) {
		na, nb, err := ctArgs(name, b, a)
		if err != nil {
			return nil, err
		}
		var c int
		switch {
		case na.kind == 'f' || nb.kind == 'f':
			c = cmpOrdered(na.float(), nb.float())
		case na.kind == 'u' && nb.kind == 'u':
			c = cmpOrdered(na.u, nb.u)
		default:
			c = cmpOrdered(na.int(), nb.int())
		}
		if aWins(c) {
			return na.natural(), nil
		}
		return nb.natural(), nil
	}
}

func cmpOrdered[T int64 | uint64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ctScratch is consul-template's scratch: a per-render store shared by all its calls.
type ctScratch struct {
	values map[string]any
}

// Key reports whether k is set.
func (s *ctScratch) Key(k string) bool { _, ok := s.values[k]; return ok }

// Get returns the value of k (nil if unset).
func (s *ctScratch) Get(k string) any { return s.values[k] }

// Set sets k.
func (s *ctScratch) Set(k string, v any) string { s.init(); s.values[k] = v; return "" }

// SetX sets k unless it is set.
func (s *ctScratch) SetX(k string, v any) string {
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = v
	}
	return ""
}

// MapSet sets the key mk of the map k.
func (s *ctScratch) MapSet(k, mk string, v any) (string, error) { return s.mapSet(k, mk, v, true) }

// MapSetX sets the key mk of the map k unless it is set.
func (s *ctScratch) MapSetX(k, mk string, v any) (string, error) { return s.mapSet(k, mk, v, false) }

func (s *ctScratch) mapSet(k, mk string, v any, override bool) (string, error) {
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = map[string]any{}
	}
	m, ok := s.values[k].(map[string]any)
	if !ok {
		return "", fmt.Errorf("%q is not a map", k)
	}
	if _, set := m[mk]; override || !set {
		if reaches(reflect.ValueOf(v), reflect.ValueOf(m).Pointer()) {
			return "", fmt.Errorf("scratch.MapSet: the map %q would hold itself, which no file can print (printing it would end the agent)", k)
		}
		m[mk] = v
	}
	return "", nil
}

// MapValues returns the values of the map k in the order of their keys.
func (s *ctScratch) MapValues(k string) ([]any, error) {
	s.init()
	m, ok := s.values[k].(map[string]any)
	if !ok {
		return nil, nil
	}
	ks := make([]string, 0, len(m))
	for mk := range m {
		ks = append(ks, mk)
	}
	sort.Strings(ks)
	out := make([]any, len(ks))
	for i, mk := range ks {
		out[i] = m[mk]
	}
	return out, nil
}

func (s *ctScratch) init() {
	if s.values == nil {
		s.values = map[string]any{}
	}
}

// consulFuncs are consul-template's functions that read the view, the environment or the
// template itself, bound to one execution.
func (s *state) consulFuncs() template.FuncMap {
	return template.FuncMap{
		"key":             s.ctKey,
		"keyExists":       s.ctKeyExists,
		"keyOrDefault":    s.ctKeyOrDefault,
		"ls":              func(p string) ([]*ctKeyPair, error) { return s.ctList(p, "ls", false) },
		"safeLs":          func(p string) ([]*ctKeyPair, error) { return s.ctList(p, "safeLs", false) },
		"tree":            func(p string) ([]*ctKeyPair, error) { return s.ctList(p, "tree", true) },
		"safeTree":        func(p string) ([]*ctKeyPair, error) { return s.ctList(p, "safeTree", true) },
		"explode":         ctExplode,
		"byKey":           ctByKey,
		"env":             func(name string) (string, error) { return s.env(name), nil },
		"mustEnv":         s.ctMustEnv,
		"envOrDefault":    s.ctEnvOrDefault,
		"file":            s.ctFile,
		"loop":            s.loop,
		"scratch":         func() *ctScratch { return s.scratch },
		"executeTemplate": s.executeTemplate,
	}
}

// ctQuery splits consul-template's key or prefix argument: one leading '/' is dropped (its
// query's regexp, `/?(?P<key>…)`), and a datacenter ("@dc") or query ("?ns=…") suffix has no
// equivalent here. What Consul is asked for is ctConsulPath of it.
func ctQuery(fn, arg string) (string, error) {
	if strings.ContainsAny(arg, "@?") {
		return "", fmt.Errorf("%s %q: Consul datacenter (@dc) and namespace/partition (?ns=) selectors have no equivalent in Shoelace: a view has one key space", fn, arg)
	}
	return strings.TrimPrefix(arg, "/"), nil
}

// ctConsulPath is the key or prefix that Consul's API client asks for a query q of ctQuery:
// it drops one more leading '/' ("/v1/kv/" + strings.TrimPrefix(key, "/")), so that
// consul-template's key "//a" reads a, and tree "//web" lists web/….
func ctConsulPath(q string) string { return strings.TrimPrefix(q, "/") }

// ctKey is consul-template's key: "" gives "", an absent key fails the render (consul-template
// waits for it instead).
func (s *state) ctKey(arg string) (string, error) {
	if arg == "" {
		return "", nil
	}
	k, err := ctQuery("key", arg)
	if err != nil {
		return "", err
	}
	k = ctConsulPath(k)
	if api.ValidateKey(k) == nil {
		if v, ok := s.readKey(k); ok {
			return v, nil
		}
	}
	return "", &MissingKeyError{Template: s.t.name, Key: k, Mode: s.t.mode}
}

func (s *state) ctKeyExists(arg string) (bool, error) {
	if arg == "" {
		return false, nil
	}
	k, err := ctQuery("keyExists", arg)
	if err != nil {
		return false, err
	}
	if k = ctConsulPath(k); api.ValidateKey(k) != nil {
		return false, nil
	}
	_, ok := s.readKey(k)
	return ok, nil
}

func (s *state) ctKeyOrDefault(arg, def string) (string, error) {
	if arg == "" {
		return def, nil
	}
	k, err := ctQuery("keyOrDefault", arg)
	if err != nil {
		return "", err
	}
	k = ctConsulPath(k)
	if api.ValidateKey(k) != nil {
		return def, nil
	}
	if v, ok := s.readKey(k); ok && v != "" {
		return v, nil
	}
	return def, nil
}

// ctList is consul-template's ls and tree: Consul lists the keys that start with the prefix as
// a string (not by whole segments); Key is the rest without leading '/'. ls keeps the direct
// children, tree everything. The safe variants fail on an empty result (consul-template waits).
func (s *state) ctList(arg, fn string, all bool) ([]*ctKeyPair, error) {
	out := []*ctKeyPair{}
	if arg == "" {
		return out, nil
	}
	p, err := ctQuery(fn, arg)
	if err != nil {
		return out, err
	}
	// Consul lists the keys below ctConsulPath(p); consul-template takes its own prefix p off
	// each (a p that still starts with '/' takes nothing off: Key is the whole path).
	for _, k := range s.rawPrefix(ctConsulPath(p)) {
		rel := strings.TrimLeft(strings.TrimPrefix(k, p), "/")
		if rel == "" || !all && strings.Contains(rel, "/") {
			continue
		}
		s.seen(k)
		out = append(out, &ctKeyPair{Path: k, Key: rel, Value: s.d.Keys[k]})
	}
	if len(out) == 0 && strings.HasPrefix(fn, "safe") {
		return out, fmt.Errorf("%s: no keys under %q (consul-template waits for some; Shoelace fails the render)", fn, arg)
	}
	return out, nil
}

// rawPrefix returns the view's keys that start with p as a string, sorted, recording the
// listing of the whole segments that hold them.
func (s *state) rawPrefix(p string) []string {
	seg := ""
	if i := strings.LastIndex(p, "/"); i >= 0 {
		seg = p[:i]
	}
	if vp, err := api.ValidatePrefix(seg); err != nil || vp != seg {
		seg = ""
	}
	names := s.below(seg)
	lo, _ := slices.BinarySearch(names, p)
	hi := lo
	for hi < len(names) && strings.HasPrefix(names[hi], p) {
		hi++
	}
	return names[lo:hi]
}

func (s *state) ctMustEnv(name string) (string, error) {
	v := s.env(name)
	if v == "" {
		return "", fmt.Errorf("required environment variable %s is empty", name)
	}
	return v, nil
}

// ctEnvOrDefault gives the variable when it is set, even to "", else the default.
func (s *state) ctEnvOrDefault(name, def string) (string, error) {
	if v, ok := s.lookupEnv(name); ok {
		return v, nil
	}
	return def, nil
}

// ctFile is consul-template's file: "" gives "", a file that cannot be read fails the render
// (consul-template waits for it). Parse refuses it unless Options.AllowFile.
func (s *state) ctFile(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	return s.file(name)
}

// loop is consul-template's loop. Its channel is fed until the range ends or the execution
// does, so that a range left early leaves no goroutine behind.
func (s *state) loop(args ...any) (<-chan int64, error) {
	start, stop, err := ctLoopBounds(args)
	if err != nil {
		return nil, err
	}
	if err := checkItems("loop", itemCount(start, stop, 1)); err != nil {
		return nil, err
	}
	// A channel's items are not known to ranged: they are counted here.
	if err := s.countRanged(itemCount(start, stop, 1)); err != nil {
		return nil, err
	}
	// Buffered: a range over it takes a goroutine switch per 256 items, not per item.
	ch := make(chan int64, 256)
	done := s.done
	go func() {
		defer close(ch)
		for i := start; i < stop; i++ {
			select {
			case ch <- i:
			case <-done:
				return
			}
		}
	}()
	return ch, nil
}

// maxTemplateDepth bounds executeTemplate's nesting: each call starts a new execution, which
// text/template's own depth limit does not see.
const maxTemplateDepth = 100

// executeTemplate runs a template defined in the same file, with the given dot (or none).
func (s *state) executeTemplate(name string, data ...any) (string, error) {
	return s.execNested("executeTemplate", name, data...)
}

// templateCall is {{template "name" pipeline}} (boundExecution): executeTemplate's nesting bound,
// with the same output as text/template's own.
func (s *state) templateCall(name string, data ...any) (string, error) {
	return s.execNested("template", name, data...)
}

// execNested runs a template defined in the same file for fn (executeTemplate, or
// {{template}}), with the given dot (or none), nested at most maxTemplateDepth deep. An error
// is the deepest call's, as it came back from it: text/template wraps it once more at each
// level it passes, which would say the same thing a hundred times.
func (s *state) execNested(fn, name string, data ...any) (string, error) {
	var dot any
	switch len(data) {
	case 0:
	case 1:
		dot = data[0]
	default:
		return "", fmt.Errorf("%s: wrong number of arguments, expected 1 or 2, but got %d", fn, len(data)+1)
	}
	if s.depth >= maxTemplateDepth {
		return "", fmt.Errorf("%s %q: nested more than %d deep", fn, name, maxTemplateDepth)
	}
	if s.tmpl.Lookup(name) == nil {
		return "", fmt.Errorf("template %q not defined", name) // text/template's own words
	}
	s.depth++
	defer func() { s.depth-- }()
	// Its output is a string the caller writes, bounded as the render's own output is: a
	// template that doubles its output at each level must fail, not fill memory.
	b := &limitedBuffer{max: s.t.maxOutput(), held: &s.held}
	err := s.tmpl.ExecuteTemplate(b, name, dot)
	s.held -= b.buf.Len() // handed to the caller, which writes it into its own buffer
	if err != nil {
		if s.nestedErr == nil {
			s.nestedErr = err
		}
		return "", s.nestedErr
	}
	return b.buf.String(), nil
}
