package agent

import "github.com/shoelace-dev/shoelace/internal/atomicfile"

// SetInstallFile replaces the install of rendered files for a test; the returned func restores it.
func SetInstallFile(f func(path string, data []byte, opts atomicfile.Options) (bool, error)) (restore func()) {
	old := installFile
	installFile = f
	return func() { installFile = old }
}
