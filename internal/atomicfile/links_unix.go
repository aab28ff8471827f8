//go:build !windows

package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// walkStart is where evalLinks starts: p made absolute and split into its components, and the
// effective uid that, beside root, may own the links it follows.
func walkStart(p string) (components []string, euid int, err error) {
	if !filepath.IsAbs(p) {
		if p, err = filepath.Abs(p); err != nil {
			return nil, 0, err
		}
	}
	return strings.Split(p, "/"), os.Geteuid(), nil
}

// UntrustedLinkError is an install refused because the way to its file goes through a
// symbolic link that neither root nor the installing user owns: whoever made it may write the
// directory that holds it, and must not choose where a file of root's goes (a link planted at
// a destination in a service's own directory, pointing at /etc/shadow). The kernel's
// protected_symlinks does not apply: links are resolved here by name, not by open(2).
type UntrustedLinkError struct {
	Link string
	UID  int
}

func (e *UntrustedLinkError) Error() string {
	return fmt.Sprintf("refusing to follow the symbolic link %s: it is owned by uid %d, neither root nor this process's user (uid %d); remove it or make it root's",
		e.Link, e.UID, os.Geteuid())
}
