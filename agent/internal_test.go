//go:build !windows

package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/client"
)

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

// allowed_dirs compare by whole segments, with Windows' separator and regardless of case there
// (pure functions: the Windows form is tested here too).
func TestUnder_Windows(t *testing.T) {
	for _, c := range []struct {
		p, d string
		sep  byte
		fold bool
		want bool
	}{
		{"/etc/nginx/a.conf", "/etc/nginx", '/', false, true},
		{"/etc/nginx-old/a.conf", "/etc/nginx", '/', false, false},
		{"/etc/Nginx/a.conf", "/etc/nginx", '/', false, false},
		{"/x", "/", '/', false, true},
		{`C:\App\a.conf`, `c:\app`, '\\', true, true},
		{`C:\app2\a.conf`, `C:\app`, '\\', true, false},
		{`C:\app`, `C:\app`, '\\', true, false},
		{`D:\a.conf`, `C:\`, '\\', true, false},
		{`c:\a.conf`, `C:\`, '\\', true, true},
		{`C:/app/a.conf`, `C:\app`, '\\', true, false},
	} {
		if got := under(c.p, c.d, c.sep, c.fold); got != c.want {
			t.Errorf("under(%q, %q) = %v, want %v", c.p, c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		d, seps string
		vol     int
		want    string
	}{
		{"/etc/nginx/", "/", 0, "/etc/nginx"},
		{"/", "/", 0, "/"},
		{"//", "/", 0, "/"},
		{`C:\app\`, `/\`, 2, `C:\app`},
		{`C:\`, `/\`, 2, `C:\`},
		{`C:\\`, `/\`, 2, `C:\`},
	} {
		if got := trimDir(c.d, c.seps, c.vol); got != c.want {
			t.Errorf("trimDir(%q) = %q, want %q", c.d, got, c.want)
		}
	}
}

// The latest render after a change is wait.max, or 4 × min when max is not set, at most
// MaxWait: min: 5m alone waited up to 20 minutes.
func TestWait_Bounds(t *testing.T) {
	s, m := time.Second, time.Minute
	for _, c := range []struct {
		w             Wait
		quiet, latest time.Duration
	}{
		{Wait{}, 0, 0},
		{Wait{Min: Duration(s)}, s, 4 * s},
		{Wait{Min: Duration(2 * s), Max: Duration(10 * s)}, 2 * s, 10 * s},
		{Wait{Max: Duration(10 * s)}, 0, 10 * s},
		{Wait{Min: Duration(2 * m)}, 2 * m, 8 * m},
		{Wait{Min: Duration(5 * m)}, 5 * m, MaxWait},
		{Wait{Min: Duration(MaxWait)}, MaxWait, MaxWait},
	} {
		if quiet, latest := c.w.bounds(); quiet != c.quiet || latest != c.latest {
			t.Errorf("%+v: bounds %s, %s; want %s, %s", c.w, quiet, latest, c.quiet, c.latest)
		}
	}
}

// On Windows confd ran check_cmd through cmd /C, and so does the agent: {{.src}} becomes
// %SHOELACE_STAGED%, which cmd expands ("$SHOELACE_STAGED" reached the check as it is), quoted
// unless it is inside double quotes already (a pure function: the Windows form is tested here).
func TestConfdCheckCommand_Cmd(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`nginx -t -c {{.src}}`, `nginx -t -c "%SHOELACE_STAGED%"`},
		{`"C:\Program Files\nginx\nginx.exe" -t -c "{{ .src }}"`, `"C:\Program Files\nginx\nginx.exe" -t -c "%SHOELACE_STAGED%"`},
		{`findstr /c:"listen" {{.src}} >nul`, `findstr /c:"listen" "%SHOELACE_STAGED%" >nul`},
		{`type {{.src}} | find "'{{.src}}'"`, `type "%SHOELACE_STAGED%" | find "'%SHOELACE_STAGED%'"`},
		{`echo ^"x {{.src}}`, `echo ^"x "%SHOELACE_STAGED%"`},
		{`echo ^{{.src}}`, `echo ^"%SHOELACE_STAGED%"`},
	} {
		got, err := confdCheckCommand(c.in, true)
		if err != nil || got != c.want {
			t.Errorf("confdCheckCommand(%s, cmd) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if got, err := confdCheckCommand(`nginx -t -c {{.src}}`, false); err != nil || got != `nginx -t -c "$SHOELACE_STAGED"` {
		t.Errorf("confdCheckCommand(…, sh) = %s, %v", got, err)
	}
}

// A destination Windows would not read as the file it names is refused there: a device name in
// any component (with an extension too), a trailing dot or space, an alternate data stream, a
// character Windows refuses (a pure function: the Windows form is tested here).
func TestWindowsNameProblem(t *testing.T) {
	for _, c := range []struct {
		p    string
		want string // a word of the reason; "" for none
	}{
		{`C:\App\app.conf`, ""},
		{`C:\`, ""},
		{`\\fs1\share\app\app.conf`, ""},
		{`\\fs1\con\app.conf`, ""}, // a share's name is the server's
		{`C:\App\console.conf`, ""},
		{`C:\App\COM10`, ""},
		{`C:\App\.auxiliary`, ""},
		{`C:\App\CON`, "device"},
		{`C:\App\nul`, "device"},
		{`C:\App\aux.txt`, "device"},
		{`C:\App\Com1.log`, "device"},
		{`C:\App\lpt9`, "device"},
		{`C:\App\COM²`, "device"},
		{`C:\App\CONOUT$`, "device"},
		{`C:\App\prn  .conf`, "device"},
		{`C:\NUL\app.conf`, "device"},
		{`\\fs1\share\aux\app.conf`, "device"},
		{`C:\App\app.conf.`, "dot or a space"},
		{`C:\App \app.conf`, "dot or a space"},
		{`C:\App\app.conf:stream`, "alternate data stream"},
		{`C:\App\app.conf::$DATA`, "alternate data stream"},
		{`C:\App\a?.conf`, "does not allow"},
		{`C:\App\a|b`, "does not allow"},
		{"C:\\App\new.conf", "does not allow"}, // "C:\App\new.conf" in double quotes: a newline
	} {
		got := windowsNameProblem(c.p)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("windowsNameProblem(%q) = %q, want %q", c.p, got, c.want)
		}
	}
}

// Two destinations that differ in case only are one file on Windows, and two on Unix (a pure
// function: the Windows form is tested here).
func TestDestKey_Windows(t *testing.T) {
	if destKey(`C:\App\a.conf`, true) != destKey(`c:\app\A.conf`, true) {
		t.Errorf(`C:\App\a.conf and c:\app\A.conf are two destinations on Windows`)
	}
	if destKey("/etc/App/a.conf", false) == destKey("/etc/app/A.conf", false) {
		t.Errorf("/etc/App/a.conf and /etc/app/A.conf are one destination on Unix")
	}
}

// On Windows a path written with '/' is the one written with '\': C:/App/a.conf and
// C:\App\a.conf are one destination (a pure method: the Windows form is tested here).
func TestConfigWindowsPaths(t *testing.T) {
	c := &Config{
		TokenFile: "C:/ProgramData/shoelace/token", CAFile: "C:/ProgramData/shoelace/ca.pem",
		CacheDir: "C:/ProgramData/shoelace/cache", TemplatesDir: "C:/ProgramData/shoelace/templates.d",
		ConfdDir: "D:/confd", AllowedDirs: []string{"C:/App", `C:\Other`},
		Templates: []Template{{Source: "C:/tmpl/a.tmpl", Destination: "C:/App/a.conf"}, {Destination: `\\fs1/share/b.conf`}},
	}
	c.windowsPaths()
	for _, got := range []string{c.TokenFile, c.CAFile, c.CacheDir, c.TemplatesDir, c.ConfdDir, c.AllowedDirs[0], c.AllowedDirs[1],
		c.Templates[0].Source, c.Templates[0].Destination, c.Templates[1].Destination} {
		if strings.Contains(got, "/") {
			t.Errorf("%s still holds '/'", got)
		}
	}
	if got, want := c.Templates[0].Destination, `C:\App\a.conf`; got != want {
		t.Errorf("destination = %s, want %s", got, want)
	}
	if got, want := c.Templates[1].Destination, `\\fs1\share\b.conf`; got != want {
		t.Errorf("destination = %s, want %s", got, want)
	}
}

// A path in a message reads as it is written on Windows (no doubled backslashes), and as %q
// quotes it on Unix, or where it holds a character that would not read.
func TestQuotePath(t *testing.T) {
	for _, c := range []struct {
		p    string
		win  bool
		want string
	}{
		{`C:\App\a.conf`, true, `"C:\App\a.conf"`},
		{`C:\App\été.conf`, true, `"C:\App\été.conf"`},
		{"C:\\App\new.conf", true, `"C:\\App\new.conf"`}, // a newline: %q's form
		{`C:\App\"a".conf`, true, `"C:\\App\\\"a\".conf"`},
		{"/etc/nginx/nginx.conf", false, `"/etc/nginx/nginx.conf"`},
		{`/etc/a\b`, false, `"/etc/a\\b"`},
	} {
		if got := quotePath(c.p, c.win); got != c.want {
			t.Errorf("quotePath(%q, %v) = %s, want %s", c.p, c.win, got, c.want)
		}
	}
}

// On Windows the cache directory (and those above it) may be owned by SYSTEM, Administrators,
// TrustedInstaller or the agent's own user, not by another user (a pure function: the Windows
// form is tested here).
func TestTrustedOwner_Windows(t *testing.T) {
	const self, other = "S-1-5-21-1004336348-1177238915-682003330-1001", "S-1-5-21-1004336348-1177238915-682003330-1002"
	for _, c := range []struct {
		owner, self string
		want        bool
	}{
		{"S-1-5-18", self, true},
		{"S-1-5-32-544", self, true},
		{"S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464", self, true}, // TrustedInstaller: C:\'s owner
		{self, self, true},
		{other, self, false},
		{"S-1-5-32-545", self, false}, // Users
		{"S-1-1-0", self, false},      // Everyone
		{"", "", false},
	} {
		if got := trustedOwner(c.owner, c.self); got != c.want {
			t.Errorf("trustedOwner(%s, %s) = %v, want %v", c.owner, c.self, got, c.want)
		}
	}
}

// validate warns about a SHOELACE_ variable written as another shell than the template's writes
// it: "$SHOELACE_STAGED" under cmd (Windows' default) or PowerShell, %SHOELACE_STAGED% under sh
// (a pure function: the Windows forms are tested here).
func TestShellVarProblem(t *testing.T) {
	for _, c := range []struct {
		shell, command, want string
	}{
		{"sh", `nginx -t -c "$SHOELACE_STAGED"`, ""},
		{"cmd", `nginx -t -c "%SHOELACE_STAGED%"`, ""},
		{"powershell", `nginx -t -c $env:SHOELACE_STAGED`, ""},
		{"powershell", `nginx -t -c ${env:SHOELACE_STAGED}`, ""},
		{"cmd", `nginx -t -c "$SHOELACE_STAGED"`, "write %SHOELACE_STAGED%"},
		{"cmd", `echo ${SHOELACE_DESTINATIONS}`, "write %SHOELACE_DESTINATIONS%"},
		// The warning quotes what the command says, braces and all ("${SHOELACE_STAGED is …").
		{"cmd", `type "${SHOELACE_STAGED}"`, "${SHOELACE_STAGED} is how sh names a variable"},
		{"powershell", `Get-Content ${SHOELACE_STAGED}`, "${SHOELACE_STAGED} is a PowerShell variable"},
		{"powershell", `Test-Path $SHOELACE_STAGED`, "write $env:SHOELACE_STAGED"},
		{"sh", `nginx -t -c %SHOELACE_STAGED%`, `write "$SHOELACE_STAGED"`},
		{"cmd", `echo $HOME`, ""},
	} {
		got := shellVarProblem(c.shell, c.command)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("shellVarProblem(%s, %s) = %q, want %q", c.shell, c.command, got, c.want)
		}
	}
}

// An answer over the client's bound is said to be one, not "server unreachable" nor a refusal.
func TestDescribeFetchError_AnswerTooLarge(t *testing.T) {
	err := fmt.Errorf("GET /v1/appliances/web: answered 200: %w", client.ErrAnswerTooLarge)
	if msg, ra := describeFetchError(err); !strings.Contains(msg, "over the client's bound (256 MiB); keeping files") || ra != 0 {
		t.Fatalf("describeFetchError = %q, %s", msg, ra)
	}
}

// A stream line or an answer that is not Shoelace's JSON is said to be one, not "server
// unreachable" (which a stream's bad line was).
func TestDescribeFetchError_NotAShoelaceAnswer(t *testing.T) {
	err := &client.AnswerError{Op: "GET /v1/appliances/web", Status: 200, Err: fmt.Errorf("invalid character '<'")}
	if msg, _ := describeFetchError(err); !strings.Contains(msg, "not a Shoelace answer") {
		t.Fatalf("describeFetchError = %q", msg)
	}
}

// unsetVarProblem names every SHOELACE_ variable that the agent does not set, once each: it
// named the first alone, so that a command with two typos was warned of one.
func TestUnsetVarProblem_NamesEvery(t *testing.T) {
	for command, want := range map[string]string{
		`test -s "$SHOELACE_STAGED"`: "",
		`echo $SHOELACE_STAGE`:       "SHOELACE_STAGE is not a variable the agent sets for a check, so it is empty there; the agent sets SHOELACE_STAGED, SHOELACE_DESTINATION, SHOELACE_APPLIANCE, SHOELACE_INSTANCE and SHOELACE_REVISION",
		`echo $SHOELACE_STAGED $SHOELACE_STAGE ${SHOELACE_DEST} $SHOELACE_STAGE`: "SHOELACE_STAGE and SHOELACE_DEST are not variables the agent sets for a check, so they are empty there; the agent sets SHOELACE_STAGED, SHOELACE_DESTINATION, SHOELACE_APPLIANCE, SHOELACE_INSTANCE and SHOELACE_REVISION",
	} {
		if got := unsetVarProblem("check", command); got != want {
			t.Errorf("unsetVarProblem(check, %q) = %q, want %q", command, got, want)
		}
	}
	if got, want := unsetVarProblem("command", `echo %SHOELACE_STAGED% $SHOELACE_X $env:SHOELACE_Y`), "SHOELACE_STAGED, SHOELACE_X and SHOELACE_Y are not variables the agent sets for a command, so they are empty there; the agent sets SHOELACE_APPLIANCE, SHOELACE_INSTANCE, SHOELACE_REVISION and SHOELACE_DESTINATIONS"; got != want {
		t.Errorf("command: %q, want %q", got, want)
	}
}
