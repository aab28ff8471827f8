package agent

import (
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
)

// The encoded forms of a secret are masked whole, and only there: a secret made of letters
// alone is not masked upper- or lower-cased (every "production" of a command's output was), and
// a quoted word is masked as a part of a secret's exact forms only, not of its lower-cased or
// encoded ones (a lower-cased key file held "private" and "begin").
func TestRedact_EncodedFormsWholeOnly(t *testing.T) {
	keys := map[string]string{
		"secrets/env":  "Production",
		"secrets/key":  "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
		"secrets/dsn":  "dbuser:Sup3rS3cretPw",
		"plain/region": "eu-west",
	}
	for _, tc := range []struct{ in, want string }{
		{`nginx: [warn] conflicting server name "production"`, `nginx: [warn] conflicting server name "production"`},
		{`env is Production`, `env is [redacted]`},
		{`map has no entry for key "private"`, `map has no entry for key "private"`},
		{`map has no entry for key "begin"`, `map has no entry for key "begin"`},
		{`parsing "DBUSER:SUP3RS3CRETPW": invalid syntax`, `parsing "[redacted]": invalid syntax`},
		{`parsing "dbuser:sup3rs3cretpw"`, `parsing "[redacted]"`},
		{`parsing "` + base64.StdEncoding.EncodeToString([]byte("dbuser:Sup3rS3cretPw")) + `"`, `parsing "[redacted]"`},
		{`parsing "` + fmt.Sprintf("%x", "dbuser:Sup3rS3cretPw") + `"`, `parsing "[redacted]"`},
		{`invalid key "dbuser:Sup3"`, `invalid key "[redacted]"`}, // a part of the exact value, as before
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
	whole, exact := secretsIn(true, keys)
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
