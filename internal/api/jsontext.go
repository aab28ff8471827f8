package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// WithoutBOM is data without the UTF-8 byte order mark that some editors (Notepad) and Windows
// PowerShell put at the start of a text file: it marks the encoding, it is not content. JSON
// decoders refuse it ("invalid character 'ï'"), where RFC 8259 lets a parser ignore it. The CLI
// drops it from the files it reads, the server from the JSON and YAML bodies it parses; a kv
// value is never passed through it: a value is its bytes.
func WithoutBOM(data []byte) []byte { return bytes.TrimPrefix(data, []byte("\ufeff")) }

// Marshal is v as JSON that leaves <, > and & as they are, without a newline at its end.
// json.Marshal writes each as \u003c, six bytes for one, for HTML pages that embed JSON; a
// request body, a view and a listing are JSON served as application/json, where a value of
// markup (an XML or HTML config) grew up to six times over its own size: against the server's
// body limit, against the answer budgets, on every agent's wire.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// CheckJSONText reports what encoding/json would silently rewrite in data: bytes that are not
// UTF-8, and \u escapes of UTF-16 surrogates (\uD800–\uDFFF) that do not form a high-low pair.
// encoding/json turns both into U+FFFD, so a body holding them would store a character nobody
// sent. Keys and values are UTF-8 text, which has no surrogates; every JSON body a server or
// an import reads goes through this check before it is decoded. It looks only at string
// literals and leaves any other malformation to the decoder. The error names the rule and the
// byte offset, never the text, which may be a secret.
func CheckJSONText(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("not valid UTF-8: keys and values are UTF-8 text")
	}
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(data) {
				return nil // truncated: the decoder says so
			}
			i++
			if data[i] != 'u' {
				continue
			}
			r, ok := hex4(data, i+1)
			if !ok || r < 0xD800 || r > 0xDFFF {
				continue
			}
			at := i - 1
			i += 4
			if r <= 0xDBFF && i+2 < len(data) && data[i+1] == '\\' && data[i+2] == 'u' {
				if lo, ok := hex4(data, i+3); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6
					continue
				}
			}
			return fmt.Errorf("the string escape %s at byte %d is a lone UTF-16 surrogate, not a character: keys and values are UTF-8 text, and an escape in \\uD800–\\uDFFF must be a high surrogate followed by a low one", data[at:at+6], at)
		}
	}
	return nil
}

// hex4 decodes the four hex digits of a \u escape starting at data[i].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// CheckJSONMembers reports an object in data that names one member twice: encoding/json keeps
// the last silently, so {"op":"put","key":"a","key":"b"} would write b where the sender may
// have read a. Names are compared as decoded ("k\u0065y" is "key"). Malformed JSON is left to
// the decoder (nil is returned). The error names the member and its byte offset.
//
// It scans the bytes once without decoding anything but escaped names: a walk with
// json.Decoder.Token took as long as decoding the body itself (a tenth of the server's CPU
// under a stream of 10-op transactions).
func CheckJSONMembers(data []byte) error {
	s := memberScan{data: data}
	if err := s.value(0); err != nil && err != errMalformed {
		return err
	}
	return nil
}

// CheckJSONMembersOf is CheckJSONMembers for a body decoded into v, a pointer to a type of
// structs, slices and scalars without a map, so that every member of data's objects names a
// field. It also refuses a member whose name is not a field's json name as written but that
// encoding/json takes for one, as it matches names regardless of case ("Key", "KEY", "kſy"
// with a long s are "key" to it): {"op":"put","key":"shared/a","Key":"appliances/db/x"} put
// appliances/db/x, where any other reader of the body (a review, a policy check, the sender's
// own tools) sees a put of shared/a, and no duplicate was seen.
func CheckJSONMembersOf(data []byte, v any) error {
	s := memberScan{data: data, fields: fieldNamesOf(reflect.TypeOf(v))}
	if err := s.value(0); err != nil && err != errMalformed {
		return err
	}
	return nil
}

// fieldNames caches fieldNamesOf by type.
var fieldNames sync.Map // reflect.Type → *fieldSet

// fieldSet is the json names of a type's struct fields: as written, and by their folded form
// (see foldName).
type fieldSet struct {
	exact  map[string]bool
	folded map[string]string
}

// fieldNamesOf is the json names of the struct fields found in t (through pointers, slices
// and arrays). A map or an interface in t panics: the names of its members are not fields, so
// a member that folds to a field's name is no mistake there.
func fieldNamesOf(t reflect.Type) *fieldSet {
	if m, ok := fieldNames.Load(t); ok {
		return m.(*fieldSet)
	}
	names := &fieldSet{exact: map[string]bool{}, folded: map[string]string{}}
	var walk func(t reflect.Type, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			return // decodes itself, from a string or a number here
		}
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			walk(t.Elem(), seen)
		case reflect.Map, reflect.Interface:
			panic(fmt.Sprintf("api: CheckJSONMembersOf of %v, which holds a %v", t, t.Kind()))
		case reflect.Struct:
			for f := range t.Fields() {
				if !f.IsExported() && !f.Anonymous {
					continue
				}
				tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if tag == "-" {
					continue
				}
				if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
					walk(f.Type, seen) // its fields are the outer struct's
					continue
				}
				if tag == "" {
					tag = f.Name
				}
				names.exact[tag] = true
				names.folded[string(foldName([]byte(tag)))] = tag
				walk(f.Type, seen)
			}
		}
	}
	walk(t, map[reflect.Type]bool{})
	fieldNames.Store(t, names)
	return names
}

