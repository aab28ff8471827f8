package main

import (
	"strings"
	"testing"
)

// kv get and kv rm (without --recurse) of a prefix, as a new user types them for a "directory"
// (kv get appliances/web), said only `key "appliances/web" not found`, though keys lie under
// it; they still exit 3, and now say so and which command lists or deletes them.
func TestE2E_KVGetOrRemoveOfAPrefixNamesWhatLiesUnderIt(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/prefixhint/a", "1")
	c.ok("kv", "put", "appliances/prefixhint/b/c", "2")
	c.fails(exitNotFound, `key "appliances/prefixhint" not found; it is the prefix of 2 keys: shoelace kv ls appliances/prefixhint lists them`,
		"kv", "get", "appliances/prefixhint")
	c.fails(exitNotFound, `key "appliances/prefixhint/b" not found; it is the prefix of 1 key: shoelace kv rm appliances/prefixhint/b --recurse deletes it`,
		"kv", "rm", "appliances/prefixhint/b")
	if got := c.ok("kv", "get", "appliances/prefixhint/b/c"); got != "2" {
		t.Fatalf("kv rm without --recurse deleted the key under the prefix: kv get = %q", got)
	}
	// A key with nothing under it: the message is as before.
	r := c.fails(exitNotFound, `key "appliances/prefixhint/nope" not found`, "kv", "get", "appliances/prefixhint/nope")
	if strings.Contains(r.stderr, "it is the prefix") {
		t.Errorf("kv get of a key with nothing under it: %q", r.stderr)
	}
}

// kv rm --recurse takes a prefix with a trailing '/', as kv ls does and as the API's recursive
// DELETE does (shared/x/): it was refused as a key with an empty last segment. Without
// --recurse it is still a key, and refused.
func TestE2E_KVRemoveRecurseOfAPrefixWithATrailingSlash(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/slashrm/x/a", "1")
	c.ok("kv", "put", "appliances/slashrm/x/b", "2")
	c.ok("kv", "put", "appliances/slashrm/xy", "3")
	c.fails(exitError, "empty", "kv", "rm", "appliances/slashrm/x/")
	r := c.run("kv", "rm", "appliances/slashrm/x/", "--recurse")
	if r.code != 0 || !strings.Contains(r.stderr, "deleted 2 keys") {
		t.Fatalf("kv rm appliances/slashrm/x/ --recurse: %s; want exit 0 and deleted 2 keys", r)
	}
	if got := c.ok("kv", "ls", "appliances/slashrm/"); strings.TrimSpace(got) != "appliances/slashrm/xy" {
		t.Errorf("after the recursive delete of x/, kv ls = %q, want only appliances/slashrm/xy", got)
	}
}
