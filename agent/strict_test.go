//go:build !windows

package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// TestLoadConfig_CommandFilesOthersMayWrite: the config and a templates_dir file name the
// commands the agent runs, as root as a rule, and were read whatever their mode and owner: a
// templates_dir file that others may write (or a link there to a file of another user's) let
// any local user add a template whose command the agent ran as root. Each is refused now, naming
// the file and the remedy, unless only root and the agent's user may write it.
func TestLoadConfig_CommandFilesOthersMayWrite(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	cfgPath := filepath.Join(dir, "agent.yaml")
	confd := filepath.Join(dir, "templates.d")
	os.Mkdir(confd, 0o755)
	ran := filepath.Join(dir, "ran")
	os.WriteFile(cfgPath, []byte("server: http://127.0.0.1:1\ntoken_file: "+dir+"/token\nappliance: web\ncache_dir: "+dir+"/cache\ntemplates_dir: "+confd+"\ntemplates:\n  - contents: x\n    destination: "+dir+"/a.conf\n"), 0o644)
	drop := filepath.Join(confd, "evil.yaml")
	os.WriteFile(drop, []byte("- contents: y\n  destination: "+dir+"/b.conf\n  command: touch "+ran+"\n"), 0o644)
	if cfg, err := LoadConfig(cfgPath); err != nil || len(cfg.Templates) != 2 {
		t.Fatalf("files of the agent's user, mode 0644: %v", err)
	}
	fi, err := os.Stat(drop)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, _ := atomicfile.Owner(fi)
	u, g := strconv.Itoa(uid), strconv.Itoa(gid)
	accountFiles(t, "dev:x:"+u+":"+g+"::/home/dev:/bin/sh\n", "dev:x:"+g+":dev,bob\n")

	for _, tc := range []struct {
		name, path string
		mode       os.FileMode
		want       string
	}{
		{"templates_dir file others may write", drop, 0o666, drop + " may be written by others (mode 0666): it tells the agent what to write and run"},
		{"templates_dir file its group may write", drop, 0o664, drop + " may be written by its group (gid " + g + ", mode 0664), which has members other than its owner"},
		{"config others may write", cfgPath, 0o646, cfgPath + " may be written by others (mode 0646)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(tc.path, tc.mode)
			defer os.Chmod(tc.path, 0o644)
			if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// A user private group (no member but the owner) may write it: a checkout under umask 002.
	accountFiles(t, "dev:x:"+u+":"+g+"::/home/dev:/bin/sh\n", "dev:x:"+g+":\n")
	os.Chmod(drop, 0o664)
	if _, err := LoadConfig(cfgPath); err != nil {
		t.Fatalf("a templates_dir file of a user private group, mode 0664: %v", err)
	}
	os.Chmod(drop, 0o644)

	if os.Geteuid() != 0 {
		t.Skip("needs root to give the files another owner")
	}
	// A link in templates_dir to another user's file: the file is judged, not the link.
	other := filepath.Join(t.TempDir(), "theirs.yaml")
	os.WriteFile(other, []byte("- contents: z\n  destination: "+dir+"/c.conf\n  command: touch "+ran+"\n"), 0o644)
	os.Chown(other, 4242, 4242)
	os.Remove(drop)
	os.Symlink(other, drop)
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), drop+" (a link to "+other+") is owned by uid 4242, neither root nor the agent's user") {
		t.Fatalf("a link to another user's file: %v", err)
	}
	os.Chown(cfgPath, 4242, 4242)
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), cfgPath+" is owned by uid 4242") {
		t.Fatalf("a config of another user's: %v", err)
	}
}

// TestLoadConfig_ConfdResourceOthersMayWrite: a confd_dir resource names the commands the agent
// runs (check_cmd, reload_cmd) as a templates_dir file does, and is judged alike when the agent
// loads its config; convert-confd, which only prints, reads it as it is.
func TestLoadConfig_ConfdResourceOthersMayWrite(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	confd := filepath.Join(dir, "confd")
	os.MkdirAll(filepath.Join(confd, "conf.d"), 0o755)
	os.MkdirAll(filepath.Join(confd, "templates"), 0o755)
	os.WriteFile(filepath.Join(confd, "templates", "a.tmpl"), []byte(`{{ getv "/a" }}`), 0o644)
	res := filepath.Join(confd, "conf.d", "a.toml")
	os.WriteFile(res, []byte("[template]\nsrc = \"a.tmpl\"\ndest = \""+dir+"/a.conf\"\nkeys = [\"/a\"]\nreload_cmd = \"touch "+dir+"/ran\"\n"), 0o644)
	cfgPath := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgPath, []byte("server: http://127.0.0.1:1\ntoken_file: "+dir+"/token\nappliance: web\ncache_dir: "+dir+"/cache\nconfd_dir: "+confd+"\n"), 0o644)
	if cfg, err := LoadConfig(cfgPath); err != nil || len(cfg.Templates) != 1 {
		t.Fatalf("a resource of the agent's user, mode 0644: %v", err)
	}
	os.Chmod(res, 0o666)
	want := res + " may be written by others (mode 0666)"
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if r, err := ReadConfdDir(confd); err != nil || len(r.Templates) != 1 {
		t.Fatalf("convert-confd's read of it: %v", err)
	}
}

// TestLoadConfig_SourceOthersMayWrite: a template's source is what the agent writes, as root as
// a rule, to its destination (a sudoers.d file, a unit, a crontab): one that others could write
// let any local user choose that content. It is judged as the config is when the agent loads
// it (validate, run, and the re-read after an edit, which keeps the previous version), not when
// convert-confd only checks it.
func TestLoadConfig_SourceOthersMayWrite(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	src := filepath.Join(dir, "sudoers.tmpl")
	os.WriteFile(src, []byte("app ALL=(root) NOPASSWD: /usr/bin/systemctl reload app\n"), 0o644)
	cfgPath := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgPath, []byte("server: http://127.0.0.1:1\ntoken_file: "+dir+"/token\nappliance: web\ncache_dir: "+dir+"/cache\ntemplates:\n  - source: "+src+"\n    destination: "+dir+"/app.sudoers\n"), 0o644)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatalf("a source of the agent's user, mode 0644: %v", err)
	}
	os.Chmod(src, 0o666)
	want := "read source: " + src + " may be written by others (mode 0666): it tells the agent what to write and run"
	if _, err := LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if _, err := parseTemplate(&cfg.Templates[0]); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("the running agent's re-read after an edit: %v, want %q", err, want)
	}
	// convert-confd's check of an entry it prints: not judged.
	check := Config{Server: "http://localhost", Appliance: "convert", Token: "-", CacheDir: filepath.Join(dir, "cache2"), Path: dir,
		Templates: []Template{{Source: src, Destination: dir + "/x"}}}
	if err := check.Validate(); err != nil {
		t.Fatalf("a Config made in Go (convert-confd's check): %v", err)
	}
}
