package atomicfile

import (
	"os"
	"strings"
)

// spareSuffix ends the name of a destination's spare file (Options.Spare): .<base>.shoelace-spare.
const spareSuffix = ".shoelace-spare"

// spareName is the name of the spare file kept for base.
func spareName(base string) string { return "." + base + spareSuffix }

// isSpare reports whether name is the spare of a destination named base.
func isSpare(name, base string) bool {
	rest, ok := strings.CutPrefix(name, "."+base)
	return ok && rest == spareSuffix
}

// stageFile opens the file that Stage writes base's new content to: the spare kept for base
// when spare is set and one is there to use (see openSpare), else a new temp file.
func (d *dir) stageFile(base string, spare bool) (*os.File, string, error) {
	if spare && spares && d.ownersOnly() {
		if f := d.openSpare(base); f != nil {
			return f, spareName(base), nil
		}
	}
	return d.createTemp(base)
}

// openSpare opens the spare kept for base in d, and returns it when it is what makeSpare
// leaves: a regular file of this process's user, empty, with one name and mode 0600. The open
// follows no link and does not block on a FIFO, and it is the file opened that is judged, so
// that nothing planted at the name (a link, another user's file, a hard link to a file kept
// elsewhere, a file with content) is ever written to. Anything else is nil: it is left as it
// is and Stage creates a temp file, as without a spare.
func (d *dir) openSpare(base string) *os.File {
	f, err := d.root.OpenFile(spareName(base), os.O_RDWR|noFollow|nonBlock, 0)
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err == nil {
		uid, _, owned := ownerOf(fi)
		n, counted := linksOf(fi)
		if fi.Mode().IsRegular() && owned && uid == os.Geteuid() && counted && n == 1 &&
			fi.Size() == 0 && fi.Mode().Perm() == 0o600 {
			return f
		}
	}
	f.Close()
	return nil
}

// makeSpare creates the spare for base in d, empty and mode 0600, when d may hold one and none
// is there. It is made with O_EXCL, so never through a name that exists: a file there (anything
// planted, or left) is left as it is. A failure costs only the spare: the next install creates
// a temp file. It is not fsynced: whether or not it survives a crash, the install that fills it
// fsyncs it, as it does a temp file.
func (d *dir) makeSpare(base string) {
	if !spares || !d.ownersOnly() {
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
func (d *dir) ownersOnly() bool {
	fi, err := d.identity()
	if err != nil {
		return false
	}
	uid, _, ok := ownerOf(fi)
	return ok && (uid == 0 || uid == os.Geteuid()) && fi.Mode().Perm()&0o022 == 0
}
