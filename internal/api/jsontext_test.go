package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCheckJSONText(t *testing.T) {
	for body, wantErr := range map[string]string{
		`{"a":"plain"}`:                  "",
		`{"a":"\ud83d\ude00"}`:           "", // a pair: 😀
		`{"a":"\uD83D\uDE00"}`:           "",
		`{"a":"\\ud800"}`:                "", // an escaped backslash, then text
		`{"a":"\u00e9\n\"\ud800"}`:       `\ud800 at byte 16`,
		`{"a":"\ud800"}`:                 `\ud800 at byte 6`,
		`{"a":"\udc00"}`:                 `\udc00 at byte 6`, // a low one alone
		`{"a":"\ude00\ud83d"}`:           `\ude00`,           // a pair the wrong way round
		`{"a":"\ud800x"}`:                `\ud800`,
		`{"a":"\ud800\u0041"}`:           `\ud800`,
		`{"a":"\ud800\ud800\udc00"}`:     `\ud800 at byte 6`,
		`{"\uDBFF":"key name"}`:          `\uDBFF at byte 2`,
		`{"a":"\ud800`:                   `\ud800`,
		`{"a":"\ud8`:                     "", // truncated: the decoder's error
		"{\"a\":\"\xff\"}":               "UTF-8",
		`{"ops":[{"value":"\ud800\\"}]}`: `\ud800`,
	} {
		err := CheckJSONText([]byte(body))
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s: %v, want no error", body, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%s: %v, want an error with %q", body, err, wantErr)
		}
	}
	err := CheckJSONText([]byte(`{"a":"\ud800"}`))
	if err == nil || !strings.Contains(err.Error(), "lone UTF-16 surrogate") || !strings.Contains(err.Error(), "UTF-8 text") {
		t.Errorf("the error must name the rule: %v", err)
	}
}

