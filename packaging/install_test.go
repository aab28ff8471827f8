package packaging

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// installScript runs inside a private mount namespace: it puts an overlay
// over / (so the host's package databases and /etc are untouched), chroots
// into it and installs, upgrades, removes (and for deb purges) both
// packages with dpkg or rpm,
// as systemd would see it (/run/systemd/system exists) but with a
// stand-in systemctl that logs its calls. Each fact is printed as one
// "key: value" line.
const installScript = `set -eu
work="$1"; format="$2"; old_agent="$3"; old_server="$4"; new_agent="$5"; new_server="$6"
m="$work/merged"
mkdir -p "$work/upper" "$work/work" "$m"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$m"
mount -t proc proc "$m/proc"
mkdir -p "$m/pk" "$m/run/systemd/system"
cp "$old_agent" "$old_server" "$new_agent" "$new_server" "$m/pk/"
# rpm runs scriptlets with its own PATH: replace systemctl itself.
rm -f "$m/usr/bin/systemctl" "$m/bin/systemctl"
cat > "$m/usr/bin/systemctl" <<'FAKE'
#!/bin/sh
echo "$*" >> /systemctl.log
FAKE
chmod 0755 "$m/usr/bin/systemctl"
old="$(basename "$old_agent") $(basename "$old_server")"
new="$(basename "$new_agent") $(basename "$new_server")"
chroot "$m" /bin/sh -eu -c '
format="$1"; old="$2"; new="$3"
calls() { printf "calls %s: %s\n" "$1" "$(tr "\n" ";" < /systemctl.log 2>/dev/null)"; rm -f /systemctl.log; }
cd /pk
case "$format" in
deb) dpkg -i $old >/dev/null ;;
rpm) rpm -i --nodeps $old >/dev/null 2>&1 ;;
esac
calls install
echo "user: $(getent passwd shoelace | cut -d: -f1,6,7)"
for f in /usr/bin/shoelace /usr/bin/shoelace-agent /etc/shoelace/agent.yaml /etc/shoelace/server.env /var/lib/shoelace /var/lib/shoelace-server /usr/lib/systemd/system/shoelace-agent.service; do
	echo "stat: $(stat -c "%A %U:%G %n" $f)"
done
echo "version: $(shoelace-agent version)"
# First boot writes the token of the agent (examples/cloud-init).
(umask 077; echo agent-token > /etc/shoelace/token)
echo "# edited" >> /etc/shoelace/agent.yaml
case "$format" in
deb) dpkg -i $new </dev/null >/upgrade.out 2>&1 || { echo "upgrade failed:"; cat /upgrade.out; exit 1; } ;;
rpm) rpm -U --nodeps $new >/dev/null 2>&1 ;;
esac
calls upgrade
echo "kept: $(tail -n1 /etc/shoelace/agent.yaml)"
case "$format" in
deb) echo "upgraded: $(dpkg-query -W -f "\${Version} " shoelace-agent shoelace-server)" ;;
rpm) echo "upgraded: $(rpm -q --qf "%{VERSION}-%{RELEASE} " shoelace-agent shoelace-server)" ;;
esac
case "$format" in
deb) dpkg -r shoelace-agent shoelace-server >/dev/null ;;
rpm) rpm -e shoelace-agent shoelace-server >/dev/null 2>&1 ;;
esac
calls remove
echo "after remove: $(ls /usr/bin/shoelace /usr/bin/shoelace-agent /etc/shoelace/* 2>/dev/null | tr "\n" " ")"
if [ "$format" = deb ]; then
	dpkg -P shoelace-agent shoelace-server >/dev/null
	calls purge
	echo "after purge: $(ls -d /etc/shoelace /var/lib/shoelace 2>/dev/null | tr "\n" " ")"
	dpkg -i $new </dev/null >/dev/null
	cmp -s /etc/shoelace/agent.yaml /usr/share/shoelace-agent/agent.yaml && echo "fresh: $(stat -c "%A %U:%G" /etc/shoelace/agent.yaml) the packaged default"
fi
' sh "$format" "$old" "$new"
`

