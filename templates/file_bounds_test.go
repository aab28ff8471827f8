//go:build !windows

package templates

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFile_Bounded: file reads regular files of at most the output limit. A device such as
// /dev/zero (which would fill memory) and a named pipe (whose read would block this render and
// every one after it) fail the render at once, naming the file; so does a file over the limit.
func TestFile_Bounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte("0123456789X"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{ModeNative, ModeConsulTemplate} {
		opts := Options{AllowFile: true, Functions: mode, MaxOutputBytes: 10}
		for _, tc := range []struct{ name, want string }{
			{"/dev/zero", "/dev/zero is not a regular file"},
			{fifo, fifo + " is not a regular file"},
			{big, big + " is over 10 bytes"},
		} {
			done := make(chan error, 1)
			go func() {
				_, err := mustParse(t, fmt.Sprintf("{{ file %q }}", tc.name), opts).Execute(Data{})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: file %s: %v, want %q", mode, tc.name, err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatalf("%s: file %s still reading after a minute", mode, tc.name)
			}
		}
		res, err := mustParse(t, fmt.Sprintf("{{ file %q }}", small), opts).Execute(Data{})
		if err != nil || string(res.Output) != "0123456789" {
			t.Errorf("%s: file of 10 bytes: %q, %v", mode, res.Output, err)
		}
	}
}

// TestExecuteTemplate_NestedBuffersBounded: the output limit bounds what the buffers of nested
// executeTemplate calls hold together, since they are alive at once: 100 levels that each hold
// just under the limit would otherwise hold 100 times it (6 GiB at the default 64 MiB).
func TestExecuteTemplate_NestedBuffersBounded(t *testing.T) {
	text := `{{define "a"}}{{repeat 600 "x"}}{{if lt (len .) 3}}{{executeTemplate "a" (append . 1) | len}}{{end}}{{end}}{{executeTemplate "a" list}}`
	_, err := mustParse(t, text, Options{MaxOutputBytes: 1000}).Execute(Data{})
	if !errors.Is(err, ErrOutputTooLarge) {
		t.Fatalf("nested buffers of 600 bytes each under a limit of 1000: %v, want ErrOutputTooLarge", err)
	}
	// Within the limit, what a nested call returns is written once it has returned.
	res, err := mustParse(t, text, Options{MaxOutputBytes: 1300}).Execute(Data{})
	if err == nil {
		t.Fatalf("1300: rendered %d bytes, want a failure (its four levels hold 2400 bytes at once)", len(res.Output))
	}
	res, err = mustParse(t, text, Options{MaxOutputBytes: 2400}).Execute(Data{})
	if err != nil || len(res.Output) != 603 {
		t.Fatalf("2400: %v, %d bytes", err, len(res.Output))
	}
}