// FuzzCheckJSONText holds CheckJSONText to what encoding/json does: a text it passes decodes
// to no U+FFFD that the text did not spell, and a text it refuses does not decode as sent.
func FuzzCheckJSONText(f *testing.F) {
	for _, s := range []string{`"\ud800"`, `"\ud83d\ude00"`, `{"\udfff":1}`, `"\\ud800"`, `["\uD800\uD800"]`, "\"\xed\xa0\x80\"", `"\ufffd"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		got := strings.Count(strings.Join(jsonStrings(v, nil), ""), "\ufffd")
		spelt := bytes.Count(data, []byte("\ufffd")) + bytes.Count(bytes.ToLower(data), []byte(`\ufffd`))
		err := CheckJSONText(data)
		if err == nil && got > spelt {
			t.Fatalf("passed %q, which decodes to %d U+FFFD but spells %d", data, got, spelt)
		}
		if err != nil && got == 0 {
			t.Fatalf("refused %q, which decodes as sent: %v", data, err)
		}
	})
}

// jsonStrings appends every string of a decoded JSON value, object keys included.
func jsonStrings(v any, out []string) []string {
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, e := range v {
			out = jsonStrings(e, out)
		}
	case map[string]any:
		for k, e := range v {
			out = jsonStrings(e, append(out, k))
		}
	}
	return out
}

func TestCheckJSONMembers(t *testing.T) {
	for _, ok := range []string{`{}`, `{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, `[1,"x",null]`, `"s"`, `{"a":`, /* malformed: the decoder's to say */
		` { "a" : [ ] , "b" : { } , "c" : "a" } `, `{"a\"b":1,"a":2,"b":3}`, `{"\u00e9":1,"e":2}`, manyMembers(40, false)} {
		if err := CheckJSONMembers([]byte(ok)); err != nil {
			t.Errorf("CheckJSONMembers(%s) = %v", ok, err)
		}
	}
	for bad, at := range map[string]string{
		`{"a":1,"a":2}`:                   `"a" is given twice in one object (at byte 7)`,
		`{"x":[{"k":1,"k":1}]}`:           `"k" is given twice in one object (at byte 13)`,
		`{"o":{"p":{"q":1,"q":{}}}}`:      `"q" is given twice`,
		`{"key":1,"k\u0065y":2}`:          `"key" is given twice`, // the same name, escaped
		`{"\u00e9":1,"é":2}`:              `"é" is given twice`,
		manyMembers(40, true):             `"m39" is given twice`, // past the first 16: in a map
		`[{"a":[1,{"b":2,"b":3}],"a":4}]`: `"b" is given twice`,   // the first found
	} {
		if err := CheckJSONMembers([]byte(bad)); err == nil || !strings.Contains(err.Error(), at) {
			t.Errorf("CheckJSONMembers(%s) = %v, want %s", bad, err, at)
		}
	}
}

// TestCheckJSONMembersOf: a member named as a field in another case is refused, since
// encoding/json takes it for the field; as written, or another name (left to the decoder's
// unknown-field check), it passes.
func TestCheckJSONMembersOf(t *testing.T) {
	type op struct {
		Op      string `json:"op"`
		Key     string `json:"key"`
		Ignored string `json:"-"`
		Plain   string
	}
	type body struct {
		Ops  []op `json:"ops"`
		Flag *bool
	}
	for _, ok := range []string{`{"ops":[{"op":"put","key":"a"}]}`, `{"ops":[{"Plain":"x"}],"Flag":true}`, `{"ops":[{"ttl":1}]}`, `{"ops":[{"k\u0065y":"a"}]}`, `{"ops":[{"Ignored":"x"}]}`} {
		if err := CheckJSONMembersOf([]byte(ok), &body{}); err != nil {
			t.Errorf("CheckJSONMembersOf(%s) = %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		`{"ops":[{"op":"put","key":"a","Key":"b"}]}`: `member "Key" (at byte 30) is not "key"`,
		`{"OPS":[]}`:                           `member "OPS" (at byte 1) is not "ops"`,
		`{"opſ":[]}`:                           `member "opſ" (at byte 1) is not "ops"`, // ſ: a long s
		`{"ops":[{"\u004bey":"a"}]}`:           `member "Key" (at byte 9) is not "key"`, // as decoded
		`{"ops":[{"plain":"x"}]}`:              `member "plain" (at byte 9) is not "Plain"`,
		`{"flag":true}`:                        `member "flag" (at byte 1) is not "Flag"`,
		`{"ops":[{"op":"put","OP":"delete"}]}`: `names are case-sensitive, write "op"`,
	} {
		if err := CheckJSONMembersOf([]byte(bad), &body{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckJSONMembersOf(%s) = %v, want %s", bad, err, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("CheckJSONMembersOf of a type with a map did not panic")
		}
	}()
	CheckJSONMembersOf([]byte(`{}`), &struct {
		M map[string]string `json:"m"`
	}{})
}

// manyMembers is an object of n members m0…, the last one named again when twice.
func manyMembers(n int, twice bool) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, `"m%d":%d,`, i, i)
	}
	if twice {
		fmt.Fprintf(&b, `"m%d":0,`, n-1)
	}
	return strings.TrimSuffix(b.String(), ",") + "}"
}

// tokenDuplicate is what CheckJSONMembers decides, found the slow way: a walk with
// json.Decoder.Token. It is for valid JSON only.
func tokenDuplicate(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() bool
	walk = func() bool {
		tok, _ := dec.Token()
		d, ok := tok.(json.Delim)
		if !ok {
			return false
		}
		seen := map[string]bool{}
		for dec.More() {
			if d == '{' {
				tok, _ := dec.Token()
				name, _ := tok.(string)
				if seen[name] {
					return true
				}
				seen[name] = true
			}
			if walk() {
				return true
			}
		}
		_, _ = dec.Token()
		return false
	}
	return walk()
}

// FuzzCheckJSONMembers: on valid JSON, CheckJSONMembers finds a member given twice exactly when
// a decoder's walk does; on anything, it neither panics nor reads past the input.
func FuzzCheckJSONMembers(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":[{"b":1},{"b":2}]}`, `{"k\u0065y":1,"key":2}`, `[]`, `{"a":{"b":[1,2,{"c":null,"d":true}]}}`, manyMembers(20, true), `{"a" 1}`, `[1,,2]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := CheckJSONMembers(data)
		if !json.Valid(data) {
			return
		}
		if want := tokenDuplicate(data); (err != nil) != want {
			t.Fatalf("CheckJSONMembers(%q) = %v; a decoder's walk finds a member given twice: %v", data, err, want)
		}
	})
}

// CheckTxnMembers refuses what the decode into a Txn lets pass: null members of ops and guards,
// and a guard without mod_revision (named in any case, as the decoder matches it).
func TestCheckTxnMembers(t *testing.T) {
	for _, c := range []struct {
		body, want string
	}{
		{`{"ops":[{"op":"put","key":"k","value":"v"}]}`, ""},
		{`{"ops":[{"op":"put","key":"k","value":"v"}],"guards":[{"key":"k","mod_revision":0}]}`, ""},
		{`{"ops":[{"op":"put","key":"k","value":"v"}],"guards":[{"key":"k","Mod_Revision":3}]}`, ""},
		{`{"ops":[{"op":"put","key":"k","value":null}]}`, `op 1: value is null; null is refused: give a string ("" for empty), or a delete op`},
		{`{"ops":[{"op":"put","key":"k","value":"v"}],"guards":[{"key":"k","mod_revision":null}]}`, "guard 1: mod_revision is null; null is refused: give its value"},
		{`{"ops":[{"op":"put","key":"k","value":"v"}],"guards":[{"key":"a","mod_revision":1},{"key":"k"}]}`, "guard 2: mod_revision is missing"},
		{`{"ops":[`, ""}, // malformed: the decoder says what is wrong
	} {
		err := CheckTxnMembers([]byte(c.body))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want nil", c.body, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
}
