//go:build windows

package templates

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"
)

// The agent's token and cache are refused by every name Windows opens them by: in another case,
// through a data stream (token::$DATA, cache::$INDEX_ALLOCATION\view.json), in the \\?\ form or
// by a short (8.3) name; each read the token or the view before.
func TestDenied_WindowsNames(t *testing.T) {
	dir := t.TempDir()
	token, cache := filepath.Join(dir, "token"), filepath.Join(dir, "cache")
	if err := os.WriteFile(token, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	view := filepath.Join(cache, "web.view.json")
	if err := os.WriteFile(view, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &state{t: &Template{opts: Options{AllowFile: true, DenyFiles: []string{token, cache}}}}
	names := []string{
		token, view,
		strings.ToUpper(token), strings.ToUpper(view),
		token + "::$DATA", strings.ToUpper(token) + "::$DATA", strings.ToUpper(view) + "::$DATA",
		cache + `::$INDEX_ALLOCATION\web.view.json`,
		`\\?\` + token, `\\?\` + view,
	}
	buf := make([]uint16, windows.MAX_PATH)
	if n, err := windows.GetShortPathName(windows.StringToUTF16Ptr(view), &buf[0], uint32(len(buf))); err == nil && n > 0 {
		names = append(names, windows.UTF16ToString(buf[:n]))
	}
	for _, name := range names {
		if err := s.denied("file", name); err == nil {
			// Wine has no data streams: a name that opens nothing reads nothing either.
			if _, err := os.ReadFile(name); err == nil {
				t.Errorf("file %s: not refused, and it reads", name)
			}
		}
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("fine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.denied("file", other); err != nil {
		t.Errorf("file %s: %v", other, err)
	}
}
