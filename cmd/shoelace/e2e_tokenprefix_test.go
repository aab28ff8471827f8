package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An empty --read or --write prefix (an unset variable, a stray comma) is refused: it granted
// every key, so that "--write $APP_PREFIX" with the variable unset made a token that may write
// any appliance. "/" still grants every key, said on purpose.
func TestE2E_TokenCreateRefusesAnEmptyPrefix(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.fails(exitUsage, `--write "": an empty prefix would grant every key; give --write / to mean every key`,
		"token", "create", "--name", "empty-write", "--read", "shared", "--write", "")
	c.fails(exitUsage, `--read "": an empty prefix would grant every key`, "token", "create", "--name", "stray-comma", "--read", "shared,")
	for _, name := range []string{"empty-write", "stray-comma"} {
		c.fails(exitNotFound, "not found", "token", "revoke", name)
	}
	var tok struct{ Read []string }
	if err := json.Unmarshal([]byte(c.ok("token", "create", "--name", "every-key-reader", "--read", "/", "-o", "json")), &tok); err != nil || len(tok.Read) != 1 {
		t.Fatalf("token create --read /: %+v, %v", tok, err)
	}
	c.ok("token", "revoke", "every-key-reader")
}

// "--read PREFIX…", as DESIGN.md writes it, takes several prefixes after one flag: "token create
// --name ci --read shared appliances/web" was refused with "too many arguments [\"appliances/web\"]".
func TestE2E_TokenCreateTakesSeveralPrefixesAfterOneFlag(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	var tok struct{ Read, Write []string }
	out := c.ok("token", "create", "--name", "several-prefixes", "--read", "shared", "appliances/db", "--write", "appliances/web", "appliances/api", "-o", "json")
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token create -o json = %q: %v", out, err)
	}
	if got, want := strings.Join(tok.Read, " ")+" | "+strings.Join(tok.Write, " "), "shared appliances/db | appliances/web appliances/api"; got != want {
		t.Errorf("token create --read shared appliances/db --write appliances/web appliances/api granted %q, want %q", got, want)
	}
	c.ok("token", "revoke", "several-prefixes")
}

// A token file saved with a UTF-8 byte order mark and CRLF (Notepad) holds the token: the BOM
// was sent as part of it, and the server answered "unknown or revoked token" (exit 5).
func TestE2E_TokenFileWithByteOrderMark(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "shared/bomtoken", "v")
	secret, err := os.ReadFile(s.adminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("\ufeff"+strings.TrimSpace(string(secret))+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := c.with("SHOELACE_TOKEN_FILE="+f).ok("kv", "get", "shared/bomtoken"); got != "v" {
		t.Errorf("kv get with a BOM token file = %q", got)
	}
}

// The name of an instance token, as token ls --all prints it, given to token revoke is
// answered with the command that frees it; it was refused as an invalid name ("has ':'").
func TestE2E_TokenRevokeOfAnInstanceTokenNamesForget(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.fails(exitError, `token "instance:web:vm-1" is an instance token: free its instance with: shoelace appliance forget web vm-1`,
		"token", "revoke", "instance:web:vm-1")
}
