//go:build !windows

package atomicfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A staged file is checked but not seen at the destination until Install; Discard removes it.
func TestStage_InstallAndDiscard(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	os.WriteFile(dst, []byte("old\n"), 0o644)
	opts := keep()
	checked := ""
	opts.Check = func(staged string) error { b, _ := os.ReadFile(staged); checked = string(b); return nil }
	s, err := atomicfile.Stage(dst, []byte("new\n"), opts)
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if checked != "new\n" {
		t.Fatalf("check saw %q", checked)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old\n" {
		t.Fatalf("destination = %q before Install", b)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "new\n" {
		t.Fatalf("destination = %q after Install", b)
	}
	if err := s.Install(); err == nil {
		t.Fatal("a second Install succeeded")
	}

	s, err = atomicfile.Stage(dst, []byte("newer\n"), keep())
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	s.Discard()
	if b, _ := os.ReadFile(dst); string(b) != "new\n" {
		t.Fatalf("destination = %q after Discard", b)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	if s, err := atomicfile.Stage(dst, []byte("new\n"), keep()); s != nil || err != nil {
		t.Fatalf("Stage of unchanged content = %v, %v; want nil, nil", s, err)
	}
}

// Restore puts back the previous bytes, mode and owner after an install that changed all three.
func TestStage_RestorePutsBackBytesAndAttributes(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	os.WriteFile(dst, []byte("old\n"), 0o640)
	os.Chmod(dst, 0o640)
	_, st := stat(t, dst)
	opts := atomicfile.Options{Perm: 0o600, UID: int(st.Uid), GID: int(st.Gid), Backup: true, KeepPrevious: true}
	if os.Getuid() == 0 {
		opts.UID, opts.GID = 1234, 5678
	}
	s, err := atomicfile.Stage(dst, []byte("new\n"), opts)
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after install %v", fi.Mode().Perm())
	}
	p := s.Previous()
	if p == nil || !p.Existed() {
		t.Fatalf("previous = %+v", p)
	}
	if changed, err := p.Restore(atomicfile.Options{}); err != nil || !changed {
		t.Fatalf("Restore = %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old\n" {
		t.Fatalf("restored content = %q", b)
	}
	fi, st2 := stat(t, dst)
	if fi.Mode().Perm() != 0o640 || st2.Uid != st.Uid || st2.Gid != st.Gid {
		t.Fatalf("restored mode %v owner %d:%d, want 0640 %d:%d", fi.Mode().Perm(), st2.Uid, st2.Gid, st.Uid, st.Gid)
	}
	if b, _ := os.ReadFile(dst + ".bak"); string(b) != "old\n" {
		t.Fatalf(".bak = %q, want the previous content", b)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// Restoring a file that did not exist removes it; a link planted at the name meanwhile is
// replaced (or removed), never written through.
func TestStage_RestoreNewFileAndPlantedLink(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "new.conf")
	s, err := atomicfile.Stage(dst, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if s.Previous().Existed() {
		t.Fatal("previous of a new file existed")
	}
	if changed, err := s.Previous().Restore(atomicfile.Options{}); err != nil || !changed {
		t.Fatalf("Restore = %v, %v", changed, err)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Fatalf("new file not removed: %v", err)
	}

	// An existing file; after the install a link to a victim is planted at its name.
	os.WriteFile(dst, []byte("old\n"), 0o644)
	s, err = atomicfile.Stage(dst, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("victim\n"), 0o644)
	os.Remove(dst)
	os.Symlink(victim, dst)
	if _, err := s.Previous().Restore(atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "victim\n" {
		t.Fatalf("restore wrote through the link: victim = %q", b)
	}
	if fi, err := os.Lstat(dst); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("destination after restore: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old\n" {
		t.Fatalf("restored = %q", b)
	}
}

// A large file is installed whole: the temp file is opened non-blocking on Linux (see
// createFlags), which a regular file's writes ignore.
func TestStage_LargeFileWrittenWhole(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "big.conf")
	data := make([]byte, 8<<20+7)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if _, err := atomicfile.Write(dst, data, keep()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("installed %d bytes (%v), want %d", len(got), err, len(data))
	}
}

// Restore of a file whose mode was 0000 (as /etc/shadow is on Fedora and RHEL) gives it that
// mode again. Before, a mode of 0 was read as "keep the current mode", and the restored file
// kept the mode of the file it replaced (0644 here: readable by everyone).
func TestStage_RestoreModeZero(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "shadow")
	os.WriteFile(dst, []byte("root:$6$secret\n"), 0o600)
	os.Chmod(dst, 0)
	s, err := atomicfile.Stage(dst, []byte("new\n"), atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Previous().Restore(atomicfile.Options{}); err != nil || !changed {
		t.Fatalf("Restore = %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "root:$6$secret\n" {
		t.Fatalf("restored content = %q", b)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != 0 {
		t.Fatalf("restored mode %04o, want 0000", fi.Mode().Perm())
	}
	// Restored again over a file of the same bytes but another mode: the mode is still put back.
	os.Chmod(dst, 0o644)
	if changed, err := s.Previous().Restore(atomicfile.Options{}); err != nil || !changed {
		t.Fatalf("second Restore = %v, %v", changed, err)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != 0 {
		t.Fatalf("restored mode %04o after a second Restore, want 0000", fi.Mode().Perm())
	}
}

// Restore puts back the setuid, setgid and sticky bits the file had, with its permission bits,
// also through what Kept records (NewPrevious: an agent restarted); an install does not give them.
// Before, a file of mode 2755 came back as 0755.
func TestStage_RestoreKeepsSpecialModeBits(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o755 | os.ModeSetgid, 0o755 | os.ModeSetuid, 0o644 | os.ModeSticky} {
		dst := filepath.Join(dir, "tool")
		if err := os.WriteFile(dst, []byte("old\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dst, mode); err != nil {
			t.Fatal(err)
		}
		if fi, _ := stat(t, dst); fi.Mode() != mode {
			t.Skipf("this file system keeps mode %v as %v", mode, fi.Mode())
		}
		s, err := atomicfile.Stage(dst, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
		if err != nil || s == nil {
			t.Fatalf("Stage = %v, %v", s, err)
		}
		if err := s.Install(); err != nil {
			t.Fatal(err)
		}
		if fi, _ := stat(t, dst); fi.Mode() != mode.Perm() {
			t.Fatalf("installed with mode %v, want %v: an install gives no special bits", fi.Mode(), mode.Perm())
		}
		data, perm, uid, gid := s.Previous().Kept()
		for i, p := range []*atomicfile.Previous{s.Previous(), atomicfile.NewPrevious(dst, true, data, perm, uid, gid)} {
			os.Chmod(dst, mode.Perm())
			if changed, err := p.Restore(atomicfile.Options{}); err != nil || !changed {
				t.Fatalf("Restore %d = %v, %v", i, changed, err)
			}
			if fi, _ := stat(t, dst); fi.Mode() != mode || string(mustRead(t, dst)) != "old\n" {
				t.Fatalf("Restore %d: mode %v, want %v", i, fi.Mode(), mode)
			}
		}
		os.Remove(dst)
	}
}
