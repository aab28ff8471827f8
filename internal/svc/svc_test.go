package svc

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystemctl writes a shell script that stands in for systemctl (systemd
// does not run in these containers): it appends its arguments to log and
// keeps enabled/active state in files next to it.
func fakeSystemctl(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "systemctl")
	log = filepath.Join(dir, "calls.log")
	script := `#!/bin/sh
dir=` + dir + `
echo "$*" >> "$dir/calls.log"
case "$1" in
is-active) if [ -f "$dir/active" ]; then echo active; else echo inactive; exit 3; fi ;;
is-enabled) if [ -f "$dir/enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
enable) touch "$dir/enabled" ;;
disable) rm -f "$dir/enabled"; if [ "$2" = --now ]; then rm -f "$dir/active"; fi ;;
start|restart) if [ -f "$dir/fail" ]; then echo "Job for $2 failed because the control process exited with error code." >&2; exit 1; fi
	rm -f "$dir/active"; if [ ! -f "$dir/condfail" ]; then touch "$dir/active"; fi ;; # a condition not met: skipped, exit 0
stop) rm -f "$dir/active" ;;
show) if [ -f "$dir/condfail" ]; then echo no; else echo yes; fi ;;
daemon-reload) ;;
*) echo "fake systemctl: unknown command $1" >&2; exit 1 ;;
esac
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func intp(i int) *int { return &i }

func newManager(t *testing.T) (*Manager, string) {
	t.Helper()
	systemctl, log := fakeSystemctl(t)
	return &Manager{
		Platform:    PlatformSystemd,
		UnitDir:     t.TempDir(),
		PackageDirs: []string{t.TempDir()},
		Systemctl:   systemctl,
		EUID:        intp(0),
		Self:        "/usr/bin/shoelace-agent",
	}, log
}

func readLog(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestUnitContent_EqualsShippedFile compares what install writes with the
// files in systemd/ as read from disk (not the embedded copy).
func TestUnitContent_EqualsShippedFile(t *testing.T) {
	for _, u := range []Unit{AgentUnit(), ServerUnit()} {
		t.Run(u.Name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "..", "systemd", u.Name+".service"))
			if err != nil {
				t.Fatal(err)
			}
			if got := UnitContent(u, u.Executable); !bytes.Equal(got, want) {
				t.Errorf("install would write a unit that differs from systemd/%s.service", u.Name)
			}
			if !bytes.Contains(want, []byte("\nExecStart="+u.Executable+" ")) {
				t.Errorf("ExecStart of systemd/%s.service does not run %s", u.Name, u.Executable)
			}
		})
	}
}

func TestUnitContent_OtherExecutable(t *testing.T) {
	u := AgentUnit()
	got := string(UnitContent(u, "/opt/shoelace/shoelace-agent"))
	if !strings.Contains(got, "\nExecStart=/opt/shoelace/shoelace-agent run --config /etc/shoelace/agent.yaml\n") {
		t.Errorf("ExecStart not rewritten:\n%s", got)
	}
	if strings.Contains(got, "/usr/bin/shoelace-agent") {
		t.Errorf("old path left in unit:\n%s", got)
	}
	if want := strings.Replace(string(u.Content), "/usr/bin/shoelace-agent", "/opt/shoelace/shoelace-agent", 1); got != want {
		t.Errorf("more than ExecStart changed")
	}
}

func TestControl_Refusals(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(m *Manager)
		action string
		want   string
	}{
		{"unsupported init", func(m *Manager) { m.Platform = "unix-systemv" }, "install",
			`shoelace-agent install: systemd is not running here (init system "unix-systemv"); install the unit from systemd/ by hand or use the .deb/.rpm`},
		{"unsupported init status", func(m *Manager) { m.Platform = "unix-systemv" }, "status",
			`shoelace-agent status: systemd is not running here (init system "unix-systemv"); install the unit from systemd/ by hand or use the .deb/.rpm`},
		{"not root", func(m *Manager) { m.EUID = intp(1000) }, "install",
			"shoelace-agent install: must run as root (try sudo)"},
		{"not root start", func(m *Manager) { m.EUID = intp(1000) }, "start",
			"shoelace-agent start: must run as root (try sudo)"},
		{"unknown action", func(m *Manager) {}, "reboot",
			`shoelace-agent reboot: unknown action "reboot" (want one of install, uninstall, start, stop, restart, status)`},
		{"start before install", func(m *Manager) {}, "start",
			"shoelace-agent start: not installed; run `shoelace-agent install` first"},
		{"uninstall when absent", func(m *Manager) {}, "uninstall",
			"shoelace-agent uninstall: not installed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, log := newManager(t)
			tt.setup(m)
			var out bytes.Buffer
			err := m.Control(context.Background(), AgentUnit(), tt.action, &out)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error = %v\nwant    %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line")
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on refusal", out.String())
			}
			if entries, _ := os.ReadDir(m.UnitDir); len(entries) != 0 {
				t.Errorf("wrote %d files into the unit directory", len(entries))
			}
			for _, call := range readLog(t, log) {
				if !strings.HasPrefix(call, "is-") {
					t.Errorf("ran systemctl %s on refusal", call)
				}
			}
		})
	}
}

func TestControl_Lifecycle(t *testing.T) {
	ctx := context.Background()
	m, log := newManager(t)
	u := AgentUnit()
	unitPath := filepath.Join(m.UnitDir, "shoelace-agent.service")
	do := func(action string) string {
		t.Helper()
		var out bytes.Buffer
		if err := m.Control(ctx, u, action, &out); err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		return strings.TrimSpace(out.String())
	}
	expect := func(action, want string) {
		t.Helper()
		if got := do(action); got != want {
			t.Errorf("%s printed %q\nwant         %q", action, got, want)
		}
	}

	expect("status", "shoelace-agent: not installed")
	expect("install", "installed "+unitPath+" and enabled it; start it with `shoelace-agent start`")
	got, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, u.Content) {
		t.Errorf("installed unit differs from systemd/shoelace-agent.service")
	}
	if fi, _ := os.Stat(unitPath); fi.Mode().Perm() != 0o644 {
		t.Errorf("unit mode = %v, want 0644", fi.Mode().Perm())
	}
	expect("status", "shoelace-agent: installed ("+unitPath+"), enabled, not running (inactive)")
	expect("start", "started shoelace-agent")
	expect("status", "shoelace-agent: installed ("+unitPath+"), enabled, running")
	expect("restart", "restarted shoelace-agent")
	expect("stop", "stopped shoelace-agent")
	// A second install (say after an upgrade of the binary) is fine.
	expect("install", "installed "+unitPath+" and enabled it; start it with `shoelace-agent start`")
	expect("uninstall", "stopped, disabled and removed "+unitPath)
	if _, err := os.Stat(unitPath); !os.IsNotExist(err) {
		t.Errorf("unit still there after uninstall: %v", err)
	}
	expect("status", "shoelace-agent: not installed")

	want := []string{
		"daemon-reload", "enable shoelace-agent.service",
		"is-enabled shoelace-agent.service", "is-active shoelace-agent.service",
		"start shoelace-agent.service", "is-active shoelace-agent.service",
		"is-enabled shoelace-agent.service", "is-active shoelace-agent.service",
		"restart shoelace-agent.service", "is-active shoelace-agent.service", "stop shoelace-agent.service",
		"daemon-reload", "enable shoelace-agent.service",
		"disable --now shoelace-agent.service", "daemon-reload",
	}
	if got := readLog(t, log); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestControl_StartFailure(t *testing.T) {
	m, _ := newManager(t)
	u := AgentUnit()
	if err := m.Control(context.Background(), u, "install", &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(m.Systemctl), "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := m.Control(context.Background(), u, "start", &bytes.Buffer{})
	want := "shoelace-agent start: systemctl start shoelace-agent.service: Job for shoelace-agent.service failed because the control process exited with error code.; see `journalctl -u shoelace-agent`"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
}

func TestControl_InstallMasked(t *testing.T) {
	m, log := newManager(t)
	path := filepath.Join(m.UnitDir, "shoelace-agent.service")
	if err := os.Symlink("/dev/null", path); err != nil {
		t.Fatal(err)
	}
	err := m.Control(context.Background(), AgentUnit(), "install", &bytes.Buffer{})
	want := "shoelace-agent install: shoelace-agent is masked; run `systemctl unmask shoelace-agent.service` first"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
	if target, err := os.Readlink(path); err != nil || target != "/dev/null" {
		t.Errorf("install replaced the mask: %q %v", target, err)
	}
	if calls := readLog(t, log); len(calls) != 0 {
		t.Errorf("ran systemctl %q", calls)
	}
}

// TestControl_UninstallMasked: a masked unit (/etc/systemd/system/NAME.service → /dev/null) is
// the administrator's. uninstall removed the mask as if install had written it and said
// "stopped, disabled and removed", which unmasked the service: a packaged unit could start again.
func TestControl_UninstallMasked(t *testing.T) {
	m, log := newManager(t)
	u := ServerUnit()
	if err := os.WriteFile(filepath.Join(m.PackageDirs[0], "shoelace-server.service"), u.Content, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(m.UnitDir, "shoelace-server.service")
	if err := os.Symlink("/dev/null", path); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := m.Control(context.Background(), u, "uninstall", &out)
	want := "shoelace server uninstall: shoelace-server is masked (" + path + " → /dev/null), which uninstall leaves alone; run `systemctl unmask shoelace-server.service` first if you mean to remove it"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
	if target, err := os.Readlink(path); err != nil || target != "/dev/null" {
		t.Errorf("uninstall removed the mask: %q %v", target, err)
	}
	if calls := readLog(t, log); len(calls) != 0 {
		t.Errorf("ran systemctl %q", calls)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}

func TestControl_InstallNeedsUser(t *testing.T) {
	m, log := newManager(t)
	u := ServerUnit()
	u.User, u.Home = "shoelace-no-such-user-xyz", "/var/lib/nowhere"
	m.Self = u.Executable
	err := m.Control(context.Background(), u, "install", &bytes.Buffer{})
	want := "shoelace server install: the unit runs as user \"shoelace-no-such-user-xyz\", which does not exist here; create it with `useradd --system --user-group --home-dir /var/lib/nowhere --no-create-home --shell /usr/sbin/nologin shoelace-no-such-user-xyz` (the packages do this)"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
	if entries, _ := os.ReadDir(m.UnitDir); len(entries) != 0 {
		t.Errorf("wrote the unit for a missing user")
	}
	if calls := readLog(t, log); len(calls) != 0 {
		t.Errorf("ran systemctl %q", calls)
	}

	u.User = "root" // exists everywhere
	if err := m.Control(context.Background(), u, "install", &bytes.Buffer{}); err != nil {
		t.Fatalf("install with an existing user: %v", err)
	}
}

func TestControl_PackagedUnit(t *testing.T) {
	m, _ := newManager(t)
	u := ServerUnit()
	m.Self = u.Executable
	pkgPath := filepath.Join(m.PackageDirs[0], "shoelace-server.service")
	if err := os.WriteFile(pkgPath, u.Content, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for action, want := range map[string]string{
		"install":   "shoelace server install: already installed by a package (" + pkgPath + "); use `shoelace server start`",
		"uninstall": "shoelace server uninstall: installed by a package (" + pkgPath + "); remove the package instead",
	} {
		if err := m.Control(context.Background(), u, action, &out); err == nil || err.Error() != want {
			t.Errorf("%s: error = %v\nwant %s", action, err, want)
		}
	}
	if entries, _ := os.ReadDir(m.UnitDir); len(entries) != 0 {
		t.Errorf("install wrote over a packaged unit")
	}
	if err := m.Control(context.Background(), u, "status", &out); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out.String()), "shoelace-server: installed by package ("+pkgPath+"), disabled, not running (inactive)"; got != want {
		t.Errorf("status = %q\nwant     %q", got, want)
	}
}

func TestControl_OtherExecutableNote(t *testing.T) {
	m, _ := newManager(t)
	m.Self = "/usr/local/bin/shoelace-agent"
	var out bytes.Buffer
	if err := m.Control(context.Background(), AgentUnit(), "install", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "note: ExecStart points at /usr/local/bin/shoelace-agent (the packages use /usr/bin/shoelace-agent)\n") {
		t.Errorf("output %q lacks the note about the binary's path", out.String())
	}
	got, _ := os.ReadFile(filepath.Join(m.UnitDir, "shoelace-agent.service"))
	if !bytes.Contains(got, []byte("\nExecStart=/usr/local/bin/shoelace-agent run ")) {
		t.Errorf("installed unit does not run the binary that installed it")
	}
}

// TestControl_DetectsThisSystem runs the zero Manager against the real host:
// in a container without systemd it must refuse in one line and write nothing.
func TestControl_DetectsThisSystem(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here; the refusal path is covered by TestControl_Refusals")
	}
	err := Control(context.Background(), AgentUnit(), "install", &bytes.Buffer{})
	if err == nil || !strings.HasPrefix(err.Error(), "shoelace-agent install: systemd is not running here (init system ") {
		t.Fatalf("error = %v", err)
	}
}

// TestControl_InstallRefusesABinaryTheSandboxHides: both units have PrivateTmp=yes and the
// server's ProtectHome=yes, so a unit whose ExecStart lies in /tmp, /var/tmp or (the server's)
// /home or /root never starts; install refuses it and writes nothing. The agent's
// ProtectHome=read-only leaves a binary in /home runnable.
func TestControl_InstallRefusesABinaryTheSandboxHides(t *testing.T) {
	tests := []struct {
		unit Unit
		self string
		want string // "" = installed
	}{
		{AgentUnit(), "/tmp/shoelace-agent", "under /tmp, which the unit's PrivateTmp=yes hides"},
		{AgentUnit(), "/var/tmp/dl/shoelace-agent", "under /var/tmp, which the unit's PrivateTmp=yes hides"},
		{AgentUnit(), "/home/ops/bin/shoelace-agent", ""},
		{AgentUnit(), "/tmpfoo/shoelace-agent", ""},
		{ServerUnit(), "/tmp/x/shoelace", "under /tmp, which the unit's PrivateTmp=yes hides"},
		{ServerUnit(), "/home/ops/bin/shoelace", "under /home, which the unit's ProtectHome=yes hides"},
		{ServerUnit(), "/root/shoelace", "under /root, which the unit's ProtectHome=yes hides"},
		{ServerUnit(), "/usr/local/bin/shoelace", ""},
	}
	for _, tt := range tests {
		t.Run(tt.unit.Name+tt.self, func(t *testing.T) {
			m, log := newManager(t)
			m.Self = tt.self
			u := tt.unit
			u.User = "" // the shoelace user need not exist here
			err := m.Control(context.Background(), u, "install", &bytes.Buffer{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("install: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "it would not start") {
				t.Fatalf("error = %v\nwant one saying %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(m.UnitDir); len(entries) != 0 {
				t.Errorf("wrote the unit")
			}
			if calls := readLog(t, log); len(calls) != 0 {
				t.Errorf("ran systemctl %q", calls)
			}
		})
	}
}

// TestControl_StartSkippedByACondition: systemctl start exits 0 when the unit's Condition…= does
// not hold (the agent's waits for its token), and the service does not run. start and restart
// said "started shoelace-agent"; they fail, naming the missing paths.
func TestControl_StartSkippedByACondition(t *testing.T) {
	dir := t.TempDir()
	config, token := filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "token")
	u := AgentUnit()
	u.Content = bytes.ReplaceAll(u.Content, []byte("=/etc/shoelace/agent.yaml\n"), []byte("="+config+"\n"))
	u.Content = bytes.ReplaceAll(u.Content, []byte("=/etc/shoelace/token\n"), []byte("="+token+"\n"))
	if !bytes.Contains(u.Content, []byte("ConditionPathExists="+token+"\n")) {
		t.Fatal("the agent's unit has no ConditionPathExists for the token")
	}
	m, _ := newManager(t)
	ctx := context.Background()
	if err := m.Control(ctx, u, "install", &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	condfail := filepath.Join(filepath.Dir(m.Systemctl), "condfail")
	if err := os.WriteFile(condfail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"start", "restart"} {
		var out bytes.Buffer
		err := m.Control(ctx, u, action, &out)
		want := "shoelace-agent " + action + ": systemd did not start shoelace-agent: its start condition does not hold: " + token +
			" is missing (ConditionPathExists); see `systemctl status shoelace-agent`"
		if err == nil || err.Error() != want {
			t.Errorf("%s: error = %v\nwant %s", action, err, want)
		}
		if out.Len() != 0 {
			t.Errorf("%s printed %q", action, out.String())
		}
	}
	os.Remove(config)
	err := m.Control(ctx, u, "start", &bytes.Buffer{})
	if want := config + " and " + token + " are missing"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("start with neither file: error = %v, want one saying %q", err, want)
	}

	// The token written (the condition holds): started.
	os.Remove(condfail)
	var out bytes.Buffer
	if err := m.Control(ctx, u, "start", &out); err != nil || out.String() != "started shoelace-agent\n" {
		t.Errorf("start: %v, printed %q", err, out.String())
	}
}

// TestControl_UninstallOverAPackagedUnit: `shoelace-agent install` wrote its unit in
// /etc/systemd/system, then the package came (its postinst warns that this copy overrides the
// package's unit). uninstall ran `systemctl disable --now`, which stopped the service and
// removed its enablement, both the package's too: the package's unit was left disabled and
// stopped, and the VM without its agent from the next boot on. Only the copy goes now; the
// package's unit is enabled again and restarted. The links are real: systemctl --root.
func TestControl_UninstallOverAPackagedUnit(t *testing.T) {
	real, err := exec.LookPath("systemctl")
	if err != nil {
		t.Skip("systemctl not installed")
	}
	root, state := t.TempDir(), t.TempDir()
	unitDir, pkgDir := filepath.Join(root, "etc/systemd/system"), filepath.Join(root, "usr/lib/systemd/system")
	for _, d := range []string{unitDir, pkgDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The unit files and their links are systemctl's own, offline in root; whether the service
	// runs (no systemd here) is a file in state.
	systemctl := filepath.Join(state, "systemctl")
	script := `#!/bin/sh
dir=` + state + `
echo "$*" >> "$dir/calls.log"
case "$1" in
enable|reenable|is-enabled) exec ` + real + ` --root=` + root + ` "$@" ;;
disable) if [ "$2" = --now ]; then rm -f "$dir/active"; set -- disable "$3"; fi; exec ` + real + ` --root=` + root + ` "$@" ;;
is-active) if [ -f "$dir/active" ]; then echo active; else echo inactive; exit 3; fi ;;
start|restart) touch "$dir/active" ;;
try-restart) if [ -f "$dir/active" ]; then echo "$2" >> "$dir/restarted"; fi ;;
stop) rm -f "$dir/active" ;;
show) echo yes ;;
daemon-reload) ;;
*) echo "test systemctl: unknown command $1" >&2; exit 1 ;;
esac
`
	if err := os.WriteFile(systemctl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m := &Manager{Platform: PlatformSystemd, UnitDir: unitDir, PackageDirs: []string{pkgDir},
		Systemctl: systemctl, EUID: intp(0), Self: "/usr/local/bin/shoelace-agent"}
	u := AgentUnit()
	ctx := context.Background()
	var out bytes.Buffer
	for _, action := range []string{"install", "start"} {
		if err := m.Control(ctx, u, action, &out); err != nil {
			t.Fatalf("%s: %v", action, err)
		}
	}
	// The package: its unit, enabled by its postinst.
	pkgUnit := filepath.Join(pkgDir, "shoelace-agent.service")
	if err := os.WriteFile(pkgUnit, u.Content, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(real, "--root="+root, "enable", "shoelace-agent.service").CombinedOutput(); err != nil {
		t.Fatalf("systemctl enable: %v\n%s", err, out)
	}

	out.Reset()
	if err := m.Control(ctx, u, "uninstall", &out); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	copyPath := filepath.Join(unitDir, "shoelace-agent.service")
	if got, want := strings.TrimSpace(out.String()), "removed "+copyPath+"; the package's unit "+pkgUnit+" is in effect (enabled, restarted)"; got != want {
		t.Errorf("uninstall printed %q\nwant %q", got, want)
	}
	if _, err := os.Stat(copyPath); !os.IsNotExist(err) {
		t.Errorf("the unit install wrote is still there: %v", err)
	}
	if _, err := os.Stat(pkgUnit); err != nil {
		t.Errorf("the package's unit: %v", err)
	}
	enabled, _ := exec.Command(real, "--root="+root, "is-enabled", "shoelace-agent.service").Output()
	if got := strings.TrimSpace(string(enabled)); got != "enabled" {
		t.Errorf("the package's unit is %q after uninstall, want enabled", got)
	}
	link, err := os.Readlink(filepath.Join(unitDir, "multi-user.target.wants", "shoelace-agent.service"))
	if err != nil || link != "/usr/lib/systemd/system/shoelace-agent.service" {
		t.Errorf("multi-user.target.wants/shoelace-agent.service → %q (%v), want the package's unit", link, err)
	}
	if _, err := os.Stat(filepath.Join(state, "active")); err != nil {
		t.Errorf("the service no longer runs after uninstall")
	}
	if b, _ := os.ReadFile(filepath.Join(state, "restarted")); strings.TrimSpace(string(b)) != "shoelace-agent.service" {
		t.Errorf("the service was not restarted on the package's unit (restarts %q)", b)
	}
}
