//go:build unix

package server

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit and
// returns the soft limit in force. Go's os package already does so when it starts on most
// systems; doing it here as well keeps the guarantee where it does not, and reads the limit
// that the connection cap must fit under.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open files limit: %w", err)
	}
	if lim.Cur >= lim.Max {
		return uint64(lim.Cur), nil
	}
	raised := lim
	raised.Cur = raised.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		return uint64(lim.Cur), fmt.Errorf("raise the open files limit from %d to %d: %w", lim.Cur, lim.Max, err)
	}
	return uint64(raised.Cur), nil
}
