package packaging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

// testVersion is what the test packages are built as: a commit after a tag,
// so both the raw string (in the binaries) and the sanitized package
// version (1.2.3+N.gHASH) are exercised.
const (
	testVersion    = "v9.8.7-1-gabcdef0"
	testPkgVersion = "9.8.7+1.gabcdef0"
)

var (
	buildOnce sync.Once
	buildDist string
	buildErr  error
	buildSkip string
)

// packages builds all four packages once per test binary with package.sh,
// the way `make package` runs it, and returns the dist directory.
func packages(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: building the packages takes a while")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not in PATH")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoelace-dist-")
		if err != nil {
			buildErr = err
			return
		}
		buildDist = dir
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "package.sh")
		cmd.Env = append(os.Environ(), "VERSION="+testVersion, "DIST="+dir, "ARCH="+runtime.GOARCH, "FORMATS=deb rpm")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() == 3:
			buildSkip = "cmd/shoelace or cmd/shoelace-agent does not build yet:\n" + lastLines(stderr.String(), 15)
		case err != nil:
			buildErr = errors.New("package.sh: " + err.Error() + "\n" + stderr.String())
		default:
			want := []string{"agent_" + testPkgVersion + "_" + runtime.GOARCH + ".deb", "agent_" + testPkgVersion + "_" + runtime.GOARCH + ".rpm",
				"server_" + testPkgVersion + "_" + runtime.GOARCH + ".deb", "server_" + testPkgVersion + "_" + runtime.GOARCH + ".rpm"}
			got := strings.Fields(string(out))
			for i := range want {
				want[i] = filepath.Join(dir, "shoelace-"+want[i])
			}
			if !slices.Equal(got, want) {
				buildErr = errors.New("package.sh printed " + strings.Join(got, " ") + "\nwant " + strings.Join(want, " "))
			}
		}
	})
	if buildSkip != "" {
		t.Skip(buildSkip)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDist
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDist != "" {
		os.RemoveAll(buildDist)
	}
	os.Exit(code)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed", tool)
	}
}

func TestPackageVersion(t *testing.T) {
	tests := []struct{ describe, want string }{
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.3.0-rc1", "1.3.0~rc1"},
		{"v1.3.0-rc1-2-gdeadbee", "1.3.0~rc1+2.gdeadbee"},
		{"abc1234", "0.0.0~gabc1234"},
		{"abc1234-dirty", "0.0.0~gabc1234+dirty"},
		{"0.0.0-dev", "0.0.0~dev"},
		{"dev", "0.0.0~dev"},
		{"deadbeef", "0.0.0~gdeadbeef"},
		{"v2.0.0_beta:1", "2.0.0.beta.1"},
	}
	for _, tt := range tests {
		t.Run(tt.describe, func(t *testing.T) {
			cmd := exec.Command("bash", "package.sh", "version")
			cmd.Env = append(os.Environ(), "VERSION="+tt.describe)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("package.sh version: %v", err)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("package version of %q = %q, want %q", tt.describe, got, tt.want)
			}
		})
	}
}

