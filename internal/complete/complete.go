// Package complete gives a urfave/cli program shell completion: a hidden `__complete WORDS…
// -- CURRENT` command that prints the candidates for the word being typed, and the bash, zsh
// and fish scripts that ask it (`PROGRAM completion bash|zsh|fish`).
package complete

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// ErrUsage marks a completion command given wrong arguments (a usage error, exit 2).
var ErrUsage = errors.New("completion")

// Command is the hidden command the scripts run: `PROGRAM __complete WORDS… -- CURRENT`.
const Command = "__complete"

// Dynamic lists candidates that come from elsewhere (such as appliance names from the server)
// for the argument of cmd (its path below the program, "appliance get") being typed, given
// the program's context; nil when it has none.
type Dynamic func(c *cli.Context, path string, args []string) []string

// Values are the fixed choices of flags, by flag name (stage: system, application): what
// completes the value of such a flag in any command.
type Values map[string][]string

// Commands returns the `completion` and hidden `__complete` commands for app.
func Commands(app *cli.App, dynamic Dynamic, values Values) []*cli.Command {
	return []*cli.Command{
		{
			Name:      "completion",
			Usage:     "print the shell completion script for bash, zsh or fish",
			ArgsUsage: "bash|zsh|fish",
			Description: fmt.Sprintf(`Prints a script that makes the shell complete %[1]s's %[2]s:
   source <(%[1]s completion bash)          # bash, now
   %[1]s completion bash > /etc/bash_completion.d/%[1]s
   %[1]s completion zsh > "${fpath[1]}/_%[1]s"
   %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish
The .deb and .rpm packages install the bash and zsh scripts.`, app.Name, completes(dynamic)),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("%w: name one shell: bash, zsh or fish", ErrUsage)
				}
				s, err := Script(app.Name, c.Args().First())
				if err != nil {
					return err
				}
				_, err = io.WriteString(c.App.Writer, s)
				return err
			},
		},
		{
			Name:            Command,
			ArgsUsage:       "WORDS… -- CURRENT",
			Hidden:          true,
			SkipFlagParsing: true,
			Action: func(c *cli.Context) error {
				for _, s := range Candidates(c, app, c.Args().Slice(), dynamic, values) {
					fmt.Fprintln(c.App.Writer, s)
				}
				return nil
			},
		},
	}
}

// completes says what the script completes (the description's first sentence): commands and flags, and the names dynamic gives
// (appliance names from the server, for shoelace) when there is one.
func completes(dynamic Dynamic) string {
	if dynamic == nil {
		return "commands and flags.\nLoad it for this shell, or install it"
	}
	return "commands, flags and, where the\nserver is reachable, appliance names. Load it for this shell, or install it"
}

