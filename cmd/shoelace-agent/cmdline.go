package main

import "strings"

// configFromCommandLine is the --config (or -c) that a Windows service's command line gives, as
// install registers it ("C:\Program Files\shoelace\shoelace-agent.exe" run --config "D:\x
// y\agent.yaml"), "" when it gives none: status reads that config, not the default, when it is
// not given one, so that it reports on the agent the service runs. Pure, so that it is tested
// on every system.
func configFromCommandLine(cmdline string) string {
	args := splitWindowsArgs(cmdline)
	for i, a := range args {
		switch {
		case (a == "--config" || a == "-config" || a == "-c" || a == "--c") && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, "--config="), strings.HasPrefix(a, "-config="):
			_, v, _ := strings.Cut(a, "=")
			return v
		}
	}
	return ""
}

// splitWindowsArgs splits a command line as CommandLineToArgvW does (the rules that
// syscall.EscapeArg, which the service manager's command line was written with, follows):
// spaces and tabs separate arguments outside double quotes; 2n backslashes before a quote are n
// and the quote opens or closes, 2n+1 are n and a literal quote; other backslashes are
// themselves; "" inside quotes is a literal quote.
func splitWindowsArgs(s string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			n := 0
			for i < len(s) && s[i] == '\\' {
				n++
				i++
			}
			if i < len(s) && s[i] == '"' {
				cur.WriteString(strings.Repeat(`\`, n/2))
				if n%2 == 1 {
					cur.WriteByte('"')
				} else {
					i-- // the quote opens or closes, below
				}
			} else {
				cur.WriteString(strings.Repeat(`\`, n))
				i--
			}
			inArg = true
		case c == '"':
			if quoted && i+1 < len(s) && s[i+1] == '"' {
				cur.WriteByte('"')
				i++
			} else {
				quoted = !quoted
			}
			inArg = true
		case (c == ' ' || c == '\t') && !quoted:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