// TestPackageVersion_Commits: before the first tag `git describe --always` is a bare
// abbreviated hash; the packages of two commits must still order as the commits do
// (hashes are in no order), and a hash of digits only must not pass for a release.
func TestPackageVersion_Commits(t *testing.T) {
	need(t, "dpkg")
	need(t, "git")
	head, err := exec.Command("git", "rev-parse", "--short=7", "HEAD").Output()
	if err != nil {
		t.Skip("not a git checkout")
	}
	parent, err := exec.Command("git", "rev-parse", "--short=7", "HEAD~1").Output()
	if err != nil {
		t.Skip("HEAD has no parent")
	}
	count := strings.TrimSpace(run(t, "git", "rev-list", "--count", "HEAD"))
	version := func(describe string) string {
		cmd := exec.Command("bash", "package.sh", "version")
		cmd.Env = append(os.Environ(), "VERSION="+describe)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("package.sh version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	h, p := strings.TrimSpace(string(head)), strings.TrimSpace(string(parent))
	if got, want := version(h), "0.0.0~"+count+".g"+h; got != want {
		t.Errorf("package version of %q = %q, want %q", h, got, want)
	}
	if got, want := version(h+"-dirty"), "0.0.0~"+count+".g"+h+"+dirty"; got != want {
		t.Errorf("package version of %q = %q, want %q", h+"-dirty", got, want)
	}
	a, b := version(p), version(h)
	if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
		t.Errorf("dpkg: the parent's %s is not lower than HEAD's %s", a, b)
	}
	if err := exec.Command("dpkg", "--compare-versions", b, "lt", "0.0.1").Run(); err != nil {
		t.Errorf("dpkg: HEAD's %s is not lower than a first release 0.0.1", b)
	}
}

// TestPackageVersion_Order checks that dpkg (and rpm, when installed) order
// the sanitized versions the way releases happen.
func TestPackageVersion_Order(t *testing.T) {
	need(t, "dpkg")
	ordered := []string{"0.0.0~dev", "0.0.0~gabc1234", "1.3.0~rc1", "1.3.0~rc1+2.gdeadbee", "1.3.0", "1.3.0+4.gabc1234", "1.3.1"}
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1], ordered[i]
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s is not lower than %s", a, b)
		}
		if _, err := exec.LookPath("rpm"); err == nil {
			out := run(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("`+a+`", "`+b+`"))}`)
			if strings.TrimSpace(out) != "-1" {
				t.Errorf("rpm: vercmp(%s, %s) = %s, want -1", a, b, strings.TrimSpace(out))
			}
		}
	}
}

// debEntry is one line of `dpkg-deb -c`, without size and date.
type debEntry struct{ mode, owner, path string }

func debContents(t *testing.T, deb string) []debEntry {
	t.Helper()
	var entries []debEntry
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("dpkg-deb -c line %q: want 6 fields", line)
		}
		entries = append(entries, debEntry{f[0], f[1], f[5]})
	}
	return entries
}

func dirs(paths ...string) []debEntry {
	var e []debEntry
	for _, p := range paths {
		e = append(e, debEntry{"drwxr-xr-x", "root/root", p})
	}
	return e
}

func TestDeb(t *testing.T) {
	need(t, "dpkg-deb")
	dist := packages(t)
	unitDir := "./usr/lib/systemd/system/"
	tests := []struct {
		pkg       string
		binary    string
		unit      string
		files     []debEntry
		conffiles string
		scripts   map[string]string // control file → packaging/scripts file
	}{
		{
			pkg: "shoelace-agent", binary: "shoelace-agent", unit: "shoelace-agent.service",
			files: append(dirs("./etc/", "./etc/shoelace/", "./etc/shoelace/templates.d/", "./usr/", "./usr/bin/",
				"./usr/lib/", "./usr/lib/systemd/", unitDir, "./var/", "./var/lib/", "./usr/share/", "./usr/share/bash-completion/",
				"./usr/share/bash-completion/completions/", "./usr/share/zsh/", "./usr/share/zsh/vendor-completions/", "./usr/share/shoelace-agent/"),
				debEntry{"-rw-r--r--", "root/root", "./usr/share/bash-completion/completions/shoelace-agent"},
				debEntry{"-rw-r--r--", "root/root", "./usr/share/zsh/vendor-completions/_shoelace-agent"},
				// The default, which postinst copies to /etc/shoelace/agent.yaml when missing.
				debEntry{"-rw-r--r--", "root/root", "./usr/share/shoelace-agent/agent.yaml"},
				debEntry{"-rwxr-xr-x", "root/root", "./usr/bin/shoelace-agent"},
				debEntry{"-rw-r--r--", "root/root", unitDir + "shoelace-agent.service"},
				debEntry{"drwx------", "root/root", "./var/lib/shoelace/"},
			),
			// None: first-boot configuration rewrites agent.yaml on every VM, and a conffile so
			// edited made dpkg stop each upgrade that changed the default at its prompt.
			conffiles: "",
			scripts:   map[string]string{"postinst": "agent/postinstall.sh", "prerm": "agent/preremove.sh", "postrm": "agent/postremove.sh"},
		},
		{
			pkg: "shoelace-server", binary: "shoelace", unit: "shoelace-server.service",
			files: append(dirs("./etc/", "./etc/shoelace/", "./usr/", "./usr/bin/",
				"./usr/lib/", "./usr/lib/systemd/", unitDir, "./var/", "./var/lib/", "./usr/share/", "./usr/share/bash-completion/",
				"./usr/share/bash-completion/completions/", "./usr/share/zsh/", "./usr/share/zsh/vendor-completions/"),
				debEntry{"-rw-r--r--", "root/root", "./usr/share/bash-completion/completions/shoelace"},
				debEntry{"-rw-r--r--", "root/root", "./usr/share/zsh/vendor-completions/_shoelace"},
				debEntry{"-rw-r-----", "root/root", "./etc/shoelace/server.env"},
				debEntry{"-rwxr-xr-x", "root/root", "./usr/bin/shoelace"},
				debEntry{"-rw-r--r--", "root/root", unitDir + "shoelace-server.service"},
				debEntry{"drwx------", "shoelace/shoelace", "./var/lib/shoelace-server/"},
			),
			conffiles: "/etc/shoelace/server.env\n",
			scripts: map[string]string{"preinst": "server/preinstall.sh", "postinst": "server/postinstall.sh",
				"prerm": "server/preremove.sh", "postrm": "server/postremove.sh"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			deb := filepath.Join(dist, tt.pkg+"_"+testPkgVersion+"_"+runtime.GOARCH+".deb")

			sortEntries := func(e []debEntry) {
				slices.SortFunc(e, func(a, b debEntry) int { return strings.Compare(a.path, b.path) })
			}
			got, want := debContents(t, deb), slices.Clone(tt.files)
			sortEntries(got)
			sortEntries(want)
			if !slices.Equal(got, want) {
				t.Errorf("dpkg-deb -c:\n got %v\nwant %v", got, want)
			}

			for field, want := range map[string]string{
				"Package": tt.pkg, "Version": testPkgVersion + "-1", "Architecture": runtime.GOARCH,
			} {
				if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
					t.Errorf("control %s = %q, want %q", field, got, want)
				}
			}

			control := t.TempDir()
			run(t, "dpkg-deb", "-e", deb, control)
			if b, err := os.ReadFile(filepath.Join(control, "conffiles")); string(b) != tt.conffiles || (err != nil && (tt.conffiles != "" || !errors.Is(err, os.ErrNotExist))) {
				t.Errorf("conffiles = %q (%v), want %q", b, err, tt.conffiles)
			}
			for _, name := range []string{"preinst", "postinst", "prerm", "postrm"} {
				src, shipped := tt.scripts[name]
				fi, err := os.Stat(filepath.Join(control, name))
				if !shipped {
					if err == nil {
						t.Errorf("%s ships a %s it should not have", tt.pkg, name)
					}
					continue
				}
				if err != nil {
					t.Errorf("missing %s: %v", name, err)
					continue
				}
				if fi.Mode().Perm()&0o111 == 0 {
					t.Errorf("%s is not executable: %v", name, fi.Mode())
				}
				got, _ := os.ReadFile(filepath.Join(control, name))
				want, err := os.ReadFile(filepath.Join("scripts", src))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from packaging/scripts/%s", name, src)
				}
			}

			root := t.TempDir()
			run(t, "dpkg-deb", "-x", deb, root)
			unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", tt.unit))
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := os.ReadFile(filepath.Join("..", "systemd", tt.unit)); !bytes.Equal(unit, want) {
				t.Errorf("packaged %s differs from systemd/%s", tt.unit, tt.unit)
			}
			out := run(t, filepath.Join(root, "usr/bin", tt.binary), "version")
			if !strings.Contains(out, testVersion) {
				t.Errorf("packaged `%s version` printed %q, want it to contain %q", tt.binary, out, testVersion)
			}
			if tt.binary == "shoelace" {
				// Every SHOELACE_ variable that the unit sets or server.env
				// shows (commented out or not) must be a flag of the server.
				help := run(t, filepath.Join(root, "usr/bin/shoelace"), "server", "--help")
				env, _ := os.ReadFile(filepath.Join(root, "etc/shoelace/server.env"))
				vars := regexp.MustCompile(`(?m)^#?(SHOELACE_[A-Z0-9_]+)=`).FindAllSubmatch(append(unit, env...), -1)
				if len(vars) < 5 {
					t.Fatalf("found only %d SHOELACE_ variables in the unit and server.env", len(vars))
				}
				for _, v := range vars {
					if !strings.Contains(help, "[$"+string(v[1])+"]") {
						t.Errorf("%s is not a variable of `shoelace server`", v[1])
					}
				}
			}
		})
	}
}

