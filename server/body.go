package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// maxApplyDepth bounds the nesting of an apply body's maps (a key has at most 32 segments).
const maxApplyDepth = api.MaxSegments

// mediaType is the request's Content-Type without parameters, lowercased.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return strings.ToLower(mt)
}

// mediaFormDefault is the Content-Type that curl -d and wget --post-data send when none is
// given. A body sent with it is read as JSON (and must be valid JSON), so that
// curl -d '{"ops":[…]}' works like curl --json.
const mediaFormDefault = "application/x-www-form-urlencoded"

// isJSONMedia says whether a body of media type m is read as JSON: none given,
// application/json, or curl's form default (see mediaFormDefault).
func isJSONMedia(m string) bool {
	return m == "" || m == "application/json" || m == mediaFormDefault
}

// withYAMLHint adds to an apply body's JSON error that YAML needs its Content-Type: the body
// came without one that says JSON and is not JSON, so it may well be YAML.
func withYAMLHint(err error) error {
	var e *api.Error
	if !errors.As(err, &e) {
		return err
	}
	hinted := *e
	hinted.Message += " (a YAML body needs Content-Type: " + api.ContentTypeYAML + ")"
	return &hinted
}

// keysUnder tells where an apply body's keys go, for a body that gives them at the top level.
const keysUnder = `the appliance's keys go under a top-level "keys:", {"keys":{…}} in JSON`

func bodyError(format string, args ...any) error {
	return api.Errorf(api.CodeInvalidBody, format, args...)
}

// checkJSONBody refuses, before decoding into v, what encoding/json would silently rewrite to
// U+FFFD: bytes that are not UTF-8 and lone surrogate escapes (\ud800); an object that names a
// member twice, of which encoding/json keeps the last; and a member named as a field of v in
// another case ("Key" for "key"), which encoding/json takes for it. Every JSON body decoded
// into a struct goes through it; the apply body, read with a token decoder that sees duplicate
// names itself and matches them as written, takes only checkJSONText.
func checkJSONBody(what string, data []byte, v any) error {
	if err := checkJSONText(what, data); err != nil {
		return err
	}
	if err := api.CheckJSONMembersOf(data, v); err != nil {
		return bodyError("%s: %v", what, err)
	}
	return nil
}

// checkJSONText is the UTF-8 and surrogate half of checkJSONBody.
func checkJSONText(what string, data []byte) error {
	if err := api.CheckJSONText(data); err != nil {
		return bodyError("%s: %v", what, err)
	}
	return nil
}

