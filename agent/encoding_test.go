package agent

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// FuzzUTF8Text: utf8Text never panics, and what it returns is the file's text with nothing
// lost or made up: from a file with a UTF-16 byte order mark, valid UTF-8 that, written back
// as UTF-16 with that mark, is the file byte for byte; from one with a UTF-8 mark, the rest as
// it is; from any other, the bytes as they are. A lone surrogate (half of a pair) was read as
// U+FFFD, so that a file yaml.v3 had refused was taken with a character it does not hold. The
// seeds are in testdata/fuzz/FuzzUTF8Text.
func FuzzUTF8Text(f *testing.F) {
	for _, s := range []string{"", "a: b\n", "\ufeffa: b\n", "\xff\xfea\x00:\x00 \x00b\x00", "\xfe\xff\x00a\x00:\x00 \x00b", "\xff\xfe=\xd8\x00\xde"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := utf8Text(b)
		if err != nil {
			if out != nil {
				t.Fatalf("utf8Text(%q) = %q and an error: %v", b, out, err)
			}
			return
		}
		switch {
		case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
			if !bytes.Equal(out, b[3:]) {
				t.Fatalf("utf8Text(%q) = %q, want the bytes after the mark", b, out)
			}
		case bytes.HasPrefix(b, []byte{0xff, 0xfe}), bytes.HasPrefix(b, []byte{0xfe, 0xff}):
			if !utf8.Valid(out) {
				t.Fatalf("utf8Text(%q) = %q: not UTF-8", b, out)
			}
			back := b[:2:2]
			for _, u := range utf16.Encode([]rune(string(out))) {
				if b[0] == 0xff {
					back = append(back, byte(u), byte(u>>8))
				} else {
					back = append(back, byte(u>>8), byte(u))
				}
			}
			if !bytes.Equal(back, b) {
				t.Fatalf("utf8Text(%q) = %q, which is %q as UTF-16: not the file's text", b, out, back)
			}
		default:
			if !bytes.Equal(out, b) || bytes.IndexByte(b, 0) >= 0 {
				t.Fatalf("utf8Text(%q) = %q, want the bytes as they are (and no NUL)", b, out)
			}
		}
	})
}

// A lone surrogate in a UTF-16 file is refused, saying where; a pair is the character it
// encodes.
func TestUTF8Text_LoneSurrogate(t *testing.T) {
	for name, b := range map[string][]byte{
		"high alone":    {0xff, 0xfe, 'a', 0, ':', 0, ' ', 0, 0x00, 0xd8, 'b', 0},
		"high at end":   {0xff, 0xfe, 'a', 0, 0x00, 0xd8},
		"low alone":     {0xff, 0xfe, 'a', 0, 0x00, 0xdc, 'b', 0},
		"big-endian":    {0xfe, 0xff, 0, 'a', 0xd8, 0x00, 0, 'b'},
		"two high":      {0xff, 0xfe, 0x00, 0xd8, 0x00, 0xd8, 0x00, 0xdc},
		"low then high": {0xff, 0xfe, 0x00, 0xdc, 0x00, 0xd8},
	} {
		if out, err := utf8Text(b); err == nil || !strings.Contains(err.Error(), "half of a surrogate pair") {
			t.Errorf("%s: utf8Text = %q, %v; want a refusal", name, out, err)
		}
	}
	if out, err := utf8Text([]byte{0xff, 0xfe, 0x3d, 0xd8, 0x00, 0xde, '\n', 0}); err != nil || string(out) != "😀\n" {
		t.Errorf("a surrogate pair: %q, %v", out, err)
	}
	if _, err := ParseConfig("agent.yaml", []byte{0xff, 0xfe, 'a', 0, ':', 0, ' ', 0, 0x00, 0xd8, '\n', 0}); err == nil ||
		err.Error() != "agent.yaml is UTF-16 (it starts with a byte order mark) with a broken character at byte 8 (0xD800, half of a surrogate pair): save it as UTF-8" {
		t.Errorf("a config with a lone surrogate: %v", err)
	}
}

// A file saved as UTF-32 (PowerShell's Out-File -Encoding utf32) says so: read as UTF-16 by its
// mark's first two bytes, it gave "control characters are not allowed" with no line, the
// message that UTF-16 without its mark gave before utf8Text; big-endian said "UTF-16".
func TestUTF8Text_UTF32(t *testing.T) {
	const text = "server: http://x:1\n"
	le, be := []byte{0xff, 0xfe, 0, 0}, []byte{0, 0, 0xfe, 0xff}
	for _, r := range text {
		le = append(le, byte(r), 0, 0, 0)
		be = append(be, 0, 0, 0, byte(r))
	}
	for name, b := range map[string][]byte{"little-endian": le, "big-endian": be} {
		if _, err := ParseConfig("agent.yaml", b); err == nil || err.Error() != "agent.yaml is UTF-32 (it starts with a UTF-32 byte order mark): save it as UTF-8" {
			t.Errorf("%s: %v", name, err)
		}
	}
}
