//go:build windows

package svc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"
	"unsafe"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// control runs action against the Windows service manager: install registers u through
// kardianos/service as an automatic service running the binary with ServiceArgs, restarted
// when it fails; the other actions are winOps's (uninstall and restart stop the service first);
// status prints what checkedStatus finds.
func (m *Manager) control(ctx context.Context, u Unit, action string, stdout io.Writer) error {
	if action == "status" {
		st, err := m.checkedStatus(ctx, u)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, st.String())
		return nil
	}
	self, err := m.self()
	if err != nil {
		return err
	}
	if action == "install" {
		// Installed already: as the same command, that is done (an install script run again);
		// as another, say how to change it (kardianos said "service shoelace-agent already exists").
		if st, err := m.checkedStatus(ctx, u); err == nil && st.Installed() {
			if want := commandLine(self, ServiceArgs); st.Path != want {
				return fmt.Errorf("installed already, running %s; to run %s instead, run `%s uninstall` first", st.Path, want, u.Command)
			}
			fmt.Fprintf(stdout, "%s is installed already, running %s\n", u.Name, st.Path)
			return nil
		}
	}
	s, err := service.New(noProgram{}, &service.Config{Name: u.Name, DisplayName: u.Name, Description: u.Description,
		Executable: self, Arguments: ServiceArgs, Option: service.KeyValue{"StartType": "automatic", "OnFailure": "restart"}})
	if err != nil {
		return err
	}
	ops := winOps{
		install:   s.Install,
		uninstall: s.Uninstall,
		start:     s.Start,
		stop:      func() error { return stopService(ctx, u) },
		stopped:   func(err error) bool { return errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) },
		running:   func(err error) bool { return errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) },
		denied:    func(err error) bool { return errors.Is(err, windows.ERROR_ACCESS_DENIED) },
	}
	if err := ops.do(action); err != nil {
		return err
	}
	past := map[string]string{"install": "installed", "uninstall": "stopped and uninstalled", "start": "started", "stop": "stopped", "restart": "restarted"}[action]
	fmt.Fprintf(stdout, "%s %s\n", past, u.Name)
	return nil
}

// commandLine is the command line the service manager keeps for exe run with args, as
// mgr.CreateService writes it.
func commandLine(exe string, args []string) string {
	s := syscall.EscapeArg(exe)
	for _, a := range args {
		s += " " + syscall.EscapeArg(a)
	}
	return s
}

// stopWait bounds how long stop waits for the service to stop.
const stopWait = 30 * time.Second

// stopService asks the service u to stop and waits until it has (kardianos's wait went on
// polling for good when the service never stopped). A service not running is
// ERROR_SERVICE_NOT_ACTIVE.
func stopService(ctx context.Context, u Unit) error {
	scm, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return fmt.Errorf("connect to the service manager: %w", err)
	}
	defer windows.CloseServiceHandle(scm)
	name, err := windows.UTF16PtrFromString(u.Name)
	if err != nil {
		return err
	}
	h, err := windows.OpenService(scm, name, windows.SERVICE_STOP|windows.SERVICE_QUERY_STATUS)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return fmt.Errorf("%w; run `%s install` first", err, u.Command)
	}
	if err != nil {
		return err
	}
	s := &mgr.Service{Name: u.Name, Handle: h}
	defer s.Close()
	st, err := s.Control(svc.Stop)
	if errors.Is(err, windows.ERROR_SERVICE_CANNOT_ACCEPT_CTRL) {
		st, err = s.Query() // stopping (or starting) already: wait for it
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(stopWait)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return fmt.Errorf("the service did not stop within %s (it is %s)", stopWait, cmp.Or(states[st.State], "in an unknown state"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if st, err = s.Query(); err != nil {
			return err
		}
	}
	return nil
}

// checkedStatus asks the service manager about u with the rights any user has (querying, not
// changing): whether it is registered, its command line, start type and state, in the words
// systemd's status uses (active, inactive, …) so that State reads the same everywhere.
func (m *Manager) checkedStatus(_ context.Context, u Unit) (State, error) {
	st := State{Name: u.Name}
	scm, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return st, fmt.Errorf("connect to the service manager: %w", err)
	}
	defer windows.CloseServiceHandle(scm)
	name, err := windows.UTF16PtrFromString(u.Name)
	if err != nil {
		return st, err
	}
	h, err := windows.OpenService(scm, name, windows.SERVICE_QUERY_CONFIG|windows.SERVICE_QUERY_STATUS)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("open service %s: %w", u.Name, err)
	}
	s := &mgr.Service{Name: u.Name, Handle: h}
	defer s.Close()
	cfg, err := queryConfig(h)
	if err != nil {
		return st, fmt.Errorf("query service %s: %w", u.Name, err)
	}
	q, err := s.Query()
	if err != nil {
		return st, fmt.Errorf("query service %s: %w", u.Name, err)
	}
	st.Path = windows.UTF16PtrToString(cfg.BinaryPathName)
	st.Enabled = startTypes[cfg.StartType]
	st.Active = states[q.State]
	return st, nil
}

// queryConfig is QueryServiceConfig alone (mgr.Service.Config also asks for the description and
// the other optional parts, at levels not every service manager has).
func queryConfig(h windows.Handle) (*windows.QUERY_SERVICE_CONFIG, error) {
	n := uint32(1024)
	for {
		b := make([]byte, n)
		cfg := (*windows.QUERY_SERVICE_CONFIG)(unsafe.Pointer(&b[0]))
		err := windows.QueryServiceConfig(h, cfg, n, &n)
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, windows.ERROR_INSUFFICIENT_BUFFER) || n <= uint32(len(b)) {
			return nil, err
		}
	}
}

var startTypes = map[uint32]string{mgr.StartAutomatic: "enabled", mgr.StartManual: "manual start", mgr.StartDisabled: "disabled"}

var states = map[svc.State]string{svc.Running: "active", svc.StartPending: "activating", svc.Stopped: "inactive",
	svc.StopPending: "deactivating", svc.Paused: "paused", svc.PausePending: "pausing", svc.ContinuePending: "activating"}

// noProgram stands for the program when the service is only controlled, not run.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
