package agent

import (
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
)

// The encoded forms of a secret — upper- or lower-cased, base64 or hex — are masked whole, and
// a quoted part of one of 8 bytes or more; a quoted word shorter than that is masked as a part of
// a secret's exact forms only (a lower-cased key file holds "private" and "begin").
func TestRedact_EncodedForms(t *testing.T) {
	keys := map[string]string{
		"secrets/env":   "Production",
		"secrets/name":  "Hunter",
		"secrets/horse": "correcthorsebatterystaple",
		"secrets/key":   "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
		"secrets/dsn":   "dbuser:Sup3rS3cretPw",
		"secrets/multi": "user=admin\nP4ssw0rd!",
		"plain/region":  "eu-west",
	}
	for _, tc := range []struct{ in, want string }{
		{`env is Production, or production`, `env is [redacted], or [redacted]`},
		{`parsing "HUNTER"`, `parsing "[redacted]"`},
		{`parsing "CORRECTHORSEBATTERYSTAPLE"`, `parsing "[redacted]"`},
		{`parsing "USER=ADMIN"`, `parsing "[redacted]"`},
		{`parsing "DBUSER:SUP3RS3CRETPW": invalid syntax`, `parsing "[redacted]": invalid syntax`},
		{`parsing "dbuser:sup3rs3cretpw"`, `parsing "[redacted]"`},
		{`parsing "SUP3RS3C"`, `parsing "[redacted]"`}, // a part of an upper-cased secret
		{`parsing "` + base64.StdEncoding.EncodeToString([]byte("dbuser:Sup3rS3cretPw")) + `"`, `parsing "[redacted]"`},
		{`parsing "` + base64.StdEncoding.EncodeToString([]byte("dbuser:Sup3rS3cretPw"))[:14] + `"`, `parsing "[redacted]"`},
		{`parsing "` + fmt.Sprintf("%x", "dbuser:Sup3rS3cretPw") + `"`, `parsing "[redacted]"`},
		{`invalid key "dbuser:Sup3"`, `invalid key "[redacted]"`}, // a part of the exact value, as before
		{`map has no entry for key "private"`, `map has no entry for key "private"`},
		{`map has no entry for key "begin"`, `map has no entry for key "begin"`},
		{`region "eu-west"`, `region "eu-west"`},
	} {
		if got := redact(tc.in, keys, false); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Ten thousand secret keys (an appliance named secrets: every key is one) are listed with
// their forms in one pass: the search for duplicates was quadratic, 4 s of CPU for each
// failed render once the encoded forms were added.
func TestRedact_ManySecretsListedOnce(t *testing.T) {
	keys := map[string]string{}
	for i := range 10000 {
		keys[fmt.Sprintf("k%d", i)] = fmt.Sprintf("value-%d-Abc", i)
	}
	whole, exact, _ := secretsIn(true, keys)
	// Each value, upper- and lower-cased, in base64 and hex (a form equal to another counts once).
	if len(exact) != 10000 || len(whole) < 10000*5 {
		t.Fatalf("%d exact and %d whole forms of 10,000 secrets, want 10,000 and 50,000 or more", len(exact), len(whole))
	}
	if got := redact("render failed: value-42-Abc and VALUE-7-ABC", keys, true); got != "render failed: [redacted] and [redacted]" {
		t.Fatalf("redact = %q", got)
	}
	if !slices.IsSortedFunc(whole, func(a, b string) int { return len(b) - len(a) }) {
		t.Fatal("whole forms not longest first")
	}
}

// maskAll masks the union of the places where forms are found: overlapping secrets whole
// (masking the shorter first left the rest of the longer), adjacent ones, and none elsewhere.
func TestMaskAll(t *testing.T) {
	forms := []string{"abcdefgh", "Xabc", "zzzz"}
	for _, tc := range []struct{ in, want string }{
		{"Xabcdefgh!", "[redacted]!"},
		{"1 abcdefgh 2 Xabc 3", "1 [redacted] 2 [redacted] 3"},
		{"zzzzzzzz", "[redacted]"},
		{"Xabczzzz.", "[redacted]."},
		{"abc xab zzz", "abc xab zzz"},
		{"", ""},
	} {
		if got := maskAll(tc.in, forms); got != tc.want {
			t.Errorf("maskAll(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
