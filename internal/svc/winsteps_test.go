package svc

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var (
	errNotActive = errors.New("the service has not been started")
	errRunning   = errors.New("an instance of the service is already running")
	errDenied    = errors.New("access is denied")
)

// fakeService is a service manager that records the calls made to it.
type fakeService struct {
	running, installed bool
	denied             bool
	calls              []string
}

func (f *fakeService) ops() winOps {
	call := func(name string, do func() error) func() error {
		return func() error {
			f.calls = append(f.calls, name)
			if f.denied {
				return errDenied
			}
			return do()
		}
	}
	return winOps{
		install: call("install", func() error { f.installed = true; return nil }),
		uninstall: call("uninstall", func() error {
			if f.running {
				return errors.New("marked for deletion while it runs")
			}
			f.installed = false
			return nil
		}),
		start: call("start", func() error {
			if f.running {
				return errRunning
			}
			f.running = true
			return nil
		}),
		stop: call("stop", func() error {
			if !f.running {
				return errNotActive
			}
			f.running = false
			return nil
		}),
		stopped: func(err error) bool { return errors.Is(err, errNotActive) },
		running: func(err error) bool { return errors.Is(err, errRunning) },
		denied:  func(err error) bool { return errors.Is(err, errDenied) },
	}
}

// On Windows uninstall stops the service before it deletes it, restart starts a stopped
// service, start and stop of a service already so succeed (as systemctl's do), and a refusal
// says to run as Administrator.
func TestWinOps(t *testing.T) {
	for _, c := range []struct {
		action           string
		running          bool
		wantCalls        []string
		wantRunning      bool
		wantInstalledNow bool
	}{
		{"uninstall", true, []string{"stop", "uninstall"}, false, false},
		{"uninstall", false, []string{"stop", "uninstall"}, false, false},
		{"restart", false, []string{"stop", "start"}, true, true},
		{"restart", true, []string{"stop", "start"}, true, true},
		{"start", true, []string{"start"}, true, true},
		{"stop", false, []string{"stop"}, false, true},
		{"install", false, []string{"install"}, false, true},
	} {
		f := &fakeService{running: c.running, installed: true}
		if err := f.ops().do(c.action); err != nil {
			t.Errorf("%s (running %v): %v", c.action, c.running, err)
		}
		if !slices.Equal(f.calls, c.wantCalls) || f.running != c.wantRunning || f.installed != c.wantInstalledNow {
			t.Errorf("%s (running %v): calls %v, running %v, installed %v; want %v, %v, %v", c.action, c.running,
				f.calls, f.running, f.installed, c.wantCalls, c.wantRunning, c.wantInstalledNow)
		}
	}
	f := &fakeService{denied: true}
	err := f.ops().do("install")
	if !errors.Is(err, errDenied) || !strings.Contains(err.Error(), "run it as Administrator") {
		t.Errorf("install refused: %v", err)
	}
}
