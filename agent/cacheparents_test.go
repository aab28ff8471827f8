//go:build !windows

package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// validateCacheDir validates a minimal config whose cache_dir is dir, returning the config and
// the problems found with cache_dir ("" when none).
func validateCacheDir(t *testing.T, dir string) (*Config, string) {
	t.Helper()
	c := &Config{Server: "http://127.0.0.1:1", Token: "x", Appliance: "web", CacheDir: dir,
		Templates: []Template{{Contents: "x", Destination: filepath.Join(t.TempDir(), "x")}}}
	err := c.Validate()
	if err == nil {
		return c, ""
	}
	var found []string
	for _, p := range err.(*ConfigError).Problems {
		if strings.Contains(p, "cache_dir") {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		t.Fatalf("problems other than cache_dir's: %v", err)
	}
	return c, strings.Join(found, "\n")
}

func mkdir(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // chmod: the umask must not decide
		t.Fatal(err)
	}
	return dir
}

// accountFiles points privateGroup at a passwd and a group file of the test's.
func accountFiles(t *testing.T, passwd, group string) {
	t.Helper()
	dir := t.TempDir()
	oldP, oldG := passwdFile, groupFile
	passwdFile, groupFile = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	t.Cleanup(func() { passwdFile, groupFile = oldP, oldG })
	os.WriteFile(passwdFile, []byte(passwd), 0o644)
	os.WriteFile(groupFile, []byte(group), 0o644)
}

// A directory above cache_dir that group or others may write, without the sticky bit, is a
// config error naming it: whoever may write it could swap cache_dir for a directory of theirs
// after the check, and root's agent would render the view they put there.
func TestValidate_CacheDirParentWritableByOthers(t *testing.T) {
	base := t.TempDir()
	shared := mkdir(t, filepath.Join(base, "shared"), 0o777)
	cache := mkdir(t, filepath.Join(shared, "cache"), 0o700)
	_, problem := validateCacheDir(t, cache)
	if !strings.Contains(problem, shared+", above it, may be written by group or others (mode 0777, no sticky bit)") {
		t.Fatalf("cache_dir in a directory others may write: got %q", problem)
	}
	// The same two levels up, and for a cache_dir not made yet.
	mkdir(t, filepath.Join(shared, "a", "b"), 0o755)
	if _, problem := validateCacheDir(t, filepath.Join(shared, "a", "b", "cache")); !strings.Contains(problem, shared+", above it") {
		t.Fatalf("a directory others may write two levels up: got %q", problem)
	}
	os.Chmod(shared, 0o757)
	if _, problem := validateCacheDir(t, filepath.Join(shared, "new", "cache")); !strings.Contains(problem, shared+", above it, may be written by group or others (mode 0757") {
		t.Fatalf("a cache_dir to be made in a directory others may write: got %q", problem)
	}
	os.Chmod(shared, 0o755)
	if _, problem := validateCacheDir(t, cache); problem != "" {
		t.Fatalf("the same tree once no one else may write it: %s", problem)
	}
}

