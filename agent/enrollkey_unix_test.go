//go:build !windows

package agent_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// A key file that is not the agent's own (a link, a named pipe, another user's file, one that
// group or others may read, garbage) is not read through, does not block the first enrollment,
// and is replaced by a new key, saved 0600, which is the one sent; a link's target is left as
// it was.
func TestAgent_RunEnrollKeyFileNotItsOwnReplaced(t *testing.T) {
	planted := strings.Repeat("ab", 32)
	cases := []struct {
		name  string
		plant func(t *testing.T, path, dir string)
	}{
		{"link", func(t *testing.T, path, dir string) {
			if err := os.WriteFile(dir+"/elsewhere", []byte(planted+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(dir+"/elsewhere", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"fifo", func(t *testing.T, path, dir string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"readable by others", func(t *testing.T, path, dir string) {
			if err := os.WriteFile(path, []byte(planted+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"another user's", func(t *testing.T, path, dir string) {
			if os.Getuid() != 0 {
				t.Skip("needs root to give the file away")
			}
			if err := os.WriteFile(path, []byte(planted+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, 54321, 54321); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", func(t *testing.T, path, dir string) {
			if err := os.WriteFile(path, []byte(strings.ToUpper(planted)+"\n"+planted), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "1"})
			a, dir, _ := testAgent(t, srv, header+enrollTemplate)
			if err := os.MkdirAll(dir+"/cache", 0o700); err != nil {
				t.Fatal(err)
			}
			path := agent.EnrollKeyPath(dir+"/cache", "web")
			c.plant(t, path, dir)
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
			waitFor(t, "enrolled", func() bool {
				b, _ := os.ReadFile(agent.InstanceTokenPath(dir+"/cache", "web"))
				return strings.Contains(string(b), `"token":"instance-token-1"`)
			})
			srv.mu.Lock()
			keys := append([]string(nil), srv.enrollKeys...)
			srv.mu.Unlock()
			if len(keys) != 1 || len(keys[0]) != 64 || strings.Trim(keys[0], "0123456789abcdef") != "" || keys[0] == planted {
				t.Fatalf("enrollment keys sent %q, want one new key", keys)
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
				t.Fatalf("key file after: %v, %v", fi, err)
			}
			if got := strings.TrimSpace(read(t, path)); got != keys[0] {
				t.Fatalf("key file holds %q, sent %q", got, keys[0])
			}
			if c.name == "link" {
				if got := read(t, dir+"/elsewhere"); got != planted+"\n" {
					t.Fatalf("the link's target was written: %q", got)
				}
			}
		})
	}
}

// A named pipe at the instance token's name is not read (it would block), and was not replaced
// either (atomicfile does not rename over one): the token got was never saved, and after a
// restart the name stayed held until --instance-stale. It is replaced by the token file.
func TestAgent_RunInstanceTokenFifoReplaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	if err := os.MkdirAll(dir+"/cache", 0o700); err != nil {
		t.Fatal(err)
	}
	path := agent.InstanceTokenPath(dir+"/cache", "web")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the token saved in a file of its own", func() bool {
		fi, err := os.Lstat(path)
		b, _ := os.ReadFile(path)
		return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == 0o600 && strings.Contains(string(b), `"token":"instance-token-1"`)
	})
}