// parseTxn parses and validates a POST /v1/txn body: strict JSON (no unknown fields, no trailing
// data), ops "put" or "delete" on valid keys, valid values, at least one op, at most maxOps.
func parseTxn(data []byte, maxValue, maxOps int) (api.Txn, error) {
	var t api.Txn
	data = api.WithoutBOM(data)
	if err := checkJSONBody("txn body", data, &t); err != nil {
		return t, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		if errors.Is(err, io.EOF) {
			return t, bodyError("txn body is empty: send {\"ops\":[…]}")
		}
		return t, bodyError("txn body is not valid: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return t, bodyError("txn body has data after the JSON object")
	}
	if len(t.Guards) > 0 || bytes.Contains(data, []byte("null")) { // a second decode only when there may be one
		if err := api.CheckTxnMembers(data); err != nil {
			return t, bodyError("%v", err)
		}
	}
	if len(t.Ops) == 0 {
		return t, bodyError("txn has no ops: give at least one put or delete")
	}
	if len(t.Ops) > maxOps {
		return t, api.Errorf(api.CodeTooLarge, "txn has %d ops, over the limit of %d", len(t.Ops), maxOps)
	}
	if len(t.Guards) > maxOps {
		return t, api.Errorf(api.CodeTooLarge, "txn has %d guards, over the limit of %d", len(t.Guards), maxOps)
	}
	for i, op := range t.Ops {
		switch op.Op {
		case api.OpPut:
			if op.Recurse {
				return t, bodyError("op %d: put takes no recurse", i+1)
			}
			if err := checkKey(op.Key); err != nil {
				return t, prefixErr(fmt.Sprintf("op %d", i+1), err)
			}
			if err := api.ValidateValue(op.Key, []byte(op.Value), maxValue); err != nil {
				return t, prefixErr(fmt.Sprintf("op %d", i+1), err)
			}
		case api.OpDelete:
			if op.Value != "" {
				return t, bodyError("op %d: delete takes no value", i+1)
			}
			if op.Recurse {
				p, err := api.ValidatePrefix(op.Key)
				if err != nil {
					return t, prefixErr(fmt.Sprintf("op %d", i+1), err)
				}
				if p == "" {
					return t, api.Errorf(api.CodeInvalidKey, "op %d: refusing to delete the root recursively: name a prefix", i+1)
				}
				t.Ops[i].Key = p
			} else if err := checkKey(op.Key); err != nil {
				return t, prefixErr(fmt.Sprintf("op %d", i+1), err)
			}
		default:
			return t, bodyError("op %d: op must be %q or %q, not %s", i+1, api.OpPut, api.OpDelete, shorten(op.Op))
		}
	}
	for i, g := range t.Guards {
		if err := checkKey(g.Key); err != nil {
			return t, prefixErr(fmt.Sprintf("guard %d", i+1), err)
		}
		if g.ModRevision < 0 {
			return t, bodyError("guard %d: mod_revision must be >= 0 (0: the key must not exist)", i+1)
		}
	}
	return t, nil
}

// applyBody parses a PUT /v1/appliances/{name} body as JSON or YAML (by media type) into flat
// keys relative to the appliance root, and validates every key and value against the rules.
func applyBody(data []byte, media, name string, maxValue, maxOps int) (map[string]string, error) {
	data = api.WithoutBOM(data)
	if !utf8.Valid(data) {
		return nil, bodyError("apply body is not valid UTF-8")
	}
	var keys map[string]string
	var err error
	switch {
	case isJSONMedia(media):
		keys, err = parseApplyJSON(data, maxOps)
		if err != nil && media != "application/json" && !json.Valid(data) {
			// Only a body that is not JSON may be YAML: the error of a JSON body that breaks a
			// rule (a null, an array, an empty name) said to send YAML's Content-Type too.
			err = withYAMLHint(err)
		}
	case isYAMLMedia(media):
		keys, err = parseApplyYAML(data, maxOps)
	default:
		return nil, api.Errorf(api.CodeUnsupportedType, "content type %s is not supported: send application/json or %s", shorten(media), api.ContentTypeYAML)
	}
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, bodyError("apply body has no keys; to delete appliance %s, delete the prefix %s recursively", name, api.ApplianceRoot(name))
	}
	root := api.ApplianceRoot(name)
	for k, v := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
		full := root + "/" + k
		if err := checkKey(full); err != nil {
			return nil, err
		}
		if err := api.ValidateValue(full, []byte(v), maxValue); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// maxJSONDepth is the deepest nesting encoding/json parses: countJSONKeys stops watching there.
const maxJSONDepth = 10000

// countJSONKeys answers a watch for readBodyWatched that reads a JSON apply body as it arrives
// and refuses it (413 too_large) as soon as it holds more than max values, before the rest is
// read: a client must not make a replica hold a body that can only be refused. It stops without
// a word at anything else (a syntax error, the body's end), which parseApplyJSON judges whole.
//
// It counts what the flattening keeps, a value in an object that is not an object or an array,
// with a scanner of its own rather than json.Decoder.Token, which allocates for every name and
// value: every apply body goes through it before it is parsed.
func countJSONKeys(max int) func(io.Reader) error {
	return func(r io.Reader) error {
		const (
			value = iota // a value comes next: at the top, after '[', ':' or ',' in an array
			name         // a member name comes next: after '{' or ',' in an object
			colon        // the ':' after a member name
			more         // ',' or the end of the container
		)
		var (
			buf        [4096]byte
			stack      []bool // the open containers, true for an object
			next       = value
			empty      bool // the innermost container was just opened
			inStr, esc bool
			strName    bool // the string being read is a member name
			inLit      bool // in true, false, null or a number
			n          int
		)
		for {
			m, err := r.Read(buf[:])
			for _, c := range buf[:m] {
				if inStr {
					switch {
					case esc:
						esc = false
					case c == '\\':
						esc = true
					case c == '"':
						inStr = false
						if next = more; strName {
							next = colon
						}
					}
					continue
				}
				if inLit {
					if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.' {
						continue
					}
					inLit, next = false, more
				}
				switch c {
				case ' ', '\t', '\n', '\r':
				case ':':
					if next != colon {
						return nil
					}
					next = value
				case ',':
					if next != more || len(stack) == 0 {
						return nil
					}
					if next = value; stack[len(stack)-1] {
						next = name
					}
				case '{', '[':
					if next != value {
						return nil
					}
					if len(stack) >= maxJSONDepth {
						// encoding/json refuses deeper documents; the whole-body parse says
						// so. Past here the watch would only hold a level for each byte.
						return nil
					}
					stack = append(stack, c == '{')
					if next, empty = value, true; c == '{' {
						next = name
					}
				case '}', ']':
					if len(stack) == 0 || stack[len(stack)-1] != (c == '}') || next != more && !(empty && next != colon) {
						return nil
					}
					if stack = stack[:len(stack)-1]; len(stack) == 0 {
						return nil // the body's value ends here
					}
					next, empty = more, false
				default:
					switch {
					case c == '"' && next == name:
						inStr, strName, empty = true, true, false
						continue
					case next != value:
						return nil
					case len(stack) == 0:
						return nil // not an object: parseApplyJSON says so
					}
					if stack[len(stack)-1] {
						if n++; n > max {
							return api.Errorf(api.CodeTooLarge, "apply has more keys than the limit of %d", max)
						}
					}
					empty = false
					if c == '"' {
						inStr, strName = true, false
					} else {
						inLit = true
					}
				}
			}
			if err != nil {
				return err
			}
		}
	}
}

