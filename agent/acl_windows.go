//go:build windows

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/windows"
)

// privateDirSDDL is the security descriptor of a directory the agent makes for itself (its
// cache, which holds the view's secrets and the instance token): full control for SYSTEM,
// Administrators and the directory's owner, inherited by what is created in it, and nothing
// inherited from above. Without it a directory under %ProgramData% inherits that folder's
// ACL, which lets every local user read its files and create new ones (plant a view).
const privateDirSDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)"

// mkdirPrivate makes dir, and its missing parents as usual, the last one with privateDirSDDL.
// An existing directory is left as it is (Validate says if others may write to it).
func mkdirPrivate(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	sd, err := windows.SecurityDescriptorFromString(privateDirSDDL)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	name, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return err
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	if err := windows.CreateDirectory(name, sa); err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return nil
}

// Rights that let whoever holds them read a file, or add or change files in a directory.
const (
	readRights  = windows.FILE_READ_DATA | windows.GENERIC_READ | windows.GENERIC_ALL
	writeRights = windows.FILE_WRITE_DATA | windows.FILE_APPEND_DATA | windows.GENERIC_WRITE | windows.GENERIC_ALL |
		windows.WRITE_DAC | windows.WRITE_OWNER
)

// othersMay says which broad group (Everyone, Users, Authenticated Users) path's ACL lets do
// what rights name (readRights, writeRights), "" when none: the check Unix modes' group and
// other bits make there.
func othersMay(path string, rights uint32) (string, error) {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return "", fmt.Errorf("read the ACL of %s: %w", path, err)
	}
	return broadGrant(sd, rights)
}

// broadGrant is othersMay of a security descriptor.
func broadGrant(sd *windows.SECURITY_DESCRIPTOR, rights uint32) (string, error) {
	dacl, _, err := sd.DACL()
	if errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) || err == nil && dacl == nil {
		return "Everyone (no ACL at all)", nil
	}
	if err != nil {
		return "", err
	}
	broad := []struct {
		sid  windows.WELL_KNOWN_SID_TYPE
		name string
	}{{windows.WinWorldSid, "Everyone"}, {windows.WinBuiltinUsersSid, "Users"}, {windows.WinAuthenticatedUserSid, "Authenticated Users"}}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return "", err
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || uint32(ace.Mask)&rights == 0 {
			continue
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		for _, b := range broad {
			if sid.IsWellKnown(b.sid) {
				return b.name, nil
			}
		}
	}
	return "", nil
}
