// Package svc installs and controls the Shoelace systemd services for the
// install|uninstall|start|stop|restart|status commands of both binaries.
//
// github.com/kardianos/service tells which init system runs here. The unit
// itself is ours: install writes the unit from the systemd/ directory (the
// one the packages ship) rather than kardianos's generic one, and the
// actions run systemctl directly, which lets install replace an older copy
// of the unit, tell a packaged unit from a hand-installed one, and report
// enabled and running separately in status. Only systemd is supported: the
// units are systemd units.
package svc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kardianos/service"

	"github.com/shoelace-dev/shoelace/internal/nss"
	"github.com/shoelace-dev/shoelace/systemd"
)

// ServiceArgs are the arguments a service manager that takes them (Windows') starts the binary
// with, such as "run --config FILE"; systemd units name theirs in ExecStart.
var ServiceArgs []string

// Actions lists the actions Control accepts, in the order help shows them.
var Actions = []string{"install", "uninstall", "start", "stop", "restart", "status"}

// PlatformSystemd is kardianos/service's name for a running systemd.
const PlatformSystemd = "linux-systemd"

// ErrNotInstalled reports that the unit is in none of the unit directories.
var ErrNotInstalled = errors.New("not installed")

// Unit is one service that Control manages.
type Unit struct {
	// Name is the unit name without ".service", e.g. "shoelace-agent".
	Name string
	// Description is a one-line description for help text.
	Description string
	// Content is the unit file, verbatim.
	Content []byte
	// Executable is the absolute path of the binary that Content's ExecStart
	// names; install points ExecStart at the running binary when it lives
	// elsewhere.
	Executable string
	// Command is how the user runs the management commands, e.g.
	// "shoelace-agent" or "shoelace server"; it prefixes messages.
	Command string
	// User is the system user the unit runs as (User=), empty for root;
	// install refuses when it does not exist and says how to create it.
	User string
	// Home is User's home directory, for that hint.
	Home string
}

// AgentUnit returns the shoelace-agent service.
func AgentUnit() Unit {
	return Unit{
		Name:        strings.TrimSuffix(systemd.AgentUnitName, ".service"),
		Description: "Shoelace agent (renders appliance configuration files)",
		Content:     systemd.AgentUnit,
		Executable:  "/usr/bin/shoelace-agent",
		Command:     "shoelace-agent",
	}
}

// ServerUnit returns the shoelace-server service.
func ServerUnit() Unit {
	return Unit{
		Name:        strings.TrimSuffix(systemd.ServerUnitName, ".service"),
		Description: "Shoelace configuration server",
		Content:     systemd.ServerUnit,
		Executable:  "/usr/bin/shoelace",
		Command:     "shoelace server",
		User:        "shoelace",
		Home:        "/var/lib/shoelace-server",
	}
}

// Manager runs actions against systemd. The zero value manages the real
// system; tests set the fields.
type Manager struct {
	// Platform is the init system; empty means kardianos/service's choice.
	Platform string
	// UnitDir is where install writes units; default /etc/systemd/system.
	UnitDir string
	// PackageDirs are where packages put units; default
	// /usr/lib/systemd/system and /lib/systemd/system.
	PackageDirs []string
	// Systemctl is the systemctl binary; default "systemctl" from PATH.
	Systemctl string
	// EUID is the effective user id; nil means os.Geteuid().
	EUID *int
	// Self is the running binary; empty means os.Executable().
	Self string
}

// Control runs action for u on the real system and writes what it did to
// stdout. See Manager.Control.
func Control(ctx context.Context, u Unit, action string, stdout io.Writer) error {
	return (&Manager{}).Control(ctx, u, action, stdout)
}

// Control runs action (one of Actions) for u and writes one line saying what
// it did to stdout. Errors are one line, prefixed with u.Command and action.
//
// install writes the unit to UnitDir (replacing an older copy), reloads
// systemd and enables the unit without starting it; uninstall stops,
// disables and removes it; status prints whether the unit is installed,
// enabled and running, and returns nil whatever the state. Everything but
// status needs root.
func (m *Manager) Control(ctx context.Context, u Unit, action string, stdout io.Writer) error {
	if !slices.Contains(Actions, action) {
		return fmt.Errorf("%s %s: unknown action %q (want one of %s)", u.Command, action, action, strings.Join(Actions, ", "))
	}
	if err := m.control(ctx, u, action, stdout); err != nil {
		return fmt.Errorf("%s %s: %w", u.Command, action, err)
	}
	return nil
}

// UnitContent returns the unit that install writes for u when the binary
// runs from self: u.Content verbatim, or with ExecStart pointing at self
// when self is not u.Executable.
func UnitContent(u Unit, self string) []byte {
	if self == "" || self == u.Executable {
		return u.Content
	}
	return bytes.ReplaceAll(u.Content, []byte("\nExecStart="+u.Executable+" "), []byte("\nExecStart="+self+" "))
}

