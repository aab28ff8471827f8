// Command completions writes the bash and zsh completion scripts of shoelace and
// shoelace-agent into a directory, for the packages (the binaries may be built for another
// architecture, so they cannot be run to print them):
//
//	go run ./scripts/completions DIR
//
// It writes DIR/bash/shoelace, DIR/bash/shoelace-agent, DIR/zsh/_shoelace and
// DIR/zsh/_shoelace-agent: what `shoelace completion bash` (and so on) print.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoelace-dev/shoelace/internal/complete"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/completions DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "completions:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	for _, prog := range []string{"shoelace", "shoelace-agent"} {
		for shell, name := range map[string]string{"bash": prog, "zsh": "_" + prog} {
			s, err := complete.Script(prog, shell)
			if err != nil {
				return err
			}
			p := filepath.Join(dir, shell, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
