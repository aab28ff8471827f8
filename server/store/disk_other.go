//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package store

import "errors"

// freeBytes is not known here: nothing is refused for it.
func freeBytes(string) (int64, error) { return 0, errors.ErrUnsupported }
