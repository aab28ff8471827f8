//go:build !windows

package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/shoelace-dev/shoelace/agent"
)

// writeConfig writes a config file (and a token file, mode 0600) in a temp dir; "$DIR" in
// text is replaced by that dir.
func writeConfig(t testing.TB, text string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "$DIR", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

const goodConfig = `server: http://127.0.0.1:7400
token_file: $DIR/token
appliance: web-frontend
cache_dir: $DIR/cache
wait: {min: 1s, max: 5s}
templates:
  - contents: "port {{ key \"port\" }}\n"
    destination: $DIR/out/a.conf
    perms: "0640"
    owner: "0"
    group: root
    stage: system
    command: "true"
    command_timeout: 2s
`

func TestLoadConfig_Good(t *testing.T) {
	dir, path := writeConfig(t, goodConfig)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Appliance != "web-frontend" || time.Duration(cfg.Wait.Min) != time.Second || time.Duration(cfg.Wait.Max) != 5*time.Second {
		t.Fatalf("cfg = %+v", cfg)
	}
	tc := cfg.Templates[0]
	if tc.Mode() != 0o640 || tc.UID() != 0 || tc.GID() != 0 || tc.Stage != agent.StageSystem || tc.Timeout() != 2*time.Second {
		t.Fatalf("template = %+v mode %o uid %d gid %d", tc, tc.Mode(), tc.UID(), tc.GID())
	}
	if tc.Line != 7 || tc.File != path {
		t.Fatalf("template at %s:%d, want %s:7", tc.File, tc.Line, path)
	}
	tok, err := cfg.LoadToken()
	if err != nil || tok != "secret-token" {
		t.Fatalf("token = %q, %v", tok, err)
	}
	_ = dir
}

func TestLoadConfig_Defaults(t *testing.T) {
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Templates[0]
	if cfg.CacheDir != agent.DefaultCacheDir || tc.Stage != agent.StageApplication || tc.Mode() != 0 || tc.UID() != -1 || tc.GID() != -1 || tc.Timeout() != agent.DefaultCommandTimeout {
		t.Fatalf("defaults: cfg %+v template %+v", cfg, tc)
	}
	if cfg.Wait.Enabled() {
		t.Fatal("wait is on by default")
	}
	if tc.OnFailure() != agent.OnFailureRollback || tc.HealthTimeoutOrDefault() != agent.DefaultHealthTimeout || tc.Retries() != agent.DefaultHealthRetries ||
		tc.Interval() != agent.DefaultHealthInterval || agent.DefaultHealthTimeout != 10*time.Second || agent.DefaultHealthRetries != 3 || agent.DefaultHealthInterval != time.Second {
		t.Fatalf("reload defaults: %s %s %d %s", tc.OnFailure(), tc.HealthTimeoutOrDefault(), tc.Retries(), tc.Interval())
	}
	// health_retries: 0 is one run, not the default.
	_, path = writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    health: \"true\"\n    health_retries: 0\n    on_command_failure: keep\n")
	if cfg, err = agent.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	if tc := cfg.Templates[0]; tc.Retries() != 0 || tc.OnFailure() != agent.OnFailureKeep {
		t.Fatalf("health_retries 0 / keep read as %d / %s", tc.Retries(), tc.OnFailure())
	}
}

