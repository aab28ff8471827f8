package api

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	long := strings.Repeat("a", MaxSegmentBytes)
	tests := []struct {
		key     string
		wantErr string // substring of the message; "" = valid
	}{
		{"a", ""},
		{"shared/system/ntp", ""},
		{"appliances/web-frontend/app/port", ""},
		{"a/b.c/d_e/f-g/0", ""},
		{long, ""},
		{"", "must not be empty"},
		{"/a", "segment 1 is empty"},
		{"a/", "segment 2 is empty"},
		{"a//b", "segment 2 is empty"},
		{".", `segment 1 is ".", which is not allowed`},
		{"a/..", `segment 2 is "..", which is not allowed`},
		{"a/./b", `segment 2 is "."`},
		{"-a", "must start with a letter or digit"},
		{"_a", "must start with a letter or digit"},
		{"a b", `' '`},
		{"a\x00b", `'\x00'`},
		{"caf\u00e9", `'é'`},
		// é is a letter, but not ASCII: the message says which rule it breaks.
		{"shared/\u00e9t\u00e9", `segment 2 "été" has 'é', which is not ASCII; only letters, digits, '.', '_' and '-' (ASCII) are allowed`},
		{"a\xffb", "byte 0xff"},
		{long + "a", "longer than 128 bytes"},
		{strings.Repeat("a/", 32) + "a", "more than 32 segments"},
		{strings.Repeat(long+"/", 4) + "a", "longer than 512 bytes"},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ValidateKey(%q) = nil, want an error with %q", tt.key, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateKey(%q) = %q, want it to contain %q", tt.key, err, tt.wantErr)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidKey || e.HTTPStatus() != 400 {
			t.Errorf("ValidateKey(%q): error %#v is not a 400 invalid_key", tt.key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", "a": "a", "a/b/": "a/b"} {
		got, err := ValidatePrefix(in)
		if err != nil || got != want {
			t.Errorf("ValidatePrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"//", "a//", "../a", "a b/"} {
		if _, err := ValidatePrefix(in); err == nil || !strings.HasPrefix(err.Error(), "invalid prefix") {
			t.Errorf("ValidatePrefix(%q) = %v, want an invalid prefix error", in, err)
		}
	}
	// The error names the prefix as given, not as trimmed of its last '/'.
	if _, err := ValidatePrefix("bad//"); err == nil || !strings.HasPrefix(err.Error(), `invalid prefix "bad//": `) {
		t.Errorf(`ValidatePrefix("bad//") = %v, want it named as given`, err)
	}
}

func TestHasPrefix_WholeSegments(t *testing.T) {
	tests := []struct {
		key, prefix string
		has, under  bool
	}{
		{"appliances/web/x", "appliances/web", true, true},
		{"appliances/web", "appliances/web", true, false},
		{"appliances/web-frontend/x", "appliances/web", false, false},
		{"appliances/webx", "appliances/web", false, false},
		{"appliances/web.x/y", "appliances/web", false, false},
		{"anything/at/all", "", true, true},
		{"appliances", "appliances/web", false, false},
	}
	for _, tt := range tests {
		if got := HasPrefix(tt.key, tt.prefix); got != tt.has {
			t.Errorf("HasPrefix(%q, %q) = %v, want %v", tt.key, tt.prefix, got, tt.has)
		}
		if got := Under(tt.key, tt.prefix); got != tt.under {
			t.Errorf("Under(%q, %q) = %v, want %v", tt.key, tt.prefix, got, tt.under)
		}
	}
}

func TestIsSecret(t *testing.T) {
	for key, want := range map[string]bool{
		"appliances/web/secrets/db":  true,
		"secrets":                    true,
		"/shared/secrets":            true,
		"appliances/web/secretsx/db": false,
		"appliances/web/my-secrets":  false,
		"appliances/web/app/port":    false,
	} {
		if got := IsSecret(key); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestValidateValue(t *testing.T) {
	if err := ValidateValue("k", []byte("héllo\n"), 10); err != nil {
		t.Errorf("valid value refused: %v", err)
	}
	err := ValidateValue("k", []byte("12345678901"), 10)
	if e := AsError(err); e.Code != CodeValueTooLarge || e.HTTPStatus() != 413 || !strings.Contains(e.Message, "--max-value-bytes") {
		t.Errorf("oversized value: %#v", err)
	}
	err = ValidateValue("k", []byte{'a', 0xff}, 10)
	if e := AsError(err); e.Code != CodeInvalidValue || !strings.Contains(e.Message, "UTF-8") {
		t.Errorf("invalid UTF-8: %#v", err)
	}
}

func TestApplianceOf(t *testing.T) {
	for key, want := range map[string]string{"appliances/web/x": "web", "appliances/web": "web", "shared/x": "", "appliances": ""} {
		got, ok := ApplianceOf(key)
		if got != want || ok != (want != "") {
			t.Errorf("ApplianceOf(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
}

func TestError_IsMatchesCode(t *testing.T) {
	err := Errorf(CodeNotFound, "key %q not found", "x")
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		t.Errorf("errors.Is by code is broken for %v", err)
	}
	if AsError(errors.New("boom")).HTTPStatus() != 500 {
		t.Error("an unknown error must map to 500")
	}
}

// FuzzValidateKey checks that every key the rules accept is one etcd paths and prefixes can
// hold unambiguously: no empty, "." or ".." segment, within the limits, and ValidatePrefix agrees.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "shared/x", "a//b", "../x", "a/b/", "é", strings.Repeat("a/", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if AsError(err).Code != CodeInvalidKey {
				t.Fatalf("wrong code for %q: %v", key, err)
			}
			return
		}
		if len(key) > MaxKeyBytes {
			t.Fatalf("accepted %d bytes", len(key))
		}
		segs := strings.Split(key, "/")
		if len(segs) > MaxSegments {
			t.Fatalf("accepted %d segments", len(segs))
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || len(s) > MaxSegmentBytes {
				t.Fatalf("accepted segment %q of %q", s, key)
			}
		}
		if p, err := ValidatePrefix(key); err != nil || p != key {
			t.Fatalf("ValidatePrefix(%q) = %q, %v", key, p, err)
		}
		if !HasPrefix(key, key) || Under(key, key) {
			t.Fatalf("a key must cover itself and not lie under itself: %q", key)
		}
	})
}

func TestKeyText(t *testing.T) {
	for key, want := range map[string]string{
		"appliances/web/port":          `"appliances/web/port"`,
		"appliances/web/secrets/pw":    `"appliances/web/secrets/…" (names under a secrets segment are not shown)`,
		"appliances/web/secrets":       `"appliances/web/secrets"`,
		strings.Repeat("a", 100):       `"` + strings.Repeat("a", 80) + `…"`,
		"secrets/hunter2 typed as key": `"secrets/…" (names under a secrets segment are not shown)`,
	} {
		if got := KeyText(key); got != want {
			t.Errorf("KeyText(%q) = %s, want %s", key, got, want)
		}
	}
}
