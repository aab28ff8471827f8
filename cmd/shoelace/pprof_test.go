package main

import "testing"

// An address for the profiles that is not loopback is refused before anything listens on it:
// listening first, even for an instant, served the whole network.
func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:6060": true,
		"127.1.2.3:6060": true,
		"[::1]:6060":     true,
		"localhost:6060": true,
		"0.0.0.0:6060":   false,
		":6060":          false,
		"[::]:6060":      false,
		"10.0.0.1:6060":  false,
		"example:6060":   false,
		"127.0.0.1":      false, // no port
		"":               false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
