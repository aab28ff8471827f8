package main

import (
	"slices"
	"strings"
	"testing"
)

// status finds the config a Windows service runs with in the command line install registered
// (a pure function: tested on every system).
func TestConfigFromCommandLine(t *testing.T) {
	for _, c := range []struct{ cmdline, want string }{
		{`"C:\Program Files\shoelace\shoelace-agent.exe" run --config "D:\x y\agent.yaml"`, `D:\x y\agent.yaml`},
		{`C:\shoelace\shoelace-agent.exe run --config C:\ProgramData\shoelace\agent.yaml`, `C:\ProgramData\shoelace\agent.yaml`},
		{`C:\shoelace\shoelace-agent.exe run --config=C:\etc\agent.yaml`, `C:\etc\agent.yaml`},
		{`C:\shoelace\shoelace-agent.exe run -c "\\fs1\share\a b\agent.yaml"`, `\\fs1\share\a b\agent.yaml`},
		{`C:\shoelace\shoelace-agent.exe run`, ""},
		{`C:\shoelace\shoelace-agent.exe run --config`, ""},
		{"", ""},
	} {
		if got := configFromCommandLine(c.cmdline); got != c.want {
			t.Errorf("configFromCommandLine(%s) = %q, want %q", c.cmdline, got, c.want)
		}
	}
	for _, c := range []struct {
		in   string
		want []string
	}{
		{`a "b c" d`, []string{"a", "b c", "d"}},
		{`"a\"b" c\\d`, []string{`a"b`, `c\\d`}},
		{`"a\\" b`, []string{`a\`, "b"}},
		{`"a\\\"b"`, []string{`a\"b`}},
		{`""  "x""y"`, []string{"", `x"y`}},
		{"a\tb  ", []string{"a", "b"}},
	} {
		if got := splitWindowsArgs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("splitWindowsArgs(%s) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The help names this system's default config: on Windows the one under %ProgramData% (it
// said /etc/shoelace/agent.yaml there too).
func TestAppDescription_DefaultConfig(t *testing.T) {
	const win = `C:\ProgramData\shoelace\agent.yaml`
	if d := appDescription(win); !strings.Contains(d, "(default "+win+",") || strings.Contains(d, "/etc/shoelace") {
		t.Errorf("the help with the Windows default config reads:\n%s", d)
	}
}

// run's help says how a changed config is loaded: SIGHUP on Unix, a restart of the service on
// Windows, which has no SIGHUP (the help said SIGHUP there too).
func TestRunUsage(t *testing.T) {
	if u := runUsage(false); !strings.Contains(u, "SIGHUP reloads the config") {
		t.Errorf("run's help on Unix reads: %s", u)
	}
	if u := runUsage(true); !strings.Contains(u, "shoelace-agent restart") || strings.Contains(u, "SIGHUP reloads") {
		t.Errorf("run's help on Windows reads: %s", u)
	}
}
