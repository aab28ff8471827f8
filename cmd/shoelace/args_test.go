package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

func testTree() cmdNode {
	app := newApp(&cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	return cmdNode{flags: app.Flags, subs: app.Commands}
}

func TestReorderArgs(t *testing.T) {
	tree := testTree()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"nothing", "shoelace", "shoelace"},
		{"already in order", "shoelace --addr A kv get x", "shoelace --addr A kv get x"},
		{"global flag after positional", "shoelace kv get x --addr A", "shoelace --addr A kv get x"},
		{"global flag with = after positional", "shoelace kv get x --addr=A", "shoelace --addr=A kv get x"},
		{"command flag after positionals", "shoelace kv put k v --cas 3", "shoelace kv put --cas 3 k v"},
		{"command flag between positionals", "shoelace kv put k --cas 3 v", "shoelace kv put --cas 3 k v"},
		{"flags of both levels mixed", "shoelace kv rm x -o json --recurse --token-file f",
			"shoelace -o json --token-file f kv rm --recurse x"},
		{"global flag between commands", "shoelace kv --output json get x", "shoelace --output json kv get x"},
		{"command flag before the command name", "shoelace kv --cas 3 put k v", "shoelace kv put --cas 3 k v"},
		{"single dash long flag", "shoelace kv get x -addr A", "shoelace -addr A kv get x"},
		{"stdin dash is positional", "shoelace kv put k - --cas 0", "shoelace kv put --cas 0 k -"},
		{"double dash keeps what follows", "shoelace kv put k --cas 1 -- -5", "shoelace kv put --cas 1 -- k -5"},
		{"double dash protects flag lookalikes", "shoelace kv put -- k --addr", "shoelace kv put -- k --addr"},
		{"apply -f after name", "shoelace appliance apply web -f x.yaml --cas 7", "shoelace appliance apply -f x.yaml --cas 7 web"},
		{"value that names a command", "shoelace --output kv kv get x", "shoelace --output kv kv get x"},
		{"unknown flag goes to the leaf", "shoelace kv get x --bogus", "shoelace kv get --bogus x"},
		{"unknown command stays positional", "shoelace kv frob x --addr A", "shoelace --addr A kv frob x"},
		{"help flag drops the positionals", "shoelace kv get x --help", "shoelace kv get --help"},
		{"help after dashes is a value", "shoelace kv put k -- --help", "shoelace kv put -- k --help"},
		{"server flags", "shoelace server --listen 127.0.0.1:1 --data-dir d", "shoelace server --listen 127.0.0.1:1 --data-dir d"},
		{"server flag value with spaces", "shoelace server --data-dir=d --log-level debug", "shoelace server --data-dir=d --log-level debug"},
		{"repeatable slice flag", "shoelace token create --read a --name n --read b",
			"shoelace token create --read a --name n --read b"},
		{"repeatable flag takes the words after it", "shoelace token create --name n --read a b --write c,d e --admin",
			"shoelace token create --name n --read a --read b --write c,d --write e --admin"},
		{"repeatable flag with = takes the words after it", "shoelace token create --read=a b -o json",
			"shoelace -o json token create --read=a --read b"},
		{"a word before a repeatable flag stays positional", "shoelace token create x --read a",
			"shoelace token create --read a -- x"},
		{"bool flag does not take the next argument", "shoelace kv rm --recurse x", "shoelace kv rm --recurse x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := reorderArgs(tree, strings.Fields(tt.in))
			if err != nil {
				t.Fatalf("reorderArgs(%q): %v", tt.in, err)
			}
			got := strings.Join(out, " ")
			if got != tt.want {
				t.Errorf("reorderArgs(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestReorderArgs_EmptyArgs(t *testing.T) {
	if got, err := reorderArgs(testTree(), nil); len(got) != 0 || err != nil {
		t.Errorf("reorderArgs(nil) = %q, %v; want empty", got, err)
	}
}

func TestReorderArgs_MissingValue(t *testing.T) {
	for _, in := range []string{"shoelace kv get x --addr", "shoelace kv put k v --cas", "shoelace -o"} {
		_, err := reorderArgs(testTree(), strings.Fields(in))
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "flag needs a value") {
			t.Errorf("reorderArgs(%q) = %v, want a usage error", in, err)
		}
	}
}

// FuzzReorderArgs checks that reordering keeps every argument and the order of the positional
// arguments, and that it is idempotent.
func FuzzReorderArgs(f *testing.F) {
	f.Add("kv put k v --cas 3")
	f.Add("kv get x --addr A -o json")
	f.Add("appliance apply web -f - --cas 1 -- -x")
	f.Add("--output kv kv get x")
	f.Add("token create --name n --read a b --write c")
	f.Add("token create 0 -read 00")
	tree := testTree()
	f.Fuzz(func(t *testing.T, s string) {
		in := append([]string{"shoelace"}, strings.Fields(s)...)
		out, err := reorderArgs(tree, in)
		if err != nil {
			return
		}
		asksHelp := slices.ContainsFunc(in, func(a string) bool {
			name, _ := flagName(a)
			return len(a) > 1 && a[0] == '-' && (name == "help" || name == "h")
		})
		if !slices.Contains(in, "--") && !asksHelp {
			// The same arguments, but for the name of a repeatable flag, which "--read a b"
			// repeats before each of its values, and the "--" that keeps the positionals
			// after it.
			repeated := func(a string) bool {
				name, hasValue := flagName(a)
				return a == "--" || len(a) > 1 && a[0] == '-' && !hasValue && (name == "read" || name == "write")
			}
			a := slices.DeleteFunc(slices.Clone(in), repeated)
			b := slices.DeleteFunc(slices.Clone(out), repeated)
			slices.Sort(a)
			slices.Sort(b)
			if !slices.Equal(a, b) {
				t.Fatalf("reorderArgs(%q) = %q: arguments differ", in, out)
			}
		}
		if again, err := reorderArgs(tree, out); err != nil || !slices.Equal(again, out) {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, out, again, err)
		}
	})
}

func TestRun_UsageErrors(t *testing.T) {
	tests := []struct {
		args     string
		wantCode int
		wantErr  string
	}{
		{"shoelace frob", exitUsage, `unknown command "frob" (see shoelace --help)`},
		{"shoelace kv frob", exitUsage, `kv: unknown command "frob" (see shoelace kv --help)`},
		{"shoelace kv", exitUsage, `kv: missing command`},
		{"shoelace kv get x --bogus", exitUsage, `kv get: flag provided but not defined: -bogus (see shoelace kv get --help)`},
		{"shoelace kv ls -ojson", exitUsage, `kv ls: flag provided but not defined: -ojson (a flag's value goes after a space: -o json)`},
		{"shoelace appliance apply web -fweb.yaml", exitUsage, `(a flag's value goes after a space: -f web.yaml)`},
		{"shoelace kv ls -xjson", exitUsage, `kv ls: flag provided but not defined: -xjson (see shoelace kv ls --help)`},
		{"shoelace kv get", exitUsage, `kv get: missing argument (usage: shoelace kv get KEY)`},
		{"shoelace kv get a b", exitUsage, `kv get: too many arguments ["b"]`},
		{"shoelace kv put k", exitUsage, `kv put: missing argument (usage: shoelace kv put KEY VALUE|-)`},
		{"shoelace kv put k v --cas -1", exitUsage, `--cas -1: a revision is 0 or more`},
		{"shoelace kv put k v --cas x", exitUsage, `kv put: --cas "x" is not a whole number`},
		{"shoelace kv get x --output yaml", exitUsage, `--output "yaml": must be text or json`},
		{"shoelace kv get a//b", exitError, `invalid key "a//b": segment 2 is empty`},
		{"shoelace kv get ../etc", exitError, `invalid key "../etc": segment 1 is ".."`},
		{"shoelace kv ls //", exitError, `invalid prefix "//": segment 1 is empty`},
		{"shoelace kv ls shared//", exitError, `invalid prefix "shared//": segment 2 is empty`},
		{"shoelace kv rm shared// --recurse", exitError, `invalid prefix "shared//": segment 2 is empty`},
		{"shoelace kv rm //", exitError, `invalid key "//": segment 1 is empty`},
		{"shoelace kv get //", exitError, `invalid key "//": segment 1 is empty`},
		{"shoelace kv get /shared/a", exitError, `keys have no leading '/': did you mean shared/a?`},
		{"shoelace appliance apply web", exitUsage, `appliance apply: missing -f FILE`},
		{"shoelace appliance get we/b", exitError, `invalid appliance name "we/b"`},
		{"shoelace appliance export web --format toml", exitUsage, `--format "toml": must be json or yaml`},
		{"shoelace appliance diff web", exitUsage, `appliance diff: --from REVISION is required`},
		{"shoelace appliance wait web --for 0", exitUsage, `appliance wait: --for 0s: must be more than 0`},
		{"shoelace appliance wait web --interval -1s", exitUsage, `appliance wait: --interval -1s: must be more than 0`},
		{"shoelace appliance wait web --seen-within 0", exitUsage, `appliance wait: --seen-within 0s: must be more than 0`},
		{"shoelace kv put k v --canary 10% --bake -1s", exitUsage, `kv put: --bake -1s: must not be negative`},
		{"shoelace kv put k v --canary 10% --deadline 0", exitUsage, `kv put: --deadline 0s: must be above 0`},
		{"shoelace kv put appliances/web/p 1 --canary 10% --cas 5", exitUsage, `kv put: --cas and --canary do not go together`},
		{"shoelace appliance diff web --from 0", exitUsage, `appliance diff: --from 0: a revision is 1 or more`},
		{"shoelace appliance diff web --from -3 --to 5", exitUsage, `appliance diff: --from -3: a revision is 1 or more`},
		{"shoelace appliance diff web --from 100 --to 90", exitUsage, `appliance diff: --to 90 must be after --from 100`},
		{"shoelace appliance diff web --from 100 --to 100", exitUsage, `appliance diff: --to 100 must be after --from 100`},
		{"shoelace token create", exitUsage, `token create: missing --name NAME`},
		{"shoelace token create --name n", exitUsage, `exactly one of --appliance, --read/--write or --admin`},
		{"shoelace token create --name n --admin --read x", exitUsage, `exactly one of`},
		{"shoelace token create --name n --read a//b", exitError, `--read: invalid prefix "a//b"`},
		{"shoelace token create --name n --read /shared", exitError, `--read: invalid prefix "/shared": prefixes, like keys, have no leading '/': did you mean --read shared?`},
		{"shoelace token create --name n --write /appliances/web/", exitError, `did you mean --write appliances/web?`},
		{"shoelace maintenance maybe", exitUsage, `maintenance: "maybe" is not on, off or status`},
		{"shoelace import", exitUsage, `import: missing argument (usage: shoelace import FILE|-)`},
		{"shoelace import /nonexistent/x.json", exitError, `import: open /nonexistent/x.json: no such file`},
		{"shoelace export x", exitUsage, `export: too many arguments ["x"] (usage: shoelace export)`},
		{"shoelace health x", exitUsage, `health: too many arguments ["x"] (usage: shoelace health)`},
		{"shoelace snapshot restore f", exitUsage, `snapshot restore: missing --data-dir DIR`},
		{"shoelace snapshot restore f --data-dir d --log-level loud", exitUsage, `snapshot restore: --log-level "loud"`},
		{"shoelace snapshot restored f --etcd-endpoints http://127.0.0.1:1 --log-level loud", exitUsage, `snapshot restored: --log-level "loud"`},
		{"shoelace snapshot restore /nonexistent/s.db --data-dir d", exitError, `snapshot restore: open /nonexistent/s.db: no such file`},
		{"shoelace snapshot restored /nonexistent/s.db --etcd-endpoints http://127.0.0.1:1", exitError, `snapshot restored: open /nonexistent/s.db: no such file`},
		{"shoelace snapshot save", exitUsage, `snapshot save: missing argument`},
		{"shoelace server --log-level loud", exitUsage, `--log-level "loud"`},
		{"shoelace server extra", exitUsage, `server: too many arguments`},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), strings.Fields(tt.args), strings.NewReader(""), &stdout, &stderr)
			if code := exitCode(err); code != tt.wantCode {
				t.Errorf("exit code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			line := errorLine(err)
			if !strings.HasPrefix(line, "shoelace: ") || !strings.Contains(line, tt.wantErr) {
				t.Errorf("error line %q, want it to contain %q", line, tt.wantErr)
			}
			if strings.Contains(line, "\n") || strings.HasPrefix(line, "shoelace: shoelace") {
				t.Errorf("error line %q: want one line with one prefix", line)
			}
		})
	}
}

func TestServerServiceCommands_OneLineErrors(t *testing.T) {
	// systemd is not running in test containers; where it is, skip rather than touch the host.
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here; not touching the host's services")
	}
	for _, action := range []string{"status", "install", "start"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"shoelace", "server", action}, strings.NewReader(""), &stdout, &stderr)
		if err == nil {
			t.Fatalf("server %s succeeded without systemd", action)
		}
		line := errorLine(err)
		if strings.Contains(line, "\n") || !strings.HasPrefix(line, "shoelace server "+action+": ") {
			t.Errorf("server %s: error line %q, want one line naming the command", action, line)
		}
	}
	err := run(context.Background(), []string{"shoelace", "server", "status", "extra"}, strings.NewReader(""), io.Discard, io.Discard)
	if exitCode(err) != 2 {
		t.Errorf("server status extra: exit %d, want 2 (usage)", exitCode(err))
	}
}
