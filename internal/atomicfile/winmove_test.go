package atomicfile

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	errHeld   = errors.New("held open")
	errDenied = errors.New("access is denied")
	errGone   = errors.New("not found")
)

// fakeMove is a mover whose move answers errs in turn (then nil), whose destination is
// read-only when readOnly is set, on a clock that sleep moves.
type fakeMove struct {
	errs            []error
	readOnly        bool
	cleared         bool
	moves, restores int
	clock           time.Time
}

func (f *fakeMove) mover() mover {
	return mover{
		move: func() error {
			f.moves++
			if f.readOnly && !f.cleared {
				return errDenied // MoveFileEx does not replace a read-only file
			}
			if len(f.errs) == 0 {
				return nil
			}
			err := f.errs[0]
			f.errs = f.errs[1:]
			return err
		},
		transient: func(err error) bool { return errors.Is(err, errHeld) || errors.Is(err, errDenied) },
		readOnly: func() (func(), bool) {
			if !f.readOnly || f.cleared {
				return nil, false
			}
			f.cleared = true
			return func() { f.restores++; f.cleared = false }, true
		},
		now:   func() time.Time { return f.clock },
		sleep: func(d time.Duration) { f.clock = f.clock.Add(d) },
	}
}

// The Windows rename replaces a read-only destination (clearing its attribute, set again when
// the move still fails), tries again a file another process holds for about two seconds, and
// says so when it gives up; any other failure is at once.
func TestMover(t *testing.T) {
	t.Run("read-only destination", func(t *testing.T) {
		f := &fakeMove{readOnly: true}
		if err := f.mover().run(); err != nil || f.moves != 2 || f.restores != 0 {
			t.Fatalf("run = %v after %d moves, %d restores; want nil after 2, 0", err, f.moves, f.restores)
		}
	})
	t.Run("read-only destination held open", func(t *testing.T) {
		f := &fakeMove{readOnly: true, errs: []error{errHeld, errHeld, errHeld}}
		if err := f.mover().run(); err != nil || f.moves != 5 || f.restores != 0 {
			t.Fatalf("run = %v after %d moves, %d restores; want nil after 5, 0", err, f.moves, f.restores)
		}
	})
	t.Run("read-only destination that cannot be replaced", func(t *testing.T) {
		f := &fakeMove{readOnly: true, errs: []error{errGone}}
		if err := f.mover().run(); !errors.Is(err, errGone) || f.restores != 1 || f.cleared {
			t.Fatalf("run = %v, %d restores, attribute cleared %v; want %v, 1, false", err, f.restores, f.cleared, errGone)
		}
	})
	t.Run("held open for good", func(t *testing.T) {
		held := make([]error, 1000)
		for i := range held {
			held[i] = errHeld
		}
		f := &fakeMove{errs: held, readOnly: true}
		start := f.clock
		err := f.mover().run()
		if !errors.Is(err, errHeld) || !strings.Contains(err.Error(), "tried again for 2s") {
			t.Fatalf("run = %v, want %v saying it tried again for 2s", err, errHeld)
		}
		if waited := f.clock.Sub(start); waited < moveRetryFor || waited > moveRetryFor+time.Second {
			t.Fatalf("gave up after %s, want about %s", waited, moveRetryFor)
		}
		if f.restores != 1 || f.cleared {
			t.Fatalf("the read-only attribute was not set again (%d restores)", f.restores)
		}
	})
	t.Run("other failure", func(t *testing.T) {
		f := &fakeMove{errs: []error{errGone}}
		if err := f.mover().run(); err != errGone || f.moves != 1 {
			t.Fatalf("run = %v after %d moves, want %v after 1", err, f.moves, errGone)
		}
	})
}

// Long paths get the \\?\ prefix MoveFileEx needs for them; short ones, and ones that have it
// already, stay as they are (a pure function: tested on every system).
func TestExtendedPath(t *testing.T) {
	long := strings.Repeat(`d\`, 130) + "app.conf"
	for _, c := range []struct{ in, want string }{
		{`C:\ProgramData\shoelace\app.conf`, `C:\ProgramData\shoelace\app.conf`},
		{`C:\` + long, `\\?\C:\` + long},
		{`\\fs1\share\` + long, `\\?\UNC\fs1\share\` + long},
		{`\\?\C:\` + long, `\\?\C:\` + long},
		{`\\?\Volume{5f1e2d3c-0000-0000-0000-100000000000}\` + long, `\\?\Volume{5f1e2d3c-0000-0000-0000-100000000000}\` + long},
	} {
		if got := extendedPath(c.in); got != c.want {
			t.Errorf("extendedPath(%.40q…) = %.50q…, want %.50q…", c.in, got, c.want)
		}
	}
}