// foldName is name as encoding/json compares it when no field has it exactly: each letter
// upper case, each other rune as unicode.ToUpper(unicode.ToLower(r)) makes it (ſ is S, the
// Kelvin sign K).
func foldName(name []byte) []byte {
	out := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		if c := name[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		out = utf8.AppendRune(out, unicode.ToUpper(unicode.ToLower(r)))
		i += n
	}
	return out
}

// maxMemberDepth bounds the nesting CheckJSONMembers follows; encoding/json refuses deeper
// nesting than this anyway.
const maxMemberDepth = 10000

// smallObject is how many members an object's names are compared one by one before a map
// takes over.
const smallObject = 16

type memberScan struct {
	data []byte
	i    int
	// fields, when set, are the json names of the fields every member names (see
	// CheckJSONMembersOf).
	fields *fieldSet
}

func (s *memberScan) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value skips the value at s.i, checking the objects in it.
func (s *memberScan) value(depth int) error {
	if depth > maxMemberDepth {
		return errMalformed
	}
	s.space()
	if s.i >= len(s.data) {
		return errMalformed
	}
	switch s.data[s.i] {
	case '{':
		return s.object(depth)
	case '[':
		s.i++
		s.space()
		if s.i < len(s.data) && s.data[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			if err := s.value(depth + 1); err != nil {
				return err
			}
			if !s.next(']') {
				return nil
			}
		}
	case '"':
		_, _, err := s.str()
		return err
	}
	// A number or a literal: up to the next delimiter (the decoder checks what it is).
	for ; s.i < len(s.data); s.i++ {
		switch s.data[s.i] {
		case ',', ']', '}', ':', ' ', '\t', '\n', '\r':
			return nil
		}
	}
	return nil
}

// next reads the comma or the end that follows a member or an element: true after a comma,
// false after end (or at malformed input, which the next read refuses).
func (s *memberScan) next(end byte) bool {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == ',' {
		s.i++
		return true
	}
	if s.i < len(s.data) && s.data[s.i] == end {
		s.i++
		return false
	}
	s.i = len(s.data) // malformed: nothing further is read
	return false
}

// str reads the string at s.i: its text between the quotes, as written, and whether it holds
// an escape.
func (s *memberScan) str() (raw []byte, escaped bool, err error) {
	start := s.i + 1
	for j := start; j < len(s.data); j++ {
		switch s.data[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			s.i = j + 1
			return s.data[start:j], escaped, nil
		}
	}
	return nil, false, errMalformed
}

func (s *memberScan) object(depth int) error {
	s.i++
	s.space()
	if s.i < len(s.data) && s.data[s.i] == '}' {
		s.i++
		return nil
	}
	var few [smallObject][]byte
	names := few[:0]
	var many map[string]bool
	for {
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			return errMalformed
		}
		at := s.i
		name, escaped, err := s.str()
		if err != nil {
			return err
		}
		if escaped {
			var dec string
			if json.Unmarshal(s.data[at:s.i], &dec) != nil {
				return errMalformed
			}
			name = []byte(dec)
		}
		twice := false
		if many == nil {
			for _, n := range names {
				if bytes.Equal(n, name) {
					twice = true
					break
				}
			}
			if names = append(names, name); len(names) > smallObject {
				many = make(map[string]bool, 2*len(names))
				for _, n := range names {
					many[string(n)] = true
				}
			}
		} else {
			twice = many[string(name)]
			many[string(name)] = true
		}
		if twice {
			return fmt.Errorf("member %q is given twice in one object (at byte %d): give each once", cut(string(name), 64), at)
		}
		if s.fields != nil && !s.fields.exact[string(name)] {
			if field, ok := s.fields.folded[string(foldName(name))]; ok {
				return fmt.Errorf("member %q (at byte %d) is not %q: names are case-sensitive, write %q", cut(string(name), 64), at, field, field)
			}
		}
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return errMalformed
		}
		s.i++
		if err := s.value(depth + 1); err != nil {
			return err
		}
		if !s.next('}') {
			return nil
		}
	}
}

// errMalformed stops CheckJSONMembers at JSON the decoder will refuse with its own message.
var errMalformed = errors.New("malformed JSON")

// cut shortens s to at most n bytes for a message.
func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// CheckTxnMembers reports what decoding the txn body data into a Txn would let pass unseen: a
// member of an op or a guard that is null (encoding/json leaves the field as it was, so
// {"op":"put","key":"k","value":null} would put "" and a guard's "mod_revision":null would say
// "must not exist"), or a guard without mod_revision (read as 0, "the key must not exist", so
// {"key":"k"} written to mean "k as I read it" would hold while k is absent). Malformed JSON is
// left to the decoder (nil is returned).
func CheckTxnMembers(data []byte) error {
	var raw struct {
		Ops    []map[string]json.RawMessage `json:"ops"`
		Guards []map[string]json.RawMessage `json:"guards"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil
	}
	for _, l := range []struct {
		what string
		list []map[string]json.RawMessage
	}{{"op", raw.Ops}, {"guard", raw.Guards}} {
		for i, m := range l.list {
			for _, name := range slices.Sorted(maps.Keys(m)) {
				if string(m[name]) == "null" {
					hint := "give its value"
					if l.what == "op" && name == "value" {
						hint = `give a string ("" for empty), or a delete op`
					}
					return fmt.Errorf("%s %d: %s is null; null is refused: %s", l.what, i+1, name, hint)
				}
			}
		}
	}
	for i, g := range raw.Guards {
		// Named as the decoder matches it, in any case.
		if !slices.ContainsFunc(slices.Collect(maps.Keys(g)), func(n string) bool { return strings.EqualFold(n, "mod_revision") }) {
			return fmt.Errorf("guard %d: mod_revision is missing: give the key's mod_revision (0: the key must not exist)", i+1)
		}
	}
	return nil
}
