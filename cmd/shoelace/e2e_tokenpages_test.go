package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// token ls reads every page of GET /v1/tokens (50 a page unless asked, at most 1000) and prints
// them all, by name, as before the list was paged: with 61 user tokens and 1,100 instance
// tokens, token ls prints the 61 and token ls --all the 1,161, each once.
func TestE2E_TokenListReadsEveryPage(t *testing.T) {
	s, err := startServer(t.TempDir(), nil, "--rate-limit", "0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	c := newCLI(t, s)
	cl := adminClient(t, s)
	ctx := context.Background()
	c.ok("kv", "put", "appliances/web/port", "80")
	users := []string{"admin"}
	for i := range 60 {
		name := fmt.Sprintf("user-%02d", i)
		if _, err := cl.CreateToken(ctx, api.TokenRequest{Name: name, Read: []string{"shared"}}); err != nil {
			t.Fatal(err)
		}
		users = append(users, name)
	}
	all := slices.Clone(users)
	for i := range 1100 {
		inst := fmt.Sprintf("vm-%04d", i)
		if _, err := cl.Enroll(ctx, "web", inst, ""); err != nil {
			t.Fatal(err)
		}
		all = append(all, "instance:web:"+inst)
	}
	slices.Sort(users)
	slices.Sort(all)
	if first, err := cl.TokensPage(ctx, true, 50, ""); err != nil || len(first.Tokens) != 50 || first.Next == "" {
		t.Fatalf("GET /v1/tokens?all&limit=50: %d tokens, next %q, %v; want a page of 50 and a next", len(first.Tokens), first.Next, err)
	}
	if whole, err := cl.TokensPage(ctx, true, 0, ""); err != nil || len(whole.Tokens) != len(all) || whole.Next != "" {
		t.Fatalf("GET /v1/tokens?all: %d tokens, next %q, %v; want all %d, as before pages", len(whole.Tokens), whole.Next, err, len(all))
	}
	names := func(out string) []string {
		var ns []string
		for line := range strings.Lines(out) {
			name, _, _ := strings.Cut(line, "\t")
			ns = append(ns, name)
		}
		return ns
	}
	if got := names(c.ok("token", "ls")); !slices.Equal(got, users) {
		t.Errorf("token ls printed %d tokens %v, want the %d user tokens", len(got), got, len(users))
	}
	out := c.ok("token", "ls", "--all")
	if got := names(out); !slices.Equal(got, all) {
		t.Errorf("token ls --all printed %d tokens, want %d", len(got), len(all))
	}
	if !strings.Contains(out, "instance:web:vm-1099\tappliance=web instance=vm-1099\t") {
		t.Errorf("token ls --all does not print the last instance token as before: %q…", out[len(out)-200:])
	}
	var l struct {
		Tokens []api.TokenInfo `json:"tokens"`
	}
	js := c.ok("token", "ls", "--all", "-o", "json")
	if err := json.Unmarshal([]byte(js), &l); err != nil || len(l.Tokens) != len(all) || strings.Contains(js, `"next"`) || strings.Contains(js, `"revision"`) {
		t.Errorf("token ls --all -o json: %d tokens, %v; want {\"tokens\":[…]} of %d", len(l.Tokens), err, len(all))
	}
	help := c.ok("token", "ls", "--help")
	for _, want := range []string{"every token", "--all", "instance tokens", "every page"} {
		if !strings.Contains(help, want) {
			t.Errorf("token ls --help does not say %q:\n%s", want, help)
		}
	}
}