func TestRPM(t *testing.T) {
	dist := packages(t)
	for _, pkg := range []string{"shoelace-agent", "shoelace-server"} {
		t.Run(pkg, func(t *testing.T) {
			path := filepath.Join(dist, pkg+"_"+testPkgVersion+"_"+runtime.GOARCH+".rpm")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The RPM lead's magic number.
			if !bytes.HasPrefix(b, []byte{0xed, 0xab, 0xee, 0xdb}) {
				t.Fatalf("%s is not an RPM file", path)
			}
			if _, err := exec.LookPath("rpm"); err != nil {
				t.Skip("rpm not installed: checked the file's magic number only")
			}
			if got, want := run(t, "rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{RELEASE}", path), pkg+" "+testPkgVersion+" 1"; got != want {
				t.Errorf("rpm name/version/release = %q, want %q", got, want)
			}
			// nfpm's default is the build machine's hostname, which would make a release's
			// .rpm differ from one machine to the next.
			if got, want := run(t, "rpm", "-qp", "--queryformat", "%{BUILDHOST}", path), "shoelace-build"; got != want {
				t.Errorf("rpm build host = %q, want %q", got, want)
			}
			conf := map[string]string{"shoelace-agent": "/etc/shoelace/agent.yaml", "shoelace-server": "/etc/shoelace/server.env"}[pkg]
			if got := strings.TrimSpace(run(t, "rpm", "-qpc", path)); got != conf {
				t.Errorf("config files = %q, want %q", got, conf)
			}
			listing := run(t, "rpm", "-qplv", path)
			state := map[string]string{"shoelace-agent": "/var/lib/shoelace", "shoelace-server": "/var/lib/shoelace-server"}[pkg]
			binary := map[string]string{"shoelace-agent": "/usr/bin/shoelace-agent", "shoelace-server": "/usr/bin/shoelace"}[pkg]
			for _, want := range []string{"drwx------ ", "-rwxr-xr-x "} {
				found := false
				for _, line := range strings.Split(listing, "\n") {
					found = found || (strings.HasPrefix(line, want) && (strings.HasSuffix(line, " "+state) || strings.HasSuffix(line, " "+binary)))
				}
				if !found {
					t.Errorf("rpm -qplv has no %q entry for %s or %s:\n%s", want, state, binary, listing)
				}
			}
			scripts := run(t, "rpm", "-qp", "--scripts", path)
			for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "systemctl try-restart"} {
				if !strings.Contains(scripts, want) {
					t.Errorf("rpm scripts lack %q:\n%s", want, scripts)
				}
			}
		})
	}
}

