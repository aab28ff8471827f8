package api

import (
	"unicode"
	"unicode/utf8"
)

// CheckReleaseText refuses a value of X-Shoelace-Message or X-Shoelace-Source (header names
// which one; max is its limit) that a history listing could not show as it is: past its limit,
// not UTF-8, or with a control character (C0, DEL, C1 such as the CSI of terminal escape
// sequences; a tab is allowed) or a bidi control. The server checks every write's headers with
// it, and the CLI checks --message and --source before it sends them, so that a multi-line
// message is a usage error there rather than a transport error.
func CheckReleaseText(header, v string, max int) error {
	switch {
	case len(v) > max:
		return Errorf(CodeInvalidRequest, "header %s is %d bytes, over the limit of %d", header, len(v), max)
	case !utf8.ValidString(v):
		return Errorf(CodeInvalidRequest, "header %s is not UTF-8", header)
	}
	for _, c := range v {
		if c != '\t' && unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c) {
			return Errorf(CodeInvalidRequest, "header %s has the control character %U, which a history listing cannot show", header, c)
		}
	}
	return nil
}
