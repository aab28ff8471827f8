//go:build !windows

package svc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// checkedStatus is Status once systemd is known to run here.
func (m *Manager) checkedStatus(ctx context.Context, u Unit) (State, error) {
	if p := m.platform(); p != PlatformSystemd {
		return State{Name: u.Name}, fmt.Errorf("systemd is not running here (init system %q)", p)
	}
	return m.Status(ctx, u)
}

// control runs action against systemd.
func (m *Manager) control(ctx context.Context, u Unit, action string, stdout io.Writer) error {
	if p := m.platform(); p != PlatformSystemd {
		return fmt.Errorf("systemd is not running here (init system %q); install the unit from systemd/ by hand or use the .deb/.rpm", p)
	}
	if action != "status" && m.euid() != 0 {
		return errors.New("must run as root (try sudo)")
	}
	switch action {
	case "install":
		return m.install(ctx, u, stdout)
	case "uninstall":
		return m.uninstall(ctx, u, stdout)
	case "status":
		st, err := m.Status(ctx, u)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, st.String())
		return nil
	default:
		if _, _, err := m.find(u); err != nil {
			return fmt.Errorf("%w; run `%s install` first", err, u.Command)
		}
		if _, err := m.systemctl(ctx, action, u.Name+".service"); err != nil {
			return fmt.Errorf("%w; see `journalctl -u %s`", err, u.Name)
		}
		if action != "stop" {
			if err := m.skipped(ctx, u); err != nil {
				return err
			}
		}
		past := map[string]string{"start": "started", "stop": "stopped", "restart": "restarted"}[action]
		fmt.Fprintf(stdout, "%s %s\n", past, u.Name)
		return nil
	}
}

// skipped reports a start that systemd skipped: a unit whose Condition…= does not hold is not
// started, and systemctl start exits 0 all the same (the agent's unit waits for
// /etc/shoelace/token that way). It names the paths of the unit's ConditionPathExists= that are
// missing here.
func (m *Manager) skipped(ctx context.Context, u Unit) error {
	name := u.Name + ".service"
	if st, err := m.systemctlState(ctx, "is-active", name); err != nil || (State{Active: st}).Running() {
		return nil
	}
	cond, err := m.systemctl(ctx, "show", "--property=ConditionResult", "--value", name)
	if err != nil || strings.TrimSpace(cond) != "no" {
		return nil
	}
	var missing []string
	for _, line := range strings.Split(string(u.Content), "\n") {
		p, ok := strings.CutPrefix(strings.TrimSpace(line), "ConditionPathExists=")
		if !ok || strings.HasPrefix(p, "!") {
			continue
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, p)
		}
	}
	why := "a start condition of the unit does not hold"
	switch len(missing) {
	case 0:
	case 1:
		why = "its start condition does not hold: " + missing[0] + " is missing (ConditionPathExists)"
	default:
		why = "its start condition does not hold: " + strings.Join(missing, " and ") + " are missing (ConditionPathExists)"
	}
	return fmt.Errorf("systemd did not start %s: %s; see `systemctl status %s`", u.Name, why, u.Name)
}