// TestMaintainerScripts_Agent runs the agent's scripts with each argument
// deb and rpm pass, with a stand-in systemctl that logs its calls: enable on
// first install only, never start, nothing on upgrade (without a running
// systemd there is nothing to try-restart), stop and disable on removal only.
func TestMaintainerScripts_Agent(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: the scripts would act on the real service")
	}
	tests := []struct {
		script string
		args   []string
		want   string
	}{
		{"postinstall.sh", []string{"configure", ""}, "enable shoelace-agent.service"},
		{"postinstall.sh", []string{"configure", "0.1.0-1"}, ""},
		{"postinstall.sh", []string{"abort-upgrade", "0.1.0-1"}, ""},
		{"postinstall.sh", []string{"1"}, "enable shoelace-agent.service"},
		{"postinstall.sh", []string{"2"}, ""},
		{"preremove.sh", []string{"upgrade", "0.2.0-1"}, ""},
		{"preremove.sh", []string{"remove"}, "disable shoelace-agent.service"},
		{"preremove.sh", []string{"1"}, ""},
		{"preremove.sh", []string{"0"}, "disable shoelace-agent.service"},
		{"postremove.sh", []string{"remove"}, ""},
		{"postremove.sh", []string{"upgrade", "0.2.0-1"}, ""},
		{"postremove.sh", []string{"0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.script+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			bin := t.TempDir()
			log := filepath.Join(bin, "calls.log")
			fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sh", append([]string{filepath.Join("scripts", "agent", tt.script)}, tt.args...)...)
			// DPKG_ROOT (set by dpkg --root): preremove's mark goes there, not into the host's /var/lib.
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DPKG_ROOT="+packageRoot(t))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			got, _ := os.ReadFile(log)
			if strings.TrimSpace(string(got)) != tt.want {
				t.Errorf("systemctl calls = %q, want %q", strings.TrimSpace(string(got)), tt.want)
			}
		})
	}
}

