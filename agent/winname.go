package agent

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// windowsPaths writes the config's paths as Windows opens them, with '\' for every '/' (Windows
// takes either, and users write C:/App/a.conf as often as C:\App\a.conf): so that the two are one
// destination to the duplicate check and to allowed_dirs, a path is not refused as unclean for
// its slashes, and a source is the name the file watcher reports. Pure, so that it is tested on
// every system.
func (c *Config) windowsPaths() {
	for _, p := range []*string{&c.TokenFile, &c.CAFile, &c.CacheDir, &c.TemplatesDir, &c.ConfdDir} {
		*p = strings.ReplaceAll(*p, "/", `\`)
	}
	for i := range c.AllowedDirs {
		c.AllowedDirs[i] = strings.ReplaceAll(c.AllowedDirs[i], "/", `\`)
	}
	for i := range c.Templates {
		t := &c.Templates[i]
		t.Source = strings.ReplaceAll(t.Source, "/", `\`)
		t.Destination = strings.ReplaceAll(t.Destination, "/", `\`)
	}
}

// quotePath quotes the path p for a message as %q does, except on Windows (win), where its
// backslashes stay single: "C:\App\a.conf", not "C:\\App\\a.conf", which is no path a user can
// copy. A path with a character that would not read (a control character, a quote) is quoted
// as %q quotes it there too. Pure, so that it is tested on every system.
func quotePath(p string, win bool) string {
	if win && !strings.ContainsFunc(p, func(r rune) bool { return r == '"' || !unicode.IsPrint(r) }) {
		return `"` + p + `"`
	}
	return strconv.Quote(p)
}

// windowsNameProblem says what keeps p, an absolute clean Windows path, from naming the file it
// seems to on Windows, "" when nothing does: a component that is a device (CON, NUL, COM1,
// aux.txt: Windows opens the device, not a file), that ends in a dot or a space (Windows drops
// them: a.conf. is a.conf, which another template may render), that names an alternate data
// stream (file.txt:stream) or holds a character Windows refuses in a name. Such a destination
// was written somewhere else than where status said, or failed at every pass with an error
// that named neither cause. Pure, so that it is tested on every system.
func windowsNameProblem(p string) string {
	rest := p
	switch {
	case strings.HasPrefix(p, `\\`):
		// \\server\share\…: the share is a name on the server, not a file here.
		parts := strings.SplitN(strings.TrimPrefix(p, `\\`), `\`, 3)
		if len(parts) < 3 {
			return ""
		}
		rest = parts[2]
	case len(p) >= 2 && p[1] == ':':
		rest = p[2:]
	}
	for _, c := range strings.FieldsFunc(rest, func(r rune) bool { return r == '\\' || r == '/' }) {
		if i := strings.IndexFunc(c, func(r rune) bool { return r < 0x20 || strings.ContainsRune(`<>:"|?*`, r) }); i >= 0 {
			if c[i] == ':' {
				return fmt.Sprintf("%q names an alternate data stream of a file (':'), not a file", c)
			}
			return fmt.Sprintf("%q holds %q, which Windows does not allow in a file name", c, c[i])
		}
		if strings.HasSuffix(c, ".") || strings.HasSuffix(c, " ") {
			return fmt.Sprintf("%q ends in a dot or a space, which Windows drops (it names %q)", c, strings.TrimRight(c, ". "))
		}
		if reservedWindowsName(c) {
			return fmt.Sprintf("%q is the name of a device on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension), not of a file", c)
		}
	}
	return ""
}

// reservedWindowsName reports whether Windows reads the path component c as a device: CON,
// PRN, AUX, NUL, COM0-9, LPT0-9 (and the superscript digits), CONIN$, CONOUT$, in any case,
// followed by nothing, an extension or spaces (as Go's filepath.IsLocal judges them).
func reservedWindowsName(c string) bool {
	base, _, _ := strings.Cut(c, ".")
	base = strings.TrimRight(base, " ")
	switch strings.ToUpper(base) {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(base) < 4 {
		return false
	}
	switch strings.ToUpper(base[:3]) {
	case "COM", "LPT":
		switch d := base[3:]; d {
		case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
			return true
		}
	}
	return false
}

// destKey is the key by which two destinations are the same file: p itself, or with fold
// (Windows, whose names match regardless of case) p in lower case. Pure, so that the Windows
// form is tested on every system.
func destKey(p string, fold bool) string {
	if fold {
		return strings.ToLower(p)
	}
	return p
}

// Owners that may own the agent's cache directory on Windows besides the agent's own user:
// LocalSystem (which the service runs as) and the Administrators group (the owner of what an
// elevated administrator creates).
const (
	sidSystem         = "S-1-5-18"
	sidAdministrators = "S-1-5-32-544"
)

// trustedOwner reports whether the owner owner (a SID, as S-1-5-18) of the cache directory, or
// of a directory above it, is SYSTEM, Administrators, TrustedInstaller (which owns C:\ and
// C:\Windows) or self, the agent's own user. Pure, so that it is tested on every system.
func trustedOwner(owner, self string) bool {
	return owner == sidSystem || owner == sidAdministrators || owner == sidTrustedInstaller || owner != "" && owner == self
}
