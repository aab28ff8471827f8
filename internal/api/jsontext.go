package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

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
// have read a. Malformed JSON is left to the decoder (nil is returned). The error names the
// member and its byte offset.
func CheckJSONMembers(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return errMalformed
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch d {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				off := dec.InputOffset()
				tok, err := dec.Token()
				if err != nil {
					return errMalformed
				}
				name, _ := tok.(string)
				if seen[name] {
					return fmt.Errorf("member %q is given twice in one object (at byte %d): give each once", cut(name, 64), off)
				}
				seen[name] = true
				if err := walk(); err != nil {
					return err
				}
			}
		case '[':
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return errMalformed
		}
		return nil
	}
	if err := walk(); err != nil && err != errMalformed {
		return err
	}
	return nil
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