// TestPackages_InstallUpgradeRemove installs the real packages with dpkg
// (and rpm, when installed) in an overlay of this machine's root, so the
// maintainer scripts run as they would on a VM: enable (never start) on
// install, try-restart (restart only if running) on upgrade with the edited
// config kept, stop and disable on removal. The deb upgrades from an agent
// package of the earlier layout, whose agent.yaml was a conffile with another
// default, without a terminal: dpkg's conffile prompt failed that upgrade
// ("end of file on stdin at conffile prompt") on every VM whose first boot
// wrote agent.yaml. It needs root and mount namespaces, and skips without them.
func TestPackages_InstallUpgradeRemove(t *testing.T) {
	need(t, "unshare")
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace and chroot")
	}
	if err := exec.Command("unshare", "-m", "true").Run(); err != nil {
		t.Skipf("no mount namespaces here: %v", err)
	}
	dist := packages(t)
	// An older version to upgrade from: the same binaries, packaged again.
	old := t.TempDir()
	cmd := exec.Command("bash", "package.sh")
	cmd.Env = append(os.Environ(), "VERSION=v9.8.6", "DIST="+old, "ARCH="+runtime.GOARCH, "FORMATS=deb rpm", "BIN_DIR="+extractBinaries(t, dist))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package the old version: %v\n%s", err, out)
	}

	common := map[string][]string{
		"user": {"shoelace:/var/lib/shoelace-server:/usr/sbin/nologin"},
		"stat": {
			"-rwxr-xr-x root:root /usr/bin/shoelace",
			"-rwxr-xr-x root:root /usr/bin/shoelace-agent",
			"-rw-r----- root:root /etc/shoelace/agent.yaml",
			"-rw-r----- root:root /etc/shoelace/server.env",
			"drwx------ root:root /var/lib/shoelace",
			"drwx------ shoelace:shoelace /var/lib/shoelace-server",
			"-rw-r--r-- root:root /usr/lib/systemd/system/shoelace-agent.service",
		},
		// Enabled, never started.
		"calls install": {"agent=[enable] server=[enable] reloads=2"},
		"kept":          {"# edited"},
		"upgraded":      {testPkgVersion + "-1 " + testPkgVersion + "-1"},
	}
	tests := []struct {
		format string
		tool   string
		want   map[string][]string
	}{
		{"deb", "dpkg", map[string][]string{
			// Each new postinst restarts its service only if it runs; the
			// old postrm (upgrade) and the new postinst reload.
			"calls upgrade": {"agent=[try-restart] server=[try-restart] reloads=4"},
			"calls remove":  {"agent=[stop disable] server=[stop disable] reloads=2"},
			// dpkg keeps config files until purge, and the token.
			"after remove": {"/etc/shoelace/agent.yaml /etc/shoelace/server.env /etc/shoelace/token"},
			"calls purge":  {"agent=[] server=[] reloads=2"},
			// Nothing left, the token included.
			"after purge": {""},
			// Installed again after the purge: postinst's copy of the default.
			"fresh": {"-rw-r----- root:root the packaged default"},
		}},
		{"rpm", "rpm", map[string][]string{
			// New %post (2) restarts only if running; old %preun (1) does
			// nothing; new %post and old %postun reload.
			"calls upgrade": {"agent=[try-restart] server=[try-restart] reloads=4"},
			"calls remove":  {"agent=[stop disable] server=[stop disable] reloads=2"},
			// rpm keeps an edited config file aside on erase (and has no purge).
			"after remove": {"/etc/shoelace/agent.yaml.rpmsave /etc/shoelace/token"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			need(t, tt.tool)
			work := t.TempDir()
			script := filepath.Join(work, "install.sh")
			if err := os.WriteFile(script, []byte(installScript), 0o755); err != nil {
				t.Fatal(err)
			}
			name := func(dir, pkg, version string) string {
				return filepath.Join(dir, pkg+"_"+version+"_"+runtime.GOARCH+"."+tt.format)
			}
			oldAgent := name(old, "shoelace-agent", "9.8.6")
			if tt.format == "deb" {
				oldAgent = earlierLayoutDeb(t, oldAgent)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "unshare", "-m", "--fork", "sh", script, filepath.Join(work, "root"), tt.format,
				oldAgent, name(old, "shoelace-server", "9.8.6"),
				name(dist, "shoelace-agent", testPkgVersion), name(dist, "shoelace-server", testPkgVersion)).CombinedOutput()
			if err != nil {
				if strings.Contains(string(out), "mount:") {
					t.Skipf("overlay mount refused here: %s", out)
				}
				t.Fatalf("install script: %v\n%s", err, out)
			}
			got := map[string][]string{}
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
					if strings.HasPrefix(k, "calls ") {
						v = summarizeCalls(v)
					}
					got[k] = append(got[k], strings.TrimSpace(v))
				}
			}
			for _, want := range []map[string][]string{common, tt.want} {
				for k, w := range want {
					if strings.Join(got[k], "\n") != strings.Join(w, "\n") {
						t.Errorf("%s:\n got %q\nwant %q", k, got[k], w)
					}
				}
			}
			if v := strings.Join(got["version"], ""); !strings.Contains(v, testVersion) {
				t.Errorf("installed shoelace-agent version = %q, want %s", v, testVersion)
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// summarizeCalls turns "daemon-reload;enable shoelace-agent.service;…"
// into "agent=[enable] server=[…] reloads=N": the order of calls per
// service matters, the order between the two packages is the package
// manager's.
func summarizeCalls(calls string) string {
	var agent, server []string
	reloads := 0
	for _, c := range strings.Split(calls, ";") {
		f := strings.Fields(c)
		switch {
		case len(f) == 0:
		case c == "daemon-reload":
			reloads++
		case len(f) == 2 && f[1] == "shoelace-agent.service":
			agent = append(agent, f[0])
		case len(f) == 2 && f[1] == "shoelace-server.service":
			server = append(server, f[0])
		default:
			return "unexpected call " + c + " in " + calls
		}
	}
	return fmt.Sprintf("agent=[%s] server=[%s] reloads=%d", strings.Join(agent, " "), strings.Join(server, " "), reloads)
}

// earlierLayoutDeb repacks the agent's .deb with dpkg-deb as packages before had it:
// /etc/shoelace/agent.yaml in the package, a conffile, and no copy in /usr/share. Its default
// also differs from this package's, as a release that changes the default does.
func earlierLayoutDeb(t *testing.T, deb string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pkg")
	run(t, "dpkg-deb", "-R", deb, dir)
	def, err := os.ReadFile("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "etc/shoelace/agent.yaml")
	if err := os.WriteFile(conf, append(def, "# the earlier default\n"...), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conf, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "usr/share/shoelace-agent")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "DEBIAN/conffiles"), []byte("/etc/shoelace/agent.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// It lists the file removed; dpkg -i does not need it.
	if err := os.Remove(filepath.Join(dir, "DEBIAN/md5sums")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(deb))
	run(t, "dpkg-deb", "--root-owner-group", "-b", dir, out)
	return out
}

// extractBinaries unpacks the two binaries from the built .debs so that an
// older version can be packaged from them.
func extractBinaries(t *testing.T, dist string) string {
	t.Helper()
	root, bin := t.TempDir(), t.TempDir()
	need(t, "dpkg-deb")
	for _, pkg := range []string{"shoelace-agent", "shoelace-server"} {
		run(t, "dpkg-deb", "-x", filepath.Join(dist, pkg+"_"+testPkgVersion+"_"+runtime.GOARCH+".deb"), root)
	}
	for _, b := range []string{"shoelace", "shoelace-agent"} {
		data, err := os.ReadFile(filepath.Join(root, "usr/bin", b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}
