//go:build !linux

package agent

import "runtime/debug"

// freeMemory gives back the heap a render pass used and freed.
func freeMemory() { debug.FreeOSMemory() }
