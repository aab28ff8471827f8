package templates

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var confdDiffSeed = flag.Int64("confd-diff-seed", 1, "with -peers: the seed of TestConfdDifferential's random cases")

// TestConfdDifferential renders random confd-mode templates of the store functions (ls, lsdir,
// gets, getvs, exists, getv) with odd paths and patterns ("", "/", "a", "/a/", "//a", "/a/../b",
// globs across levels, classes), over random keyspaces, resource keys and prefixes, with the
// real confd (one -onetime run, a resource per case) and with Shoelace, and fails on any output
// that differs, or that one renders and the other fails. It needs the real tools:
//
//	go test ./templates -run TestConfdDifferential -args -peers DIR [-confd-diff-seed N]
func TestConfdDifferential(t *testing.T) {
	dir := *peersDir
	if dir == "" {
		t.Skip("needs the real confd and etcd: -args -peers DIR")
	}
	r := rand.New(rand.NewSource(*confdDiffSeed))
	segs := []string{"a", "b", "ab", "a.b", "x-y", "a_"}
	vals := []string{"", "v1", "10", "x y", "v2"}
	args := []string{"/", "", "/a", "/a/", "a", "/a//b", "/a/./b", "/a/../b", "/ab", "/a/b/", "/*", "/*/*", "/a/*", "/[ab]*", "/a/?", "*", "/a*", "/*/*/*", "/a/b", "/b/a", "/a/b/a", "//a", "/a.b", "/[a-b]/*", "/a/[!a]*", "/x-y", "/a/b*", "/?b"}
	funcs := []string{`{{ls %q}}`, `{{lsdir %q}}`, `{{range gets %q}}{{.Key}}={{.Value}};{{end}}`, `{{getvs %q}}`, `{{exists %q}}`, `{{getv %q "D"}}`, `{{len (ls %q)}}`}
	type fc struct {
		tmpl   string
		keys   map[string]string
		ckeys  []string
		prefix string
	}
	var cases []fc
	for i := 0; i < 400; i++ {
		keys := map[string]string{}
		for j := 0; j < 1+r.Intn(7); j++ {
			d := 1 + r.Intn(3)
			var p []string
			for k := 0; k < d; k++ {
				p = append(p, segs[r.Intn(len(segs))])
			}
			keys["/"+strings.Join(p, "/")] = vals[r.Intn(len(vals))]
		}
		var b strings.Builder
		for j := 0; j < 6; j++ {
			fmt.Fprintf(&b, funcs[r.Intn(len(funcs))]+"|", args[r.Intn(len(args))])
		}
		c := fc{tmpl: b.String() + "\n", keys: keys}
		if r.Intn(3) == 0 {
			n := 1 + r.Intn(2)
			for k := 0; k < n; k++ {
				c.ckeys = append(c.ckeys, []string{"/a", "a", "/a/", "/b/a", "/", "/ab", "b", ""}[r.Intn(8)])
			}
		}
		if r.Intn(4) == 0 {
			c.prefix = []string{"/p", "/p/q", "p/"}[r.Intn(3)]
		}
		cases = append(cases, c)
	}
	ctl, client := startEtcd(t, dir)
	confdir := t.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.MkdirAll(filepath.Join(confdir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	for i, c := range cases {
		root := fmt.Sprintf("/c/%03d", i) + "/" + strings.Trim(c.prefix, "/")
		root = strings.TrimSuffix(root, "/")
		for k, v := range c.keys {
			if err := ctl("put", root+k, "--", v); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(confdir, "templates", fmt.Sprintf("t%03d", i)), []byte(c.tmpl), 0o644); err != nil {
			t.Fatal(err)
		}
		ks := c.ckeys
		if ks == nil {
			ks = []string{"/"}
		}
		q := make([]string, len(ks))
		for j, k := range ks {
			q[j] = strconv.Quote(k)
		}
		toml := fmt.Sprintf("[template]\nsrc = \"t%03d\"\ndest = %q\nprefix = %q\nkeys = [%s]\n", i, filepath.Join(out, fmt.Sprintf("o%03d", i)), root, strings.Join(q, ", "))
		if err := os.WriteFile(filepath.Join(confdir, "conf.d", fmt.Sprintf("t%03d.toml", i)), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// confd renders every resource it can and exits non-zero when one failed: each case's
	// destination says what it did.
	_ = exec.Command(filepath.Join(dir, "confd"), "-onetime", "-backend", "etcdv3", "-node", client, "-confdir", confdir, "-log-level", "error").Run()
	bad := 0
	for i, c := range cases {
		want, werr := os.ReadFile(filepath.Join(out, fmt.Sprintf("o%03d", i)))
		nc := namedCase{name: "f", peerCase: peerCase{Template: c.tmpl, Keys: c.keys, ConfdKeys: c.ckeys, ConfdPrefix: c.prefix}}
		tm, err := Parse(c.tmpl, nc.options("confd"))
		var got []byte
		if err == nil {
			var res *Result
			res, err = tm.Execute(nc.data())
			if err == nil {
				got = res.Output
			}
		}
		switch {
		case werr != nil && err != nil:
		case werr != nil:
			t.Errorf("case %d: confd failed, shoelace rendered %q\n tmpl %s keys %v ckeys %q prefix %q", i, got, c.tmpl, c.keys, c.ckeys, c.prefix)
		case err != nil:
			t.Errorf("case %d: shoelace failed %v, confd %q\n tmpl %s keys %v ckeys %q", i, err, want, c.tmpl, c.keys, c.ckeys)
		case string(got) != string(want):
			bad++
			t.Errorf("case %d DIFFERS:\n shoelace %q\n confd    %q\n tmpl %s keys %v ckeys %q prefix %q", i, got, want, c.tmpl, c.keys, c.ckeys, c.prefix)
		}
	}
	t.Logf("%d cases, %d differ", len(cases), bad)
}
