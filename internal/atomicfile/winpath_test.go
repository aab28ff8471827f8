package atomicfile

import "testing"

// The final path Windows gives for a directory becomes the one allowed_dirs are written in
// (a pure function: tested on every system).
func TestDosPath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`\\?\C:\ProgramData\shoelace`, `C:\ProgramData\shoelace`},
		{`\\?\C:\`, `C:\`},
		{`\\?\C:`, `C:\`},
		{`\\?\UNC\fs1\share\app`, `\\fs1\share\app`},
		{`\\?\Volume{5f1e2d3c-0000-0000-0000-100000000000}\app`, `\\?\Volume{5f1e2d3c-0000-0000-0000-100000000000}\app`},
		{`C:\already`, `C:\already`},
	} {
		if got := dosPath(c.in); got != c.want {
			t.Errorf("dosPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