func TestLoadConfig_Invalid(t *testing.T) {
	base := "server: http://127.0.0.1:7400\nappliance: web\ncache_dir: $DIR/cache\n"
	tok := "token: t\n"
	tmpl := tok + "templates:\n  - contents: x\n    destination: $DIR/a\n"
	cases := []struct {
		name, text string
		want       []string
	}{
		{"unknown top field", base + "sever: x\n" + tmpl, []string{"agent.yaml:4: unknown field \"sever\""}},
		{"unknown template field", base + tmpl + "    destinaton: /x\n", []string{"agent.yaml:8: unknown field \"destinaton\""}},
		{"unknown wait field", base + "wait: {min: 1s, mx: 2s}\n" + tmpl, []string{"agent.yaml:4: unknown field \"mx\""}},
		{"bad yaml", base + "templates: [\n", []string{"agent.yaml:"}},
		// yaml.v3 says "found character that cannot start any token", or names the line before.
		{"tab indentation", base + tok + "templates:\n\t- contents: x\n", []string{"agent.yaml:6: a tab indents this line: YAML indents with spaces only"}},
		{"tab in an entry's indentation", base + tok + "templates:\n  - contents: x\n  \tdestination: /a\n", []string{"agent.yaml:7: a tab indents this line"}},
		{"no server", "appliance: web\n" + tmpl, []string{"server is required"}},
		{"bad server", "server: ftp://x\nappliance: web\n" + tmpl, []string{`server "ftp://x" must be an http:// or https:// URL`}},
		// validate passed both, and once and run failed every request ("invalid port"; a path
		// "//v1/…" the server refuses).
		{"server port out of range", "server: http://x:99999\nappliance: web\n" + tmpl, []string{`server "http://x:99999": port "99999" must be a number from 1 to 65535`}},
		{"server path not clean", "server: http://x:1//\nappliance: web\n" + tmpl, []string{`server "http://x:1//": its path "//" must be clean`, `did you mean "http://x:1"`}},
		{"server path with dotdot", "server: https://x/a/../b/\nappliance: web\n" + tmpl, []string{`its path "/a/../b/" must be clean`, `did you mean "https://x/b"`}},
		// The agent adds /v1/… to server: with it in server, every request was "no such route".
		{"server ends in /v1", "server: http://127.0.0.1:8080/v1\nappliance: web\n" + tmpl, []string{`server "http://127.0.0.1:8080/v1": its path "/v1" must be clean (no '//', '.' or '..') and not end in /v1, which the agent adds to every request; did you mean "http://127.0.0.1:8080"?`}},
		{"server behind a proxy path ends in /v1/", "server: https://x/shoelace/v1/\nappliance: web\n" + tmpl, []string{`its path "/shoelace/v1/" must be clean (no '//', '.' or '..') and not end in /v1`, `did you mean "https://x/shoelace"?`}},
		{"inline token with a control character", "server: http://x:1\nappliance: web\ntoken: \"ab\\x01c\"\ntemplates:\n  - contents: x\n    destination: $DIR/a\n", []string{"token holds byte 0x01 at offset 2: a token is one word of printable ASCII"}},
		{"no appliance", "server: http://x:1\n" + tmpl, []string{"appliance is required"}},
		{"bad appliance", "server: http://x:1\nappliance: web/x\n" + tmpl, []string{`invalid appliance name "web/x"`}},
		{"bad instance", base + "instance: vm 1\n" + tmpl, []string{`invalid instance name "vm 1"`, "X-Shoelace-Instance"}},
		// The server refuses it in X-Shoelace-Instance: validate passed it, and every request of
		// run failed. The error does not write it whole.
		{"instance that looks like a token's secret", base + "instance: sl_" + strings.Repeat("A", 43) + "\n" + tmpl, []string{`invalid instance name "sl_…": it holds what looks like a token's secret`, "X-Shoelace-Instance"}},
		{"both tokens", base + "token_file: $DIR/token\n" + tmpl, []string{"set token_file or token, not both"}},
		{"missing token file", base + "token_file: $DIR/nope\ntemplates:\n  - contents: x\n    destination: $DIR/a\n", []string{"token_file", "no such file"}},
		{"no token", base + "templates:\n  - contents: x\n    destination: $DIR/a\n", []string{"token_file is required (or an inline token:)", "shoelace token create --appliance web"}},
		// validate passed them when run beside them, and the service (run in /) did not find them.
		{"relative token_file", "server: http://x:1\nappliance: web\ncache_dir: $DIR/cache\ntoken_file: token\ntemplates:\n  - contents: x\n    destination: $DIR/a\n", []string{`token_file "token" must be an absolute path`}},
		{"relative ca_file", base + "ca_file: ca.pem\n" + tmpl, []string{`ca_file "ca.pem" must be an absolute path`}},
		{"relative cache", "server: http://x:1\nappliance: web\ncache_dir: cache\n" + tmpl, []string{`cache_dir "cache" must be an absolute path`}},
		// /tmp is shared: its mode is not to be changed (it said chmod 700 /tmp).
		{"cache dir others share", "server: http://x:1\nappliance: web\ncache_dir: /tmp\n" + tmpl,
			[]string{"cache_dir /tmp is a directory that others share (mode 1777)", "give cache_dir a directory of its own, such as /var/lib/shoelace"}},
		{"wait min > max", base + "wait: {min: 5s, max: 1s}\n" + tmpl, []string{"wait: min 5s is greater than max 1s"}},
		// A typo (100h for 100s) made an agent render a change days after it.
		{"wait max over the bound", base + "wait: {min: 1s, max: 100h}\n" + tmpl, []string{"wait: max 100h0m0s is over 10m0s, the longest a change may wait to be rendered (a staged rollout halts when its cohort has not applied within its deadline, 30m by default)"}},
		{"wait min over the bound", base + "wait: {min: 11m}\n" + tmpl, []string{"wait: min 11m0s is over 10m0s"}},
		{"wait over the bound and min > max", base + "wait: {min: 2h, max: 1h}\n" + tmpl, []string{"3 problems", "wait: min 2h0m0s is over 10m0s", "wait: max 1h0m0s is over 10m0s", "wait: min 2h0m0s is greater than max 1h0m0s"}},
		{"bad duration", base + "wait: {min: 5}\n" + tmpl, []string{`agent.yaml:4: wait: min: invalid duration "5"`}},
		// "agent.yaml:4: duration "-1s" is negative" before: wait's line holds min and max.
		{"wait max negative", base + "wait: {min: 1s, max: -1s}\n" + tmpl, []string{`agent.yaml:4: wait: max: duration "-1s" is negative: it must be 0 or more`}},
		{"wait min negative", base + "wait: {min: -1s}\n" + tmpl, []string{`agent.yaml:4: wait: min: duration "-1s" is negative`}},
		{"wait negative", base + "wait: -5s\n" + tmpl, []string{`agent.yaml:4: wait: duration "-5s" is negative`}},
		{"bad metrics", base + "metrics_listen: nope\n" + tmpl, []string{`metrics_listen "nope"`}},
		{"no template source", base + tok + "templates:\n  - destination: $DIR/a\n", []string{"agent.yaml:6: template $DIR/a: set exactly one of source and contents"}},
		{"both sources", base + tok + "templates:\n  - destination: $DIR/a\n    source: /x\n    contents: y\n", []string{"set exactly one of source and contents"}},
		{"relative source", base + tok + "templates:\n  - destination: $DIR/a\n    source: x.tmpl\n", []string{`source "x.tmpl" must be an absolute path`}},
		{"no destination", base + tok + "templates:\n  - contents: x\n", []string{"agent.yaml:6: template: destination is required"}},
		{"relative destination", base + tok + "templates:\n  - contents: x\n    destination: a.conf\n", []string{`destination "a.conf" must be an absolute path`}},
		{"dotdot destination", base + tok + "templates:\n  - contents: x\n    destination: /etc/../a\n", []string{`destination "/etc/../a" must be a clean path`, `did you mean "/a"`}},
		{"duplicate destination", base + tmpl + "  - contents: y\n    destination: $DIR/a\n", []string{"agent.yaml:8: template $DIR/a: destination is also rendered by", "agent.yaml:6"}},
		// The .bak of one is the other's file: each pass replaced the backup with the other's
		// content (the previous content lost) and the other's file with a backup (its command
		// ran at every change of the first).
		{"backup is another destination", base + tmpl + "    backup: true\n  - contents: y\n    destination: $DIR/a.bak\n", []string{"agent.yaml:6: template $DIR/a: backup keeps the previous content as $DIR/a.bak, which is the destination of $DIR/agent.yaml:9"}},
		{"backup is an earlier destination", base + tok + "templates:\n  - contents: y\n    destination: $DIR/a.bak\n  - contents: x\n    destination: $DIR/a\n    backup: true\n", []string{"agent.yaml:8: template $DIR/a: backup keeps the previous content as $DIR/a.bak, which is the destination of $DIR/agent.yaml:6"}},
		{"outside allowed_dirs", base + "allowed_dirs: [/srv/conf]\n" + tmpl, []string{"destination is outside allowed_dirs [/srv/conf]"}},
		{"bad allowed dir", base + "allowed_dirs: [srv]\n" + tmpl, []string{`allowed_dirs[0] "srv" must be an absolute, clean path`}},
		{"wrong types name their fields", base + "templates:\n  - contents: x\n    destination: /tmp/x\n    backup: \"true\"\n    command: [a, b]\n",
			[]string{`:7: backup: want true or false, not a string`, `:8: command: want a string, not a list`}},
		{"command_env not a name", base + "command_env: [HTTP_PROXY, \"A-B\", 1X]\n" + tmpl,
			[]string{`command_env[1] "A-B" is not a variable's name`, `command_env[2] "1X" is not a variable's name`}},
		{"command_env of the agent's", base + "command_env: [shoelace_token]\n" + tmpl, []string{`command_env[0] "shoelace_token": the agent sets the SHOELACE_ variables`}},
		{"bad stage", base + tmpl + "    stage: bake\n", []string{`stage "bake" must be "application" or "system"`}},
		{"bad perms", base + tmpl + "    perms: \"rw-r--r--\"\n", []string{`perms "rw-r--r--" must be an octal mode string`}},
		{"perms 0", base + tmpl + "    perms: \"0000\"\n", []string{`perms "0000" would make the file unreadable`}},
		{"unknown owner", base + tmpl + "    owner: no-such-user-xyz\n", []string{`owner: no user named "no-such-user-xyz"`}},
		{"unknown group", base + tmpl + "    group: no-such-group-xyz\n", []string{`group: no group named "no-such-group-xyz"`}},
		// chown takes 32-bit ids: 4294968296 would be cut to 1000, 4294967296 to root.
		{"owner over 32 bits", base + tmpl + "    owner: \"4294968296\"\n", []string{`owner: id 4294968296 is over 4294967294, the largest user or group id`}},
		{"group (uid_t)-1", base + tmpl + "    group: \"4294967295\"\n", []string{`group: id 4294967295 is over 4294967294`}},
		{"NUL in destination", base + tok + "templates:\n  - contents: x\n    destination: \"$DIR/a\\0.conf\"\n", []string{`destination "`, `.conf" holds a NUL byte`}},
		{"equal delimiters", base + tmpl + "    left_delimiter: \"}}\"\n", []string{`left_delimiter and right_delimiter must differ (both are "}}")`}},
		{"setuid perms", base + tmpl + "    perms: \"4755\"\n", []string{`perms "4755": setuid, setgid and sticky bits are not supported`}},
		{"wait a list", base + "wait: [1s, 2s]\n" + tmpl, []string{"agent.yaml:4: wait must be a mapping such as {min: 2s, max: 10s}, or one duration such as 5s"}},
		{"wait a bad duration", base + "wait: 5\n" + tmpl, []string{`agent.yaml:4: wait: invalid duration "5"`}},
		{"wait key twice", base + "wait: {min: 1s, min: 2s}\n" + tmpl, []string{`agent.yaml:4: mapping key "min" already defined at line 4`}},
		{"templates not a list", base + tok + "templates:\n  contents: x\n", []string{`agent.yaml:6: want a list of template entries (each starting with "- "), not a mapping`}},
		{"tiny timeout", base + tmpl + "    command_timeout: 1ns\n", []string{"command_timeout 1ns is too short"}},
		// A template's durations named no field ("agent.yaml:9: invalid duration"), and two such
		// errors shared one line, joined by "; ".
		{"bad template durations", base + tmpl + "    command: \"true\"\n    health: \"true\"\n    health_timeout: abc\n    command_timeout: 1x\n",
			[]string{"2 problems:\n  ", `agent.yaml:10: health_timeout: invalid duration "abc"`, `agent.yaml:11: command_timeout: invalid duration "1x"`}},
		{"negative health_interval", base + tmpl + "    health: \"true\"\n    health_interval: -1s\n", []string{`agent.yaml:9: health_interval: duration "-1s" is negative`}},
		{"template duration in flow style", base + tok + "templates:\n  - {contents: x, destination: $DIR/a, command_timeout: [1s]}\n", []string{`agent.yaml:6: command_timeout: a duration must be a string like "30s"`}},
		// once replaced the token with the rendered bytes (every request after it refused), or
		// fought the agent over its cache at every pass.
		{"destination is the token file", base + "token_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: $DIR/token\n", []string{"agent.yaml:6: template $DIR/token: destination $DIR/token is the agent's token_file: a template must not replace it"}},
		{"destination is the config", base + tok + "templates:\n  - contents: x\n    destination: $DIR/agent.yaml\n", []string{"destination $DIR/agent.yaml is the agent's config file"}},
		// validate passed it, and every install was then refused.
		{"backup over cache_dir", "server: http://127.0.0.1:7400\nappliance: web\ncache_dir: $DIR/a.bak\n" + tmpl + "    backup: true\n", []string{"agent.yaml:6: template $DIR/a: backup keeps the previous content as $DIR/a.bak, which is in cache_dir $DIR/a.bak, where the agent keeps its own files"}},
		{"destination in cache_dir", base + tok + "templates:\n  - contents: x\n    destination: $DIR/cache/web.json\n", []string{"destination $DIR/cache/web.json is in cache_dir $DIR/cache, where the agent keeps its own files"}},
		{"bad on_command_failure", base + tmpl + "    on_command_failure: retry\n", []string{`on_command_failure "retry" must be "rollback" (restore the previous files, the default) or "keep"`}},
		{"group disagrees on on_command_failure", base + tok + "templates:\n  - contents: x\n    destination: $DIR/a\n    command: reload\n  - contents: y\n    destination: $DIR/b\n    command: reload\n    on_command_failure: keep\n",
			[]string{"agent.yaml:9: template $DIR/b: on_command_failure keep differs from rollback of", "agent.yaml:6: template $DIR/a, which shares its command \"reload\""}},
		{"health settings without health", base + tmpl + "    health_retries: 2\n", []string{"health_timeout, health_retries and health_interval need a health command"}},
		{"a shell this system lacks", base + tmpl + "    shell: powershell\n", []string{`shell "powershell" is not one of this system's: sh (the default is sh)`}},
		{"group disagrees on shell", base + tok + "templates:\n  - contents: x\n    destination: $DIR/a\n    command: reload\n  - contents: y\n    destination: $DIR/b\n    command: reload\n    shell: sh\n",
			[]string{`agent.yaml:9: template $DIR/b: shell "sh" differs from "" of`, "a command runs in one shell"}},
		{"negative health_retries", base + tmpl + "    health: \"true\"\n    health_retries: -1\n", []string{"health_retries -1 must be between 0 and 100"}},
		{"tiny health_timeout", base + tmpl + "    health: \"true\"\n    health_timeout: 1ms\n", []string{"health_timeout 1ms is too short"}},
		{"huge timeout", base + tmpl + "    command_timeout: 24h1s\n", []string{"command_timeout 24h0m1s is too long (at most 24h"}},
		{"huge health_timeout", base + tmpl + "    health: \"true\"\n    health_timeout: 1000000h\n", []string{"health_timeout 1000000h0m0s is too long (at most 24h"}},
		{"huge health_interval", base + tmpl + "    health: \"true\"\n    health_interval: 25h\n", []string{"health_interval 25h0m0s is too long (at most 24h"}},
		{"unknown functions", base + tmpl + "    functions: sprig\n", []string{`agent.yaml:6: template $DIR/a: functions "sprig" must be native (the default), confd or consul-template`}},
		{"error_on_missing_key outside consul-template", base + tmpl + "    error_on_missing_key: true\n", []string{"agent.yaml:6: template $DIR/a: error_on_missing_key is consul-template's option: it needs functions: consul-template (the native mode"}},
		{"error_on_missing_key with confd", base + tmpl + "    functions: confd\n    error_on_missing_key: true\n", []string{"needs functions: consul-template (the confd mode always fails"}},
		{"prefix outside confd", base + tmpl + "    functions: consul-template\n    prefix: /production\n", []string{"agent.yaml:6: template $DIR/a: prefix is confd's option: it needs functions: confd"}},
		{"keys outside confd", base + tmpl + "    keys: [/db]\n", []string{"agent.yaml:6: template $DIR/a: keys is confd's option: it needs functions: confd"}},
		{"function_denylist outside consul-template", base + tmpl + "    function_denylist: [plugin]\n", []string{"agent.yaml:6: template $DIR/a: function_denylist is consul-template's option: it needs functions: consul-template"}},
		// Taken literally but for '*', each denied nothing, silently.
		{"function_denylist entry of path.Match's glob", base + tmpl + "    functions: consul-template\n    function_denylist: [plugin, \"[\", \"sprig_?ate\", \"\"]\n",
			[]string{"3 problems", `agent.yaml:6: template $DIR/a: function_denylist entry "[" can match no function: a function's name is letters, digits and _, and * (any run of them) is the only wildcard, not path.Match's ?, [...] or \`,
				`entry "sprig_?ate" can match no function`, `entry "" can match no function`}},
		{"prefix with dotdot", base + tmpl + "    functions: confd\n    prefix: /a/../b\n", []string{`prefix: "/a/../b" must not have a ".." segment`}},
		{"several problems", "appliance: web/x\n" + "templates:\n  - contents: x\n", []string{"4 problems", "server is required", "invalid appliance name", "destination is required"}},
		{"missing source among other problems", base + tok + "templates:\n  - source: $DIR/nope.tmpl\n    destination: $DIR/a\n  - contents: x\n    destination: b.conf\n",
			[]string{"2 problems", "agent.yaml:6: template $DIR/a: read source", "nope.tmpl: no such file", `destination "b.conf" must be an absolute path`}},
		{"syntax error among other problems", base + tok + "templates:\n  - contents: \"{{ bad\"\n    destination: $DIR/a\n  - contents: x\n    destination: b.conf\n",
			[]string{"2 problems", `function "bad" not defined`, `destination "b.conf" must be an absolute path`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := writeConfig(t, tc.text)
			_, err := agent.LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig accepted:\n%s", tc.text)
			}
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "$DIR", dir)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

// wait's bound is inclusive, and a negative wait set in code (the YAML decoder refuses one
// already) is refused by Validate.
func TestLoadConfig_WaitBounds(t *testing.T) {
	_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nwait: {min: 10m, max: 10m}\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatalf("wait {10m, 10m}: %v", err)
	}
	if agent.MaxWait != 10*time.Minute {
		t.Fatalf("MaxWait = %s", agent.MaxWait)
	}
	cfg.Wait = agent.Wait{Min: agent.Duration(-time.Second)}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "wait: min -1s must not be negative") {
		t.Fatalf("a negative wait.min: %v", err)
	}
	cfg.Wait = agent.Wait{Max: agent.Duration(-time.Second)}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "wait: max -1s must not be negative") {
		t.Fatalf("a negative wait.max: %v", err)
	}
}

// wait: 5s, one duration, is consul-template's form (wait = "5s"): the min, with max 4 × min,
// at most 10m; it was refused as "want a mapping". Other forms mean what they meant.
func TestLoadConfig_WaitOneDuration(t *testing.T) {
	for _, c := range []struct {
		wait     string
		min, max time.Duration
	}{
		{"5s", 5 * time.Second, 0},
		{"5m", 5 * time.Minute, 0},
		{"{min: 2s}", 2 * time.Second, 0},
		{"{min: 2s, max: 3s}", 2 * time.Second, 3 * time.Second},
		{"{max: 3s}", 0, 3 * time.Second},
		{"0", 0, 0},
	} {
		_, path := writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\nwait: "+c.wait+"\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			t.Fatalf("wait: %s: %v", c.wait, err)
		}
		if time.Duration(cfg.Wait.Min) != c.min || time.Duration(cfg.Wait.Max) != c.max {
			t.Errorf("wait: %s read as {min: %s, max: %s}, want {min: %s, max: %s}", c.wait, time.Duration(cfg.Wait.Min), time.Duration(cfg.Wait.Max), c.min, c.max)
		}
	}
}

// TestLoadConfig_Functions: each mode's options are read, and confd's prefix is cleaned as confd
// joins it to its keys.
func TestLoadConfig_Functions(t *testing.T) {
	_, path := writeConfig(t, `server: http://h:1
appliance: a
token: t
templates:
  - {contents: x, destination: /tmp/n}
  - {contents: x, destination: /tmp/n2, functions: native}
  - {contents: x, destination: /tmp/c, functions: confd, prefix: "production/web/"}
  - {contents: x, destination: /tmp/ct, functions: consul-template, error_on_missing_key: true}
`)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Templates
	if got[0].Functions != "" || got[1].Functions != "native" || got[2].Functions != "confd" || got[2].Prefix != "/production/web/" ||
		got[3].Functions != "consul-template" || !got[3].ErrorOnMissingKey {
		t.Fatalf("templates = %+v", got)
	}
}

// TestLoadConfig_DesignSchemaAsWritten loads the config schema of docs/DESIGN.md ("This is the
// whole schema") as it is written there, only its paths moved into the test dir: every field at
// the value the schema gives it. Before, its keys: [] (a confd-only field left empty, as prefix: ""
// and function_denylist: [] are) was refused on the native template: "keys is confd's option".
func TestLoadConfig_DesignSchemaAsWritten(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "DESIGN.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "This is the whole schema:\n```yaml\n")
	schema, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no config schema in docs/DESIGN.md")
	}
	schema = strings.NewReplacer("/etc/shoelace/", "$DIR/", "/var/lib/shoelace", "$DIR/cache", "/etc/nginx/", "$DIR/etc/").Replace(schema)
	dir, path := writeConfig(t, schema)
	for _, f := range []string{"ca.pem", "templates/nginx.conf.tmpl"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatalf("DESIGN.md's config schema refused: %v\n%s", err, schema)
	}
	if len(cfg.Templates) != 1 || cfg.Templates[0].Keys != nil && len(cfg.Templates[0].Keys) != 0 {
		t.Fatalf("templates = %+v", cfg.Templates)
	}
}

// TestLoadConfig_DesignExample loads DESIGN.md's schema example as it is written there (only
// the paths point into the test dir): every field is accepted, left_delimiter alone included
// (right_delimiter keeps its default), and allowed_dirs may end with a slash.
func TestLoadConfig_DesignExample(t *testing.T) {
	dir, path := writeConfig(t, `server: https://shoelace.internal:7400
ca_file: $DIR/token                      # optional; TLS to the server (only stat'ed here)
token_file: $DIR/token                   # mode 0600 or stricter (or inline token:)
appliance: web-frontend
instance: ""                             # default: hostname
cache_dir: $DIR/cache                    # last-known-good view, files mode 0600
wait: {min: 0s, max: 0s}                 # default off; e.g. {min: 2s, max: 10s} coalesces bursts
metrics_listen: ""                       # e.g. 127.0.0.1:9740 serves /metrics
allowed_dirs: [$DIR/etc/]                # if set, destinations must lie under one of these
templates_dir: $DIR/templates.d          # more template entries: each *.yaml holds a list of them
templates:
  - contents: "worker_processes {{ keyOr \"nginx/workers\" \"2\" }};\n"   # or source: …
    destination: $DIR/etc/nginx/nginx.conf
    stage: application                   # default; or system (rendered at bake)
    perms: "0644"
    owner: root                          # name or id
    group: "0"
    backup: true                         # keep destination.bak
    left_delimiter: "{{"                 # and right_delimiter
    check: nginx -t -c "$SHOELACE_STAGED"   # validates the staged file; non-zero = not installed
    command: systemctl reload nginx      # runs when the file changed, via /bin/sh -c
    command_timeout: 30s
    on_command_failure: rollback         # default; or keep (see "Reloads" below)
    health: curl -fsS http://127.0.0.1/health   # optional; runs after the command, part of the reload
    health_timeout: 10s                  # per run of health
    health_retries: 3                    # runs again up to this many times before the reload fails
    health_interval: 1s                  # pause before each retry
`)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatalf("DESIGN.md's example config refused: %v", err)
	}
	tc := cfg.Templates[0]
	if tc.LeftDelimiter != "{{" || tc.RightDelimiter != "" || !tc.Backup || tc.Mode() != 0o644 || tc.UID() != 0 || tc.Timeout() != 30*time.Second {
		t.Fatalf("template = %+v", tc)
	}
	if want := filepath.Join(dir, "etc"); len(cfg.AllowedDirs) != 1 || cfg.AllowedDirs[0] != want {
		t.Fatalf("allowed_dirs = %q, want [%s]", cfg.AllowedDirs, want)
	}
	// One delimiter alone: the other keeps its default.
	_, path = writeConfig(t, "server: http://h:1\nappliance: a\ntoken: t\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    left_delimiter: \"[[\"\n")
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("left_delimiter alone refused: %v", err)
	}
}

