package api

import "strconv"

// ValidPort says whether s is a TCP port a client can dial and a server can listen on: a
// number from 1 to 65535.
func ValidPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}