// The agent's token is refused by another name of the same file (a hard link) too, as on Windows
// by its other names (denied_windows_test.go): the path alone let it be read.
func TestDenied_SameFile(t *testing.T) {
	dir := t.TempDir()
	token, alias := filepath.Join(dir, "token"), filepath.Join(dir, "alias")
	if err := os.WriteFile(token, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(token, alias); err != nil {
		t.Skip(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("fine"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &state{t: &Template{opts: Options{AllowFile: true, DenyFiles: []string{token, filepath.Join(dir, "cache")}}}}
	if err := s.denied("file", alias); err == nil || !strings.Contains(err.Error(), "not for templates") {
		t.Errorf("file %s, a hard link of the token: %v, want a refusal", alias, err)
	}
	if err := s.denied("file", other); err != nil {
		t.Errorf("file %s: %v", other, err)
	}
}

// TestFile_DeniedByTheFileOpened: file judges the file it opened, not only the name it was
// given. A local user who may write a directory that a template reads a file from swapped a
// symbolic link there between the harmless file and the agent's token (or a file of its
// cache): the name was looked at while it led to the harmless file and opened once it led to
// the token, which the render then wrote out (150 of the 5000 renders of this loop); and a hard
// link of a file in cache_dir, whose path and directories match neither, read the view.
func TestFile_DeniedByTheFileOpened(t *testing.T) {
	dir := t.TempDir()
	token, cache := filepath.Join(dir, "token"), filepath.Join(dir, "cache")
	if err := os.WriteFile(token, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	view := filepath.Join(cache, "web.json")
	if err := os.WriteFile(view, []byte("view"), 0o600); err != nil {
		t.Fatal(err)
	}
	harmless := filepath.Join(dir, "harmless")
	if err := os.WriteFile(harmless, []byte("fine"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{AllowFile: true, DenyFiles: []string{token, cache}}

	hard := filepath.Join(dir, "view-link")
	if err := os.Link(view, hard); err != nil {
		t.Skip(err)
	}
	if res, err := mustParse(t, fmt.Sprintf("{{ file %q }}", hard), opts).Execute(Data{}); err == nil || !strings.Contains(err.Error(), "not for templates") {
		t.Errorf("file %s, a hard link of a file in cache_dir: %q, %v; want a refusal", hard, res.Output, err)
	}

	users := filepath.Join(dir, "users")
	if err := os.Mkdir(users, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(users, "app.conf")
	if err := os.Symlink(harmless, link); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // the local user: the link leads to the harmless file, then to the token or the view
		defer close(done)
		tmp := filepath.Join(users, "tmp")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, target := range []string{harmless, []string{token, view}[i%2]} {
				_ = os.Remove(tmp)
				_ = os.Symlink(target, tmp)
				_ = os.Rename(tmp, link)
			}
		}
	}()
	tmpl := mustParse(t, fmt.Sprintf("{{ file %q }}", link), opts)
	leaks, fine := 0, 0
	for i := 0; i < 5000; i++ {
		res, err := tmpl.Execute(Data{})
		switch {
		case err == nil && string(res.Output) == "fine":
			fine++
		case err == nil:
			leaks++
		case !strings.Contains(err.Error(), "not for templates") && !errors.Is(err, os.ErrNotExist):
			t.Errorf("file %s: %v", link, err)
		}
	}
	close(stop)
	<-done
	if leaks > 0 {
		t.Errorf("%d of 5000 renders read the token or the view through a link swapped after the check (%d read the harmless file)", leaks, fine)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(harmless, link); err != nil {
		t.Fatal(err)
	}
	if res, err := tmpl.Execute(Data{}); err != nil || string(res.Output) != "fine" {
		t.Errorf("file %s, leading to a file of no one's: %q, %v", link, res.Output, err)
	}
}

// TestFile_FIFOSwappedInAfterTheLook: file looks at the name (a regular file) and then opens
// it; a local user who may write the directory turned a link there to a named pipe in between,
// and the open, which waits for a writer, held the render, and every render of the agent after
// it, for ever (within a few hundred of these renders). It opens without blocking now, and the
// pipe fails the render as not a regular file.
func TestFile_FIFOSwappedInAfterTheLook(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	harmless := filepath.Join(dir, "harmless")
	if err := os.WriteFile(harmless, []byte("fine"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "app.conf")
	if err := os.Symlink(harmless, link); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tmp := filepath.Join(dir, "tmp")
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, target := range []string{harmless, fifo} {
				_ = os.Remove(tmp)
				_ = os.Symlink(target, tmp)
				_ = os.Rename(tmp, link)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	tmpl := mustParse(t, fmt.Sprintf("{{ file %q }}", link), Options{AllowFile: true})
	finished := make(chan error, 1)
	go func() {
		for i := 0; i < 5000; i++ {
			res, err := tmpl.Execute(Data{})
			if err != nil && !strings.Contains(err.Error(), "not a regular file") {
				finished <- err
				return
			}
			if err == nil && string(res.Output) != "fine" {
				finished <- fmt.Errorf("read %q", res.Output)
				return
			}
		}
		finished <- nil
	}()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a render still blocked after 30s")
	}
}
