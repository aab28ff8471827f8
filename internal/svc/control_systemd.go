//go:build !windows

package svc

import (
	"context"
	"errors"
	"fmt"
	"io"
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
		past := map[string]string{"start": "started", "stop": "stopped", "restart": "restarted"}[action]
		fmt.Fprintf(stdout, "%s %s\n", past, u.Name)
		return nil
	}
}