// A deb removed (not purged) and installed again runs postinst as `configure
// <the removed version>`, as an upgrade does; preremove disabled the unit, so
// postinst must enable it again, for both packages.
func TestMaintainerScripts_ReinstallAfterRemove(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: the scripts would act on the real service")
	}
	for _, pkg := range []string{"agent", "server"} {
		t.Run(pkg, func(t *testing.T) {
			bin, root := t.TempDir(), packageRoot(t)
			log := filepath.Join(bin, "calls.log")
			fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
				t.Fatal(err)
			}
			run := func(script string, args ...string) string {
				t.Helper()
				os.Remove(log)
				cmd := exec.Command("sh", append([]string{filepath.Join("scripts", pkg, script)}, args...)...)
				cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DPKG_ROOT="+root)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s %v: %v\n%s", script, args, err, out)
				}
				got, _ := os.ReadFile(log)
				return strings.TrimSpace(string(got))
			}
			unit := "shoelace-" + pkg + ".service"
			if got := run("preremove.sh", "remove"); got != "disable "+unit {
				t.Errorf("preremove remove: systemctl calls = %q", got)
			}
			if got := run("postinstall.sh", "configure", "0.1.0-1"); got != "enable "+unit {
				t.Errorf("postinstall configure 0.1.0-1 after a removal: systemctl calls = %q, want %q", got, "enable "+unit)
			}
			// The next upgrade is an upgrade again.
			if got := run("postinstall.sh", "configure", "0.1.0-1"); got != "" {
				t.Errorf("postinstall configure 0.1.0-1 (upgrade): systemctl calls = %q, want none", got)
			}
		})
	}
}

