package svc

import "fmt"

// winOps are the service manager's calls that the Windows actions are made of
// (control_windows.go fills them in), apart so that their order, and the errors that are no
// failure, are tested on every system.
type winOps struct {
	install, uninstall, start, stop func() error
	// stopped reports stop's error for a service that is not running; running start's for one
	// that is: neither is a failure, as systemctl stop and start say 0 there.
	stopped, running func(error) bool
	// denied reports a refusal to a caller without the right (not an elevated administrator).
	denied func(error) bool
}

// do runs action: uninstall and restart stop the service first (a service deleted while it
// runs goes on running, marked for deletion, until it stops, and install says "marked for
// deletion" meanwhile; kardianos's restart of a stopped service failed, "the service has not
// been started", where systemctl restart starts it).
func (o winOps) do(action string) error {
	stop := func() error {
		if err := o.stop(); err != nil && !o.stopped(err) {
			return err
		}
		return nil
	}
	start := func() error {
		if err := o.start(); err != nil && !o.running(err) {
			return err
		}
		return nil
	}
	var steps []func() error
	switch action {
	case "install":
		steps = []func() error{o.install}
	case "uninstall":
		steps = []func() error{stop, o.uninstall}
	case "start":
		steps = []func() error{start}
	case "stop":
		steps = []func() error{stop}
	case "restart":
		steps = []func() error{stop, start}
	default:
		return fmt.Errorf("unknown action %q", action)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			if o.denied(err) {
				return fmt.Errorf("%w: run it as Administrator (from an elevated prompt)", err)
			}
			return err
		}
	}
	return nil
}
