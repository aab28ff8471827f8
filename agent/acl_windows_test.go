//go:build windows

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"
)

// An ACL entry that lets a broad group read (or write) is found; one for SYSTEM or
// Administrators, or a denial, is not; an empty ACL lets no one in.
func TestBroadGrant(t *testing.T) {
	for _, c := range []struct {
		sddl   string
		rights uint32
		want   string
	}{
		{"D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)", readRights | writeRights, ""},
		{"D:(A;;FR;;;BU)", readRights, "Users"},
		{"D:(A;;FR;;;BU)", writeRights, ""},
		{"D:(A;;FW;;;AU)", writeRights, "Authenticated Users"},
		{"D:(A;;GA;;;WD)", readRights, "Everyone"},
		{"D:(D;;FA;;;WD)", readRights, ""},
		{"D:", readRights, ""},
	} {
		sd, err := windows.SecurityDescriptorFromString(c.sddl)
		if err != nil {
			t.Fatalf("%s: %v", c.sddl, err)
		}
		if got, err := broadGrant(sd, c.rights); err != nil || got != c.want {
			t.Errorf("broadGrant(%s, %#x) = %q, %v; want %q", c.sddl, c.rights, got, err, c.want)
		}
	}
}

// The cache directory the agent makes keeps its files from other users: its ACL is its own
// (SYSTEM, Administrators, owner), not the one inherited from %ProgramData%.
func TestMkdirPrivate(t *testing.T) {
	if windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil {
		t.Skip("under Wine, whose files carry ACLs made from their Unix modes, not the one CreateDirectory is given")
	}
	dir := filepath.Join(t.TempDir(), "shoelace", "cache")
	if err := mkdirPrivate(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.view.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "web.view.json")} {
		if who, err := othersMay(p, readRights|writeRights); err != nil || who != "" {
			t.Errorf("%s: %q may read or write it (%v)", p, who, err)
		}
	}
	// The directory it made on the way too, as Unix makes it mode 0700.
	for _, p := range []string{filepath.Dir(dir), dir} {
		sd, err := windows.GetNamedSecurityInfo(p, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
		if err != nil {
			t.Fatal(err)
		}
		if ctl, _, err := sd.Control(); err != nil || ctl&windows.SE_DACL_PROTECTED == 0 {
			t.Errorf("the ACL of %s, which the agent made, inherits from its parent: %s", p, sd)
		}
	}
	if err := mkdirPrivate(dir); err != nil {
		t.Fatalf("again: %v", err)
	}
}

// A directory the agent's user (or the agent, as SYSTEM or elevated) made is its own; the check
// of cache_dir's owner passes it.
func TestForeignOwner_OwnDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := mkdirPrivate(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(dir), dir} {
		if who, err := foreignOwner(p); err != nil || who != "" {
			t.Errorf("foreignOwner(%s) = %q, %v; want none", p, who, err)
		}
	}
}

// The directories above a cache_dir in the user's own temp directory pass; one on the way that
// lets Users delete what it holds (FILE_DELETE_CHILD) is refused, named with the right.
func TestCheckCacheParents_Windows(t *testing.T) {
	base := t.TempDir()
	if _, err := checkCacheParents(filepath.Join(base, "cache")); err != nil {
		t.Fatalf("a cache_dir in the test's own directory: %v", err)
	}
	if windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil {
		t.Skip("under Wine, whose files carry ACLs made from their Unix modes, not the one CreateDirectory is given")
	}
	open := filepath.Join(base, "open")
	if err := createDirectory(open, privateDirSDDL+"(A;;0x40;;;BU)"); err != nil {
		t.Fatal(err)
	}
	_, err := checkCacheParents(filepath.Join(open, "cache"))
	if err == nil || !strings.Contains(err.Error(), "Users (S-1-5-32-545) delete or rename what it holds") {
		t.Fatalf("checkCacheParents under a directory whose entries Users may delete = %v", err)
	}
}