// Candidates returns what may follow words (the words typed after the program, then "--" and
// the word being typed): the subcommands of the command they name, its flags when the word
// starts with '-', or its dynamic arguments; after a flag that takes a value, that flag's values
// (none for a flag without fixed ones: the shell then completes a file).
func Candidates(c *cli.Context, app *cli.App, words []string, dynamic Dynamic, values Values) []string {
	cur := ""
	if i := slices.Index(words, "--"); i >= 0 {
		if i+1 < len(words) {
			cur = words[i+1]
		}
		words = words[:i]
	}
	cmds, flags := app.Commands, app.Flags
	var path []string
	var args []string
	var cmd *cli.Command
	var pending cli.Flag // a flag whose value is the word being typed
	for i := 0; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, "-") {
			f := findFlag(append(slices.Clone(flags), app.Flags...), w)
			if f == nil && cmd == nil {
				// A command's flag written before the command (shoelace-agent --config FILE
				// status, which the agent takes): its value is no command.
				for _, sc := range cmds {
					if f = findFlag(sc.Flags, w); f != nil {
						break
					}
				}
			}
			if f == nil || !takesValue(f) {
				continue
			}
			_, value, inline := strings.Cut(w, "=")
			if !inline && i+1 < len(words) {
				i++ // the flag's value
				value = words[i]
			} else if !inline {
				pending = f
			}
			// A program-wide flag typed on the line (--addr, --token-file) applies to the
			// dynamic candidates, as it would to the command.
			if slices.Contains(app.Flags, f) && (inline || i < len(words)) {
				_ = c.Set(f.Names()[0], value)
			}
			continue
		}
		if next := findCommand(cmds, w); next != nil && len(args) == 0 {
			cmd, cmds, flags = next, next.Subcommands, next.Flags
			path = append(path, next.Name)
			continue
		}
		args = append(args, w)
	}
	var out []string
	add := func(s string) {
		if strings.HasPrefix(s, cur) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	switch {
	case pending != nil:
		for _, v := range values[pending.Names()[0]] {
			add(v)
		}
	case strings.HasPrefix(cur, "-") && strings.Contains(cur, "="):
		// A value written in the flag's word (--stage=s): the flag's values, in that form.
		name, _, _ := strings.Cut(cur, "=")
		f := findFlag(append(slices.Clone(flags), app.Flags...), name)
		if f == nil && cmd == nil {
			// A command's flag written before the command, as above.
			for _, sc := range cmds {
				if f = findFlag(sc.Flags, name); f != nil {
					break
				}
			}
		}
		if f != nil && takesValue(f) {
			for _, v := range values[f.Names()[0]] {
				add(name + "=" + v)
			}
		}
	case strings.HasPrefix(cur, "-"):
		for _, f := range append(slices.Clone(flags), app.Flags...) {
			if cmd != nil && f == cli.VersionFlag {
				continue // the program's --version is taken before a command only
			}
			for _, n := range f.Names() {
				if len(n) == 1 {
					add("-" + n)
				} else {
					add("--" + n)
				}
			}
		}
	case len(cmds) > 0 && len(args) == 0:
		for _, sc := range cmds {
			if !sc.Hidden {
				add(sc.Name)
			}
		}
	case cmd != nil && dynamic != nil:
		for _, s := range dynamic(c, strings.Join(path, " "), args) {
			add(s)
		}
	}
	return out
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name || slices.Contains(c.Aliases, name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, word string) cli.Flag {
	name, _, _ := strings.Cut(strings.TrimLeft(word, "-"), "=")
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// takesValue reports whether f is followed by a value (every flag but a boolean one).
func takesValue(f cli.Flag) bool {
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

// Script returns the completion script of program for shell.
func Script(program, shell string) (string, error) {
	fn := "_" + strings.NewReplacer("-", "_").Replace(program) + "_complete"
	switch shell {
	case "bash":
		// The words are the line's up to the cursor split at blanks, not COMP_WORDS, which bash
		// also splits at : and = (an --addr http://host:7400 typed on the line is one word).
		return fmt.Sprintf(`# bash completion for %[1]s (%[1]s completion bash)
%[2]s() {
	local IFS=$' \t\n' line="${COMP_LINE:0:COMP_POINT}" words
	read -ra words <<<"$line"
	[[ -z $line || $line == *[[:blank:]] ]] && words+=("")
	IFS=$'\n' COMPREPLY=($(%[1]s __complete "${words[@]:1:${#words[@]}-2}" -- "${words[-1]}" 2>/dev/null))
	# What follows the word's last = is what bash replaces (COMP_WORDBREAKS has =): --stage=s
	# completes to system, not --stage=system.
	local cur=${words[-1]}
	if [[ $cur == *=* && $COMP_WORDBREAKS == *=* ]]; then
		COMPREPLY=("${COMPREPLY[@]#"${cur%%"${cur##*=}"}"}")
	fi
}
complete -o default -F %[2]s %[1]s
`, program, fn), nil
	case "zsh":
		// Installed in $fpath (the packages' vendor-completions or site-functions), the file is
		// the body of _PROGRAM, autoloaded by compinit at the first TAB: that call must complete
		// too, not only register the function. Sourced, it registers it. No candidates: files,
		// as bash's -o default.
		return fmt.Sprintf(`#compdef %[1]s
# zsh completion for %[1]s (%[1]s completion zsh)
_%[1]s() {
	local -a candidates
	candidates=("${(@f)$(%[1]s __complete "${(@)words[2,CURRENT-1]}" -- "${words[CURRENT]}" 2>/dev/null)}")
	candidates=(${candidates:#})
	if (( ${#candidates} )); then
		compadd -a candidates
	else
		_files
	fi
}
if [[ ${funcstack[1]} == _%[1]s ]]; then
	_%[1]s "$@"
else
	compdef _%[1]s %[1]s
fi
`, program), nil
	case "fish":
		// No candidates: files (an -f FILE, an import's file), as bash's -o default.
		return fmt.Sprintf(`# fish completion for %[1]s (%[1]s completion fish)
function %[2]s
	set -l candidates (%[1]s __complete (commandline -opc)[2..-1] -- (commandline -ct) 2>/dev/null)
	if test (count $candidates) -gt 0
		printf '%%s\n' $candidates
	else
		__fish_complete_path (commandline -ct)
	end
end
complete -c %[1]s -f -a '(%[2]s)'
`, program, fn), nil
	}
	return "", fmt.Errorf("%w: unknown shell %q: bash, zsh or fish", ErrUsage, shell)
}