// A unit that `shoelace-agent install` (or `shoelace server install`) wrote before the package
// was installed lies in /etc/systemd/system, which overrides the package's unit, and runs the
// binary it was installed from (/usr/local/bin/…): the package installed and upgraded a binary
// that never ran, and said nothing. postinstall now says so, naming the file and what it runs.
func TestMaintainerScripts_OverrideOfAnInstall(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: the scripts would act on the real service")
	}
	for _, pkg := range []string{"agent", "server"} {
		unit := "shoelace-" + pkg + ".service"
		for _, tt := range []struct {
			name, execStart string
			warn            bool
		}{
			{"installed from /usr/local/bin", "/usr/local/bin/shoelace-agent run", true},
			{"the package's binary", "/usr/bin/shoelace-agent run", false},
			{"none", "", false},
		} {
			t.Run(pkg+" "+tt.name, func(t *testing.T) {
				bin, root := t.TempDir(), packageRoot(t)
				if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				override := filepath.Join(root, "etc/systemd/system", unit)
				if tt.execStart != "" {
					if err := os.MkdirAll(filepath.Dir(override), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(override, []byte("[Service]\nExecStart="+tt.execStart+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				for _, args := range [][]string{{"configure", ""}, {"configure", "0.1.0-1"}, {"1"}, {"2"}} {
					cmd := exec.Command("sh", append([]string{filepath.Join("scripts", pkg, "postinstall.sh")}, args...)...)
					cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DPKG_ROOT="+root)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					if err := cmd.Run(); err != nil {
						t.Fatalf("postinstall %v: %v\n%s", args, err, stderr.String())
					}
					want := override + " (written by `shoelace"
					if got := stderr.String(); strings.Contains(got, want) != tt.warn || (tt.warn && !strings.Contains(got, "runs /usr/local/bin/shoelace-agent, not /usr/bin")) {
						t.Errorf("postinstall %v: stderr %q; want a warning: %v", args, got, tt.warn)
					}
				}
			})
		}
	}
}

// packageRoot returns a DPKG_ROOT that holds what the agent's .deb unpacks before its postinst
// runs and that postinst reads: /etc/shoelace and the default config in /usr/share/shoelace-agent.
func packageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	def, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"etc/shoelace", "usr/share/shoelace-agent"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/share/shoelace-agent/agent.yaml"), def, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// /etc/shoelace/agent.yaml is no conffile of the .deb (first-boot configuration rewrites it on
// every VM, and dpkg stopped each upgrade that changed the default at its conffile prompt):
// postinst creates it from the packaged default on an install when it is missing, never on an
// upgrade, and a purge removes it. A purge also removes /etc/shoelace/token, the agent's
// credential that first boot wrote: it was left behind, a secret on a VM without the agent.
func TestMaintainerScripts_AgentConfig(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: the scripts would act on the real service")
	}
	bin, root := t.TempDir(), packageRoot(t)
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command("sh", append([]string{filepath.Join("scripts", "agent", name)}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DPKG_ROOT="+root)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	conf := filepath.Join(root, "etc/shoelace/agent.yaml")
	def, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check := func(when, want string) {
		t.Helper()
		got, err := os.ReadFile(conf)
		switch {
		case want == "" && !errors.Is(err, os.ErrNotExist):
			t.Errorf("%s: agent.yaml %q (%v), want none", when, got, err)
		case want != "" && string(got) != want:
			t.Errorf("%s: agent.yaml %q (%v), want %q", when, got, err, want)
		}
	}

	script("postinstall.sh", "configure", "")
	check("installed", string(def))
	if fi, err := os.Stat(conf); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("installed agent.yaml: %v, want mode 0640", err)
	}
	edited := "server: https://shoelace.internal:7400\nappliance: web\n"
	if err := os.WriteFile(conf, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	script("postinstall.sh", "configure", "0.1.0-1")
	check("upgraded", edited)
	script("postinstall.sh", "configure", "")
	check("installed again", edited)
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	script("postinstall.sh", "configure", "0.1.0-1")
	check("upgraded after the admin deleted it", "")

	script("postinstall.sh", "configure", "")
	token := filepath.Join(root, "etc/shoelace/token")
	if err := os.WriteFile(token, []byte("agent-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script("postremove.sh", "remove")
	check("removed", string(def))
	if _, err := os.Stat(token); err != nil {
		t.Errorf("removed: the token: %v, want it kept until a purge", err)
	}
	script("postremove.sh", "purge")
	check("purged", "")
	if _, err := os.Stat(token); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("purged: the token: %v, want it gone", err)
	}
}

func TestMaintainerScripts_Syntax(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join("scripts", "*", "*.sh"))
	if err != nil || len(scripts) != 7 {
		t.Fatalf("found %d scripts (%v), want 7", len(scripts), err)
	}
	for _, s := range scripts {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}

// The README moves consul-template over with "shoelace convert-consul-template config.hcl >>
// /etc/shoelace/agent.yaml" (and convert-confd prints the same top-level keys): the packaged
// config must take that output appended. It held "templates: []", so the agent then refused
// the file: "mapping key "templates" already defined".
func TestAgentYAML_TakesAConvertersOutputAppended(t *testing.T) {
	raw, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	converted := `# Converted from the consul-template configuration config.hcl by shoelace convert-consul-template.
wait: {min: 2s, max: 10s}
templates:
  # from config.hcl:3
  - source: /etc/consul-template/in.ctmpl
    destination: /etc/app/app.conf
    functions: consul-template
    command: systemctl reload app
`
	cfg, err := agent.ParseConfig("packaging/agent.yaml", append(raw, converted...))
	if err != nil {
		t.Fatalf("the packaged agent.yaml with a converter's output appended: %v", err)
	}
	if len(cfg.Templates) != 1 || cfg.Templates[0].Destination != "/etc/app/app.conf" {
		t.Fatalf("templates %+v, want the one appended", cfg.Templates)
	}
}

// The README's "Coming from confd" rendered confd's resources with once --confdir and said "then
// install the agent as a service", which runs "run --config /etc/shoelace/agent.yaml" only: with
// the packaged config the service found no templates and failed ("no templates configured").
// The README now appends confd_dir to the config before it enables the service; the packaged
// config must take that line.
func TestAgentYAML_TakesTheREADMEsConfdDir(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Coming from confd")
	section, _, _ = strings.Cut(section, "\n## ")
	m := regexp.MustCompile(`(?m)^echo '(confd_dir: \S+)' >> /etc/shoelace/agent.yaml\nsystemctl enable --now shoelace-agent$`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README's \"Coming from confd\" does not append confd_dir to /etc/shoelace/agent.yaml before it enables the service, which runs with --config only")
	}
	raw, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.ParseConfig("packaging/agent.yaml", append(raw, m[1]+"\n"...))
	if err != nil {
		t.Fatalf("the packaged agent.yaml with %q appended: %v", m[1], err)
	}
	if cfg.ConfdDir != "/etc/confd" {
		t.Errorf("confd_dir = %q, want /etc/confd", cfg.ConfdDir)
	}
}

// The packaged server runs as the unit's User=, and refuses a --secrets-key-file that group or
// others may read: the key file must be that user's. The README's recipe and server.env say
// so; the README's made a root-owned 0600 file, which the service could not read and so did not
// start ("--secrets-key-file: open /etc/shoelace/secrets.key: permission denied").
func TestServerEnv_SecretsKeyFileOwnedByTheServiceUser(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "systemd", "shoelace-server.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^User=(\S+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("shoelace-server.service sets no User=")
	}
	chown := "chown " + string(m[1]) + ": /etc/shoelace/secrets.key"
	for _, doc := range []string{"server.env", filepath.Join("..", "README.md")} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("secrets.key")) || !bytes.Contains(b, []byte(chown)) {
			t.Errorf("%s makes the secrets key file without %q: the service, user %s, cannot read it", doc, chown, m[1])
		}
	}
}

// The packaged server's unit has ProtectSystem=strict: the service writes only in its
// StateDirectory. server.env named SHOELACE_DATA_DIR and SHOELACE_ADMIN_TOKEN_FILE as settings
// to change, and a data dir moved to a larger disk (/srv/shoelace) failed at start with "mkdir
// /srv/shoelace: read-only file system", a directory root could write from any shell.
func TestServerEnv_SaysWhereTheServiceMayWrite(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "systemd", "shoelace-server.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ProtectSystem=strict$`).Match(unit) {
		t.Skip("the server's unit no longer has ProtectSystem=strict")
	}
	env, err := os.ReadFile("server.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SHOELACE_DATA_DIR", "ProtectSystem=strict", "ReadWritePaths=", "systemctl edit shoelace-server", "read-only file system"} {
		if !bytes.Contains(env, []byte(want)) {
			t.Errorf("server.env does not say %q: a data dir or admin token file outside the unit's StateDirectory is read-only to the service", want)
		}
	}
}

