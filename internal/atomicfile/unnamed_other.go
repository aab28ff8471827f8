//go:build !linux

package atomicfile

import (
	"errors"
	"os"
)

// Unnamed spares are Linux's (unnamed_linux.go): elsewhere the spare is a file with a name.

func (d *dir) takeUnnamed(string) *os.File { return nil }

func (d *dir) makeUnnamed(string) bool { return false }

func (d *dir) linkUnnamed(*os.File, string) (string, error) {
	return "", errors.New("unnamed files are Linux's")
}

// defaultACL is Linux's: elsewhere a default ACL is not looked for.
func (d *dir) defaultACL() bool { return false }
