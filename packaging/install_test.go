package packaging

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// installScript runs inside a private mount namespace: it puts an overlay
// over / (so the host's dpkg database and /etc are untouched), chroots into
// it and installs, upgrades, removes and purges both packages with dpkg,
// as systemd would see it (/run/systemd/system exists) but with a
// stand-in systemctl that logs its calls. Each fact is printed as one
// "key: value" line.
const installScript = `set -eu
work="$1"; old_agent="$2"; old_server="$3"; new_agent="$4"; new_server="$5"
m="$work/merged"
mkdir -p "$work/upper" "$work/work" "$m"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$m"
mount -t proc proc "$m/proc"
mkdir -p "$m/pk" "$m/run/systemd/system" "$m/usr/local/sbin"
cp "$old_agent" "$old_server" "$new_agent" "$new_server" "$m/pk/"
cat > "$m/usr/local/sbin/systemctl" <<'FAKE'
#!/bin/sh
echo "$*" >> /systemctl.log
FAKE
chmod 0755 "$m/usr/local/sbin/systemctl"
chroot "$m" /bin/sh -eu -c '
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
calls() { printf "calls %s: %s\n" "$1" "$(tr "\n" ";" < /systemctl.log 2>/dev/null)"; rm -f /systemctl.log; }
cd /pk
dpkg -i '"$(basename "$old_agent") $(basename "$old_server")"' >/dev/null
calls install
echo "user: $(getent passwd shoelace | cut -d: -f1,6,7)"
for f in /usr/bin/shoelace /usr/bin/shoelace-agent /etc/shoelace/agent.yaml /etc/shoelace/server.env /var/lib/shoelace /var/lib/shoelace-server /usr/lib/systemd/system/shoelace-agent.service; do
	echo "stat: $(stat -c "%A %U:%G %n" $f)"
done
echo "version: $(shoelace-agent version)"
echo "# edited" >> /etc/shoelace/agent.yaml
dpkg -i '"$(basename "$new_agent") $(basename "$new_server")"' >/dev/null
calls upgrade
echo "kept: $(tail -n1 /etc/shoelace/agent.yaml)"
echo "upgraded: $(dpkg-query -W -f "\${Version} " shoelace-agent shoelace-server)"
dpkg -r shoelace-agent shoelace-server >/dev/null
calls remove
echo "after remove: $(ls /usr/bin/shoelace /usr/bin/shoelace-agent /etc/shoelace/agent.yaml 2>/dev/null | tr "\n" " ")"
dpkg -P shoelace-agent shoelace-server >/dev/null
calls purge
echo "after purge: $(ls -d /etc/shoelace /var/lib/shoelace 2>/dev/null | tr "\n" " ")"
'
`

// TestDeb_InstallUpgradeRemove installs the real packages with dpkg in an
// overlay of this machine's root, so the maintainer scripts run as they
// would on a VM: enable (never start) on install, try-restart (restart only
// if running) on upgrade with the edited config kept, stop and disable on
// removal. It needs root and mount namespaces, and skips without them.
func TestDeb_InstallUpgradeRemove(t *testing.T) {
	need(t, "dpkg")
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
	cmd.Env = append(os.Environ(), "VERSION=v9.8.6", "DIST="+old, "ARCH="+runtime.GOARCH, "FORMATS=deb", "BIN_DIR="+extractBinaries(t, dist))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package the old version: %v\n%s", err, out)
	}

	work := t.TempDir()
	script := filepath.Join(work, "install.sh")
	if err := os.WriteFile(script, []byte(installScript), 0o755); err != nil {
		t.Fatal(err)
	}
	name := func(dir, pkg, version string) string {
		return filepath.Join(dir, pkg+"_"+version+"_"+runtime.GOARCH+".deb")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "unshare", "-m", "--fork", "sh", script, filepath.Join(work, "root"),
		name(old, "shoelace-agent", "9.8.6"), name(old, "shoelace-server", "9.8.6"),
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
			got[k] = append(got[k], strings.TrimSpace(v))
		}
	}
	want := map[string][]string{
		// Enabled, never started.
		"calls install": {"daemon-reload;enable shoelace-agent.service;daemon-reload;enable shoelace-server.service;"},
		"user":          {"shoelace:/var/lib/shoelace-server:/usr/sbin/nologin"},
		"stat": {
			"-rwxr-xr-x root:root /usr/bin/shoelace",
			"-rwxr-xr-x root:root /usr/bin/shoelace-agent",
			"-rw-r----- root:root /etc/shoelace/agent.yaml",
			"-rw-r----- root:root /etc/shoelace/server.env",
			"drwx------ root:root /var/lib/shoelace",
			"drwx------ shoelace:shoelace /var/lib/shoelace-server",
			"-rw-r--r-- root:root /usr/lib/systemd/system/shoelace-agent.service",
		},
		// The old packages' postrm (upgrade) reload, then each new postinst
		// restarts its service only if it runs; no enable, no start.
		"calls upgrade": {"daemon-reload;daemon-reload;daemon-reload;try-restart shoelace-agent.service;daemon-reload;try-restart shoelace-server.service;"},
		"kept":          {"# edited"},
		"upgraded":      {testPkgVersion + "-1 " + testPkgVersion + "-1"},
		"calls remove":  {"stop shoelace-agent.service;disable shoelace-agent.service;daemon-reload;stop shoelace-server.service;disable shoelace-server.service;daemon-reload;"},
		"after remove":  {"/etc/shoelace/agent.yaml"},
		"calls purge":   {"daemon-reload;daemon-reload;"},
		"after purge":   {""},
	}
	for k, w := range want {
		if strings.Join(got[k], "\n") != strings.Join(w, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", k, got[k], w)
		}
	}
	if v := strings.Join(got["version"], ""); !strings.Contains(v, testVersion) {
		t.Errorf("installed shoelace-agent version = %q, want %s", v, testVersion)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// extractBinaries unpacks the two binaries from the built .debs so that an
// older version can be packaged from them.
func extractBinaries(t *testing.T, dist string) string {
	t.Helper()
	root, bin := t.TempDir(), t.TempDir()
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