// TestAgentYAML checks the packaged default config with the agent's own
// parser (unknown fields are errors) and validation.
func TestAgentYAML(t *testing.T) {
	raw, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.ParseConfig("packaging/agent.yaml", raw)
	if err != nil {
		t.Fatal(err)
	}
	for field, got := range map[string]string{"token_file": cfg.TokenFile, "cache_dir": cfg.CacheDir, "templates_dir": cfg.TemplatesDir} {
		want := map[string]string{"token_file": "/etc/shoelace/token", "cache_dir": "/var/lib/shoelace", "templates_dir": "/etc/shoelace/templates.d"}[field]
		if got != want {
			t.Errorf("%s = %q, want %q (the unit and the packages use it)", field, got, want)
		}
	}
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.TokenFile, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TemplatesDir = ""
	if err := cfg.Validate(); err != nil {
		t.Errorf("packaged agent.yaml: %v", err)
	}
}

// A purge removes /etc/shoelace/agent.yaml and token as files: a link by either name goes, not
// what it leads to, and a directory by either name (no file of the package's) stays. rm -f
// failed on such a directory, and with it the purge ("rm: cannot remove …: Is a directory"),
// every apt-get purge after it too.
func TestMaintainerScripts_PurgeRemovesFilesOnly(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: the script would act on the real service")
	}
	root := t.TempDir()
	etc := filepath.Join(root, "etc/shoelace")
	victim := filepath.Join(root, "victim")
	for _, d := range []string{filepath.Join(etc, "agent.yaml"), filepath.Join(root, "var/lib/shoelace")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(victim, []byte("another file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(etc, "token")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", filepath.Join("scripts", "agent", "postremove.sh"), "purge")
	cmd.Env = append(os.Environ(), "DPKG_ROOT="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postremove.sh purge: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(etc, "agent.yaml")); err != nil || !fi.IsDir() {
		t.Errorf("purged: the directory agent.yaml: %v, want it left", err)
	}
	if _, err := os.Lstat(filepath.Join(etc, "token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("purged: the link token: %v, want it gone", err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("purged: the file the link token led to: %v, want it kept", err)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/shoelace")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("purged: /var/lib/shoelace: %v, want it gone", err)
	}
}
