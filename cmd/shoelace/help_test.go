package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// Every command's --help, a group's too, says what it does and shows it run: an example line
// that runs that very command. Before, appliance ls, rollout status|promote|abort, schema rm, status, version,
// convert-consul-template and server install|…|status gave their one line and flags only.
func TestHelp_EveryCommandDescribedWithAnExample(t *testing.T) {
	help := func(path []string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"shoelace"}, path...), "--help")
		if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	listed := regexp.MustCompile(`(?m)^   ([a-z-]+)(?:, [a-z]+)?\s{2,}`)
	leaves := 0
	var walk func(path []string)
	walk = func(path []string) {
		out := help(path)
		_, list, group := strings.Cut(out, "COMMANDS:\n")
		if group {
			list, _, _ = strings.Cut(list, "\n\n")
			for _, m := range listed.FindAllStringSubmatch(list, -1) {
				if m[1] != "help" {
					walk(append(append([]string{}, path...), m[1]))
				}
			}
		}
		// A group's help shows its commands run too (kv, appliance, token, snapshot and appliance
		// schema gave only their list of commands before).
		if !group || strings.Join(path, " ") == "server" {
			leaves++
		}
		name := "shoelace " + strings.Join(path, " ")
		// A default no one can rely on: a required flag's, or a revision's zero.
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "(default:") && (strings.Contains(line, "(required)") || strings.Contains(line, "REVISION  ") && strings.HasSuffix(line, "(default: 0)")) {
				t.Errorf("%s --help gives a flag a default it does not have:\n%s", name, line)
			}
		}
		i := strings.Index(out, "DESCRIPTION:")
		if i < 0 {
			t.Errorf("%s --help says only its one line and flags:\n%s", name, out)
			return
		}
		ran := regexp.MustCompile(`(?m)^\s+(sudo )?` + regexp.QuoteMeta(name) + `\b`)
		if !ran.MatchString(out[i:]) {
			t.Errorf("%s --help shows no example of %s:\n%s", name, name, out)
		}
	}
	walk(nil)
	if leaves < 40 {
		t.Fatalf("walked %d commands, want every one", leaves)
	}
}

// import --help shows the --from-consul-export form as it shows --from-etcd's: in its usage, its
// description and an example, and --prefix, --appliance and --skip-refused say that they go with
// either. Before, only the options' list named --from-consul-export, and those three said "with
// --from-etcd" alone.
func TestHelp_ImportShowsFromConsulExport(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"shoelace", "import", "--help"}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	usage, rest, _ := strings.Cut(out, "DESCRIPTION:")
	desc, opts, _ := strings.Cut(rest, "OPTIONS:")
	if !strings.Contains(usage, "shoelace import --from-consul-export FILE --prefix PREFIX --appliance NAME") {
		t.Errorf("import --help's USAGE lacks the --from-consul-export form:\n%s", usage)
	}
	if !regexp.MustCompile(`(?m)^\s+shoelace import --from-consul-export `).MatchString(desc) {
		t.Errorf("import --help shows no --from-consul-export example:\n%s", desc)
	}
	for _, flag := range []string{"--prefix", "--appliance", "--skip-refused"} {
		line := regexp.MustCompile(`(?m)^\s+` + flag + `\b.*$`).FindString(opts)
		if !strings.Contains(line, "--from-consul-export") {
			t.Errorf("import --help: %s does not say it goes with --from-consul-export: %q", flag, line)
		}
	}
}

// kv put, txn, appliance apply and rollback --help say what a write of what the store holds already does
// without --canary: it writes nothing and prints the revision DESIGN.md names. Before, kv put and
// txn said so only of a write with --canary (so a plain one seemed to write), and apply and rollback
// not at all, each saying that it prints the revision of the write.
func TestHelp_WriteOfWhatTheStoreHoldsSaysNothingIsWritten(t *testing.T) {
	for _, c := range []struct {
		path []string
		want []string
	}{
		{[]string{"kv", "put"}, []string{"A put of the value the key holds already writes nothing", "its mod_revision"}},
		{[]string{"txn"}, []string{"whose puts all hold their values and whose deletes find nothing writes nothing", "writes only those"}},
		{[]string{"appliance", "apply"}, []string{"An apply of exactly the keys the appliance holds writes nothing", "appliance wait --revision", "puts only those"}},
		{[]string{"appliance", "rollback"}, []string{"A rollback to the keys the appliance holds already writes nothing"}},
	} {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"shoelace"}, c.path...), "--help")
		if err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		_, desc, _ := strings.Cut(stdout.String(), "DESCRIPTION:")
		desc, _, _ = strings.Cut(desc, "OPTIONS:")
		flat := strings.Join(strings.Fields(desc), " ")
		for _, w := range c.want {
			if !strings.Contains(flat, w) {
				t.Errorf("shoelace %s --help does not say %q:\n%s", strings.Join(c.path, " "), w, desc)
			}
		}
	}
}
