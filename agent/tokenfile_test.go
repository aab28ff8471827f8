//go:build !windows

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
)

// token_file is judged by the file read: a file of mode 0644 swapped in at its name right after
// a 0600 one was checked is never what the token is read from. Before, it was stat'ed by name,
// then read by name, and the token came from a file the check had not seen.
func TestConfig_TokenFileCheckedIsRead(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name, text, mode := tok+".good", "good-token\n", os.FileMode(0o600)
			if i%2 == 1 {
				name, text, mode = tok+".open", "open-token\n", 0o644
			}
			if err := os.WriteFile(name, []byte(text), mode); err != nil {
				t.Error(err)
				return
			}
			os.Chmod(name, mode) // whatever the umask
			if err := os.Rename(name, tok); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var good, refused int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		got, err := cfg.LoadToken()
		switch {
		case err != nil:
			refused++
		case got != "open-token":
			good++ // the good one, or the first one before the swaps began
		default:
			close(stop)
			<-done
			t.Fatalf("token %q read from a file of mode 0644 (%d good reads before)", got, good)
		}
	}
	close(stop)
	<-done
	if good == 0 || refused == 0 {
		t.Fatalf("%d good reads, %d refused: the swap did not race the reads", good, refused)
	}
}

// A symbolic link of another user's at token_file is not followed: its owner chooses the
// file the agent reads its token from. Before, the link was followed and the token read from
// where it led (a root-owned 0600 file passed the check).
func TestLoadConfig_TokenFileThroughAnotherUsersLink(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/link/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: a link of another user's cannot be made; only that the agent's own link is followed is checked")
		if _, err := agent.LoadConfig(path); err != nil {
			t.Fatalf("token_file through the agent's own link refused: %v", err)
		}
		return
	}
	if err := os.Lchown(link, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "refusing to follow the symbolic link "+link) || !strings.Contains(err.Error(), "uid 4242") {
		t.Fatalf("err = %v; want the link of uid 4242 refused", err)
	}
}
