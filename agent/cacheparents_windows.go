//go:build windows

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// accessAllowedCallbackACEType is ACCESS_ALLOWED_CALLBACK_ACE_TYPE (a conditional grant), laid
// out as ACCESS_ALLOWED_ACE; x/sys/windows has no name for it.
const accessAllowedCallbackACEType = 0x9

// checkCacheParents judges the directories above cache_dir as judgeWinParents says (the owner
// and ACL of each, from the volume's root down), and returns dir as Windows resolves it
// (junctions, symbolic links, 8.3 names: the path of the handle opened on the part of it that
// exists), the path the agent then uses, so that a junction judged now cannot be swapped later.
// The missing part of dir is made by the agent (mkdirPrivate), which judges it again.
func checkCacheParents(dir string) (string, error) {
	existing, rest := dir, ""
	for {
		real, err := atomicfile.RealDir(existing)
		if err == nil {
			existing = real
			break
		}
		parent := filepath.Dir(existing)
		if !errors.Is(err, fs.ErrNotExist) || parent == existing {
			return "", err
		}
		existing, rest = parent, filepath.Join(filepath.Base(existing), rest)
	}
	real := filepath.Join(existing, rest)
	var paths []string
	for p := existing; ; p = filepath.Dir(p) {
		paths = append(paths, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	var way []winDir
	for _, p := range slices.Backward(paths) {
		d, err := readWinDir(p)
		if err != nil {
			return "", err
		}
		way = append(way, d)
	}
	if err := judgeWinParents(way, real, selfSID(), sidName); err != nil {
		return "", err
	}
	return real, nil
}

// readWinDir reads the owner and the ACL of the directory p.
func readWinDir(p string) (winDir, error) {
	sd, err := windows.GetNamedSecurityInfo(p, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return winDir{}, fmt.Errorf("read the ACL of %s: %w", p, err)
	}
	d := winDir{Path: p}
	owner, _, err := sd.Owner()
	if err != nil || owner == nil {
		return winDir{}, fmt.Errorf("read the owner of %s: %v", p, err)
	}
	d.Owner = owner.String()
	dacl, _, err := sd.DACL()
	if errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) || err == nil && dacl == nil {
		d.NoACL = true
		return d, nil
	}
	if err != nil {
		return winDir{}, fmt.Errorf("read the ACL of %s: %w", p, err)
	}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return winDir{}, fmt.Errorf("read the ACL of %s: %w", p, err)
		}
		a := winACE{Mask: uint32(ace.Mask), Flags: ace.Header.AceFlags}
		if t := ace.Header.AceType; t == windows.ACCESS_ALLOWED_ACE_TYPE || t == accessAllowedCallbackACEType {
			// Other types (denials, object entries) are not counted; only these are read as
			// ACCESS_ALLOWED_ACE is laid out.
			a.Allow = true
			a.SID = (*windows.SID)(unsafe.Pointer(&ace.SidStart)).String()
		}
		d.ACEs = append(d.ACEs, a)
	}
	return d, nil
}

// sidName names the SID s for a message: DOMAIN\account (SID), or the SID alone when it names
// no account.
func sidName(s string) string {
	sid, err := windows.StringToSid(s)
	if err != nil {
		return s
	}
	account, domain, _, err := sid.LookupAccount("")
	if err != nil {
		return s
	}
	if domain == "" {
		return account + " (" + s + ")"
	}
	return domain + `\` + account + " (" + s + ")"
}
