package atomicfile

import "strings"

// dosPath turns a path in the form GetFinalPathNameByHandle gives (\\?\C:\dir,
// \\?\UNC\server\share\dir) into the one users write (C:\dir, \\server\share\dir). Pure, so
// that it is tested on every system.
func dosPath(p string) string {
	if rest, ok := strings.CutPrefix(p, `\\?\UNC\`); ok {
		return `\\` + rest
	}
	if rest, ok := strings.CutPrefix(p, `\\?\`); ok && len(rest) >= 2 && rest[1] == ':' {
		if len(rest) == 2 {
			return rest + `\`
		}
		return rest
	}
	return p
}