// flat collects flattened keys and refuses duplicates, and more than max keys as soon as
// they are read: a body of many tiny keys would otherwise fill a map of hundreds of thousands
// before it was refused.
type flat struct {
	m   map[string]string
	max int // 0: no bound
}

func newFlat(max int) flat { return flat{m: map[string]string{}, max: max} }

func (f flat) add(key, value string) error {
	if _, dup := f.m[key]; dup {
		return bodyError("key %s is given twice (after flattening nested maps)", api.KeyText(key))
	}
	if f.max > 0 && len(f.m) >= f.max {
		return api.Errorf(api.CodeTooLarge, "apply has more keys than the limit of %d", f.max)
	}
	f.m[key] = value
	return nil
}

// emptyName is the error for a map member named "": flattening would drop the empty segment
// and store its keys one level up.
func emptyName(prefix, where string) error {
	under := `in "keys"`
	if prefix != "" {
		under = "under " + api.KeyText(prefix)
	}
	return api.Errorf(api.CodeInvalidKey, "invalid key: a name %s is empty%s; a key's segments must not be empty", under, where)
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "/" + k
}

// parseApplyJSON parses {"keys":{…}} with a token decoder, so that numbers keep their text and
// duplicate names are seen.
func parseApplyJSON(data []byte, maxKeys int) (map[string]string, error) {
	if err := checkJSONText("apply body", data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, bodyError("apply body is empty: send {\"keys\":{…}}")
	}
	if err != nil {
		return nil, bodyError("apply body is not valid JSON: %s", jsonErrText(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, bodyError("apply body must be a JSON object {\"keys\":{…}}")
	}
	out := newFlat(maxKeys)
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bodyError("apply body is not valid JSON: %s", jsonErrText(err))
		}
		name, _ := tok.(string)
		if name != "keys" {
			return nil, bodyError("apply body has unknown field %s: only \"keys\" is allowed (%s)", shorten(name), keysUnder)
		}
		if seen {
			return nil, bodyError("apply body has the field \"keys\" twice")
		}
		seen = true
		tok, err = dec.Token()
		if err != nil {
			return nil, bodyError("apply body is not valid JSON: %s", jsonErrText(err))
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return nil, bodyError("\"keys\" must be an object of keys to values")
		}
		if err := flattenJSON(dec, "", 1, out); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, bodyError("apply body is not valid JSON: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, bodyError("apply body has data after the JSON object")
	}
	if !seen {
		return nil, bodyError("apply body has no \"keys\" field: send {\"keys\":{…}}")
	}
	return out.m, nil
}

// flattenJSON reads the members of an object whose '{' was read, up to its '}'.
func flattenJSON(dec *json.Decoder, prefix string, depth int, out flat) error {
	if depth > maxApplyDepth {
		return bodyError("keys nest deeper than %d levels at %s", maxApplyDepth, api.KeyText(prefix))
	}
	names := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bodyError("apply body is not valid JSON: %s", jsonErrText(err))
		}
		name, _ := tok.(string)
		if name == "" {
			return emptyName(prefix, "")
		}
		if names[name] {
			return bodyError("key %s is given twice", api.KeyText(join(prefix, name)))
		}
		names[name] = true
		key := join(prefix, name)
		tok, err = dec.Token()
		if err != nil {
			return bodyError("apply body is not valid JSON: %s", jsonErrText(err))
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '[' {
				return bodyError("key %s is an array; arrays are not supported: give a map (nested keys) or a string", api.KeyText(key))
			}
			if err := flattenJSON(dec, key, depth+1, out); err != nil {
				return err
			}
		case string:
			err = out.add(key, v)
		case json.Number:
			err = out.add(key, v.String())
		case bool:
			err = out.add(key, strconv.FormatBool(v))
		case nil:
			return bodyError("key %s is null; null is refused: give a string (\"\" for empty) or delete the key", api.KeyText(key))
		default:
			return bodyError("key %s has an unsupported value", api.KeyText(key))
		}
		if err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return bodyError("apply body is not valid JSON: %s", jsonErrText(err))
	}
	if len(names) == 0 && prefix != "" {
		return bodyError("key %s is an empty map; it would hold no keys", api.KeyText(prefix))
	}
	return nil
}

