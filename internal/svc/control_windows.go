//go:build windows

package svc

import (
	"context"
	"fmt"
	"io"

	"github.com/kardianos/service"
)

// control runs action against the Windows service manager through kardianos/service: install
// registers u as an automatic service running the binary with ServiceArgs.
func (m *Manager) control(_ context.Context, u Unit, action string, stdout io.Writer) error {
	self, err := m.self()
	if err != nil {
		return err
	}
	s, err := service.New(noProgram{}, &service.Config{Name: u.Name, DisplayName: u.Name, Description: u.Description,
		Executable: self, Arguments: ServiceArgs, Option: service.KeyValue{"StartType": "automatic", "OnFailure": "restart"}})
	if err != nil {
		return err
	}
	if action == "status" {
		st, err := s.Status()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, map[service.Status]string{service.StatusRunning: "running", service.StatusStopped: "stopped"}[st])
		return nil
	}
	if err := service.Control(s, action); err != nil {
		return err
	}
	past := map[string]string{"install": "installed", "uninstall": "uninstalled", "start": "started", "stop": "stopped", "restart": "restarted"}[action]
	fmt.Fprintf(stdout, "%s %s\n", past, u.Name)
	return nil
}

// noProgram stands for the program when the service is only controlled, not run.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
