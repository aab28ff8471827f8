package agent

import (
	"strings"
	"testing"
)

// SIDs and ACL entries of a Windows machine as it comes (icacls of C:\, C:\ProgramData).
const (
	sidUsers     = "S-1-5-32-545"
	sidAuthUsers = "S-1-5-11"
	sidBob       = "S-1-5-21-1004336348-1177238915-682003330-1002"
	sidSelf      = "S-1-5-21-1004336348-1177238915-682003330-1001"

	maskFull   = 0x1f01ff // F
	maskModify = 0x1301bf // M: with DELETE
	maskRX     = 0x1200a9 // RX
	maskCreate = 0x116    // WD, AD, WEA, WA: create files and folders
	flagsOICI  = 0x03     // (OI)(CI)
	flagsIO    = 0x0b     // (OI)(CI)(IO)
)

func allow(sid string, mask uint32, flags uint8) winACE {
	return winACE{SID: sid, Mask: mask, Flags: flags, Allow: true}
}

var (
	volumeRootDir = winDir{Path: `C:\`, Owner: sidTrustedInstaller, ACEs: []winACE{
		allow(sidAdministrators, maskFull, flagsOICI), allow(sidSystem, maskFull, flagsOICI),
		allow(sidUsers, maskRX, flagsOICI), allow(sidAuthUsers, maskModify, flagsIO), allow(sidAuthUsers, 0x4, 0),
	}}
	programDataDir = winDir{Path: `C:\ProgramData`, Owner: sidSystem, ACEs: []winACE{
		allow(sidSystem, maskFull, flagsOICI), allow(sidAdministrators, maskFull, flagsOICI),
		allow(sidCreatorOwner, 0x10000000, flagsIO), allow(sidUsers, maskRX, flagsOICI), allow(sidUsers, maskCreate, 0x02),
	}}
	// shoelace as an elevated administrator makes it: owned by Administrators, with what
	// %ProgramData% passes on (CREATOR OWNER's entry given to its owner).
	shoelaceDir = winDir{Path: `C:\ProgramData\shoelace`, Owner: sidAdministrators, ACEs: []winACE{
		allow(sidSystem, maskFull, 0x13), allow(sidAdministrators, maskFull, 0x13), allow(sidAdministrators, maskFull, 0x10),
		allow(sidCreatorOwner, 0x10000000, 0x1b), allow(sidUsers, maskRX, 0x13), allow(sidUsers, maskCreate, 0x12),
	}}
	// cacheDir as the agent makes it (privateDirSDDL).
	agentCache = winDir{Path: `C:\ProgramData\shoelace\cache`, Owner: sidAdministrators, ACEs: []winACE{
		allow(sidSystem, maskFull, flagsOICI), allow(sidAdministrators, maskFull, flagsOICI), allow(sidOwnerRights, maskFull, flagsOICI),
	}}
)

// The directories above cache_dir are judged on Windows as on Unix in spirit: each must be owned
// by SYSTEM, Administrators, TrustedInstaller or the agent's user, and let no one else take
// an entry on the way away (delete or rename it, or change the ACL that would let them); the
// right to create folders, which %ProgramData% grants every user, is no such right (a pure
// function: the Windows form is tested here).
func TestJudgeWinParents(t *testing.T) {
	const cache = `C:\ProgramData\shoelace\cache`
	with := func(d winDir, f func(*winDir)) winDir {
		d.ACEs = append([]winACE(nil), d.ACEs...)
		f(&d)
		return d
	}
	for _, c := range []struct {
		name string
		way  []winDir
		dir  string
		self string
		want string // words of the problem; "" for none
	}{
		{"as Windows comes, cache made", []winDir{volumeRootDir, programDataDir, shoelaceDir, agentCache}, cache, sidSystem, ""},
		{"as Windows comes, cache to make", []winDir{volumeRootDir, programDataDir, shoelaceDir}, cache, sidSystem, ""},
		{"shoelace to make too", []winDir{volumeRootDir, programDataDir}, cache, sidSystem, ""},
		{"an elevated administrator's once", []winDir{volumeRootDir, programDataDir, shoelaceDir, agentCache}, cache, sidSelf, ""},
		{"shoelace made by another user first",
			[]winDir{volumeRootDir, programDataDir, with(shoelaceDir, func(d *winDir) {
				d.Owner = sidBob
				d.ACEs[2] = allow(sidBob, maskFull, 0x10)
			})}, cache, sidSystem,
			`C:\ProgramData\shoelace, above it, is owned by bob (` + sidBob + "), neither SYSTEM"},
		{"shoelace of the agent's user", []winDir{volumeRootDir, programDataDir, with(shoelaceDir, func(d *winDir) {
			d.Owner = sidSelf
			d.ACEs[2] = allow(sidSelf, maskFull, 0x10)
		})}, cache, sidSelf, ""},
		{"Users may modify shoelace (delete it)",
			[]winDir{volumeRootDir, programDataDir, with(shoelaceDir, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidUsers, maskModify, flagsOICI)) })},
			cache, sidSystem, `C:\ProgramData\shoelace, above it, lets Users (S-1-5-32-545) delete or rename it:`},
		{"Users may delete what shoelace holds",
			[]winDir{volumeRootDir, programDataDir, with(shoelaceDir, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidUsers, winFileDeleteChild, 0)) })},
			cache, sidSystem, "lets Users (S-1-5-32-545) delete or rename what it holds"},
		{"another user may delete cache_dir",
			[]winDir{volumeRootDir, programDataDir, shoelaceDir, with(agentCache, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidBob, winDelete, 0)) })},
			cache, sidSystem, cache + " lets bob (" + sidBob + ") delete or rename it"},
		{"Users may change the ACL of %ProgramData%",
			[]winDir{volumeRootDir, with(programDataDir, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidUsers, winWriteDAC, 0)) }), shoelaceDir},
			cache, sidSystem, "lets Users (S-1-5-32-545) change its permissions"},
		{"full control (generic) of the root",
			[]winDir{with(volumeRootDir, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidAuthUsers, winGenericAll, 0)) })},
			cache, sidSystem, "lets Authenticated Users (S-1-5-11) do anything with it"},
		{"a folder made under C:\\ inherits Authenticated Users' modify",
			[]winDir{volumeRootDir, {Path: `C:\shoelace`, Owner: sidAdministrators, ACEs: []winACE{
				allow(sidAdministrators, maskFull, 0x13), allow(sidSystem, maskFull, 0x13), allow(sidUsers, maskRX, 0x13), allow(sidAuthUsers, maskModify, 0x13),
			}}}, `C:\shoelace\cache`, sidSystem, `C:\shoelace, above it, lets Authenticated Users (S-1-5-11) delete or rename it`},
		{"an entry passed on only (inherit-only) does not count",
			[]winDir{volumeRootDir, with(programDataDir, func(d *winDir) { d.ACEs = append(d.ACEs, allow(sidUsers, maskFull, flagsIO)) }), shoelaceDir},
			cache, sidSystem, ""},
		{"a denial is no grant",
			[]winDir{volumeRootDir, with(programDataDir, func(d *winDir) { d.ACEs = append(d.ACEs, winACE{SID: sidUsers, Mask: maskFull}) }), shoelaceDir},
			cache, sidSystem, ""},
		{"no ACL at all (FAT)", []winDir{{Path: `E:\`, Owner: sidSystem, NoACL: true}, {Path: `E:\cache`, Owner: sidSystem, NoACL: true}},
			`E:\cache\x`, sidSystem, `E:\, above it, lets Everyone (S-1-1-0) do anything with it`},
	} {
		names := map[string]string{sidBob: "bob", sidUsers: "Users", sidAuthUsers: "Authenticated Users", "S-1-1-0": "Everyone"}
		err := judgeWinParents(c.way, c.dir, c.self, func(s string) string { return names[s] + " (" + s + ")" })
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: judgeWinParents = %v\nwant %q", c.name, err, c.want)
		}
	}
}
