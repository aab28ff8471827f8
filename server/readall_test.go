package server

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads what io.ReadAll reads, whatever the size it is told (the body's Content-Length,
// which the server's reader holds the body to, or another), and passes a read error on.
func TestReadAll_AsIOReadAll(t *testing.T) {
	for _, n := range []int{0, 1, 48, 511, 512, 513, 4096, 100_000, 200_000} {
		body := strings.Repeat("0123456789abcdef", n/16+1)[:n]
		for _, size := range []int64{-1, 0, int64(n) / 2, int64(n), int64(n) + 1, 2*int64(n) + 7} {
			for name, r := range map[string]io.Reader{
				"whole": strings.NewReader(body),
				"bytes": iotest.OneByteReader(strings.NewReader(body)),
				"half":  iotest.HalfReader(strings.NewReader(body)),
			} {
				got, err := readAll(r, size)
				if err != nil || string(got) != body {
					t.Fatalf("%s, %d bytes told %d: %d bytes, %v; want %d bytes", name, n, size, len(got), err, n)
				}
			}
		}
	}
	// A body that claims a Content-Length of 1 MiB and sends 3 bytes takes no more than
	// readAllAhead before its bytes come.
	got, err := readAll(strings.NewReader("abc"), 1<<20)
	if err != nil || string(got) != "abc" || cap(got) > readAllAhead+1 {
		t.Fatalf("3 bytes told 1 MiB: %q (cap %d), %v; want \"abc\" in at most %d bytes", got, cap(got), err, readAllAhead+1)
	}
	boom := errors.New("boom")
	got, err = readAll(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom)), 10)
	if !errors.Is(err, boom) || string(got) != "abc" {
		t.Fatalf("a failed read: %q, %v; want \"abc\", %v", got, err, boom)
	}
}
