package atomicfile

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"
)

// noUnnamed is set once an unnamed spare could not be named (unnamed_linux.go): no unnamed
// spare is made or taken after it, and the spares are files with a name.
var noUnnamed atomic.Bool

// spareName is the name of the spare file kept for base (Options.Spare): .<base>.shoelace-spare.
func spareName(base string) string { return "." + base + ".shoelace-spare" }

// stageFile opens the file that Stage writes base's new content to, and returns its name in d:
// when spare is set, the spare kept for base, if one is there to use: an unnamed one (name "":
// Stage names it once it is written) or the file beside the destination, claimed (see
// claimSpare); else a new temp file. empty says that nothing will be written to it: an unnamed
// spare, whose times are those of its making, is not used for it.
func (d *dir) stageFile(base string, spare, empty bool) (*os.File, string, error) {
	if spare && d.ownersOnly() {
		if !empty {
			if f := d.takeUnnamed(base); f != nil {
				return f, "", nil
			}
		}
		if spares {
			if f, name := d.claimSpare(base, empty); f != nil {
				return f, name, nil
			}
		}
	}
	return d.createTemp(base)
}

// claimSpare takes the spare kept for base in d for one install: it renames it to a temp name
// of its own (.<base>.shoelace-N, as createTemp names them, N of 64 bits) and opens it there.
// The rename is the claim: another install of the same destination (`once` beside `run`) that
// looks at the spare at once finds the name gone and creates a temp file, so that two
// installs never write into one file, and what an install renames over the destination is
// the file it wrote. Once claimed, it is a temp file like any other: removed if the install
// fails, and by RemoveLeftovers if its process is killed.
//
// Only a file that is what makeSpare leaves is claimed: a regular file of this process's user,
// empty, with one name and mode 0600, judged by its Lstat before the rename and by the handle
// opened after it (no link followed, no FIFO waited on). The file renamed may be another than
// the one looked at: a new spare, which another install claimed the first and made after its
// rename; as made too, it is as good. Anything else at the spare's name is left as it is, and
// nil is returned: Stage creates a temp file.
//
// With empty (nothing to write), its times are set to now, as a temp file's are those of its
// creation: the spare's are those of the install before, which the file installed would keep
// and so look older than the change (to a program that reloads when the time moves), and a run
// started since would count it, in its check, as a killed run's leftover. A write sets them.
func (d *dir) claimSpare(base string, empty bool) (*os.File, string) {
	spare := spareName(base)
	fi, err := d.root.Lstat(spare)
	if err != nil || !asMade(fi) {
		return nil, ""
	}
	name := tempName(base, rand.Uint64())
	if err := d.root.Rename(spare, name); err != nil {
		return nil, "" // taken by another install since the look
	}
	f, err := d.root.OpenFile(name, os.O_RDWR|noFollow|nonBlock, 0)
	if err != nil {
		return nil, ""
	}
	if now, err := f.Stat(); err != nil || !asMade(now) {
		// Replaced between the look and the rename by something else, which only root or this
		// process's user can do here: left under the temp name, for RemoveLeftovers.
		f.Close()
		return nil, ""
	}
	if empty {
		if now := time.Now(); d.root.Chtimes(name, now, now) != nil {
			f.Close()
			d.root.Remove(name)
			return nil, ""
		}
	}
	return f, name
}

// asMade reports whether fi is of a spare as makeSpare makes it.
func asMade(fi fs.FileInfo) bool {
	uid, _, owned := ownerOf(fi)
	n, counted := linksOf(fi)
	return fi.Mode().IsRegular() && fi.Mode().Perm() == 0o600 && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0 &&
		owned && uid == os.Geteuid() && counted && n == 1 && fi.Size() == 0
}

// makeSpare makes the spare for base in d: an unnamed one where it can (see makeUnnamed), else
// the file beside the destination, empty and mode 0600, when d may hold one and none is there.
// That file is made with O_EXCL, so never through a name that exists: a file there (anything
// planted, or left) is left as it is. A failure costs only the spare: the next install creates
// a temp file. It is not fsynced: whether or not it survives a crash, the install that fills it
// fsyncs it, as it does a temp file.
func (d *dir) makeSpare(base string) {
	if !spares || !d.ownersOnly() || d.makeUnnamed(base) {
		return
	}
	f, err := d.root.OpenFile(spareName(base), os.O_RDWR|os.O_CREATE|os.O_EXCL|createFlags, 0o600)
	if err != nil {
		return
	}
	f.Close()
}

// ownersOnly reports whether no one but d's owner may write in d, and that owner is root or
// this process's user: no one else can put a file at a spare's name there. The mode says it: a
// POSIX ACL that lets another user or group write shows its mask's write bit as the group's.
// And d has no default ACL (see defaultACL): a spare takes it when it is made, and what it
// grants may change before the spare is used.
func (d *dir) ownersOnly() bool {
	fi, err := d.identity()
	if err != nil {
		return false
	}
	uid, _, ok := ownerOf(fi)
	return ok && (uid == 0 || uid == os.Geteuid()) && fi.Mode().Perm()&0o022 == 0 && !d.defaultACL()
}
