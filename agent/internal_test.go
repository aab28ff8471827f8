//go:build !windows

package agent

import "testing"

func TestInstanceFromHostname(t *testing.T) {
	for in, want := range map[string]string{
		"web-1.example.com": "web-1.example.com",
		"":                  "unknown",
		"-x":                "x",
		"vm 1/2":            "vm-1-2",
		"héllo":             "h--llo",
	} {
		if got := instanceFromHostname(in); got != want {
			t.Errorf("instanceFromHostname(%q) = %q, want %q", in, got, want)
		}
	}
}
