//go:build linux

package agent

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// posixACL is the system.posix_acl_access value of mode 0755 that also lets user uid write:
// its group bits (what stat shows) are then the ACL's mask, rwx, not its group's permission.
func posixACL(uid uint32) []byte {
	const undefined = 0xffffffff
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 7, undefined}, {0x02, 7, uid}, {0x04, 5, undefined}, {0x10, 7, undefined}, {0x20, 5, undefined}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// A directory of root's (root:root, 0755) with an ACL that lets mallory write it shows mode
// 0775: its group bits are the ACL's mask, and root's group has no member but root. Mallory made
// conf in it and owns it: she may rename it, or fill it with links, while root's agent installs
// there. The install is refused, as in a directory a group of two may write; before, the mask was
// read as root's private group's permission and the file was installed in mallory's directory.
func TestInstall_DirectoryAnACLLetsAnotherWriteIsNotPrivate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: mallory cannot be made to own a directory")
		return
	}
	top := t.TempDir()
	for p := top; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755) // for mallory to reach srv
	}
	srv := mkdir(t, filepath.Join(top, "srv"), 0o755)
	if err := unix.Setxattr(srv, "system.posix_acl_access", posixACL(1001), 0); err != nil {
		t.Logf("no POSIX ACLs here: %v", err)
		return
	}
	if fi, _ := os.Stat(srv); fi.Mode().Perm() != 0o775 {
		t.Fatalf("srv mode %v, want the mask in the group bits", fi.Mode())
	}
	conf := filepath.Join(srv, "conf")
	// mallory (uid 1001, who need not have an account here) makes it herself, through the ACL.
	mk := exec.Command("mkdir", conf)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1001, Gid: 1001}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mallory cannot make a directory through the ACL (%v): %s", err, out)
	}
	accountFiles(t, "root:x:0:0:root:/root:/bin/bash\nmallory:x:1001:1001::/:/bin/sh\n", "root:x:0:\nmallory:x:1001:\n")
	x := filepath.Join(conf, "x")
	_, err := atomicfile.Write(x, []byte("secret\n"), atomicfile.Options{Perm: 0o600, UID: 0, GID: 0})
	var fe *atomicfile.ForeignDirError
	if !errors.As(err, &fe) || fe.Dir != conf || !strings.Contains(err.Error(), "may write (mode 0775)") {
		t.Fatalf("install in mallory's directory, in one an ACL lets her write: %v, want it refused naming %s", err, conf)
	}
	if names, _ := os.ReadDir(conf); len(names) != 0 {
		t.Fatalf("written in mallory's directory: %v", names)
	}
}

// The same for cache_dir: a directory above it of root's with an ACL that lets mallory write
// it (shown 0775, root's group private to root) is one others may write, and Validate refuses
// it (she could swap cache_dir for a directory of hers). Before, it was taken as written by root
// alone.
func TestValidate_CacheDirParentWithAnACLLettingAnotherWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: the ACL of a directory of root's cannot be set")
		return
	}
	srv := mkdir(t, filepath.Join(t.TempDir(), "srv"), 0o755)
	if err := unix.Setxattr(srv, "system.posix_acl_access", posixACL(1001), 0); err != nil {
		t.Logf("no POSIX ACLs here: %v", err)
		return
	}
	cache := mkdir(t, filepath.Join(srv, "cache"), 0o700)
	accountFiles(t, "root:x:0:0:root:/root:/bin/bash\nmallory:x:1001:1001::/:/bin/sh\n", "root:x:0:\nmallory:x:1001:\n")
	if _, problem := validateCacheDir(t, cache); !strings.Contains(problem, srv+", above it, may be written by group or others (mode 0775") {
		t.Fatalf("cache_dir under a directory an ACL lets mallory write: got %q", problem)
	}
}

// A templates_dir whose POSIX ACL lets another user write it (its mode shows the mask, 0775,
// root:root) is refused, as one others may write by its mode is; and a link there that another
// user made, to a file of root's, is refused too. The ACL's mask was read as root's private
// group's permission, and the planted link's templates and commands ran as root.
func TestLoadConfig_TemplatesDirACLAndForeignLinkRefused(t *testing.T) {
	dir := t.TempDir()
	tdir := filepath.Join(dir, "templates.d")
	if err := os.Mkdir(tdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tdir, "system.posix_acl_access", posixACL(1001), 0); err != nil {
		t.Logf("no POSIX ACLs here: %v", err)
		return
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte("server: http://h:1\nappliance: a\ntoken: t\ncache_dir: "+dir+"/cache\ntemplates_dir: "+tdir+"\ntemplates:\n  - {contents: x, destination: "+dir+"/out}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "has a POSIX ACL that may let other users write it") || !strings.Contains(err.Error(), "setfacl -b "+tdir) {
		t.Fatalf("templates_dir with an ACL: %v", err)
	}
	if err := unix.Removexattr(tdir, "system.posix_acl_access"); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return // a link of another user's cannot be made
	}
	other := filepath.Join(dir, "root-other.yaml")
	if err := os.WriteFile(other, []byte("- {contents: y, destination: "+dir+"/planted}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(tdir, "evil.yaml")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 1001, 1001); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), link+" is a symbolic link made by uid 1001") {
		t.Fatalf("a link another user made: %v", err)
	}
	if err := os.Lchown(link, 0, 0); err != nil {
		t.Fatal(err)
	}
	if cfg, err := LoadConfig(path); err != nil || len(cfg.Templates) != 2 {
		t.Fatalf("root's own link: %v", err)
	}
}
