//go:build !windows

package templates

import "syscall"

// nonBlock opens what file reads without blocking: a FIFO swapped in at the name after it was
// looked at (a link turned to it) would hold the open, and the render, until a writer came.
const nonBlock = syscall.O_NONBLOCK