// TestLoadConfig_AllowedDirsSymlink: a destination must lie under allowed_dirs once symbolic
// links are followed, not only by its name.
func TestLoadConfig_AllowedDirsSymlink(t *testing.T) {
	text := "server: http://h:1\nappliance: a\ntoken: t\nallowed_dirs: [$DIR/allowed]\ntemplates:\n" +
		"  - contents: x\n    destination: $DIR/allowed/link/x\n" +
		"  - contents: x\n    destination: $DIR/allowed/not/yet/x\n"
	dir, path := writeConfig(t, text)
	if err := os.MkdirAll(filepath.Join(dir, "allowed"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "outside"), filepath.Join(dir, "allowed", "link")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	want := "template " + dir + "/allowed/link/x: destination resolves to " + dir + "/outside/x through a symbolic link, outside allowed_dirs"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "not/yet") {
		t.Fatalf("err = %v, want only %q", err, want)
	}
	// A link to a directory inside allowed_dirs is fine.
	os.Remove(filepath.Join(dir, "allowed", "link"))
	os.MkdirAll(filepath.Join(dir, "allowed", "real"), 0o755)
	os.Symlink(filepath.Join(dir, "allowed", "real"), filepath.Join(dir, "allowed", "link"))
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("link inside allowed_dirs refused: %v", err)
	}
}

