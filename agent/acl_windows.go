//go:build windows

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"unsafe"

	"golang.org/x/sys/windows"
)

// privateDirSDDL is the security descriptor of a directory the agent makes for itself (its
// cache, which holds the view's secrets and the instance token): full control for SYSTEM,
// Administrators and the directory's owner, inherited by what is created in it, and nothing
// inherited from above. Without it a directory under %ProgramData% inherits that folder's
// ACL, which lets every local user read its files and create new ones (plant a view).
const privateDirSDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)"

// mkdirPrivate makes dir, and its missing parents, with privateDirSDDL (as Unix makes them mode
// 0700), owned by Administrators where the agent may give it that owner (as SYSTEM, or
// elevated), so that the service finds a directory made by an administrator's once or run its
// own (Validate refuses a cache_dir owned by another user). What it made is judged again as
// Validate judges cache_dir (checkCacheParents, foreignOwner): a directory on the way that
// another user made in between is found here, and nothing is written into it. An existing
// directory is left as it is (Validate judged it).
func mkdirPrivate(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	for _, p := range slices.Backward(missing) {
		err := createDirectory(p, "O:BA"+privateDirSDDL)
		if errors.Is(err, windows.ERROR_INVALID_OWNER) {
			err = createDirectory(p, privateDirSDDL) // not elevated: owned by the agent's user
		}
		if err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
			return err
		}
	}
	// Made since the Stat above, by the agent (another run) or by another user, who must not
	// choose where the agent keeps its view.
	if _, err := checkCacheParents(dir); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if who, err := foreignOwner(dir); err != nil || who != "" {
		if err != nil {
			return err
		}
		return fmt.Errorf("%s is not the directory the agent made: %s owns it; remove it", dir, who)
	}
	return nil
}

// createDirectory makes the directory dir with the security descriptor sddl.
func createDirectory(dir, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	name, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return err
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	if err := windows.CreateDirectory(name, sa); err != nil {
		return &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return nil
}

// foreignOwner names the owner of path when it is neither SYSTEM, Administrators nor the
// agent's own user, "" when it is one of them: the check Unix makes of a file's uid. Any
// local user may create a directory under %ProgramData%\shoelace (that folder passes on the
// right to), give it an ACL of its own that names no broad group, and so read the view the
// agent keeps there, or plant one.
func foreignOwner(path string) (string, error) {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return "", fmt.Errorf("read the owner of %s: %w", path, err)
	}
	owner, _, err := sd.Owner()
	if err != nil || owner == nil {
		return "", fmt.Errorf("read the owner of %s: %v", path, err)
	}
	if trustedOwner(owner.String(), selfSID()) {
		return "", nil
	}
	if account, domain, _, err := owner.LookupAccount(""); err == nil {
		return domain + `\` + account + " (" + owner.String() + ")", nil
	}
	return owner.String(), nil
}

// selfSID is the SID of the user the agent runs as ("" when it cannot be read).
func selfSID() string {
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		return u.User.Sid.String()
	}
	return ""
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
