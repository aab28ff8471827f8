//go:build !windows

package agent

import (
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// SetInstallStaged replaces the install of staged files for a test; the returned func restores it.
func SetInstallStaged(f func(s *atomicfile.Staged) error) (restore func()) {
	old := installStaged
	installStaged = f
	return func() { installStaged = old }
}

// SetSyncDirectories replaces the deferred fsync of installed files' directories for a test.
func SetSyncDirectories(f func(*atomicfile.DirSyncs) error) (restore func()) {
	old := syncDirectories
	syncDirectories = f
	return func() { syncDirectories = old }
}

// ParseTemplate parses a template entry of a loaded config as the agent does.
func ParseTemplate(t *Template) (*templates.Template, error) { return parseTemplate(t) }

// SetEnrollEvery sets how often an agent that is not enrolled tries again, for a test.
func SetEnrollEvery(d time.Duration) (restore func()) {
	old := enrollEvery
	enrollEvery = d
	return func() { enrollEvery = old }
}

// SetRestoreFile replaces the restore of a previous file (an undo) for a test.
func SetRestoreFile(f func(p *atomicfile.Previous, opts atomicfile.Options) (bool, error)) (restore func()) {
	old := restoreFile
	restoreFile = f
	return func() { restoreFile = old }
}

// SetDryChecked replaces the hook that render --dry calls once it has judged a destination,
// before it reads the file there, for a test; the returned func restores it.
func SetDryChecked(f func(dest string)) (restore func()) {
	old := dryChecked
	dryChecked = f
	return func() { dryChecked = old }
}
