package agent

import (
	"fmt"
	"strings"
)

// Access rights and flags of Windows ACL entries (winnt.h) that let whoever holds them take a
// directory's entry away: they are the same numbers on every system, so that the check of
// cache_dir's parents (judgeWinParents) is tested everywhere.
const (
	winFileDeleteChild = 0x40       // FILE_DELETE_CHILD: delete (or rename) any entry of a directory
	winDelete          = 0x10000    // DELETE: delete (or rename) the file or directory itself
	winWriteDAC        = 0x40000    // WRITE_DAC: change its ACL (grant oneself the rest)
	winWriteOwner      = 0x80000    // WRITE_OWNER: take its ownership (then change its ACL)
	winGenericAll      = 0x10000000 // GENERIC_ALL: all of them
	winInheritOnlyACE  = 0x08       // INHERIT_ONLY_ACE: the entry is only passed on, not applied
)

// SIDs that may own, or be granted any right on, the directories above cache_dir besides the
// agent's own user: those of trustedOwner, TrustedInstaller (the owner of C:\ and C:\Windows),
// and CREATOR OWNER and OWNER RIGHTS, which stand for the owner (judged as such).
const (
	sidTrustedInstaller = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
	sidCreatorOwner     = "S-1-3-0"
	sidOwnerRights      = "S-1-3-4"
)

// winACE is an entry of a directory's ACL, as judgeWinParents reads it.
type winACE struct {
	SID   string // S-1-5-32-545
	Mask  uint32 // the rights it grants (or denies)
	Flags uint8  // its flags: winInheritOnlyACE
	Allow bool   // it grants (a denial is not counted: the check stays on the safe side)
}

// winDir is a directory on the way to cache_dir, as judgeWinParents reads it: its path, owner
// (a SID) and ACL (NoACL: none at all, which lets everyone do anything).
type winDir struct {
	Path  string
	Owner string
	NoACL bool
	ACEs  []winACE
}

// judgeWinParents is Windows' check of the directories above cache_dir, in the spirit of the
// one Unix makes (checkCacheParents): whoever may take an entry on the way out of its directory
// can rename cache_dir (or a directory above it) away once Validate looked, put one of theirs in
// its place, and have the agent, SYSTEM as a rule, render the view they chose when the server is
// away. way is the directories that exist on the way to dir, the volume's root first, dir itself
// last when it exists. Each directory above dir must be owned by SYSTEM, Administrators,
// TrustedInstaller or self (the agent's user) and grant no one else FILE_DELETE_CHILD; each
// entry on the way, dir too, must grant no one else DELETE; and none may grant anyone else
// WRITE_DAC, WRITE_OWNER or GENERIC_ALL, which give the rest. The right to create folders is
// not refused: %ProgramData% grants it to Users, as /tmp's sticky bit lets anyone create, and
// that lets no one take away an entry made by another. dir's own owner is Validate's check.
// name names a SID in messages. Pure, so that it is tested on every system.
func judgeWinParents(way []winDir, dir, self string, name func(sid string) string) error {
	for i, d := range way {
		above := d.Path != dir
		where := d.Path
		if above {
			where += ", above it,"
			if !trustedOwner(d.Owner, self) {
				return fmt.Errorf("%s is owned by %s, neither SYSTEM, Administrators, TrustedInstaller nor the agent's user: its owner could put another directory in cache_dir's place, whose view the agent would render when the server is away; move cache_dir (under %%ProgramData%%), or make Administrators its owner (takeown /a /f %s, as Administrator)",
					where, name(d.Owner), d.Path)
			}
		}
		rights := uint32(winWriteDAC | winWriteOwner | winGenericAll)
		if i > 0 {
			rights |= winDelete // the root of a volume is no directory's entry
		}
		if above {
			rights |= winFileDeleteChild
		}
		if who, mask := untrustedGrant(d, rights, self); who != "" {
			return fmt.Errorf("%s lets %s %s: whoever may do so could put another directory in cache_dir's place, whose view the agent would render when the server is away; remove that entry of its ACL (icacls), or move cache_dir",
				where, name(who), rightsText(mask))
		}
	}
	return nil
}

// untrustedGrant names the first SID that d's ACL grants any of rights to, with the rights it
// grants of them, when that SID is none of trusted ones; "" when there is none.
func untrustedGrant(d winDir, rights uint32, self string) (string, uint32) {
	if d.NoACL {
		return "S-1-1-0", rights // Everyone
	}
	for _, a := range d.ACEs {
		if !a.Allow || a.Flags&winInheritOnlyACE != 0 || a.Mask&rights == 0 {
			continue
		}
		switch a.SID {
		case sidSystem, sidAdministrators, sidTrustedInstaller, sidCreatorOwner, sidOwnerRights, self:
			continue
		}
		return a.SID, a.Mask & rights
	}
	return "", 0
}

// rightsText says what rights (of those judgeWinParents looks for) let whoever holds them do.
func rightsText(rights uint32) string {
	var out []string
	for _, r := range []struct {
		bit  uint32
		text string
	}{
		{winGenericAll, "do anything with it (full control)"},
		{winFileDeleteChild, "delete or rename what it holds"},
		{winDelete, "delete or rename it"},
		{winWriteDAC, "change its permissions"},
		{winWriteOwner, "take its ownership"},
	} {
		if rights&r.bit != 0 {
			out = append(out, r.text)
		}
	}
	if len(out) > 1 {
		return strings.Join(out[:len(out)-1], ", ") + " and " + out[len(out)-1]
	}
	return strings.Join(out, "")
}
