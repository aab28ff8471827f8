//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// Agents of appliances web and web.status sharing a cache_dir shared files: web.status.json was
// web's status and web.status's view, each overwriting the other (web's status showed
// web.status's view). An agent whose cache_dir holds a file of an appliance whose files there
// share names with its own is refused at start, naming the file, the appliance and the rule;
// its own files and those of other appliances are no reason.
func TestLoadConfig_CacheDirNameClash(t *testing.T) {
	config := func(t *testing.T, cacheDir, appliance string) error {
		t.Helper()
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.yaml")
		text := "server: http://127.0.0.1:7400\ntoken: t\nappliance: " + appliance + "\ncache_dir: " + cacheDir +
			"\ntemplates:\n  - contents: x\n    destination: " + dir + "/out\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := agent.LoadConfig(path)
		return err
	}
	newCache := func(t *testing.T, files ...string) string {
		t.Helper()
		d := filepath.Join(t.TempDir(), "cache")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(d, f), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	list := func(d string) []string {
		es, _ := os.ReadDir(d)
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}

	// web's view, as the agent keeps it: web.status, web.candidate and web.owed would keep
	// theirs where web keeps its status, candidate record and owed commands.
	webCache := newCache(t)
	if err := agent.SaveCache(webCache, agent.Cached{Appliance: "web", Revision: 3, Keys: map[string]string{"a": "1"}}); err != nil {
		t.Fatal(err)
	}
	before := list(webCache)
	for _, other := range []string{"web.status", "web.candidate", "web.owed"} {
		err := config(t, webCache, other)
		if err == nil {
			t.Errorf("appliance %s with web's view in its cache_dir: accepted", other)
			continue
		}
		for _, want := range []string{"cache_dir " + webCache + ": holds web.json, a file of appliance web", "a cache_dir each"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("appliance %s: %v\nwant %q", other, err, want)
			}
		}
	}
	if got := list(webCache); !slices.Equal(got, before) {
		t.Errorf("cache_dir now holds %v, was %v", got, before)
	}
	// The other way: web.status's own status (or its instance token) in web's cache_dir.
	for _, f := range []string{"web.status.status.json", "web.status.instance-token", "web.owed.owed.json", "web.candidate.enroll-key"} {
		d := newCache(t, f)
		err := config(t, d, "web")
		if app := strings.SplitN(f, ".", 3); err == nil || !strings.Contains(err.Error(), "holds "+f+", a file of appliance "+app[0]+"."+app[1]) {
			t.Errorf("appliance web, cache_dir holding %s: %v", f, err)
		}
	}
	// web's status (or candidate record, or owed commands) alone, as once leaves its status: the
	// name is also web.status's view (web.candidate's, web.owed's), and what it holds tells whose
	// it is. Before, it was taken for the agent's own view, which run then wrote over web's status.
	for _, c := range []struct{ other, file string }{{"web.status", "web.status.json"}, {"web.candidate", "web.candidate.json"}, {"web.owed", "web.owed.json"}} {
		d := newCache(t)
		if err := os.WriteFile(filepath.Join(d, c.file), []byte(`{"appliance":"web","instance":"vm-1","revision":3}`), 0o600); err != nil {
			t.Fatal(err)
		}
		err := config(t, d, c.other)
		if err == nil || !strings.Contains(err.Error(), "holds "+c.file+", a file of appliance web,") {
			t.Errorf("appliance %s, cache_dir holding web's %s: %v", c.other, c.file, err)
		}
	}
	// The other way: web.status's view alone in web's cache_dir, at the name of web's status.
	d := newCache(t)
	if err := agent.SaveCache(d, agent.Cached{Appliance: "web.status", Revision: 3, Keys: map[string]string{"a": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := config(t, d, "web"); err == nil || !strings.Contains(err.Error(), "holds web.status.json, a file of appliance web.status,") {
		t.Errorf("appliance web, cache_dir holding web.status's view: %v", err)
	}
	// Its own view at that name is its own.
	ownView := newCache(t)
	if err := agent.SaveCache(ownView, agent.Cached{Appliance: "web.status", Revision: 3, Keys: map[string]string{"a": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := config(t, ownView, "web.status"); err != nil {
		t.Errorf("appliance web.status beside its own view: %v", err)
	}
	// Its own files, other appliances' and other files: no clash.
	d = newCache(t, "web.json", "web.status.json", "web.candidate.json", "web.owed.json", "web.instance-token", "web.enroll-key",
		"db.json", "db.status.json", "web-frontend.json", "web-frontend.status.json", "webx.status.json", "web.status.txt", "web.status.json.bak")
	if err := config(t, d, "web"); err != nil {
		t.Errorf("appliance web beside other appliances' files: %v", err)
	}
	d = newCache(t, "web.status.json", "web.status.status.json", "db.json", "web.stat.json")
	if err := config(t, d, "web.status"); err != nil {
		t.Errorf("appliance web.status beside its own files: %v", err)
	}
}
