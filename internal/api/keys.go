// Package api holds what the server, the CLI and the agent agree on: key rules,
// wire types, headers and the JSON error shape. It imports only the standard library.
package api

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the key space (DESIGN.md, "Key space").
const (
	MaxKeyBytes     = 512
	MaxSegmentBytes = 128
	MaxSegments     = 32
	// MaxMessageBytes and MaxSourceBytes bound X-Shoelace-Message and X-Shoelace-Source, kept
	// in every release record.
	MaxMessageBytes = 4096
	MaxSourceBytes  = 1024
	// DefaultMaxValueBytes is the default of the server's --max-value-bytes.
	DefaultMaxValueBytes = 1 << 20
	// SecretSegment marks a key as a secret wherever it appears as a whole segment.
	SecretSegment = "secrets"
	// SharedPrefix holds the keys every appliance sees.
	SharedPrefix = "shared"
	// AppliancesPrefix holds one subtree per appliance.
	AppliancesPrefix = "appliances"
)

// ValidateKey reports whether key is a valid key: 1–32 segments of
// [A-Za-z0-9][A-Za-z0-9._-]* joined by '/', each at most 128 bytes, at most 512 bytes in all.
// The error names the rule that was broken.
func ValidateKey(key string) error {
	if key == "" {
		return Errorf(CodeInvalidKey, "invalid key: a key must not be empty")
	}
	if len(key) > MaxKeyBytes {
		return Errorf(CodeInvalidKey, "invalid key %s: longer than %d bytes (%d)", quote(key), MaxKeyBytes, len(key))
	}
	segs := strings.Split(key, "/")
	if len(segs) > MaxSegments {
		return Errorf(CodeInvalidKey, "invalid key %s: more than %d segments (%d)", quote(key), MaxSegments, len(segs))
	}
	for i, s := range segs {
		if err := validateSegment(s); err != nil {
			return Errorf(CodeInvalidKey, "invalid key %s: segment %d %s", quote(key), i+1, err)
		}
	}
	return nil
}

// ValidatePrefix validates a listing or grant prefix. The empty prefix is the
// root; a trailing '/' is allowed and ignored. It returns the prefix without it.
func ValidatePrefix(prefix string) (string, error) {
	if prefix == "" || prefix == "/" {
		return "", nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if err := ValidateKey(p); err != nil {
		// Named as given: "bad//" said invalid prefix "bad/".
		return "", Errorf(CodeInvalidKey, "invalid prefix %s%s", quote(prefix), strings.TrimPrefix(err.Error(), "invalid key "+quote(p)))
	}
	return p, nil
}

// ValidateSegment validates one segment, such as an appliance or token name.
func ValidateSegment(what, s string) error {
	if s == "" {
		// A name, not a segment of a key: the key's rule about '/' means nothing here.
		return Errorf(CodeInvalidName, "invalid %s \"\": is empty: give a name of letters, digits, '.', '_' and '-'", what)
	}
	if err := validateSegment(s); err != nil {
		return Errorf(CodeInvalidName, "invalid %s %s: %s", what, quote(s), strings.TrimPrefix(err.Error(), "segment "))
	}
	return nil
}

type segmentError string

func (e segmentError) Error() string { return string(e) }

func validateSegment(s string) error {
	switch {
	case s == "":
		return segmentError("is empty (no leading, trailing or double '/')")
	case s == "." || s == "..":
		return segmentError(fmt.Sprintf("is %q, which is not allowed", s))
	case len(s) > MaxSegmentBytes:
		return segmentError(fmt.Sprintf("is longer than %d bytes", MaxSegmentBytes))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if r, _ := utf8.DecodeRuneInString(s[i:]); c >= utf8.RuneSelf && r != utf8.RuneError {
			// "é must start with a letter or digit" said é is no letter.
			return segmentError(fmt.Sprintf("%q has %s, which is not ASCII; only letters, digits, '.', '_' and '-' (ASCII) are allowed", s, describeByte(s, i)))
		}
		if i == 0 && !alnum {
			return segmentError(fmt.Sprintf("%q must start with a letter or digit", s))
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return segmentError(fmt.Sprintf("%q has %s; only letters, digits, '.', '_' and '-' are allowed", s, describeByte(s, i)))
		}
	}
	return nil
}

func describeByte(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError {
		return fmt.Sprintf("byte 0x%02x", s[i])
	}
	return fmt.Sprintf("%q", r)
}

// ValidateValue checks that a value is UTF-8 text of at most max bytes (max <= 0: no limit).
func ValidateValue(key string, value []byte, max int) error {
	if max > 0 && len(value) > max {
		return Errorf(CodeValueTooLarge, "value of %s is %d bytes, over the limit of %d bytes (--max-value-bytes)", quote(key), len(value), max)
	}
	if !utf8.Valid(value) {
		return Errorf(CodeInvalidValue, "value of %s is not valid UTF-8 text", quote(key))
	}
	return nil
}

// HasPrefix reports whether key lies under prefix by whole segments:
// "appliances/web" covers "appliances/web" and "appliances/web/x", never
// "appliances/web-frontend/x". The empty prefix covers every key.
func HasPrefix(key, prefix string) bool {
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(key, prefix) {
		return false
	}
	return len(key) == len(prefix) || key[len(prefix)] == '/'
}

// Under reports whether key lies strictly below prefix by whole segments.
func Under(key, prefix string) bool {
	return HasPrefix(key, prefix) && len(key) > len(prefix)
}

// KeyText is key as an error message names it: quoted, cut after 80 bytes, and for a key below
// a "secrets" segment only the path up to that segment, since the names of secrets are not
// shown either (a value typed where a name belongs becomes part of a key). key may be invalid.
func KeyText(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		if seg == SecretSegment && i < len(segs)-1 {
			return quoteCut(strings.Join(segs[:i+1], "/")+"/…") + " (names under a secrets segment are not shown)"
		}
	}
	return quoteCut(key)
}

func quoteCut(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}

// IsSecret reports whether any segment of key is "secrets".
func IsSecret(key string) bool {
	for _, s := range strings.Split(strings.Trim(key, "/"), "/") {
		if s == SecretSegment {
			return true
		}
	}
	return false
}

// ApplianceRoot is the key prefix of one appliance's own keys.
func ApplianceRoot(name string) string { return AppliancesPrefix + "/" + name }

// ApplianceOf returns the appliance whose subtree holds key, if any.
func ApplianceOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, AppliancesPrefix+"/")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, "/")
	return name, name != ""
}

// quote quotes a key for a message, shortened so that a huge key cannot flood a log line.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}