func TestLoadConfig_TokenFileMode(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	tok := filepath.Join(dir, "token")
	if err := os.Chmod(tok, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+tok) || !strings.Contains(err.Error(), "0640") {
		t.Fatalf("err = %v; want the mode and a chmod 600 hint", err)
	}
	os.Chmod(tok, 0o400)
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("mode 0400 refused: %v", err)
	}
	os.WriteFile(tok, []byte("two\nlines\n"), 0o600)
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "one token on one line") {
		t.Fatalf("err = %v", err)
	}
}

// A token file of another user's (mode 0600 or not) is refused: its owner can read the token,
// which reads the appliance's view and its secrets, and can put another token in its place.
// Before, only its mode was judged, and a file that a service user owned was used.
func TestLoadConfig_TokenFileOwner(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	tok := filepath.Join(dir, "token")
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("the agent's own token file refused: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: the token file cannot be given to another user; that part is not checked")
		return
	}
	if err := os.Chown(tok, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 4242") || !strings.Contains(err.Error(), "chown root "+tok) {
		t.Fatalf("err = %v; want the owner and a chown hint", err)
	}
}

// A ca_file that another user may write is refused, as a config file is: whoever may write it
// chooses the server the agent trusts, so what root writes and runs. Before, it was only
// stat'ed.
func TestLoadConfig_CAFileWritableByOthers(t *testing.T) {
	dir, path := writeConfig(t, "server: https://x:1\nappliance: web\ntoken_file: $DIR/token\nca_file: $DIR/ca.pem\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not read here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("a ca_file of mode 0644 refused: %v", err)
	}
	os.Chmod(ca, 0o666)
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "ca_file") || !strings.Contains(err.Error(), "chmod go-w "+ca) {
		t.Fatalf("err = %v; want the ca_file others may write refused, with a chmod hint", err)
	}
	os.Chmod(ca, 0o644)
	if os.Geteuid() != 0 {
		t.Log("not root: the ca_file cannot be given to another user; that part is not checked")
		return
	}
	os.Chown(ca, 4242, 4242)
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Fatalf("err = %v; want the ca_file of another user refused", err)
	}
}

