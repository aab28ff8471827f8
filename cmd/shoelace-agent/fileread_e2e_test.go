//go:build !windows

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// A local file that a template reads with file (a certificate that is rotated) changes under a
// running agent: consul-template renders the template again and runs its command, and the
// agent did nothing until the view changed, leaving the old certificate in the file. Now the
// agent watches the files its templates' last renders read and renders those templates again.
func TestE2E_RunFileReadChanged(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	certDir := t.TempDir()
	cert := filepath.Join(certDir, "cert.pem")
	if err := os.WriteFile(cert, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+cert+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
    command: echo x >> $DIR/commands
`)
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	waitFor(t, "its command", func() bool { return len(commandLines(t, e.path("commands"))) == 1 })
	// A rotation: the new file written beside the old and renamed over it.
	if err := os.WriteFile(cert+".new", []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cert+".new", cert); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the changed file", fileIs(e.path("a"), "v2 1"))
	waitFor(t, "its command again", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
	// Written in place, as an editor may.
	if err := os.WriteFile(cert, []byte("v3"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the file edited in place", fileIs(e.path("a"), "v3 1"))
	// The view still renders it, with the file's latest bytes.
	srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change of the view", fileIs(e.path("a"), "v3 2"))
}

// A file read that changes without a pause (rewritten every 5 ms, a status file another
// program keeps writing): each event restarted the 100 ms wait for the burst to settle, and the
// template was not rendered again until the writes stopped. The wait is at most a second after
// the burst's first event: renders follow the writes while they go on.
func TestE2E_RunFileReadChangingNonStop(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	f := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(f, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+f+`\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
`)
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "0"))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			os.WriteFile(f, []byte(strconv.Itoa(i)), 0o644)
		}
	}()
	defer func() { close(stop); <-done }()
	waitFor(t, "a render while the file goes on changing", func() bool {
		b, err := os.ReadFile(e.path("a"))
		return err == nil && string(b) != "0"
	})
}

// The directory of a file read is removed and made again (rm -rf, then the file written anew):
// its watch went with the directory, and the agent, holding it as watched, never watched it
// again, so that no later change of the file rendered the template, whatever passes came. Now
// the removal renders the templates again, and the next pass watches the directory again.
func TestE2E_RunFileReadDirRemovedIsWatchedAgain(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	certDir := filepath.Join(t.TempDir(), "certs")
	cert := filepath.Join(certDir, "cert.pem")
	if err := os.Mkdir(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+cert+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
  - contents: "{{ if fileExists \"`+cert+`\" }}yes{{ else }}no{{ end }}"
    destination: $DIR/exists
    functions: confd
    allow_file: true
`)
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	waitFor(t, "first render", fileIs(e.path("exists"), "yes"))
	if err := os.RemoveAll(certDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the removal", fileIs(e.path("exists"), "no"))
	if err := os.Mkdir(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A pass watches the directory again as it ends; the next pass's render says it ended.
	srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change of the view", fileIs(e.path("a"), "v2 2"))
	srv.put("appliances/web/a", "3")
	waitFor(t, "render of the next change", fileIs(e.path("a"), "v2 3"))
	if err := os.WriteFile(cert, []byte("v3"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the file changed in the directory made again", fileIs(e.path("a"), "v3 3"))
	waitFor(t, "render of the file made again", fileIs(e.path("exists"), "yes"))
}

// A file that a template reads is not there when the agent starts (a certificate that another
// service writes later): the render fails, and consul-template renders the template once the
// file is written. The agent watched only the files of a render that succeeded, so the
// template stayed failed until the view changed; it now watches the files a failed render read.
func TestE2E_RunFileReadMissingAtFirstRender(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	cert := filepath.Join(t.TempDir(), "cert.pem")
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+cert+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
  - contents: "{{ key \"a\" }}"
    destination: $DIR/b
`)
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("b"), "1"))
	// A pass watches the files read as it ends; the next pass's render says it ended.
	srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change of the view", fileIs(e.path("b"), "2"))
	if _, err := os.Stat(e.path("a")); !os.IsNotExist(err) {
		t.Fatalf("a rendered without the file it reads: %v", err)
	}
	if err := os.WriteFile(cert, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the file written", fileIs(e.path("a"), "v1 2"))
}

// A file read that changes after the render read it but before its directory is watched (here by
// the reload command itself, which runs before the pass ends) was missed: no event came, and the
// file kept the old bytes until the view changed. Now the templates that read files in a newly
// watched directory are rendered once more.
func TestE2E_RunFileReadChangedBeforeItsWatch(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	cert := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(cert, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+cert+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
    command: echo x >> $DIR/commands; printf v2 > `+cert+`
`)
	e.startAgent()
	waitFor(t, "the render of the file its first command changed", fileIs(e.path("a"), "v2 1"))
	waitFor(t, "its command again", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
	// The command wrote v2 again, watched now: the same bytes render the same file, and no
	// command runs.
	srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change of the view", fileIs(e.path("a"), "v2 2"))
	waitFor(t, "its command", func() bool { return len(commandLines(t, e.path("commands"))) == 3 })
}

// The directory of a file read is removed after the render read it and before it could be
// watched (here by the reload command, which runs before the pass ends): no watch could see the
// removal, and the templates kept what the file held until the view changed. They are rendered
// once more (once: not at each pass while it stays gone).
func TestE2E_RunFileReadDirGoneBeforeItsWatch(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	certDir := filepath.Join(t.TempDir(), "certs")
	cert := filepath.Join(certDir, "cert.pem")
	if err := os.Mkdir(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ if fileExists \"`+cert+`\" }}yes{{ else }}no{{ end }}"
    destination: $DIR/exists
    functions: confd
    allow_file: true
    command: echo x >> $DIR/commands; rm -rf `+certDir+`
`)
	e.startAgent()
	waitFor(t, "the render of the removal its first command made", fileIs(e.path("exists"), "no"))
	waitFor(t, "its command again", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
}

// kubeVersion writes version name of a Kubernetes secret or configmap volume at vol, file holding
// content, and points vol/..data at it as the kubelet does: a new link renamed over the old one.
func kubeVersion(t *testing.T, vol, name, file, content string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(vol, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, name, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(name, filepath.Join(vol, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
		t.Fatal(err)
	}
}

// A Kubernetes secret or configmap volume: cert.pem is a symlink to ..data/cert.pem, and ..data
// a symlink to a directory of the current version. An update writes a new version's directory,
// renames a new ..data symlink over the old one and removes the old directory: no event names
// cert.pem, and run, watching the directory for cert.pem only, kept the old certificate until
// the view changed (consul-template, which polls with stat, renders it). An event on a symlink
// that the path of a file read goes through renders the templates that read it again.
func TestE2E_RunFileReadSymlinkSwap(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	vol := t.TempDir()
	cert := filepath.Join(vol, "cert.pem")
	version := func(name, content string) { kubeVersion(t, vol, name, "cert.pem", content) }
	version("..2026_x", "v1")
	if err := os.Symlink("..data/cert.pem", cert); err != nil {
		t.Fatal(err)
	}
	volumeUpdatesRender(t, srv, vol, "cert.pem", cert)
}

// volumeUpdatesRender runs an agent whose template reads path, a file whose links lead to name
// in vol, a Kubernetes volume whose ..2026_x holds v1: a change of the view renders it, and so
// do two updates of the volume (..2026_y, then ..2026_z, the one before removed each time),
// the second from the links the render after the first went through.
func volumeUpdatesRender(t *testing.T, srv *server, vol, name, path string) {
	t.Helper()
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+path+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	// The render once the directory is watched (watchReads) is done before the update.
	waitFor(t, "the render once the file is watched", func() bool {
		return strings.Contains(ag.logs.String(), "watched now: rendered again")
	})
	srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change of the view", fileIs(e.path("a"), "v1 2"))
	for _, u := range []struct{ version, old, content string }{{"..2026_y", "..2026_x", "v2"}, {"..2026_z", "..2026_y", "v3"}} {
		kubeVersion(t, vol, u.version, name, u.content)
		if err := os.RemoveAll(filepath.Join(vol, u.old)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "render of the volume's update to "+u.version, fileIs(e.path("a"), u.content+" 2"))
	}
}

// A file read through a link into a directory that holds no file read: /etc/app/ca.pem ->
// VOLUME/ca.pem, a Kubernetes volume mounted elsewhere (VOLUME/ca.pem -> ..data/ca.pem, ..data
// -> a version's directory). Its update replaces ..data in VOLUME, which run did not watch (it
// watched the directories of the files read and the links replaced there): the rendered file
// kept the old certificate until the view changed. The directory of every link on the path of
// a file read is watched too.
func TestE2E_RunFileReadThroughLinkIntoAnotherDir(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	vol, etc := t.TempDir(), t.TempDir()
	version := func(name, content string) { kubeVersion(t, vol, name, "ca.pem", content) }
	version("..2026_x", "v1")
	if err := os.Symlink("..data/ca.pem", filepath.Join(vol, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(etc, "ca.pem")
	if err := os.Symlink(filepath.Join(vol, "ca.pem"), ca); err != nil {
		t.Fatal(err)
	}
	volumeUpdatesRender(t, srv, vol, "ca.pem", ca)
}

// A render for a changed file that reads a file in a directory not watched yet (the first file
// names the second: file (file "which")) watches that directory and has the template rendered
// once more, in case the file changed between the read and the watch, as every pass does: that
// render was dropped, the files changed being cleared after the pass that asked for it.
func TestE2E_RunFileReadNewDirFromAFileEventIsRenderedOnceWatched(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	root := t.TempDir()
	which := filepath.Join(root, "which")
	for name, content := range map[string]string{"d2/x": "x1", "d3/y": "y1", "which": filepath.Join(root, "d2", "x")} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file (file \"`+which+`\") }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "x1 1"))
	rechecks := func() int { return strings.Count(ag.logs.String(), "watched now: rendered again") }
	waitFor(t, "the render once the files are watched", func() bool { return rechecks() == 1 })
	if err := os.WriteFile(which, []byte(filepath.Join(root, "d3", "y")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the file named now", fileIs(e.path("a"), "y1 1"))
	waitFor(t, "the render once its directory is watched", func() bool { return rechecks() == 2 })
}

// A file read in a directory reached through a link that a deploy replaces (current ->
// releases/v1, then releases/v2, the old release kept): the replacement renders the file's new
// content, and run went on watching the directory the link led to when it was first watched,
// releases/v1: an edit of the file in releases/v2 was never seen. The directories whose path
// goes through a link replaced are watched again where it leads now.
func TestE2E_RunFileReadDirLinkReplaced(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	root := t.TempDir()
	current := filepath.Join(root, "current")
	release := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, "releases", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "releases", name, "app.conf"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("releases", name), current+".tmp"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(current+".tmp", current); err != nil {
			t.Fatal(err)
		}
	}
	release("v1", "v1")
	conf := filepath.Join(current, "app.conf")
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+conf+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	waitFor(t, "the render once the file is watched", func() bool {
		return strings.Contains(ag.logs.String(), "watched now: rendered again")
	})
	release("v2", "v2")
	waitFor(t, "render of the new release", fileIs(e.path("a"), "v2 1"))
	// Watched again where current leads now: an edit there is seen.
	waitFor(t, "the render once the new release is watched", func() bool {
		return strings.Count(ag.logs.String(), "watched now: rendered again") >= 2
	})
	if err := os.WriteFile(filepath.Join(root, "releases", "v2", "app.conf"), []byte("v3"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the file edited in the new release", fileIs(e.path("a"), "v3 1"))
}

// A template source in a Kubernetes configmap volume: a.tmpl -> ..data/a.tmpl, ..data -> a
// version's directory. An update replaces ..data, and no event names a.tmpl: run kept
// rendering the old source until a restart or SIGHUP. An event on a link that the source's
// path goes through has it read again, as an edit of the source does.
func TestE2E_RunTemplateSourceInAConfigMapVolume(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	vol := t.TempDir()
	version := func(name, text string) { kubeVersion(t, vol, name, "a.tmpl", text) }
	version("..2026_x", `v1 {{ key "a" }}`)
	src := filepath.Join(vol, "a.tmpl")
	if err := os.Symlink("..data/a.tmpl", src); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", "  - source: "+src+"\n    destination: $DIR/a\n")
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	version("..2026_y", `v2 {{ key "a" }}`)
	if err := os.RemoveAll(filepath.Join(vol, "..2026_x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the updated source", fileIs(e.path("a"), "v2 1"))
}

// templates_dir is a Kubernetes configmap volume: web.yaml -> ..data/web.yaml. The configmap's
// update replaces ..data, which is hidden and no *.yaml: run did not read the config again,
// and rendered the old entries until a restart or SIGHUP. A link replaced on the path of a
// file of templates_dir reloads the config, as an edit of the file does.
func TestE2E_RunTemplatesDirInAConfigMapVolume(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "templates_dir: "+vol+"\n", "  - contents: x\n    destination: $DIR/x\n")
	version := func(name, text string) {
		kubeVersion(t, vol, name, "web.yaml", "- contents: \""+text+" {{ key \\\"a\\\" }}\"\n  destination: "+e.path("a")+"\n")
	}
	version("..2026_x", "v1")
	if err := os.Symlink("..data/web.yaml", filepath.Join(vol, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	version("..2026_y", "v2")
	if err := os.RemoveAll(filepath.Join(vol, "..2026_x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the updated entry", fileIs(e.path("a"), "v2 1"))
}

// conf.d of confd_dir is a Kubernetes configmap volume (web.toml -> ..data/web.toml, ..data ->
// a version's directory), as a confd user migrating to Kubernetes mounts it. The agent read the
// resource twice, through the link and in the hidden directory, refused the pair
// ("destination is also rendered by") and did not start; and an update, which replaces ..data,
// named no *toml file and was not read. The hidden directories are not read (confd reads them
// too, and renders each resource twice), and a link replaced on a resource's path reloads the
// config.
func TestE2E_RunConfdDirInAConfigMapVolume(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "")
	confd := e.path("confd")
	testbin.WriteFiles(t, confd, map[string]string{
		"templates/v1.tmpl": `v1 {{getv "/a"}}`,
		"templates/v2.tmpl": `v2 {{getv "/a"}}`,
	})
	vol := filepath.Join(confd, "conf.d")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	version := func(name, src string) {
		kubeVersion(t, vol, name, "web.toml", "[template]\nsrc = \""+src+"\"\ndest = \""+e.path("a")+"\"\nkeys = [\"/a\"]\n")
	}
	version("..2026_x", "v1.tmpl")
	if err := os.Symlink("..data/web.toml", filepath.Join(vol, "web.toml")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "shoelace-agent"), "validate", "--config", e.config, "--confdir", confd).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok, 1 template") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	e.startAgent("--confdir", confd)
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	version("..2026_y", "v2.tmpl")
	if err := os.RemoveAll(filepath.Join(vol, "..2026_x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the updated resource", fileIs(e.path("a"), "v2 1"))
}

// A destination that is a mount point of its own (a file bind-mounted, as docker run -v
// FILE:FILE mounts one): no file can be renamed over it. The install failed with rename's
// "device or resource busy", which says neither why nor what to do; it says both. Run in a
// mount namespace of its own (unshare), skipped where one cannot be made.
func TestE2E_OnceDestinationIsAMountPoint(t *testing.T) {
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "mount", "--bind", probe, probe).CombinedOutput(); err != nil {
		t.Skipf("no mount namespace to bind-mount a file in: %v: %s", err, out)
	}
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/dst\n")
	for name, content := range map[string]string{"dst": "old", "src": "mounted"} {
		if err := os.WriteFile(e.path(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" "$2" && exec "$3" once --config "$4"`, "sh",
		e.path("src"), e.path("dst"), filepath.Join(binDir, "shoelace-agent"), e.config).CombinedOutput()
	if err == nil {
		t.Fatalf("once installed over a mount point:\n%s", out)
	}
	if !strings.Contains(string(out), e.path("dst")+" is a mount point") || !strings.Contains(string(out), "mount its directory instead") {
		t.Fatalf("once said:\n%s", out)
	}
	if got := readFile(t, e.path("src")); got != "mounted" {
		t.Fatalf("the mounted file holds %q", got)
	}
}

// A template source in a directory reached through a link that a deploy replaces (current ->
// releases/v1, then releases/v2, the old release kept): the replacement has the source read
// again, but run went on watching the directory the link led to when it was first watched,
// releases/v1: an edit of the source in releases/v2 was never seen, until a restart or SIGHUP.
func TestE2E_RunTemplateSourceDirLinkReplaced(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	root := t.TempDir()
	current := filepath.Join(root, "current")
	release := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, "releases", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "releases", name, "a.tmpl"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("releases", name), current+".tmp"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(current+".tmp", current); err != nil {
			t.Fatal(err)
		}
	}
	release("v1", `v1 {{ key "a" }}`)
	e := newEnv(t, srv, "", "  - source: "+filepath.Join(current, "a.tmpl")+"\n    destination: $DIR/a\n")
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	release("v2", `v2 {{ key "a" }}`)
	waitFor(t, "render of the new release", fileIs(e.path("a"), "v2 1"))
	// The directory is watched again where current leads now: an edit there is seen.
	waitFor(t, "the source's directory watched where current leads now", func() bool {
		return strings.Contains(ag.logs.String(), "directory watched again where a link on its path leads now")
	})
	if err := os.WriteFile(filepath.Join(root, "releases", "v2", "a.tmpl"), []byte(`v3 {{ key "a" }}`), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "render of the source edited in the new release", fileIs(e.path("a"), "v3 1"))
}

// A file read through a link to a file in another directory (/etc/app/ca.pem ->
// /srv/certs/ca.pem), which is then rewritten there (a renewal writes a new file and renames it
// over the old): no event names the link, in the directory watched, and the directory the file
// lies in was not watched: the old content stayed in the rendered file until the view changed.
// The directory of the file a read path ends at is watched too.
func TestE2E_RunFileReadThroughLinkEditedWhereItLeads(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	root := t.TempDir()
	for _, d := range []string{"etc", "srv"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(root, "srv", "ca.pem")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(target+".tmp", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(target+".tmp", target); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	read := filepath.Join(root, "etc", "ca.pem")
	if err := os.Symlink(target, read); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", `  - contents: "{{ file \"`+read+`\" }} {{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	waitFor(t, "the render once the file is watched", func() bool {
		return strings.Contains(ag.logs.String(), "watched now: rendered again")
	})
	write("v2")
	waitFor(t, "render of the file rewritten where the link leads", fileIs(e.path("a"), "v2 1"))
}

// A template that reads its own destination through a link (/etc/app/x -> the destination): a
// destination is not watched as a file read, or each install would render again. The directory
// of the file that a read's links lead to is watched (a certificate rewritten where it lies), but
// not for a destination: each render, which appends to what it read, installed, and the install
// rendered again, without end.
func TestE2E_RunFileReadThroughLinkToADestinationIsNotWatched(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	srv.put("appliances/web/b", "1")
	root := t.TempDir()
	e := newEnv(t, srv, "", "")
	if err := os.WriteFile(e.path("a"), []byte("seed"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := filepath.Join(root, "x")
	if err := os.Symlink(e.path("a"), read); err != nil {
		t.Fatal(err)
	}
	e.write(srv, "", `  - contents: "{{ file \"`+read+`\" }}+{{ key \"a\" }}"
    destination: $DIR/a
    functions: consul-template
    allow_file: true
  - contents: "{{ key \"b\" }}"
    destination: $DIR/b
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("b"), "1"))
	waitFor(t, "the render once the file is watched", func() bool {
		return strings.Contains(ag.logs.String(), "watched now: rendered again")
	})
	// A render after that one: an install of a's, seen, would have been taken first.
	srv.put("appliances/web/b", "2")
	waitFor(t, "render of b", fileIs(e.path("b"), "2"))
	if logs := ag.logs.String(); strings.Contains(logs, `"msg":"file event","path":"`+e.path("a")+`"`) {
		t.Fatalf("an install of a, read through %s, was taken as a change of a file read: %s now", read, readFile(t, e.path("a")))
	}
}

// A template source that is a link to a file in another directory (a.tmpl -> /srv/tmpl/a.tmpl),
// which is then edited there: no event names the source, in the directory watched, and the
// directory the file lies in was not watched: the old template rendered until a restart or
// SIGHUP. The directory of the file a source's links lead to is watched too.
func TestE2E_RunTemplateSourceLinkEditedWhereItLeads(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	root := t.TempDir()
	for _, d := range []string{"etc", "srv"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(root, "srv", "a.tmpl")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(target+".tmp", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(target+".tmp", target); err != nil {
			t.Fatal(err)
		}
	}
	write(`v1 {{ key "a" }}`)
	src := filepath.Join(root, "etc", "a.tmpl")
	if err := os.Symlink(target, src); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv, "", "  - source: "+src+"\n    destination: $DIR/a\n")
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	write(`v2 {{ key "a" }}`)
	waitFor(t, "render of the source edited where its link leads", fileIs(e.path("a"), "v2 1"))
}
