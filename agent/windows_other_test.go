//go:build !windows

package agent_test

import "testing"

// Commands in job objects, and the ACL checks, are tested on Windows only, by
// command_windows_test.go and acl_windows_test.go; here they are built and vetted (make vet-all).
func TestWindowsOnly(t *testing.T) {
	t.Skip("Windows only: command_windows_test.go (cmd /C, a timeout kills the tree, the environment) and acl_windows_test.go (ACL checks, the private cache directory) run on Windows, or under Wine; make vet-all vets them here")
}
