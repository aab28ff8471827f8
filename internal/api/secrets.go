package api

import "strings"

// secretTextLen is the length of the base64 text of a secret's 32 bytes, after its "sl_".
const secretTextLen = 43

// RedactSecrets is s with every text that may hold a token's secret ("sl_" and 43 base64url
// characters, as the server makes them) written "sl_…": "sl_" followed by a run of at least 43
// base64url characters, the whole run. The log and the error lines write a request's path and
// id through it: a secret pasted where a name goes (shoelace token revoke sl_…, a key, a console
// address) was written whole into the access log.
func RedactSecrets(s string) string {
	i := strings.Index(s, "sl_")
	if i < 0 {
		return s
	}
	var b strings.Builder
	for i >= 0 {
		end := i + 3
		for end < len(s) && isBase64URL(s[end]) {
			end++
		}
		if end-i-3 >= secretTextLen {
			b.WriteString(s[:i])
			b.WriteString("sl_…")
			s = s[end:]
		} else {
			b.WriteString(s[:i+3])
			s = s[i+3:]
		}
		i = strings.Index(s, "sl_")
	}
	b.WriteString(s)
	return b.String()
}

func isBase64URL(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