// A group-writable directory is accepted when its group has no member but its owner (a user
// private group, under which a umask of 002 is the default): make run in a checkout of such a
// user's works. A group of others, or one the account files do not show, is refused.
func TestValidate_CacheDirParentPrivateGroup(t *testing.T) {
	base := t.TempDir()
	checkout := mkdir(t, filepath.Join(base, "checkout"), 0o775)
	cache := mkdir(t, filepath.Join(checkout, "run", "cache"), 0o700)
	os.Chmod(filepath.Dir(cache), 0o700)
	fi, err := os.Stat(checkout)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, _ := atomicfile.Owner(fi)
	u, g := strconv.Itoa(uid), strconv.Itoa(gid)
	refused := checkout + ", above it, may be written by group or others (mode 0775, no sticky bit)"
	for _, tc := range []struct {
		name, passwd, group string
		ok                  bool
	}{
		{"private group", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\n", "dev:x:" + g + ":\n", true},
		{"private group listing its user", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\n", "# comment\n\ndev:x:" + g + ":dev\n", true},
		{"another member", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\n", "dev:x:" + g + ":dev,bob\n", false},
		{"another user's primary group", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\nbob:x:4242:" + g + "::/home/bob:/bin/sh\n", "dev:x:" + g + ":\n", false},
		{"a group of no one", "dev:x:" + u + ":4243::/home/dev:/bin/sh\n", "staff:x:" + g + ":\n", false},
		{"group not in the files", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\n", "other:x:4243:\n", false},
		{"entries from elsewhere", "dev:x:" + u + ":" + g + "::/home/dev:/bin/sh\n+::::::\n", "dev:x:" + g + ":\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accountFiles(t, tc.passwd, tc.group)
			_, problem := validateCacheDir(t, cache)
			if tc.ok && problem != "" {
				t.Fatalf("refused: %s", problem)
			}
			if !tc.ok && !strings.Contains(problem, refused) {
				t.Fatalf("got %q, want %q", problem, refused)
			}
		})
	}
	// Writable by others too: no group makes that safe.
	accountFiles(t, "dev:x:"+u+":"+g+"::/home/dev:/bin/sh\n", "dev:x:"+g+":\n")
	os.Chmod(checkout, 0o777)
	if _, problem := validateCacheDir(t, cache); !strings.Contains(problem, "(mode 0777, no sticky bit)") {
		t.Fatalf("a directory others may write accepted for its private group: %q", problem)
	}
}

// A sticky directory that others may write (as /tmp) may be on the way when the entry under it
// is the agent's: others cannot rename it. One that does not exist yet passes, and the agent
// makes it and judges what it made: whoever makes it first owns it (another user's is refused
// then; TestValidate_CacheDirParentOfAnotherUser, as root).
func TestValidate_CacheDirUnderStickyDirectory(t *testing.T) {
	tmp := mkdir(t, filepath.Join(t.TempDir(), "tmp"), 0o777|os.ModeSticky)
	cache := mkdir(t, filepath.Join(tmp, "shoelace", "cache"), 0o700)
	if _, problem := validateCacheDir(t, cache); problem != "" {
		t.Fatalf("cache_dir in the agent's directory under a sticky one: %s", problem)
	}
	if _, problem := validateCacheDir(t, mkdir(t, filepath.Join(tmp, "cache"), 0o700)); problem != "" {
		t.Fatalf("cache_dir itself in a sticky directory: %s", problem)
	}
	missing := filepath.Join(tmp, "later", "cache")
	if _, problem := validateCacheDir(t, missing); problem != "" {
		t.Fatalf("a cache_dir to be made in a sticky directory: %s", problem)
	}
	if err := mkdirPrivate(missing); err != nil {
		t.Fatalf("making it: %v", err)
	}
	if fi, err := os.Stat(missing); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v", fi, err)
	}
	// Something else put there in between (a file, a directory others may write): refused.
	other := filepath.Join(tmp, "other", "cache")
	if _, problem := validateCacheDir(t, other); problem != "" {
		t.Fatalf("a cache_dir to be made in a sticky directory: %s", problem)
	}
	mkdir(t, filepath.Join(tmp, "other"), 0o777)
	if err := mkdirPrivate(other); err == nil || !strings.Contains(err.Error(), "may be written by group or others") {
		t.Fatalf("a cache_dir made under a directory others may write, put there after the check: %v", err)
	}
}

// Links on the way to cache_dir are followed, and the directories judged are those they lead
// to; the agent then uses the resolved path, so that a link swapped later cannot move it.
func TestValidate_CacheDirThroughALink(t *testing.T) {
	base := t.TempDir()
	realDir := mkdir(t, filepath.Join(base, "real"), 0o755)
	cache := mkdir(t, filepath.Join(realDir, "cache"), 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(realDir, link); err != nil {
		t.Fatal(err)
	}
	c, problem := validateCacheDir(t, filepath.Join(link, "cache"))
	if problem != "" {
		t.Fatalf("cache_dir through a link to a safe directory: %s", problem)
	}
	if c.CacheDir != filepath.Join(link, "cache") || c.cacheDir() != cache {
		t.Fatalf("CacheDir %s, used %s; want %s as written and %s used", c.CacheDir, c.cacheDir(), filepath.Join(link, "cache"), cache)
	}
	// A link to a directory others may write leads to a refusal naming that directory.
	shared := mkdir(t, filepath.Join(base, "shared"), 0o777)
	mkdir(t, filepath.Join(shared, "cache"), 0o700)
	bad := filepath.Join(base, "bad")
	if err := os.Symlink(shared, bad); err != nil {
		t.Fatal(err)
	}
	if _, problem := validateCacheDir(t, filepath.Join(bad, "cache")); !strings.Contains(problem, shared+", above it, may be written by group or others") {
		t.Fatalf("cache_dir through a link into a directory others may write: got %q", problem)
	}
	// The agent's files go where Validate judged, not where the link leads now.
	if err := SaveCache(c.cacheDir(), Cached{Appliance: "web", Store: "s", Revision: 1, Keys: map[string]string{"a": "b"}}); err != nil {
		t.Fatal(err)
	}
	os.Remove(link)
	os.Symlink(shared, link)
	if got, err := LoadCache(c.cacheDir(), "web"); err != nil || got.Revision != 1 {
		t.Fatalf("the cache through the path judged: %v, %v", got, err)
	}
}

// Directories and links of another user on the way to cache_dir are refused (root gives them
// another owner here).
func TestValidate_CacheDirParentOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory another owner")
	}
	base := t.TempDir()
	home := mkdir(t, filepath.Join(base, "home", "bob"), 0o755)
	os.Chown(home, 4242, 4242)
	cache := mkdir(t, filepath.Join(home, "cache"), 0o700) // root's, in bob's directory
	if _, problem := validateCacheDir(t, cache); !strings.Contains(problem, home+", above it, is owned by uid 4242, neither root nor the agent's user (uid 0)") {
		t.Fatalf("root's cache_dir in another user's directory: got %q", problem)
	}
	// In a sticky directory, an entry of another user's on the way.
	tmp := mkdir(t, filepath.Join(base, "tmp"), 0o777|os.ModeSticky)
	bobs := mkdir(t, filepath.Join(tmp, "bobs"), 0o755)
	os.Chown(bobs, 4242, 4242)
	if _, problem := validateCacheDir(t, mkdir(t, filepath.Join(bobs, "cache"), 0o700)); !strings.Contains(problem, bobs+" is owned by uid 4242") {
		t.Fatalf("cache_dir under another user's entry of a sticky directory: got %q", problem)
	}
	// A link of another user's on the way is not followed.
	safe := mkdir(t, filepath.Join(base, "safe"), 0o755)
	mkdir(t, filepath.Join(safe, "cache"), 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(safe, link)
	os.Lchown(link, 4242, 4242)
	if _, problem := validateCacheDir(t, filepath.Join(link, "cache")); !strings.Contains(problem, "refusing to follow the symbolic link "+link) {
		t.Fatalf("cache_dir through another user's link: got %q", problem)
	}
}