// parseApplyYAML parses "keys: {…}" from one YAML document; scalars keep their source text.
func parseApplyYAML(data []byte, maxKeys int) (map[string]string, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, bodyError("apply body is empty: send keys: {…}")
		}
		return nil, bodyError("apply body is not valid YAML: %s", yamlErrText(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, bodyError("apply body must hold exactly one YAML document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, bodyError("apply body must be a YAML map with the field \"keys\"")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, bodyError("apply body must be a YAML map with the field \"keys\"")
	}
	out := newFlat(maxKeys)
	seen := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value != "keys" {
			return nil, bodyError("apply body has unknown field %s at line %d: only \"keys\" is allowed (%s)", shorten(k.Value), k.Line, keysUnder)
		}
		if seen {
			return nil, bodyError("apply body has the field \"keys\" twice (line %d)", k.Line)
		}
		seen = true
		if v.Kind != yaml.MappingNode {
			return nil, bodyError("\"keys\" must be a map of keys to values (line %d)", v.Line)
		}
		if err := flattenYAML(v, "", 1, out); err != nil {
			return nil, err
		}
	}
	if !seen {
		return nil, bodyError("apply body has no \"keys\" field: send keys: {…}")
	}
	return out.m, nil
}

func flattenYAML(n *yaml.Node, prefix string, depth int, out flat) error {
	if depth > maxApplyDepth {
		return bodyError("keys nest deeper than %d levels at %s (line %d)", maxApplyDepth, api.KeyText(prefix), n.Line)
	}
	if len(n.Content) == 0 && prefix != "" {
		return bodyError("key %s is an empty map; it would hold no keys (line %d)", api.KeyText(prefix), n.Line)
	}
	names := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return bodyError("a key under %s at line %d is not a scalar", api.KeyText(prefix), k.Line)
		}
		if k.ShortTag() == "!!merge" {
			return bodyError("merge keys (<<) are not supported (line %d)", k.Line)
		}
		if k.Value == "" {
			return emptyName(prefix, fmt.Sprintf(" (line %d)", k.Line))
		}
		if names[k.Value] {
			return bodyError("key %s is given twice (line %d)", api.KeyText(join(prefix, k.Value)), k.Line)
		}
		names[k.Value] = true
		key := join(prefix, k.Value)
		var err error
		switch v.Kind {
		case yaml.MappingNode:
			err = flattenYAML(v, key, depth+1, out)
		case yaml.SequenceNode:
			return bodyError("key %s is a list (line %d); lists are not supported: give a map (nested keys) or a string", api.KeyText(key), v.Line)
		case yaml.AliasNode:
			return bodyError("key %s is an alias (line %d); aliases are not supported", api.KeyText(key), v.Line)
		case yaml.ScalarNode:
			if v.ShortTag() == "!!null" {
				return bodyError("key %s is null (line %d); null is refused: give a string (\"\" for empty) or delete the key", api.KeyText(key), v.Line)
			}
			err = out.add(key, v.Value)
		default:
			return bodyError("key %s has an unsupported value (line %d)", api.KeyText(key), v.Line)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Secret values must never reach an answer or a log line, even from a malformed body: a value
// typed where a name belongs ("secrets: {pw hunter2}" in YAML) becomes part of a key. So messages
// about a body never name what lies below a "secrets" segment, and parser errors are stripped of
// the source text they quote.

// hasSecretSegment reports whether any '/'-separated part of k is "secrets" (k may be invalid).
func hasSecretSegment(k string) bool {
	for _, seg := range strings.Split(k, "/") {
		if seg == api.SecretSegment {
			return true
		}
	}
	return false
}

// checkKey is api.ValidateKey, with a message that does not repeat a key under a secrets segment.
func checkKey(k string) error {
	err := api.ValidateKey(k)
	if err == nil || !hasSecretSegment(k) {
		return err
	}
	return api.Errorf(api.CodeInvalidKey, "invalid key %s: a key is 1–%d segments of [A-Za-z0-9][A-Za-z0-9._-]* joined by '/', each at most %d bytes, at most %d bytes in all",
		api.KeyText(k), api.MaxSegments, api.MaxSegmentBytes, api.MaxKeyBytes)
}

// quoted matches what parsers quote from their input: 'x', "x" or `x`.
var quoted = regexp.MustCompile("'[^']*'|\"[^\"]*\"|`[^`]*`")

// jsonErrText describes a JSON decoding error without the input text it may quote; a syntax
// error says where it is instead.
func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", quoted.ReplaceAllString(se.Error(), "…"), se.Offset)
	}
	var ue *json.UnmarshalTypeError
	if errors.As(err, &ue) {
		if ue.Field == "" {
			return fmt.Sprintf("the body must be a JSON object, not a JSON %s (at byte %d)", ue.Value, ue.Offset)
		}
		return fmt.Sprintf("field %q must be %s, not a JSON %s (at byte %d)", ue.Field, jsonKindOf(ue.Type), ue.Value, ue.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "its JSON ends before it is complete"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return msg // a field name of the request's own structure
	}
	return quoted.ReplaceAllString(msg, "…")
}

// jsonKindOf names the JSON value that decodes into t.
func jsonKindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another JSON value"
}

// yamlErrText describes a YAML parse error by line without the input text it may quote.
func yamlErrText(err error) string {
	return quoted.ReplaceAllString(err.Error(), "…")
}

// prefixErr puts where an API error happened in front of its message, keeping its code.
func prefixErr(where string, err error) error {
	var e *api.Error
	if errors.As(err, &e) {
		c := *e
		c.Message = where + ": " + e.Message
		return &c
	}
	return fmt.Errorf("%s: %w", where, err)
}