// TestLoadConfig_TokenFileBytes: a token file saved by Notepad (a byte order mark, CRLF) holds
// the token; one with a byte no token has is refused by name. Both passed validate, and the
// server then answered "unknown or revoked token", or Go's client refused the header.
func TestLoadConfig_TokenFileBytes(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("\ufeffsl_abc-DEF_1\r\n"), 0o600)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cfg.LoadToken(); err != nil || got != "sl_abc-DEF_1" {
		t.Fatalf("LoadToken = %q, %v; want the token without its byte order mark", got, err)
	}
	for _, bad := range []string{"sl_abc\x01\n", "sl_abc\x7f", "sl_\u00e9t\u00e9\n"} {
		os.WriteFile(tok, []byte(bad), 0o600)
		if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "token_file "+tok+" holds byte 0x") {
			t.Errorf("token file %q: err = %v", bad, err)
		}
	}
	// DESIGN.md: a token file of at most 4 KiB; over it, the error names the limit (before, it
	// said only "is 4097 bytes").
	os.WriteFile(tok, []byte(strings.Repeat("a", 4096)), 0o600)
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("a token file of 4 KiB: %v", err)
	}
	os.WriteFile(tok, []byte(strings.Repeat("a", 4097)), 0o600)
	want := "token_file " + tok + " is 4097 bytes, over 4096 (4 KiB), the limit of a token file"
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a token file of 4 KiB + 1 byte: %v, want %q", err, want)
	}
}

// TestLoadConfig_RelativeTemplatesDir: a relative templates_dir is refused as such, and not read
// against the working directory first (a broken file there was all the error said).
func TestLoadConfig_RelativeTemplatesDir(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\ntemplates_dir: templates.d\ntemplates:\n  - contents: x\n    destination: $DIR/a\n")
	os.Mkdir(filepath.Join(dir, "templates.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "templates.d", "a.yaml"), []byte("- bogus: field\n"), 0o644)
	t.Chdir(dir)
	_, err := agent.LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), `templates_dir "templates.d" must be an absolute path`) || strings.Contains(err.Error(), "bogus") {
		t.Fatalf("err = %v; want only that templates_dir must be absolute", err)
	}
}

