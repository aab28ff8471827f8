package templates

import (
	"slices"
	"strings"
	"testing"
)

// TestConfd_PrefixedView: one confd directory whose resources have different prefixes (confd's
// quick-start "Advanced Example": /myapp and /yourapp, one template) moves over in one
// appliance imported with --prefix /, which keeps whole paths: a path the prefix-relative view
// lacks is read below the prefix, each resource renders the bytes the real confd v0.16.0
// wrote, and a change below the prefix re-renders it. A path below the prefix is read first,
// as confd reads PREFIX + path; a view imported with --prefix PREFIX (relative paths) is read
// when the prefix holds none.
func TestConfd_PrefixedView(t *testing.T) {
	text := "upstream {{getv \"/subdomain\"}} {\n{{range getvs \"/upstream/*\"}}\n    server {{.}};\n{{end}}\n}\n\nserver {\n    server_name  {{getv \"/subdomain\"}}.example.com;\n}\n"
	view := Data{Keys: map[string]string{
		"myapp/subdomain": "myapp", "myapp/upstream/app2": "10.0.1.100:80", "myapp/upstream/app1": "10.0.1.101:80",
		"yourapp/subdomain": "yourapp", "yourapp/upstream/app2": "10.0.1.102:80", "yourapp/upstream/app1": "10.0.1.103:80",
	}}
	for prefix, want := range map[string]string{
		"/myapp":   "upstream myapp {\n\n    server 10.0.1.100:80;\n\n    server 10.0.1.101:80;\n\n}\n\nserver {\n    server_name  myapp.example.com;\n}\n",
		"/yourapp": "upstream yourapp {\n\n    server 10.0.1.102:80;\n\n    server 10.0.1.103:80;\n\n}\n\nserver {\n    server_name  yourapp.example.com;\n}\n",
	} {
		opts := Options{Name: "nginx.tmpl", Functions: ModeConfd, Prefix: prefix, ConfdKeys: []string{"/subdomain", "/upstream"}}
		res, err := mustParse(t, text, opts).Execute(view)
		if err != nil {
			t.Fatalf("prefix %s: %v", prefix, err)
		}
		if got := string(res.Output); got != want {
			t.Errorf("prefix %s: %q, want confd's %q", prefix, got, want)
		}
		p := prefix[1:]
		if !slices.Contains(res.Keys, p+"/subdomain") || !slices.Contains(res.Prefixes, p+"/upstream") {
			t.Errorf("prefix %s: read keys %v, prefixes %v: a change below the prefix would not re-render", prefix, res.Keys, res.Prefixes)
		}
	}

	// ls, lsdir, gets and exists read below the prefix too, with confd's prefix-relative paths.
	res, err := mustParse(t, `{{ls "/upstream"}} {{lsdir "/"}} {{range gets "/upstream/*"}}{{.Key}} {{end}}{{exists "/subdomain"}} {{exists "/yourapp/subdomain"}}`,
		Options{Functions: ModeConfd, Prefix: "/myapp", ConfdKeys: []string{"/subdomain", "/upstream"}}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "[app1 app2] [] /upstream/app1 /upstream/app2 true false"; got != want {
		t.Errorf("listings: %q, want %q", got, want)
	}

	// A resource whose keys are all of its prefix (keys = ["/"]) sees the whole view: a listing of
	// the root that finds nothing there (the view's root holds only directories, myapp/ and
	// yourapp/) is read below the prefix too, as the real confd v0.16.0 with prefix /myapp
	// renders it. Before, the root listing found the whole view and looked no further: empty.
	res, err = mustParse(t, `{{range gets "/*"}}{{.Key}}={{.Value}} {{end}}|{{range getvs "/*"}}{{.}} {{end}}|{{ls "/"}}|{{ls "/upstream"}}`,
		Options{Functions: ModeConfd, Prefix: "/myapp", ConfdKeys: []string{"/"}}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "/subdomain=myapp |myapp |[subdomain]|[app1 app2]"; got != want {
		t.Errorf("root listings with keys [/]: %q, want confd's %q", got, want)
	}
	if !slices.Contains(res.Prefixes, "myapp") {
		t.Errorf("listed prefixes %v: a change below myapp/ would not re-render", res.Prefixes)
	}

	// Keys at the root of the view with the same paths (etcd's /subdomain, /upstream/…, beside
	// /myapp/…) are not read in place of the prefix's, as confd reads PREFIX + path; they are
	// read by a resource whose prefix holds none (a view imported with --prefix PREFIX, whose
	// paths are relative). Before, the root's were read first: both resources rendered them,
	// and validate said ok.
	view.Keys["subdomain"], view.Keys["upstream/root"] = "root", "10.9.9.9:80"
	const read = `{{getv "/subdomain"}} {{getvs "/upstream/*"}} {{ls "/upstream"}} {{exists "/upstream/root"}}`
	for prefix, want := range map[string]string{
		"/myapp":   "myapp [10.0.1.100:80 10.0.1.101:80] [app1 app2] false",
		"/yourapp": "yourapp [10.0.1.102:80 10.0.1.103:80] [app1 app2] false",
		"/other":   "root [10.9.9.9:80] [root] true", // nothing below other/: the relative view
		"":         "root [10.9.9.9:80] [root] true",
	} {
		res, err = mustParse(t, read, Options{Functions: ModeConfd, Prefix: prefix}).Execute(view)
		if err != nil || string(res.Output) != want {
			t.Errorf("prefix %q beside root keys: %q, %v; want %q", prefix, res.Output, err, want)
		}
	}
	// A path that repeats the prefix is missing, as confd finds nothing at /myapp/myapp/…, and
	// the error says how to write it.
	_, err = mustParse(t, `{{getv "/myapp/subdomain"}}`, Options{Functions: ModeConfd, Prefix: "/myapp"}).Execute(view)
	if err == nil || !strings.Contains(err.Error(), `myapp/myapp/subdomain`) || !strings.Contains(err.Error(), `write "/subdomain"`) {
		t.Errorf("a path that repeats the prefix: %v", err)
	}
}

// TestConfd_PrefixOwnValue: a view imported with --prefix / holds the value etcd had at a confd
// prefix itself (/production/web beside /production/web/db/host) as the prefix's key, and a
// resource with that prefix whose keys load it (["/"]) reads it as confd's store holds it, "/":
// the bytes the real confd v0.16.0 rendered from the same etcd keys. Before, getv "/" failed the
// render.
func TestConfd_PrefixOwnValue(t *testing.T) {
	view := Data{Keys: map[string]string{"production/web": "pv", "production/web/db/host": "db1"}}
	text := `[{{getv "/"}}] {{exists "/"}} {{getv "/db/host"}} gets:{{range gets "/*"}}{{.Key}}={{.Value}} {{end}} getvs:{{getvs "/*"}} ls:{{ls "/"}} lsdir:{{lsdir "/"}} all:{{range gets "/*/*"}}{{.Key}} {{end}}`
	res, err := mustParse(t, text, Options{Functions: ModeConfd, Prefix: "/production/web", ConfdKeys: []string{"/"}}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "[pv] true db1 gets:/=pv  getvs:[pv] ls:[/] lsdir:[] all:/db/host "; got != want {
		t.Errorf("%q, want confd's %q", got, want)
	}
	if !slices.Contains(res.Keys, "production/web") {
		t.Errorf("read keys %v: a change of the prefix's value would not re-render", res.Keys)
	}
	// Keys that do not load it ("/db"), as confd's, do not see it.
	res, err = mustParse(t, `{{exists "/"}} {{getv "/" "none"}}`, Options{Functions: ModeConfd, Prefix: "/production/web", ConfdKeys: []string{"/db"}}).Execute(view)
	if err != nil || string(res.Output) != "false none" {
		t.Errorf("keys [/db]: %q, %v; want \"false none\"", res.Output, err)
	}
	// A view imported with --prefix PREFIX holds no such value: the error says where it went.
	_, err = mustParse(t, `{{getv "/"}}`, Options{Functions: ModeConfd, Prefix: "/production/web", ConfdKeys: []string{"/"}}).Execute(Data{Keys: map[string]string{"db/host": "db1"}})
	if err == nil || !strings.Contains(err.Error(), "the value at the prefix itself") || strings.Contains(err.Error(), `"//"`) {
		t.Errorf("getv \"/\" of a relative view: %v", err)
	}
}

// TestConfd_PrefixOwnValueAlone: a prefix that holds its own value and nothing below it (a
// resource whose one setting is the prefix's value) reads it as "/" too, as the real confd
// v0.16.0 renders it (its etcd read of the prefix finds the value). The view was read as one
// imported with --prefix PREFIX, for want of a key below the prefix, and getv "/" failed the
// render, saying to import with --prefix /, which it was.
func TestConfd_PrefixOwnValueAlone(t *testing.T) {
	view := Data{Keys: map[string]string{"production/web": "pv"}}
	res, err := mustParse(t, `[{{getv "/"}}] {{exists "/"}} {{range gets "/*"}}{{.Key}}={{.Value}}{{end}}`,
		Options{Functions: ModeConfd, Prefix: "/production/web", ConfdKeys: []string{"/"}}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "[pv] true /=pv"; got != want {
		t.Errorf("%q, want confd's %q", got, want)
	}
	if !slices.Contains(res.Keys, "production/web") {
		t.Errorf("read keys %v: a change of the prefix's value would not re-render", res.Keys)
	}
}

// TestConfd_PrefixCutAsAString: a read that fails because confd cuts the prefix off its keys as
// a string says so: with "/app/" the prefix's own value is "/app", not "/"; with "//app" paths
// are whole. (The bytes of each prefix's render are the peer cases probe-prefix-*.)
func TestConfd_PrefixCutAsAString(t *testing.T) {
	view := Data{Keys: map[string]string{"app": "own", "app/x": "ax"}}
	for _, c := range []struct{ prefix, text, want string }{
		{"/app/", `{{getv "/"}}`, `confd's store holds that at "/app", not "/"`},
		{"//app", `{{getv "/x"}}`, `paths are whole ("/app/…")`},
	} {
		_, err := mustParse(t, c.text, Options{Functions: ModeConfd, Prefix: c.prefix, ConfdKeys: []string{"/"}}).Execute(view)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("prefix %s, %s: %v; want it to say %s", c.prefix, c.text, err, c.want)
		}
	}
}

// TestConfd_EmptyPrefixBesideOthers: a view imported with --prefix / (whole paths, confd's
// quick-start /myapp and /yourapp, shared by appliances through shared/) and a resource whose
// prefix holds none of its keys (/theirapp, not imported yet or deleted). confd with nothing
// under /theirapp renders from nothing: ls "/" is empty, getv "/subdomain" falls to its
// default. The view was read as one imported with --prefix /theirapp, whose paths are
// relative: the resource saw the whole view, myapp/ and yourapp/ at its root. When another
// confd prefix rendered from the view (Options.ConfdPrefixes) holds keys, the view is one of
// whole paths, and the empty prefix reads nothing; a change below it re-renders it.
func TestConfd_EmptyPrefixBesideOthers(t *testing.T) {
	view := Data{Keys: map[string]string{
		"myapp/subdomain": "myapp", "myapp/upstream/app1": "10.0.1.101:80",
		"yourapp/subdomain": "yourapp", "subdomain": "root",
	}}
	const text = `{{ls "/"}} {{lsdir "/"}} {{getvs "/*"}} {{exists "/subdomain"}} {{getv "/subdomain" "none"}}`
	prefixes := []string{"/myapp", "/yourapp", "/theirapp"}
	res, err := mustParse(t, text, Options{Functions: ModeConfd, Prefix: "/theirapp", ConfdKeys: []string{"/"}, ConfdPrefixes: prefixes}).Execute(view)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), "[] [] [] false none"; got != want {
		t.Errorf("empty prefix beside others: %q, want confd's %q", got, want)
	}
	if !slices.Contains(res.Prefixes, "theirapp") {
		t.Errorf("listed prefixes %v: a key put below theirapp/ would not re-render", res.Prefixes)
	}
	// A key below it is read as confd reads it.
	view.Keys["theirapp/subdomain"] = "theirapp"
	res, err = mustParse(t, text, Options{Functions: ModeConfd, Prefix: "/theirapp", ConfdKeys: []string{"/"}, ConfdPrefixes: prefixes}).Execute(view)
	if err != nil || string(res.Output) != "[subdomain] [] [theirapp] true theirapp" {
		t.Errorf("prefix with a key: %q, %v", res.Output, err)
	}
	// Without another prefix holding keys, the view is one imported with --prefix /theirapp.
	rel := Data{Keys: map[string]string{"subdomain": "rel"}}
	res, err = mustParse(t, text, Options{Functions: ModeConfd, Prefix: "/theirapp", ConfdKeys: []string{"/"}, ConfdPrefixes: prefixes}).Execute(rel)
	if err != nil || string(res.Output) != "[subdomain] [] [rel] true rel" {
		t.Errorf("relative view: %q, %v", res.Output, err)
	}
}

// TestConfd_Empty: validate's check of a resource that finds none of its keys, as the render
// reads the view: ConfdEmpty says empty where ls "/" lists nothing, and relative where the
// render reads the view's root (getv "/subdomain" reads the root key "subdomain").
func TestConfd_Empty(t *testing.T) {
	whole := Data{Keys: map[string]string{"myapp/subdomain": "m", "subdomain": "root"}}
	rel := Data{Keys: map[string]string{"subdomain": "s"}}
	ownAlone := Data{Keys: map[string]string{"theirapp": "own", "subdomain": "root"}}
	for _, c := range []struct {
		prefix          string
		keys            []string
		d               Data
		empty, relative bool
	}{
		{"/theirapp", []string{"/"}, whole, true, false},
		{"/myapp", []string{"/"}, whole, false, false},
		{"/myapp", []string{"/upstream"}, whole, true, false},
		{"/myapp", []string{"/subdomain"}, rel, false, true},
		{"/myapp", []string{"/upstream"}, rel, true, true},
		{"", []string{"/upstream"}, rel, false, false}, // no prefix: whole paths, nothing to tell
		// The prefix's own value alone: a view of whole paths, read below the prefix.
		{"/theirapp", []string{"/"}, ownAlone, false, false},
		{"/theirapp/", []string{"/"}, ownAlone, false, false},
		// ... which a resource whose keys leave out "/" does not read: it finds nothing.
		{"/theirapp", []string{"/db"}, ownAlone, true, false},
		// A prefix no view key can be below (a space is no key's): the render reads the view's
		// root, as one imported with --prefix PREFIX, even beside another prefix's keys.
		{"/their app", []string{"/"}, whole, false, true},
		{"/their app", []string{"/upstream"}, whole, true, true},
	} {
		opts := Options{Functions: ModeConfd, Prefix: c.prefix, ConfdKeys: c.keys, ConfdPrefixes: []string{"/myapp", "/theirapp"}}
		tm := mustParse(t, `x`, opts)
		if empty, relative := tm.ConfdEmpty(c.d); empty != c.empty || relative != c.relative {
			t.Errorf("prefix %q keys %v view %v: empty %v relative %v, want %v %v", c.prefix, c.keys, c.d.Keys, empty, relative, c.empty, c.relative)
		}
		if c.prefix == "" {
			continue
		}
		// Where the render reads the view does not hang on the resource's keys: it is read
		// with keys = ["/"], which loads the root's subdomain when the view is read as relative.
		ls := mustParse(t, `{{ls "/"}}`, opts)
		opts.ConfdKeys = []string{"/"}
		sub := mustParse(t, `{{getv "/subdomain" "none"}}`, opts)
		for _, r := range []struct {
			tm   *Template
			want bool
			got  func(out string) bool
		}{
			{ls, c.empty, func(out string) bool { return out == "[]" }},
			{sub, c.relative, func(out string) bool { return out == c.d.Keys["subdomain"] }},
		} {
			res, err := r.tm.Execute(c.d)
			if err != nil {
				t.Fatal(err)
			}
			if r.got(string(res.Output)) != r.want {
				t.Errorf("prefix %q keys %v view %v: the render reads %q, where ConfdEmpty wants empty %v relative %v", c.prefix, c.keys, c.d.Keys, res.Output, c.empty, c.relative)
			}
		}
	}
}

// TestConfd_PrefixOwnValueReadOnce: a view that holds a prefix's own value and nothing below it
// (etcd's /app beside other apps' keys, imported with --prefix /) is one of whole paths, as
// getv "/" already read it: confd's store holds that value once, at "/" (at "/app/x" for the
// prefix "/app/x/", which confd does not cut off its own value), and nothing else. The view was
// read as relative besides: the same key was also "/app" (getv "/app", ls "/" listing "/" and
// "app", as two keys of confd's store), a root key outside the prefix was read as the prefix's
// ("/x"), and a sibling of the prefix ("/app/y" beside "/app/x/") was listed and read.
func TestConfd_PrefixOwnValueReadOnce(t *testing.T) {
	const text = `root={{getv "/" "M"}} app={{getv "/app" "M"}} x={{getv "/x" "M"}} appx={{getv "/app/x" "M"}} appy={{getv "/app/y" "M"}} ls={{ls "/"}} lsapp={{ls "/app"}} gets={{range gets "/*"}}{{.Key}}={{.Value}} {{end}}`
	for _, c := range []struct {
		prefix string
		view   map[string]string
		want   string
	}{
		// confd with prefix /app loads /app (as "/") and nothing else.
		{"/app", map[string]string{"app": "own", "x": "rx", "other/y": "o"},
			"root=own app=M x=M appx=M appy=M ls=[/] lsapp=[] gets=/=own "},
		// confd with prefix /app/x loads /app/x (as "/"), not its sibling /app/y.
		{"/app/x", map[string]string{"app/x": "own", "app/y": "ay", "other": "o"},
			"root=own app=M x=M appx=M appy=M ls=[/] lsapp=[] gets=/=own "},
		// confd with prefix /app/x/ loads /app/x, at its whole path (memkv's ls "/" lists no
		// key two levels down).
		{"/app/x/", map[string]string{"app/x": "own", "app/y": "ay", "other": "o"},
			"root=M app=M x=M appx=own appy=M ls=[] lsapp=[x] gets="},
	} {
		res, err := mustParse(t, text, Options{Functions: ModeConfd, Prefix: c.prefix, ConfdKeys: []string{"/"}}).Execute(Data{Keys: c.view})
		if err != nil || string(res.Output) != c.want {
			t.Errorf("prefix %s, view %v: %q, %v; want confd's %q", c.prefix, c.view, res.Output, err, c.want)
		}
	}
	// A key below the prefix named as it ("/app/app" for /app) is "/app" in confd's store, the
	// prefix's own value "/": each is read once, where confd holds it. With the prefix "/app/",
	// confd holds both at "/app", one or the other from one run to the next; the agent reads
	// the key below, always.
	view := Data{Keys: map[string]string{"app": "own", "app/app": "inner", "app/x": "ax", "other": "o"}}
	for prefix, want := range map[string]string{
		"/app":  "root=own app=inner x=ax appx=M appy=M ls=[/ app x] lsapp=[app] gets=/=own /app=inner /x=ax ",
		"/app/": "root=M app=inner x=ax appx=M appy=M ls=[app x] lsapp=[app] gets=/app=inner /x=ax ",
	} {
		res, err := mustParse(t, text, Options{Functions: ModeConfd, Prefix: prefix, ConfdKeys: []string{"/"}}).Execute(view)
		if err != nil || string(res.Output) != want {
			t.Errorf("prefix %s beside /app/app: %q, %v; want %q", prefix, res.Output, err, want)
		}
	}
}
