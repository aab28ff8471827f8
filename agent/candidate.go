package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// While a file may hold a rollout's candidate's content, what the candidate replaced there
// (tmpl.cand) is kept in cache_dir too: `run` writes the record (fsynced, mode 0600) before the
// candidate's file is renamed into place, updates it when a file no longer holds anything of
// the candidate's, and reads it back at its next start, so that the halt of the rollout undoes
// the candidate's files after a restart as it does without one. The previous bytes may be
// secrets: they are in the agent's private cache_dir only, never logged. With them go the
// SHA-256s of what the candidate installed (candidateFile.sums): the undo puts a file back only
// while it holds one of them, never over what an operator wrote there since.

// maxCandidateBytes bounds the previous bytes the record keeps, all files together: a file
// over it is undone only while the run that installed the candidate lasts.
const maxCandidateBytes = 16 << 20

// candidateEntry is what a candidate replaced at one template's destination.
type candidateEntry struct {
	Destination string `json:"destination"` // the template's
	Rollout     string `json:"rollout"`
	Path        string `json:"path"` // the file replaced (Previous.Path: links resolved)
	Existed     bool   `json:"existed"`
	Data        []byte `json:"data,omitempty"`
	Mode        uint32 `json:"mode,omitempty"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
	// Installed are the SHA-256s (hex) of what the candidate installed there (candidateFile.sums);
	// a record of an agent before them has none.
	Installed []string `json:"installed,omitempty"`
}

type candidateRecord struct {
	Appliance string           `json:"appliance"`
	Files     []candidateEntry `json:"files"`
}

// CandidatePath is the file holding what the files of a rollout's candidate replaced, for
// appliance's templates.
func CandidatePath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".candidate.json")
}

// setCandidate sets t.cand to c (an undo done or no longer wanted); the pass records the
// changes once, after its undos (flushCandidates), not one write and fsync per file. A crash
// before that write leaves the entries of files undone already in the record: their
// fingerprint (sums) no longer matches, and the next start drops them instead of undoing them
// again.
func (a *Agent) setCandidate(t *tmpl, c *candidateFile) {
	if t.cand == c {
		return
	}
	t.cand = c
	a.candidatesUnsaved = true
}

// flushCandidates records the changes setCandidate made, if the record does not hold them yet.
func (a *Agent) flushCandidates() {
	if a.candidatesUnsaved {
		a.recordCandidates()
	}
}

// recordCandidates records the cand of a's templates in cache_dir while Run runs. A record that
// cannot be written is logged, not fatal: the undo is kept in memory.
func (a *Agent) recordCandidates() {
	a.candidatesUnsaved = false
	if !a.recordOwed {
		return
	}
	if err := a.saveCandidates(); err != nil {
		a.log.Warn("undo of the rollout's candidate not recorded: if the agent restarts before the rollout ends, its files are not undone",
			"error", err.Error())
	}
}

// saveCandidates writes the record of a's templates' cand (none removes it). The removal is not
// fsynced: a crash right after it may bring back an undo of what the file holds already.
func (a *Agent) saveCandidates() error {
	path := CandidatePath(a.cfg.cacheDir(), a.cfg.Appliance)
	var files []candidateEntry
	total := 0
	for _, t := range a.tmpls {
		c := t.cand
		if c == nil {
			continue
		}
		data, perm, uid, gid := c.prev.Kept()
		if total+len(data) > maxCandidateBytes {
			if !c.unrecorded {
				c.unrecorded = true
				a.log.Warn("undo of the rollout's candidate not recorded: the files it replaced are over 16 MiB; if the agent restarts before the rollout ends, this file is not undone",
					"template", t.name(), "rollout", c.rollout, "bytes", len(data))
			}
			continue
		}
		total += len(data)
		files = append(files, candidateEntry{Destination: t.cfg.Destination, Rollout: c.rollout, Path: c.prev.Path(), Existed: c.prev.Existed(),
			Data: data, Mode: uint32(perm), UID: uid, GID: gid, Installed: c.sums})
	}
	return saveRecord(a.cfg.cacheDir(), path, candidateWhat, candidateRecord{Appliance: a.cfg.Appliance, Files: files}, len(files) > 0)
}

// candidateWhat names the record in errors.
const candidateWhat = "undo records of the rollout's candidate files"

func (r *candidateRecord) owner() string { return r.Appliance }

// loadCandidates reads the record of appliance's candidate files; none when there is none.
func loadCandidates(cacheDir, appliance string) ([]candidateEntry, error) {
	path := CandidatePath(cacheDir, appliance)
	var r candidateRecord
	// Base64 makes 4 bytes of 3, and each entry adds its names.
	if err := loadRecord(path, 2*maxCandidateBytes, candidateWhat, appliance, &r); err != nil {
		return nil, err
	}
	total := 0
	for _, f := range r.Files {
		if total += len(f.Data); total > maxCandidateBytes {
			return nil, fmt.Errorf("%s holds over %d MiB of files: not a record the agent wrote", path, maxCandidateBytes>>20)
		}
	}
	return r.Files, nil
}

// loadCandidatesAtStart takes over the undo of a rollout's candidate files that a previous run
// recorded. Only a configured template's destination is undone, and only the file it names. An
// entry dropped is dropped from the record too: a template given its destination again later
// must not undo an old rollout over what the file holds by then.
func (a *Agent) loadCandidatesAtStart() {
	files, err := loadCandidates(a.cfg.cacheDir(), a.cfg.Appliance)
	if err != nil {
		a.log.Error("undo record of the rollout's candidate unreadable; its files are not undone", "error", err.Error())
		return
	}
	dropped := false
	defer func() {
		if !dropped {
			return
		}
		if err := a.saveCandidates(); err != nil {
			a.log.Warn("undo record of the rollout's candidate not rewritten without what was dropped", "error", err.Error())
		}
	}()
	for _, f := range files {
		var t *tmpl
		for _, c := range a.tmpls {
			if c.cfg.Destination == f.Destination {
				t = c
				break
			}
		}
		if t == nil {
			a.log.Warn("undo of the rollout's candidate dropped: no template has its destination any more", "template", f.Destination, "rollout", f.Rollout)
			dropped = true
			continue
		}
		if !sameFile(f.Path, f.Destination) {
			a.log.Warn("undo of the rollout's candidate dropped: its destination leads to another file now", "template", f.Destination, "rollout", f.Rollout)
			dropped = true
			continue
		}
		t.cand = f.undo()
		t.cand.rollout = f.Rollout
		a.log.Info("undo of the rollout's candidate kept from the last run", "template", t.name(), "rollout", f.Rollout, "existed", f.Existed)
	}
}

// keepCandidates hands the undo of a rollout's candidate files that old (the templates before
// a config reload) held to the templates that have their destination now, and records what is
// left: the undo survives a reload as it survives a restart. A record moved (cache_dir or the
// appliance changed) is removed at oldRecord, its name before: a later start there must not
// take an undo that is done or kept elsewhere.
func (a *Agent) keepCandidates(old []*tmpl, oldRecord string) {
	kept := false
	for _, o := range old {
		if o.cand == nil {
			continue
		}
		kept = true
		i := slices.IndexFunc(a.tmpls, func(t *tmpl) bool { return t.cfg.Destination == o.cfg.Destination })
		if i < 0 {
			a.log.Warn("undo of the rollout's candidate dropped: no template has its destination any more", "template", o.name(), "rollout", o.cand.rollout)
			continue
		}
		a.tmpls[i].cand = o.cand
	}
	if !kept {
		return
	}
	if oldRecord == CandidatePath(a.cfg.cacheDir(), a.cfg.Appliance) {
		a.recordCandidates()
		return
	}
	if err := a.saveCandidates(); err != nil {
		a.log.Warn("undo of the rollout's candidate not recorded: if the agent restarts before the rollout ends, its files are not undone",
			"error", err.Error())
		return
	}
	if err := os.Remove(oldRecord); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("undo record of the rollout's candidate not removed from where the config had it before", "file", oldRecord, "error", err.Error())
	}
}

// sameFile says whether path is dest, or where dest's links lead now. A link at dest's name
// now leads elsewhere than a path recorded as dest itself: the link is not the file recorded.
func sameFile(path, dest string) bool {
	if fi, err := os.Lstat(dest); path == dest && (err != nil || fi.Mode()&fs.ModeSymlink == 0) {
		return true
	}
	r, err := filepath.EvalSymlinks(dest)
	return err == nil && r == path
}

// maxCandidateSums bounds candidateFile.sums: a rollback of a failed reload puts back what the
// candidate installed before, so a few of the latest are kept, not only the last.
const maxCandidateSums = 8

// candidateSum is the fingerprint of output, as candidateFile.sums keeps it.
func candidateSum(output []byte) string {
	s := sha256.Sum256(output)
	return hex.EncodeToString(s[:])
}

// withSum returns c (nil: a new one of rollout and prev) holding sum as the latest of what its
// candidate installed; c itself is left as it is, so that a caller may put it back.
func withSum(c *candidateFile, rollout string, prev *atomicfile.Previous, sum string) *candidateFile {
	n := &candidateFile{rollout: rollout, prev: prev}
	if c != nil {
		n.prev, n.unrecorded = c.prev, c.unrecorded
		n.sums = slices.DeleteFunc(slices.Clone(c.sums), func(s string) bool { return s == sum })
	}
	n.sums = append(n.sums, sum)
	if len(n.sums) > maxCandidateSums {
		n.sums = n.sums[len(n.sums)-maxCandidateSums:]
	}
	return n
}

// What the destination of a candidate's undo holds now (candidateHeld).
const (
	heldCandidate = iota // what the candidate installed (or not known: a record without sums)
	heldPrevious         // what the undo puts back already (a halt done before a crash)
	heldOther            // anything else: the operator's
)

// candidateHeld says what c's file holds now: the file is read (never through a link), and
// compared with what c's candidate installed there and with what it replaced.
func candidateHeld(c *candidateFile) (int, error) {
	if len(c.sums) == 0 {
		return heldCandidate, nil
	}
	fi, err := os.Lstat(c.prev.Path())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !c.prev.Existed() {
			return heldPrevious, nil
		}
		return heldOther, nil
	case err != nil:
		return 0, err
	case !fi.Mode().IsRegular() || fi.Size() > templates.DefaultMaxOutputBytes:
		return heldOther, nil // no render writes it: not the candidate's
	}
	// Never through a link (one swapped in since the Lstat fails the read: tried again later).
	data, _, err := atomicfile.ReadRegular(nil, c.prev.Path(), templates.DefaultMaxOutputBytes+1, nil)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", c.prev.Path(), err)
	}
	if slices.Contains(c.sums, candidateSum(data)) {
		return heldCandidate, nil
	}
	if prev, _, _, _ := c.prev.Kept(); c.prev.Existed() && bytes.Equal(data, prev) {
		return heldPrevious, nil
	}
	return heldOther, nil
}

// candidateReplaced says whether was, what an install of another rollout's candidate replaces,
// is what c's candidate installed (a record without fingerprints: taken to be): the file the
// undo of c puts back, the same file.
func candidateReplaced(c *candidateFile, was *atomicfile.Previous) bool {
	if !was.Existed() || was.Path() != c.prev.Path() {
		return false
	}
	data, _, _, _ := was.Kept()
	return len(c.sums) == 0 || slices.Contains(c.sums, candidateSum(data))
}