// TestLoadConfig_SameFileThroughALink: two destinations that are one file, through a directory
// that is a symbolic link, are refused as two equal destinations are (validate said ok, and once
// wrote one file twice, the second template's content winning, and said both were in place).
// A destination that leads to the token file through a symbolic link is refused as the token
// file is, naming the link and where it leads.
func TestLoadConfig_DestinationLinkToTheToken(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\ntemplates:\n  - contents: one\n    destination: $DIR/out/a.conf\n")
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	if err := os.Symlink(filepath.Join(dir, "token"), filepath.Join(dir, "out", "a.conf")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	real, _ := filepath.EvalSymlinks(filepath.Join(dir, "token"))
	want := "destination " + filepath.Join(dir, "out/a.conf") + " leads through a symbolic link to " + real + ", which is the agent's token_file"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestLoadConfig_SameFileThroughALink(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\ntemplates:\n  - contents: one\n    destination: $DIR/out/a.conf\n  - contents: two\n    destination: $DIR/link/a.conf\n")
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	if err := os.Symlink(filepath.Join(dir, "out"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	real, _ := filepath.EvalSymlinks(filepath.Join(dir, "out"))
	want := path + ":8: template " + filepath.Join(dir, "link/a.conf") + ": destination is the file " + filepath.Join(real, "a.conf") + " through a symbolic link, which " + path + ":6: template " + filepath.Join(dir, "out/a.conf") + " also renders"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestLoadConfig_TemplatesDir(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken: t\ntemplates_dir: $DIR/conf.d\ntemplates:\n  - contents: a\n    destination: $DIR/a\n")
	confd := filepath.Join(dir, "conf.d")
	os.Mkdir(confd, 0o755)
	os.WriteFile(filepath.Join(confd, "b.yaml"), []byte("- contents: b\n  destination: "+dir+"/b\n  stage: system\n"), 0o644)
	os.WriteFile(filepath.Join(confd, "ignored.txt"), []byte("not yaml: ["), 0o644)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Templates) != 2 || cfg.Templates[1].Destination != dir+"/b" || cfg.Templates[1].File != filepath.Join(confd, "b.yaml") || cfg.Templates[1].Line != 1 {
		t.Fatalf("templates = %+v", cfg.Templates)
	}

	// Strict there too, with the drop-in's own file and line.
	os.WriteFile(filepath.Join(confd, "c.yaml"), []byte("- contents: c\n  destination: "+dir+"/c\n  comand: x\n"), 0o644)
	_, err = agent.LoadConfig(path)
	if want := filepath.Join(confd, "c.yaml") + `:3: unknown field "comand"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	// A destination taken twice across files names both places.
	os.WriteFile(filepath.Join(confd, "c.yaml"), []byte("- contents: c\n  destination: "+dir+"/a\n"), 0o644)
	_, err = agent.LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "c.yaml:1: template "+dir+"/a: destination is also rendered by "+path+":6") {
		t.Fatalf("err = %v", err)
	}
	// A missing templates_dir is an empty one.
	os.RemoveAll(confd)
	if cfg, err := agent.LoadConfig(path); err != nil || len(cfg.Templates) != 1 {
		t.Fatalf("missing templates_dir: %v", err)
	}
}

// FuzzConfig feeds arbitrary bytes to the config parser and validator: they must never panic,
// and an accepted config must satisfy the rules Validate promises.
func FuzzConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(goodConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := agent.ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if cfg.TokenFile != "" && cfg.Token == "" {
			cfg.Token = "t" // no file system lookups from fuzz input
		}
		cfg.TokenFile, cfg.CAFile = "", ""
		if cfg.Validate() != nil {
			return
		}
		seen := map[string]bool{}
		for _, tc := range cfg.Templates {
			if !filepath.IsAbs(tc.Destination) || filepath.Clean(tc.Destination) != tc.Destination {
				t.Fatalf("accepted destination %q", tc.Destination)
			}
			if seen[tc.Destination] {
				t.Fatalf("accepted duplicate destination %q", tc.Destination)
			}
			seen[tc.Destination] = true
			if (tc.Source == "") == (tc.Contents == "") {
				t.Fatal("accepted a template without exactly one of source and contents")
			}
			if tc.Stage != agent.StageApplication && tc.Stage != agent.StageSystem {
				t.Fatalf("accepted stage %q", tc.Stage)
			}
		}
	})
}

// A destination that is itself a link to a file outside allowed_dirs is refused at load: the
// install would replace the link's target.
func TestLoadConfig_AllowedDirsDestinationLink(t *testing.T) {
	text := "server: http://h:1\nappliance: a\ntoken: t\nallowed_dirs: [$DIR/allowed]\ntemplates:\n" +
		"  - contents: x\n    destination: $DIR/allowed/x\n"
	dir, path := writeConfig(t, text)
	os.MkdirAll(filepath.Join(dir, "allowed"), 0o755)
	if err := os.Symlink(filepath.Join(dir, "passwd"), filepath.Join(dir, "allowed", "x")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	if want := "destination resolves to " + dir + "/passwd through a symbolic link"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// A relative link is followed from where its directory really is, as the kernel does: a link in
// a directory reached through another link cannot point back inside allowed_dirs by name only.
func TestLoadConfig_AllowedDirsRelativeLink(t *testing.T) {
	text := "server: http://h:1\nappliance: a\ntoken: t\nallowed_dirs: [$DIR/a]\ntemplates:\n" +
		"  - contents: x\n    destination: $DIR/a/l/x\n"
	dir, path := writeConfig(t, text)
	os.MkdirAll(filepath.Join(dir, "a"), 0o755)
	os.MkdirAll(filepath.Join(dir, "outside", "d"), 0o755)
	// a/l -> outside/d, and outside/d/x -> ../y: by text a/l/../y is a/y (inside); really it
	// is outside/y.
	if err := os.Symlink(filepath.Join(dir, "outside", "d"), filepath.Join(dir, "a", "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../y", filepath.Join(dir, "outside", "d", "x")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadConfig(path)
	if want := "destination resolves to " + dir + "/outside/y through a symbolic link"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// utf16 encodes s as UTF-16 little-endian (Notepad's "UTF-16 LE", PowerShell 5's >), with its
// byte order mark when bom.
func utf16LE(s string, bom bool) []byte {
	var b []byte
	if bom {
		b = []byte{0xff, 0xfe}
	}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// TestParseConfig_Encodings: a config saved as UTF-16 (Notepad, PowerShell 5's > or Out-File)
// is read as the text it is, line numbers and all, as is one with a UTF-8 byte order mark; one
// without its byte order mark (NUL bytes) says what it is, not "control characters are not
// allowed"; a Windows path in double quotes says how to write it, not only "found unknown
// escape character".
func TestParseConfig_Encodings(t *testing.T) {
	const text = "server: http://x:1\r\nappliance: web\r\ncache_dir: 'C:\\ProgramData\\shoelace\\cache'\r\n"
	for name, data := range map[string][]byte{
		"utf-16le": utf16LE(text, true),
		"utf-16be": func() []byte {
			b := utf16LE(text, true)
			for i := 0; i < len(b); i += 2 {
				b[i], b[i+1] = b[i+1], b[i]
			}
			return b
		}(),
		"utf-8 bom": append([]byte("\ufeff"), text...),
	} {
		cfg, err := agent.ParseConfig("agent.yaml", data)
		if err != nil || cfg.Appliance != "web" || cfg.CacheDir != `C:\ProgramData\shoelace\cache` {
			t.Errorf("%s: %+v, %v", name, cfg, err)
		}
	}
	if _, err := agent.ParseConfig("agent.yaml", utf16LE(text+"bogus: 1\r\n", true)); err == nil || err.Error() != `agent.yaml:4: unknown field "bogus"` {
		t.Errorf("utf-16 with an unknown field: %v", err)
	}
	if _, err := agent.ParseConfig("agent.yaml", utf16LE(text, false)); err == nil || !strings.Contains(err.Error(), "agent.yaml holds NUL bytes: it looks saved as UTF-16 without a byte order mark; save it as UTF-8") {
		t.Errorf("utf-16 without a byte order mark: %v", err)
	}
	if _, err := agent.ParseConfig("agent.yaml", []byte("server: http://x:1\ncache_dir: \"C:\\ProgramData\\shoelace\"\n")); err == nil ||
		!strings.Contains(err.Error(), "unknown escape character: in double quotes a backslash starts an escape") || !strings.Contains(err.Error(), "agent.yaml:2") {
		t.Errorf("a Windows path in double quotes: %v", err)
	}
}

// TestParseConfig_WindowsPathEscapes: a Windows path under C:\Users (the commonest) or C:\xampp in
// double quotes said only "did not find expected hexdecimal number" (\U, \u and \x start escapes
// that want hexadecimal digits), without the hint that "unknown escape character" got.
func TestParseConfig_WindowsPathEscapes(t *testing.T) {
	for _, path := range []string{`C:\Users\admin\token`, `C:\users\token`, `C:\xampp\token`, `C:\UFFFFFFFF`, `C:\ProgramData\shoelace\token`} {
		_, err := agent.ParseConfig("agent.yaml", []byte("server: http://x:1\ntoken_file: \""+path+"\"\n"))
		if err == nil || !strings.HasPrefix(err.Error(), "agent.yaml:2: ") || !strings.Contains(err.Error(), "write a Windows path unquoted or in single quotes") {
			t.Errorf("token_file: %q: %v, want the line and how to write the path", path, err)
		}
	}
}

// TestLoadConfig_TokenFileUTF16: a token file that PowerShell 5 wrote (echo $token > token: UTF-16
// with a byte order mark, CRLF) holds the token; it was refused as "must hold one token on one
// line".
func TestLoadConfig_TokenFileUTF16(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates:\n  - contents: x\n    destination: /tmp/x\n")
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, utf16LE("sl_abc-DEF_1\r\n", true), 0o600)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cfg.LoadToken(); err != nil || got != "sl_abc-DEF_1" {
		t.Fatalf("LoadToken = %q, %v; want the token", got, err)
	}
	os.WriteFile(tok, utf16LE("sl_abc-DEF_1\r\n", false), 0o600)
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "token_file "+tok+" holds NUL bytes") {
		t.Fatalf("UTF-16 without a byte order mark: %v", err)
	}
}

// TestLoadConfig_SizeLimit: the config and each templates_dir file are read whole, and had no
// bound: a config path given by mistake to a large file (a log, a disk image) took its size in
// memory before any error. Each is refused over 1 MiB, naming the file and the limit, unread.
func TestLoadConfig_SizeLimit(t *testing.T) {
	const limit = 1 << 20
	dir, path := writeConfig(t, goodConfig)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte, size int) []byte {
		b = append([]byte(nil), b...)
		b = append(b, '#')
		for len(b) < size-1 {
			b = append(b, 'x')
		}
		return append(b, '\n')
	}
	if err := os.WriteFile(path, pad(good, limit), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatalf("a config of 1 MiB: %v", err)
	}
	want := path + " is over 1048576 bytes (1 MiB)"
	if err := os.WriteFile(path, pad(good, limit+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a config of 1 MiB + 1 byte: %v, want %q", err, want)
	}
	if _, err := agent.ParseConfigFile(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("ParseConfigFile of 1 MiB + 1 byte: %v, want %q", err, want)
	}
	// A sparse file of 64 MiB is refused without being read.
	if err := os.Truncate(path, 64<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a config of 64 MiB: %v, want %q", err, want)
	}

	if err := os.WriteFile(path, append(good, []byte("templates_dir: "+dir+"/conf.d\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	confd := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confd, 0o755); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(confd, "b.yaml")
	entry := []byte("- contents: b\n  destination: " + dir + "/out/b.conf\n")
	if err := os.WriteFile(drop, pad(entry, limit), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := agent.LoadConfig(path); err != nil || len(cfg.Templates) != 2 {
		t.Fatalf("a templates_dir file of 1 MiB: %v", err)
	}
	if err := os.WriteFile(drop, pad(entry, limit+1), 0o644); err != nil {
		t.Fatal(err)
	}
	want = drop + " is over 1048576 bytes (1 MiB)"
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a templates_dir file of 1 MiB + 1 byte: %v, want %q", err, want)
	}
}

// TestLoadConfig_ControlCharactersInPaths: a Windows path in YAML double quotes,
// destination: "C:\new\table.conf", is read with \n a newline and \t a tab; it was taken without
// a word (on Windows a file named so, on Linux "must be an absolute path", which does not say
// why), and a Linux path written so ("/etc/app\new.conf") was rendered under a name with a
// newline in it. Any path of the config holding a control character is refused now, on every
// OS, showing the path as it was written and how to write it; nothing is rendered.
func TestLoadConfig_ControlCharactersInPaths(t *testing.T) {
	const hint = "in double quotes (YAML, TOML) a backslash starts an escape"
	head := "server: http://127.0.0.1:7400\nappliance: web\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\n"
	for _, tc := range []struct{ name, text, want string }{
		{"windows destination", head + "templates:\n  - contents: x\n    destination: \"C:\\new\\table.conf\"\n",
			`agent.yaml:6: template "C:\new\table.conf": destination "C:\new\table.conf" holds a newline (\n): ` + hint + ` (\n is a newline, \t a tab); write the path in single quotes ('C:\new\table.conf') or with forward slashes (C:/new/table.conf)`},
		{"unix destination", head + "templates:\n  - contents: x\n    destination: \"$DIR/out/app\\new.conf\"\n", `destination "$DIR/out/app\new.conf" holds a newline (\n): ` + hint},
		{"source", head + "templates:\n  - source: \"$DIR/tmpl\\tx\"\n    destination: $DIR/out/a\n", `source "$DIR/tmpl\tx" holds a tab (\t): ` + hint},
		{"token_file", "server: http://127.0.0.1:7400\nappliance: web\ntoken_file: \"C:\\tokens\\token\"\ncache_dir: $DIR/cache\ntemplates:\n  - contents: x\n    destination: $DIR/out/a\n",
			`agent.yaml: token_file "C:\tokens\token" holds a tab (\t): ` + hint},
		{"cache_dir", "server: http://127.0.0.1:7400\nappliance: web\ntoken_file: $DIR/token\ncache_dir: \"$DIR/c\\rache\"\ntemplates:\n  - contents: x\n    destination: $DIR/out/a\n",
			`cache_dir "$DIR/c\rache" holds a carriage return (\r): ` + hint},
		{"ca_file", head + "ca_file: \"$DIR/ca\\x01.pem\"\ntemplates:\n  - contents: x\n    destination: $DIR/out/a\n", `ca_file "$DIR/ca\x01.pem" holds the control character U+0001: ` + hint},
		{"allowed_dirs", head + "allowed_dirs: [\"$DIR/out\\n\"]\ntemplates:\n  - contents: x\n    destination: $DIR/out/a\n", `allowed_dirs[0] "$DIR/out\n" holds a newline (\n): ` + hint},
		{"templates_dir", head + "templates_dir: \"$DIR/t\\n.d\"\ntemplates:\n  - contents: x\n    destination: $DIR/out/a\n", `agent.yaml: templates_dir "$DIR/t\n.d" holds a newline (\n): ` + hint},
		{"confd_dir", head + "confd_dir: \"$DIR/confd\\t\"\n", `agent.yaml: confd_dir "$DIR/confd\t" holds a tab (\t): ` + hint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := writeConfig(t, tc.text)
			os.Mkdir(filepath.Join(dir, "t\n.d"), 0o755)
			os.Mkdir(filepath.Join(dir, "confd\t"), 0o755)
			want := strings.ReplaceAll(tc.want, "$DIR", dir)
			_, err := agent.LoadConfig(path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v\nwant %q", err, want)
			}
			if strings.Contains(err.Error(), "must be an absolute path") || strings.Contains(err.Error(), "no such file") {
				t.Errorf("err = %v: says more than why", err)
			}
		})
	}
	// On a path with slashes already, backslashes made slashes would not be clean ("/out//tx"):
	// only the single quotes are offered.
	_, path := writeConfig(t, head+"templates:\n  - contents: x\n    destination: \"/etc/app/\\tx.conf\"\n")
	_, err := agent.LoadConfig(path)
	if want := `destination "/etc/app/\tx.conf" holds a tab (\t): ` + hint + ` (\n is a newline, \t a tab); write the path in single quotes ('/etc/app/\tx.conf')`; err == nil ||
		!strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "forward slashes") {
		t.Errorf("err = %v\nwant %q, and no forward slashes", err, want)
	}
	// Single quotes, forward slashes: one file, no problem.
	for _, dst := range []string{`'$DIR/out/app\new.conf'`, `$DIR/out/app/new.conf`} {
		_, path := writeConfig(t, head+"templates:\n  - contents: x\n    destination: "+dst+"\n")
		if _, err := agent.LoadConfig(path); err != nil {
			t.Errorf("destination: %s: %v", dst, err)
		}
	}
}

// TestLoadConfig_SourceSizeLimit: a template source was read whole with no bound: source: given
// by mistake to a log or a disk image took its size in memory at every load. One larger than
// what a render may write (64 MiB) is refused, unread, naming the file and the limit.
func TestLoadConfig_SourceSizeLimit(t *testing.T) {
	dir, path := writeConfig(t, "server: http://127.0.0.1:7400\ntoken_file: $DIR/token\nappliance: web\ncache_dir: $DIR/cache\ntemplates:\n  - source: $DIR/big.tmpl\n    destination: $DIR/out/a.conf\n")
	src := filepath.Join(dir, "big.tmpl")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 64<<20+1); err != nil { // sparse: nothing of it is on the disk
		t.Fatal(err)
	}
	want := "source " + src + " is over 67108864 bytes (64 MiB), the most a render may write"
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestLoadConfig_InvalidUTF8: a config or templates_dir file saved in Latin-1 (an "é" in a
// comment is the byte 0xE9) was refused with yaml.v3's "invalid trailing UTF-8 octet", which
// names neither a line nor a byte, so the admin had to hunt for the character; DESIGN.md says
// such a file is an error naming its byte offset. Now the error names the file, the line, the
// byte and its offset, and says to save it as UTF-8.
func TestLoadConfig_InvalidUTF8(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\n# caf\xe9\ntemplates_dir: $DIR/conf.d\n")
	msg := func(name string, line int, b byte, off int) string {
		return fmt.Sprintf("%s is not UTF-8: line %d has the byte 0x%02X (at offset %d), which begins no valid UTF-8 character: save it as UTF-8", name, line, b, off)
	}
	_, err := agent.LoadConfig(path)
	if want := msg(path, 4, 0xe9, len("server: http://x:1\nappliance: web\ntoken_file: "+dir+"/token\n# caf")); err == nil || err.Error() != want {
		t.Errorf("a config in Latin-1: %v\nwant %s", err, want)
	}
	os.WriteFile(path, []byte("server: http://x:1\nappliance: web\ntoken_file: "+dir+"/token\ntemplates_dir: "+dir+"/conf.d\n"), 0o644)
	confd := filepath.Join(dir, "conf.d")
	os.Mkdir(confd, 0o755)
	b := filepath.Join(confd, "b.yaml")
	os.WriteFile(b, []byte("- contents: \"na\xefve\"\n  destination: "+dir+"/b\n"), 0o644)
	_, err = agent.LoadConfig(path)
	if want := msg(b, 1, 0xef, 15); err == nil || err.Error() != want {
		t.Errorf("a templates_dir file in Latin-1: %v\nwant %s", err, want)
	}
	// After a UTF-8 byte order mark, the offset still counts from the file's first byte.
	os.WriteFile(b, []byte("\ufeff- contents: x\n  destination: "+dir+"/b\n  check: \"\xff\"\n"), 0o644)
	_, err = agent.LoadConfig(path)
	if want := msg(b, 3, 0xff, len("\ufeff- contents: x\n  destination: "+dir+"/b\n  check: \"")); err == nil || err.Error() != want {
		t.Errorf("after a byte order mark: %v\nwant %s", err, want)
	}
	// The same text saved as UTF-8 is read.
	os.WriteFile(b, []byte("# café\n- contents: \"naïve\"\n  destination: "+dir+"/b\n"), 0o644)
	if cfg, err := agent.LoadConfig(path); err != nil || len(cfg.Templates) != 1 || cfg.Templates[0].Contents != "naïve" {
		t.Errorf("UTF-8: %v", err)
	}
}

// TestLoadConfig_TemplatesDirHoldsTheConfig: templates_dir set to the config's own directory
// (templates_dir: /etc/shoelace) read agent.yaml as a list of template entries and said
// "agent.yaml:1: want a list of template entries (each starting with "- "), not a mapping",
// which sent the admin to rewrite a config that was right. Now the error says that
// templates_dir holds the config itself, and to give it a directory of its own.
func TestLoadConfig_TemplatesDirHoldsTheConfig(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates_dir: $DIR\ntemplates:\n  - contents: a\n    destination: $DIR/a\n")
	_, err := agent.LoadConfig(path)
	if want := path + ": templates_dir " + dir + " holds this config file: its *.yaml files are read as lists of template entries; give templates_dir a directory of its own, such as " + filepath.Join(dir, "templates.d"); err == nil || err.Error() != want {
		t.Errorf("templates_dir holding the config: %v\nwant %s", err, want)
	}
	// A config named otherwise (agent.conf) is not among the *.yaml files: the others are read.
	conf := filepath.Join(dir, "agent.conf")
	if err := os.Rename(path, conf); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte("- contents: b\n  destination: "+dir+"/b\n"), 0o644)
	if cfg, err := agent.LoadConfig(conf); err != nil || len(cfg.Templates) != 2 {
		t.Errorf("agent.conf with templates_dir beside it: %v", err)
	}
}

// TestLoadConfig_TemplatesDirSkipsHiddenFiles: templates_dir read every name matching
// *.yaml, hidden ones too, which the shell's *.yaml leaves out: Emacs's lock file of b.yaml
// (.#b.yaml, a symbolic link to nowhere while b.yaml is edited) made every load fail ("open
// .#b.yaml: no such file or directory"), and another tool's hidden temp file (Ansible's
// .ansible_tmp…b.yaml) was read as a second list, its destinations "also rendered by" b.yaml.
// Hidden files are not read now, as systemd skips them in its drop-in directories.
func TestLoadConfig_TemplatesDirSkipsHiddenFiles(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken_file: $DIR/token\ntemplates_dir: $DIR/conf.d\n")
	confd := filepath.Join(dir, "conf.d")
	os.Mkdir(confd, 0o755)
	entry := []byte("- contents: b\n  destination: " + dir + "/b\n")
	os.WriteFile(filepath.Join(confd, "b.yaml"), entry, 0o644)
	if err := os.Symlink("root@vm.1234:1700000000", filepath.Join(confd, ".#b.yaml")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(confd, ".ansible_tmp1x2y3zb.yaml"), entry, 0o644)
	os.WriteFile(filepath.Join(confd, ".c.yml"), []byte("not: read"), 0o644)
	cfg, err := agent.LoadConfig(path)
	if err != nil || len(cfg.Templates) != 1 || cfg.Templates[0].File != filepath.Join(confd, "b.yaml") {
		t.Fatalf("templates_dir with hidden files: %v", err)
	}
	if files, err := cfg.TemplateFiles(); err != nil || len(files) != 1 {
		t.Errorf("TemplateFiles = %q, %v; want b.yaml alone", files, err)
	}
	if w := cfg.TemplatesDirWarnings(); len(w) != 0 {
		t.Errorf("warnings about hidden files: %q", w)
	}
}

// A destination whose name leaves no room for the temp names made beside it (over 224 bytes;
// 220 with backup, whose temp file is .NAME.bak.shoelace-N) is a config error saying so. Before,
// validate and render --dry passed it and every install failed ("file name too long"), or one
// in two, as the temp name's number had 19 or 20 digits.
func TestLoadConfig_DestinationNameTooLongForItsTempFile(t *testing.T) {
	for _, tc := range []struct {
		n      int
		backup bool
		ok     bool
	}{{224, false, true}, {225, false, false}, {220, true, true}, {221, true, false}} {
		text := "server: http://h:1\nappliance: a\ntoken: t\ncache_dir: $DIR/cache\ntemplates:\n  - contents: x\n    destination: $DIR/" + strings.Repeat("n", tc.n) + "\n"
		if tc.backup {
			text += "    backup: true\n"
		}
		_, path := writeConfig(t, text)
		_, err := agent.LoadConfig(path)
		switch {
		case tc.ok && err != nil:
			t.Errorf("name of %d bytes, backup %v: %v", tc.n, tc.backup, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "destination's file name is too long to be installed")):
			t.Errorf("name of %d bytes, backup %v: err = %v, want it refused", tc.n, tc.backup, err)
		}
	}
}

// A null entry in a list of templates (a "-" with nothing after it, an entry commented out but
// its dash) is dropped by the YAML decoder: the entries after it are named by their own lines,
// not by the line of the entry before them, in the config and in a templates_dir file alike.
func TestLoadConfig_NullEntryKeepsLines(t *testing.T) {
	dir, path := writeConfig(t, "server: http://x:1\nappliance: web\ntoken: t\ntemplates_dir: $DIR/conf.d\ntemplates:\n"+
		"  - # contents: old\n"+
		"  - contents: a\n    destination: $DIR/a\n"+
		"  - contents: b\n    destination: $DIR/b\n    perms: \"9\"\n")
	_, err := agent.LoadConfig(path)
	if want := path + ":9: template " + dir + "/b: perms"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}

	os.WriteFile(path, []byte(strings.ReplaceAll("server: http://x:1\nappliance: web\ntoken: t\ntemplates_dir: $DIR/conf.d\n", "$DIR", dir)), 0o644)
	confd := filepath.Join(dir, "conf.d")
	os.Mkdir(confd, 0o755)
	os.WriteFile(filepath.Join(confd, "b.yaml"), []byte("- ~\n- contents: a\n  destination: "+dir+"/a\n-\n- contents: b\n  destination: "+dir+"/a\n"), 0o644)
	_, err = agent.LoadConfig(path)
	if want := filepath.Join(confd, "b.yaml") + ":5: template " + dir + "/a: destination is also rendered by " + filepath.Join(confd, "b.yaml") + ":2"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// A destination that is the template's own source (by name, through a symbolic link, or a hard
// link of it) is a config error: validate passed it, and the first render replaced the
// template with what it rendered, for good. Another template's source may be rendered (a
// template that writes another's).
func TestLoadConfig_DestinationIsItsOwnSource(t *testing.T) {
	dir, _ := writeConfig(t, "")
	src := filepath.Join(dir, "a.tmpl")
	os.WriteFile(src, []byte("port={{ key \"port\" }}\n"), 0o644)
	os.Symlink(dir, filepath.Join(dir, "link"))
	os.Link(src, filepath.Join(dir, "hard.tmpl"))
	base := "server: http://127.0.0.1:7400\nappliance: web\ntoken_file: $DIR/token\ncache_dir: $DIR/cache\ntemplates:\n"
	for _, dest := range []string{"$DIR/a.tmpl", "$DIR/link/a.tmpl", "$DIR/hard.tmpl"} {
		text := base + "  - source: $DIR/a.tmpl\n    destination: " + dest + "\n"
		path := filepath.Join(dir, "agent.yaml")
		os.WriteFile(path, []byte(strings.ReplaceAll(text, "$DIR", dir)), 0o644)
		_, err := agent.LoadConfig(path)
		if want := path + ":6: template " + strings.ReplaceAll(dest, "$DIR", dir) + ": destination is the template's own source " + src; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("destination %s: err = %v, want %q", dest, err, want)
		}
	}
	text := base + "  - source: $DIR/a.tmpl\n    destination: $DIR/b.tmpl\n  - contents: \"x\"\n    destination: $DIR/a.tmpl\n"
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte(strings.ReplaceAll(text, "$DIR", dir)), 0o644)
	if _, err := agent.LoadConfig(path); err != nil {
		t.Errorf("a template rendering another's source: %v", err)
	}
}
