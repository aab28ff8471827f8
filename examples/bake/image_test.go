package bake

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

// imageScript bakes like Packer would on a fresh VM: in a private mount
// namespace, over an overlay of this machine's root (the host is left
// untouched), it runs bake.sh as root with the real package installed by
// apt-get and the default paths, then prints what the image would hold as
// "key: value" lines.
const imageScript = `set -eu
work="$1"; deb="$2"; templates="$3"; bake="$4"
m="$work/merged"
mkdir -p "$work/upper" "$work/work" "$m"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$m"
mount -t proc proc "$m/proc"
mkdir -p "$m/pk"
cp "$deb" "$templates" "$bake" "$m/pk/"
chroot "$m" /bin/sh -eu -c '
deb="/pk/$1"
install -D -m 0644 /pk/web.yaml /etc/shoelace/templates.d/web.yaml
if SHOELACE_PACKAGE="$deb" bash /pk/bake.sh > /pk/bake.log 2>&1; then echo "bake: ok"; else echo "bake: exit $?"; cat /pk/bake.log; fi
echo "package: $(dpkg-query -W -f "\${Status}" shoelace-agent)"
echo "etc: $(ls -A /etc/shoelace | tr "\n" " ")"
echo "cache: $(ls -A /var/lib/shoelace | tr "\n" " ")"
echo "cache mode: $(stat -c %a /var/lib/shoelace)"
echo "enabled: $(readlink /etc/systemd/system/multi-user.target.wants/shoelace-agent.service)"
echo "ntp: $(cat /etc/shoelace-bake-test/ntp.conf)"
echo "app: $(ls /etc/shoelace-bake-test/app.conf 2>&1 | grep -c "No such file")"
echo "command ran: $(ls /shoelace-command-ran 2>/dev/null | wc -l)"
echo "token in log: $(grep -c -F "$SHOELACE_BAKE_TOKEN" /pk/bake.log || true)"
' sh "$(basename "$deb")"
`

// TestBake_Image runs bake.sh the way an image build does (root, default
// paths, the .deb installed by the script) and checks the image: package
// installed, unit enabled, system file rendered, no application file, no
// command run, no token and no cache left. It needs root and mount
// namespaces, and skips without them.
func TestBake_Image(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace and chroot")
	}
	for _, tool := range []string{"unshare", "apt-get", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if err := exec.Command("unshare", "-m", "true").Run(); err != nil {
		t.Skipf("no mount namespaces here: %v", err)
	}
	serverBin, agentBin := binaries(t)

	// The .deb, from the binaries just built.
	bin, dist := t.TempDir(), t.TempDir()
	for src, name := range map[string]string{serverBin: "shoelace", agentBin: "shoelace-agent"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pkg := exec.Command("bash", filepath.Join("..", "..", "packaging", "package.sh"))
	pkg.Env = append(os.Environ(), "VERSION=v1.0.0", "DIST="+dist, "ARCH="+runtime.GOARCH, "FORMATS=deb", "BIN_DIR="+bin)
	if out, err := pkg.CombinedOutput(); err != nil {
		t.Fatalf("package.sh: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "shoelace-agent_1.0.0_"+runtime.GOARCH+".deb")

	srv := startServer(t, serverBin)
	srv.put(t, "/v1/appliances/web", "application/json", `{"keys":{"system/ntp":"ntp1.example.org","app/port":"8080"}}`)
	srv.put(t, "/v1/kv/shared/system/dns", "text/plain", "10.0.0.53")
	token := srv.agentToken(t, "bake-image", "web")

	work := t.TempDir()
	templates := filepath.Join(work, "web.yaml")
	entries := `- contents: "server {{ key \"system/ntp\" }} iburst\n"
  destination: /etc/shoelace-bake-test/ntp.conf
  stage: system
  command: touch /shoelace-command-ran
- contents: "port={{ key \"app/port\" }}\n"
  destination: /etc/shoelace-bake-test/app.conf
  stage: application
`
	if err := os.WriteFile(templates, []byte(entries), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(work, "image.sh")
	if err := os.WriteFile(script, []byte(imageScript), 0o755); err != nil {
		t.Fatal(err)
	}
	bakeSh, err := filepath.Abs("bake.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--fork", "sh", script, filepath.Join(work, "root"), deb, templates, bakeSh)
	cmd.Env = append(os.Environ(), "SHOELACE_SERVER="+srv.addr, "APPLIANCE=web", "SHOELACE_BAKE_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "mount:") {
			t.Skipf("overlay mount refused here: %s", out)
		}
		t.Fatalf("image script: %v\n%s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	want := map[string]string{
		"bake":         "ok",
		"package":      "install ok installed",
		"etc":          "agent.yaml templates.d", // no token
		"cache":        "",
		"cache mode":   "700",
		"ntp":          "server ntp1.example.org iburst",
		"app":          "1",
		"command ran":  "0",
		"token in log": "0",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
	if e := got["enabled"]; !strings.HasSuffix(e, "lib/systemd/system/shoelace-agent.service") {
		t.Errorf("multi-user.target.wants/shoelace-agent.service -> %q: the unit is not enabled", e)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("output:\n%s", out)
	}
}
