package server

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// checkAPIError fails unless err is an *api.Error answered with a 4xx status.
func checkAPIError(t *testing.T, err error) {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *api.Error", err, err)
	}
	if s := e.HTTPStatus(); s < 400 || s >= 500 {
		t.Fatalf("error %q has status %d, want 4xx", e.Message, s)
	}
	if e.Message == "" {
		t.Fatalf("error with code %s has no message", e.Code)
	}
}

// checkNoInventedReplacement fails if the accepted texts hold more U+FFFD than the body spells
// (as the character or as a \ufffd escape): a decoder that replaced what it could not read
// (invalid UTF-8, a lone surrogate escape) would have stored a character nobody sent.
func checkNoInventedReplacement(t *testing.T, body []byte, texts ...string) {
	t.Helper()
	lower := strings.ToLower(string(body))
	spelt := strings.Count(string(body), "\ufffd") + strings.Count(lower, `\ufffd`) + strings.Count(lower, `\u0000fffd`) // YAML's \U form
	if got := strings.Count(strings.Join(texts, ""), "\ufffd"); got > spelt {
		t.Fatalf("accepted %q with %d U+FFFD, but the body spells %d", body, got, spelt)
	}
}

func FuzzApplyBody(f *testing.F) {
	f.Add([]byte(`{"keys":{"a":"1","b":{"c":2,"d":true}}}`), false)
	f.Add([]byte(`{"keys":{"a":null}}`), false)
	f.Add([]byte("keys:\n  nginx:\n    port: 8080\n"), true)
	f.Add([]byte("keys: {a: &x 1, b: *x}"), true)
	f.Fuzz(func(t *testing.T, data []byte, yaml bool) {
		media := "application/json"
		if yaml {
			media = api.ContentTypeYAML
		}
		keys, err := applyBody(data, media, "web", 1000, 100)
		if err != nil {
			checkAPIError(t, err)
			return
		}
		if len(keys) == 0 || len(keys) > 100 {
			t.Fatalf("accepted %d keys", len(keys))
		}
		var texts []string
		for k, v := range keys {
			texts = append(texts, k, v)
		}
		checkNoInventedReplacement(t, data, texts...)
		for k, v := range keys {
			if err := api.ValidateKey(k); err != nil {
				t.Fatalf("accepted invalid key: %v", err)
			}
			if err := api.ValidateKey("appliances/web/" + k); err != nil {
				t.Fatalf("accepted invalid full key: %v", err)
			}
			if !utf8.ValidString(v) || len(v) > 1000 {
				t.Fatalf("accepted invalid value for %q", k)
			}
		}
		// The flat form (what export prints) parses back to the same keys.
		flatBody, err := json.Marshal(api.Apply{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		again, err := applyBody(flatBody, "application/json", "web", 1000, 100)
		if err != nil {
			t.Fatalf("flat form %s refused: %v", flatBody, err)
		}
		if !maps.Equal(keys, again) {
			t.Fatalf("flat form round trip: %v != %v", keys, again)
		}
	})
}

func FuzzTxnBody(f *testing.F) {
	f.Add([]byte(`{"ops":[{"op":"put","key":"shared/a","value":"1"},{"op":"delete","key":"shared","recurse":true}],"guards":[{"key":"shared/a","mod_revision":0}]}`))
	f.Add([]byte(`{"ops":[{"op":"delete","key":"","recurse":true}]}`))
	f.Add([]byte(`{"ops":[]} []`))
	f.Fuzz(func(t *testing.T, data []byte) {
		txn, err := parseTxn(data, 1000, 50)
		if err != nil {
			checkAPIError(t, err)
			return
		}
		if len(txn.Ops) == 0 || len(txn.Ops) > 50 {
			t.Fatalf("accepted %d ops", len(txn.Ops))
		}
		for _, op := range txn.Ops {
			checkNoInventedReplacement(t, data, op.Key, op.Value)
		}
		for _, op := range txn.Ops {
			if err := api.ValidateKey(op.Key); err != nil {
				t.Fatalf("accepted op with invalid key: %v", err)
			}
			switch op.Op {
			case api.OpPut:
				if !utf8.ValidString(op.Value) || len(op.Value) > 1000 || op.Recurse {
					t.Fatalf("accepted bad put %+v", op)
				}
			case api.OpDelete:
				if op.Value != "" {
					t.Fatalf("accepted delete with a value")
				}
			default:
				t.Fatalf("accepted op %q", op.Op)
			}
		}
		for _, g := range txn.Guards {
			if api.ValidateKey(g.Key) != nil || g.ModRevision < 0 {
				t.Fatalf("accepted bad guard %+v", g)
			}
		}
	})
}

// FuzzKey checks the key rules as the server relies on them: a valid key is never rewritten by
// path cleaning (so ServeMux never redirects it), is its own prefix, and prefixes are whole
// segments.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"a", "appliances/web/x", "a//b", "../x", "a/./b", "web-frontend", "x/secrets/y", "A.b_c-d"} {
		f.Add(s, "appliances/web")
	}
	f.Fuzz(func(t *testing.T, key, prefix string) {
		err := api.ValidateKey(key)
		if err != nil {
			checkAPIError(t, err)
			if p := "/v1/kv/" + key; cleanPath(p) != p {
				// The server refuses unclean paths itself, with the key rule.
				if e := uncleanPathError(p, false); e == nil {
					t.Fatalf("unclean path %q not refused", p)
				}
			}
			return
		}
		if p := "/v1/kv/" + key; cleanPath(p) != p {
			t.Fatalf("valid key %q would be rewritten to %q", key, cleanPath(p))
		}
		if got, err := api.ValidatePrefix(key + "/"); err != nil || got != key {
			t.Fatalf("ValidatePrefix(%q/) = %q, %v", key, got, err)
		}
		if !api.HasPrefix(key, key) || api.Under(key, key) {
			t.Fatalf("key %q is not its own prefix", key)
		}
		p, perr := api.ValidatePrefix(prefix)
		if perr != nil {
			return
		}
		want := p == "" || key == p || strings.HasPrefix(key, p+"/")
		if got := api.HasPrefix(key, p); got != want {
			t.Fatalf("HasPrefix(%q, %q) = %v, want %v (whole segments)", key, p, got, want)
		}
		// A grant on p covers exactly what HasPrefix says.
		pr := &principal{name: "t", read: []string{p}}
		if (pr.mayRead(key) == nil) != want {
			t.Fatalf("grant %q and key %q disagree with HasPrefix", p, key)
		}
	})
}
