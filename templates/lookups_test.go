package templates

import (
	"context"
	"errors"
	"net"
	"slices"
	"sort"
	"testing"
	"time"
)

// TestConfd_Lookups: confd mode has confd's DNS functions with confd's results: confd's own
// "ipv4 lookup test" (resource/template/template_test.go) byte for byte, addresses as sorted
// strings filtered by family, nil or empty lists when a lookup fails, and SRV records sorted as
// confd sorts them. validate warns that their output can change without the view changing.
func TestConfd_Lookups(t *testing.T) {
	view := Data{Keys: map[string]string{"test/data": "parent", "test/data/def": "child"}}
	render := func(t *testing.T, text string) string {
		t.Helper()
		res, err := mustParse(t, text, Options{Name: "test.conf.tmpl", Functions: ModeConfd}).Execute(view)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		return string(res.Output)
	}

	// confd v0.16.0's "ipv4 lookup test", template and expected bytes as the test states them.
	if got, want := render(t, "\n{{range lookupIPV4 \"localhost\"}}\nip: {{.}}\n{{end}}\n"), "\n\nip: 127.0.0.1\n\n"; got != want {
		t.Errorf("ipv4 lookup test: %q, want %q", got, want)
	}
	// Address literals need no DNS.
	for text, want := range map[string]string{
		`{{lookupIP "10.1.2.3"}}`:                             "[10.1.2.3]",
		`{{lookupIPV4 "10.1.2.3"}}|{{lookupIPV6 "10.1.2.3"}}`: "[10.1.2.3]|[]",
		`{{lookupIPV4 "::1"}}|{{lookupIPV6 "::1"}}`:           "[]|[::1]",
		`{{range lookupIP "::1"}}ip: {{.}};{{end}}`:           "ip: ::1;",
	} {
		if got := render(t, text); got != want {
			t.Errorf("%s: %q, want %q", text, got, want)
		}
	}

	// A failed lookup is no address and no record, as in confd, not a failed render.
	defer func(r *net.Resolver) { confdResolver = r }(confdResolver)
	confdResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in this test")
	}}
	if got, want := render(t, `[{{lookupIP "db.example.invalid"}}][{{range lookupIPV4 "db.example.invalid"}}x{{end}}][{{len (lookupSRV "ldap" "tcp" "example.invalid")}}]`), "[[]][][0]"; got != want {
		t.Errorf("failed lookups: %q, want %q", got, want)
	}

	// A DNS server that never answers: the lookup gives up at confdLookupTimeout, not after the
	// resolver's own tries (5 s each).
	defer func(d time.Duration) { confdLookupTimeout = d }(confdLookupTimeout)
	confdLookupTimeout = 50 * time.Millisecond
	confdResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		c, _ := net.Pipe() // nobody reads the query
		return c, nil
	}}
	start := time.Now()
	if got, want := render(t, `[{{lookupIP "db.example.invalid"}}][{{len (lookupSRV "ldap" "tcp" "example.invalid")}}]`), "[[]][0]"; got != want {
		t.Errorf("lookups of a silent server: %q, want %q", got, want)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("lookups of a silent server took %v, want them given up at %v", d, confdLookupTimeout)
	}

	// confd sorts records by their fields written as one text: port 10 before port 2.
	srv := []*net.SRV{{Target: "b.", Port: 1}, {Target: "a.", Port: 2}, {Target: "a.", Port: 10}}
	sort.Sort(confdSRVs(srv))
	var order []string
	for _, s := range srv {
		order = append(order, srvText(s))
	}
	if want := []string{"a.1000", "a.200", "b.100"}; !slices.Equal(order, want) {
		t.Errorf("SRV order %v, want %v", order, want)
	}

	tmpl := mustParse(t, `{{lookupIP "a"}}{{lookupSRV "a" "b" "c"}}`, Options{Functions: ModeConfd})
	if got := tmpl.Nondeterministic(); !slices.Contains(got, "lookupIP") || !slices.Contains(got, "lookupSRV") {
		t.Errorf("Nondeterministic() = %v, want the lookups (validate warns about them)", got)
	}
}