func (m *Manager) install(ctx context.Context, u Unit, stdout io.Writer) error {
	if path, packaged, err := m.find(u); err == nil && packaged {
		return fmt.Errorf("already installed by a package (%s); use `%s start`", path, u.Command)
	}
	if u.User != "" {
		if _, err := nss.Lookup(u.User, false); err != nil {
			return fmt.Errorf("the unit runs as user %q, which does not exist here; create it with `useradd --system --user-group --home-dir %s --no-create-home --shell /usr/sbin/nologin %s` (the packages do this)", u.User, u.Home, u.User)
		}
	}
	self, err := m.self()
	if err != nil {
		return err
	}
	if err := hiddenFromService(u.Content, self); err != nil {
		return err
	}
	content := UnitContent(u, self)
	path := filepath.Join(m.unitDir(), u.Name+".service")
	if target, err := os.Readlink(path); err == nil && target == "/dev/null" {
		return fmt.Errorf("%s is masked; run `systemctl unmask %s.service` first", u.Name, u.Name)
	}
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, content):
	case err == nil || errors.Is(err, os.ErrNotExist):
		if err := writeFile(path, content); err != nil {
			return err
		}
	default:
		return fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if _, err := m.systemctl(ctx, "enable", u.Name+".service"); err != nil {
		return err
	}
	if self != u.Executable {
		fmt.Fprintf(stdout, "note: ExecStart points at %s (the packages use %s)\n", self, u.Executable)
	}
	fmt.Fprintf(stdout, "installed %s and enabled it; start it with `%s start`\n", path, u.Command)
	return nil
}

// hiddenFromService refuses a binary at self that the unit's own sandbox would hide from the service
// it starts: PrivateTmp= gives the service its own empty /tmp and /var/tmp, and ProtectHome=yes (or
// tmpfs) empties /home, /root and /run/user, so an ExecStart there fails at every start (status
// 203/EXEC, "No such file or directory"), long after install said it was done.
func hiddenFromService(unit []byte, self string) error {
	type hiding struct {
		directive string
		dirs      []string
	}
	var hidings []hiding
	section := ""
	for _, line := range strings.Split(string(unit), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Service]" {
			continue
		}
		switch {
		case k == "PrivateTmp" && (v == "yes" || v == "true"):
			hidings = append(hidings, hiding{line, []string{"/tmp", "/var/tmp"}})
		case k == "ProtectHome" && (v == "yes" || v == "true" || v == "tmpfs"):
			hidings = append(hidings, hiding{line, []string{"/home", "/root", "/run/user"}})
		}
	}
	for _, h := range hidings {
		for _, dir := range h.dirs {
			if strings.HasPrefix(self, dir+"/") {
				return fmt.Errorf("this binary is %s, under %s, which the unit's %s hides from the service: it would not start; copy it to /usr/local/bin first (sudo install -m 0755 %s /usr/local/bin/, or sudo make install) and run install from there", self, dir, h.directive, self)
			}
		}
	}
	return nil
}

func (m *Manager) uninstall(ctx context.Context, u Unit, stdout io.Writer) error {
	path, packaged, err := m.find(u)
	if err != nil {
		return err
	}
	if packaged {
		return fmt.Errorf("installed by a package (%s); remove the package instead", path)
	}
	// A mask is the administrator's, not a unit that install wrote: removing it would unmask the
	// service (a packaged unit would run again), as install does not write over it.
	if target, err := os.Readlink(path); err == nil && target == "/dev/null" {
		return fmt.Errorf("%s is masked (%s → /dev/null), which uninstall leaves alone; run `systemctl unmask %s.service` first if you mean to remove it", u.Name, path, u.Name)
	}
	if pkg := m.packagedUnit(u); pkg != "" {
		return m.uninstallOverPackage(ctx, u, path, pkg, stdout)
	}
	if _, err := m.systemctl(ctx, "disable", "--now", u.Name+".service"); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove unit: %w", err)
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped, disabled and removed %s\n", path)
	return nil
}

