//go:build !windows

package atomicfile_test

import "testing"

// The Windows install (MoveFileEx, junctions, no directory fsync) is tested on Windows only, by
// windows_test.go; here it is built and vetted (make vet-all), and dosPath is tested.
func TestWindowsOnly(t *testing.T) {
	t.Skip("Windows only: windows_test.go (MoveFileEx install and restore, Allowed through a junction) runs on Windows, or under Wine; make vet-all vets it here")
}
