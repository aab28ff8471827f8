package agent

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// utf8Text returns the bytes of a text file that people edit by hand (the config, a templates_dir
// file, the token file) as UTF-8: one saved as UTF-16 with its byte order mark (Notepad's
// "UTF-16", PowerShell 5's > and Out-File) is decoded, a UTF-8 byte order mark dropped. A file
// that holds NUL bytes without a mark (UTF-16 all the same) is an error that says so: YAML read
// it as "control characters are not allowed", and a token as a byte no token has. So is one that
// is not UTF-8 (Latin-1's "é"), naming the line and the byte: yaml.v3 named neither.
func utf8Text(b []byte) ([]byte, error) {
	var order func([]byte) uint16
	switch {
	case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
		if err := checkUTF8(b, 3); err != nil {
			return nil, err
		}
		return b[3:], nil
	case bytes.HasPrefix(b, []byte{0xff, 0xfe, 0, 0}), bytes.HasPrefix(b, []byte{0, 0, 0xfe, 0xff}):
		// UTF-32's marks (PowerShell's Out-File -Encoding utf32); read as UTF-16, the first
		// one gave text with a NUL after every character.
		return nil, errors.New("is UTF-32 (it starts with a UTF-32 byte order mark): save it as UTF-8")
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		order = func(p []byte) uint16 { return uint16(p[0]) | uint16(p[1])<<8 }
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		order = func(p []byte) uint16 { return uint16(p[1]) | uint16(p[0])<<8 }
	case bytes.IndexByte(b, 0) >= 0:
		return nil, errUTF16
	default:
		if err := checkUTF8(b, 0); err != nil {
			return nil, err
		}
		return b, nil
	}
	b = b[2:]
	if len(b)%2 != 0 {
		return nil, errors.New("is UTF-16 (it starts with a byte order mark) cut in the middle of a character: save it as UTF-8")
	}
	out := make([]byte, 0, len(b)/2)
	for i := 0; i < len(b); i += 2 {
		r := rune(order(b[i:]))
		if utf16.IsSurrogate(r) {
			// A surrogate stands for nothing alone: as an invalid byte of UTF-8, it is refused,
			// not read as U+FFFD (yaml.v3, which read UTF-16 itself, refused it too).
			r2 := rune(-1)
			if i+2 < len(b) {
				r2 = rune(order(b[i+2:]))
			}
			if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
				return nil, fmt.Errorf("is UTF-16 (it starts with a byte order mark) with a broken character at byte %d (0x%04X, half of a surrogate pair): save it as UTF-8", i+2, order(b[i:]))
			}
			i += 2
		}
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}

// checkUTF8 says where b, from offset from on, first breaks UTF-8: the line, the byte and its
// offset in the file.
func checkUTF8(b []byte, from int) error {
	if utf8.Valid(b[from:]) {
		return nil
	}
	for i := from; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("is not UTF-8: line %d has the byte 0x%02X (at offset %d), which begins no valid UTF-8 character: save it as UTF-8",
				1+bytes.Count(b[from:i], []byte{'\n'}), b[i], i)
		}
		i += n
	}
	return nil
}

// errUTF16 is utf8Text's error for a file with NUL bytes and no byte order mark.
var errUTF16 = errors.New("holds NUL bytes: it looks saved as UTF-16 without a byte order mark; save it as UTF-8 (in Notepad: Save as, Encoding UTF-8)")