// uninstallOverPackage removes the unit install wrote at path, over the package's unit at pkg (a
// package installed after install, whose postinst warned that this copy overrides its unit). The
// service's enablement and its run are the package's too: disabling and stopping them, as for a
// unit install alone wrote, left the package's service disabled and stopped, and the VM or server
// without it from the next boot on. Only the copy goes: the package's unit takes over, enabled
// again when the service was (its links named the copy) and restarted, now running the package's
// binary, when it ran.
func (m *Manager) uninstallOverPackage(ctx context.Context, u Unit, path, pkg string, stdout io.Writer) error {
	name := u.Name + ".service"
	enabled, err := m.systemctlState(ctx, "is-enabled", name)
	if err != nil {
		return err
	}
	active, err := m.systemctlState(ctx, "is-active", name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove unit: %w", err)
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if enabled == "enabled" {
		if _, err := m.systemctl(ctx, "reenable", name); err != nil {
			return err
		}
	}
	ran := "not running"
	if (State{Active: active}).Running() {
		if _, err := m.systemctl(ctx, "try-restart", name); err != nil {
			return fmt.Errorf("%w; see `journalctl -u %s`", err, u.Name)
		}
		ran = "restarted"
	}
	fmt.Fprintf(stdout, "removed %s; the package's unit %s is in effect (%s, %s)\n", path, pkg, enabled, ran)
	return nil
}

// packagedUnit returns the package's unit file of u, under the one in UnitDir if any; empty when
// no package installed one.
func (m *Manager) packagedUnit(u Unit) string {
	for _, dir := range m.packageDirs() {
		p := filepath.Join(dir, u.Name+".service")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// State is what status found.
type State struct {
	// Name is the unit name without ".service".
	Name string
	// Path is the unit file; empty when not installed.
	Path string
	// Packaged is true when a package installed the unit.
	Packaged bool
	// Enabled is systemctl is-enabled's answer, e.g. "enabled", "disabled".
	Enabled string
	// Active is systemctl is-active's answer, e.g. "active", "inactive",
	// "failed", "activating".
	Active string
}

// Installed reports whether a unit file exists.
func (s State) Installed() bool { return s.Path != "" }

// Running reports whether systemd considers the service active (or starting).
func (s State) Running() bool {
	return s.Active == "active" || s.Active == "activating" || s.Active == "reloading"
}

// String is the one line that status prints.
func (s State) String() string {
	if !s.Installed() {
		return s.Name + ": not installed"
	}
	by := ""
	if s.Packaged {
		by = " by package"
	}
	running := "running"
	if !s.Running() {
		running = "not running (" + s.Active + ")"
		if s.Active == "failed" {
			running += "; see `journalctl -u " + s.Name + "`"
		}
	}
	return fmt.Sprintf("%s: installed%s (%s), %s, %s", s.Name, by, s.Path, s.Enabled, running)
}

// CheckedStatus is Status after the checks that every action makes (systemd runs here), with
// errors prefixed like Control's, for callers that report the state as data (status --json).
// On Windows it asks the service manager.
func (m *Manager) CheckedStatus(ctx context.Context, u Unit) (State, error) {
	st, err := m.checkedStatus(ctx, u)
	if err != nil {
		return st, fmt.Errorf("%s status: %w", u.Command, err)
	}
	return st, nil
}

// Status reports whether u is installed, enabled and running.
func (m *Manager) Status(ctx context.Context, u Unit) (State, error) {
	st := State{Name: u.Name}
	path, packaged, err := m.find(u)
	if errors.Is(err, ErrNotInstalled) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.Path, st.Packaged = path, packaged
	// Both exit non-zero for "disabled" and "inactive": the answer is on stdout.
	st.Enabled, err = m.systemctlState(ctx, "is-enabled", u.Name+".service")
	if err != nil {
		return st, err
	}
	st.Active, err = m.systemctlState(ctx, "is-active", u.Name+".service")
	return st, err
}

// find returns the unit file in effect: UnitDir first (it overrides the
// package's), then the package directories.
func (m *Manager) find(u Unit) (path string, packaged bool, err error) {
	dirs := append([]string{m.unitDir()}, m.packageDirs()...)
	for i, dir := range dirs {
		p := filepath.Join(dir, u.Name+".service")
		_, err := os.Stat(p)
		if err == nil {
			return p, i > 0, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", false, fmt.Errorf("stat unit: %w", err)
		}
	}
	return "", false, ErrNotInstalled
}

func (m *Manager) systemctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, m.systemctlPath(), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		if msg == "" {
			msg = err.Error()
		}
		return stdout.String(), fmt.Errorf("systemctl %s: %s", strings.Join(args, " "), msg)
	}
	return stdout.String(), nil
}

func (m *Manager) systemctlState(ctx context.Context, args ...string) (string, error) {
	out, err := m.systemctl(ctx, args...)
	state, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if state == "" && err != nil {
		return "", err
	}
	return state, nil
}

func (m *Manager) platform() string {
	if m.Platform != "" {
		return m.Platform
	}
	return service.Platform()
}

func (m *Manager) unitDir() string {
	if m.UnitDir != "" {
		return m.UnitDir
	}
	return "/etc/systemd/system"
}

func (m *Manager) packageDirs() []string {
	if m.PackageDirs != nil {
		return m.PackageDirs
	}
	return []string{"/usr/lib/systemd/system", "/lib/systemd/system"}
}

func (m *Manager) systemctlPath() string {
	if m.Systemctl != "" {
		return m.Systemctl
	}
	return "systemctl"
}

func (m *Manager) euid() int {
	if m.EUID != nil {
		return *m.EUID
	}
	return os.Geteuid()
}

func (m *Manager) self() (string, error) {
	if m.Self != "" {
		return m.Self, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate this binary: %w", err)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p, nil
}

// writeFile replaces path with content, mode 0644, through a temp file and a
// rename so that systemd never reads half a unit.
func writeFile(path string, content []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write unit: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write unit: %w", err)
	}
	return nil
}
