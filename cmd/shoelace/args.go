package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// cmdNode is one level of the command tree as the argument reordering sees it.
type cmdNode struct {
	flags []cli.Flag
	subs  []*cli.Command
}

// reorderArgs moves every flag to the command that defines it, ahead of the positional
// arguments, so that flags work before or after positionals ("shoelace appliance get web
// --output json", "shoelace kv get x --addr …"): urfave/cli v2 stops parsing flags at the first
// positional argument and parses global flags only before the command name.
//
// args[0] is the program name. The result is
// [prog, root flags…, cmd, cmd flags…, sub, sub flags…, ("--"), positionals…, after "--"…].
// A flag is placed at the deepest command on the path that defines it; unknown flags go to
// the last command, whose parser then names them in its error. A flag's value is kept with it
// (the next argument when the flag takes one and has no "=value"); a flag that takes a value
// and has none is a usage error. Everything after "--" stays
// positional, after the other positionals, and the "--" moves in front of the positionals.
// With -h or --help, the positional arguments are dropped: "kv put k v --help" shows kv put's help.
// A repeatable flag (token create's --read and --write) also takes the words after its value,
// up to the next flag: "--read a b" is "--read a --read b".
func reorderArgs(root cmdNode, args []string) ([]string, error) {
	if len(args) == 0 {
		return args, nil
	}
	path := []cmdNode{root}
	var names []string    // command names on the path, after the program name
	var groups [][]string // each flag with its value, in order
	var positionals, afterDashes []string
	dashes := false
	descending := true  // positionals may still name a subcommand
	repeatable := false // a repeatable flag was given: it would take the positionals after it
	helpTopic := false  // "help" (or "h") before the command names: "help kv put" is "kv put --help"

	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			dashes = true
			afterDashes = append(afterDashes, rest[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			name, hasValue := flagName(a)
			_, f := findFlag(path, name)
			group := []string{a}
			if !hasValue && takesValue(f, name, root) {
				if i+1 >= len(rest) {
					// As the other usage errors say it: the command, then where to look.
					prefix, help := "", "shoelace"
					if len(names) > 0 {
						prefix, help = strings.Join(names, " ")+": ", help+" "+strings.Join(names, " ")
					}
					return nil, usagef("%sflag needs a value: %s (see %s --help)", prefix, a, help)
				}
				group = append(group, rest[i+1])
				i++
			}
			if _, ok := f.(*cli.StringSliceFlag); ok {
				// "--read PREFIX…", as the usage writes it: the words after a repeatable flag,
				// up to the next flag, are more of its values ("--read a b" is "--read a
				// --read b"). The one command with such flags (token create) takes no
				// positionals: "--read a b" was a "too many arguments" error.
				repeatable = true
				for i+1 < len(rest) && rest[i+1] != "--" && (len(rest[i+1]) < 2 || rest[i+1][0] != '-') {
					group = append(group, "--"+name, rest[i+1])
					i++
				}
			}
			groups = append(groups, group)
			continue
		}
		if descending {
			if subs := path[len(path)-1].subs; !helpTopic && (a == "help" || a == "h") && len(subs) > 0 && findCommand(subs, a) == nil {
				// urfave/cli's help takes one word as its topic ("help kv put" showed kv's help):
				// the words after it name the command whose help to show.
				helpTopic = true
				continue
			}
			if sub := findCommand(path[len(path)-1].subs, a); sub != nil {
				path = append(path, cmdNode{flags: sub.Flags, subs: sub.Subcommands})
				names = append(names, a)
				continue
			}
			descending = false
		}
		positionals = append(positionals, a)
	}

	if helpTopic {
		if len(positionals) > 0 && len(path[len(path)-1].subs) > 0 {
			// No such command in the group: its help command says so (a usage error).
			names = append(names, "help")
			path = append(path, cmdNode{})
		} else {
			groups = append(groups, []string{"--help"})
		}
	}
	flagsAt := make([][]string, len(path))
	for _, g := range groups {
		name, _ := flagName(g[0])
		if name == "help" || name == "h" {
			// Help needs no arguments, and urfave/cli would take the first one as a help topic.
			positionals, afterDashes, dashes = nil, nil, false
		}
	}
	for _, g := range groups {
		name, _ := flagName(g[0])
		level, _ := findFlag(path, name)
		if level < 0 {
			level = len(path) - 1
		}
		flagsAt[level] = append(flagsAt[level], g...)
	}

	out := []string{args[0]}
	out = append(out, flagsAt[0]...)
	for i, n := range names {
		out = append(out, n)
		out = append(out, flagsAt[i+1]...)
	}
	if dashes || (repeatable && len(positionals) > 0) {
		// Before every positional: the flag parser consumes a "--" only where a flag may stand.
		// After a repeatable flag it also keeps the positionals its own (a stray word before
		// "--read a" stays a stray word when the result is read again).
		out = append(out, "--")
	}
	out = append(out, positionals...)
	return append(out, afterDashes...), nil
}

// flagName returns the name of a flag argument ("--cas=3" → "cas", true).
func flagName(a string) (name string, hasValue bool) {
	name = strings.TrimLeft(a, "-")
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue
}

// findFlag finds the deepest level of path that defines the flag name; -1 when none does.
func findFlag(path []cmdNode, name string) (int, cli.Flag) {
	for level := len(path) - 1; level >= 0; level-- {
		for _, f := range path[level].flags {
			for _, n := range f.Names() {
				if n == name {
					return level, f
				}
			}
		}
	}
	if name == "help" || name == "h" {
		return len(path) - 1, nil
	}
	return -1, nil
}

// takesValue reports whether the flag consumes the next argument. A flag unknown on the path
// is looked up anywhere in the tree, so that its value is not mistaken for a positional.
func takesValue(f cli.Flag, name string, root cmdNode) bool {
	if f == nil {
		f = findAnywhere(root, name)
		if f == nil {
			return false
		}
	}
	if tv, ok := f.(interface{ TakesValue() bool }); ok {
		return tv.TakesValue()
	}
	return false
}

func findAnywhere(n cmdNode, name string) cli.Flag {
	for _, f := range n.flags {
		for _, fn := range f.Names() {
			if fn == name {
				return f
			}
		}
	}
	for _, s := range n.subs {
		if f := findAnywhere(cmdNode{flags: s.Flags, subs: s.Subcommands}, name); f != nil {
			return f
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// requiredInt64Flag is an Int64Flag that a command requires, so --help shows no default for it
// (urfave would print its zero value as "(default: 0)", which no user can rely on).
type requiredInt64Flag struct{ *cli.Int64Flag }

func (requiredInt64Flag) GetDefaultText() string { return "" }

func (f requiredInt64Flag) String() string { return cli.FlagStringer(f) }
