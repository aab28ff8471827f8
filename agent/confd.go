package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// confd resources (DESIGN.md, "confd_dir"): confd v0.16.0 reads conf.d/*.toml under its
// confdir, one [template] table each, whose src names a file of confdir/templates, and its
// own settings from confd.toml. Each resource becomes a template in confd mode.

// ConfdResources is what a confd directory holds, read as the agent's templates.
type ConfdResources struct {
	// Dir is the confd directory (confd's -confdir).
	Dir string
	// Templates are the resources in the order confd reads them (conf.d walked in lexical
	// order), each with functions: confd; File and Line name the resource's [template] table.
	Templates []Template
	// Keys are each template's confd keys, as written (Templates[i].Keys has them without
	// repeats).
	Keys [][]string
	// Notes say what of confd.toml was ignored or applied to every resource, one line each.
	Notes []string
}

// confdResourceFields lists the [template] fields confd v0.16.0 reads (and owner, which its docs
// show and it ignores).
const confdResourceFields = "src, dest, keys, prefix, owner, uid, gid, mode, check_cmd, reload_cmd"

// confdResource is one conf.d file as decoded.
type confdResource struct {
	Template *struct {
		Src       string   `toml:"src"`
		Dest      string   `toml:"dest"`
		Keys      []string `toml:"keys"`
		Prefix    string   `toml:"prefix"`
		Owner     string   `toml:"owner"`
		UID       *int64   `toml:"uid"`
		GID       *int64   `toml:"gid"`
		Mode      string   `toml:"mode"`
		CheckCmd  string   `toml:"check_cmd"`
		ReloadCmd string   `toml:"reload_cmd"`
	} `toml:"template"`
}

// ConfdCommandTimeout bounds the check_cmd and reload_cmd of a confd resource. confd waits for
// them without a bound, and the reload a resource runs is often a `systemctl restart`, which
// waits for the service to stop and start again (90 s each by default): the 30 s of
// DefaultCommandTimeout would kill a reload that worked under confd, fail it and roll it back.
// A bound remains, so that a hung command cannot stop the agent for good.
const ConfdCommandTimeout = 5 * time.Minute

// confdConnectionSettings are confd.toml's settings for reaching its backend (and polling
// it): the agent reaches the Shoelace server instead, so they are ignored.
var confdConnectionSettings = map[string]bool{
	"backend": true, "nodes": true, "scheme": true, "srv_domain": true, "srv_record": true,
	"auth_token": true, "auth_type": true, "basic_auth": true, "username": true, "password": true,
	"client_cakeys": true, "client_cert": true, "client_key": true,
	"app_id": true, "user_id": true, "role_id": true, "secret_id": true, "path": true,
	"table": true, "separator": true, "file": true, "filter": true,
	"watch": true, "interval": true, "log-level": true, "keep-stage-file": true,
	"secret_keyring": true, // for cget…, which confd mode refuses at parse time
	// The fields of confd's Config without a TOML name, which its decoder matches by field
	// name: how it runs (onetime, keepstagefile), Vault's role, and what it sets itself
	// (configdir and templatedir from confdir; configfile, printversion from its flags).
	"role": true, "onetime": true, "keepstagefile": true, "configdir": true, "templatedir": true,
	"configfile": true, "printversion": true,
}

// confdSettings is confd.toml as far as it matters to the agent.
type confdSettings struct {
	Confdir  string `toml:"confdir"`
	Prefix   string `toml:"prefix"`
	Noop     bool   `toml:"noop"`
	SyncOnly bool   `toml:"sync-only"`
}

// ReadConfdDir reads a confd directory as confd v0.16.0 does: confd.toml (if any), then every
// file of conf.d and its subdirectories whose name ends in "toml". Each resource becomes a
// template in confd mode: src under dir/templates, dest, mode as perms, uid/gid (or owner) as
// owner/group, prefix (confd.toml's wins, as in confd), check_cmd with {{.src}} standing for
// the staged file ($SHOELACE_STAGED), reload_cmd as command. A field confd does not read, or
// one the agent cannot honour, is an error naming the file, the line and the field; every
// problem is reported.
func ReadConfdDir(dir string) (*ConfdResources, error) { return readConfdDir(dir, false) }

// readConfdDir is ReadConfdDir; with judge (the agent loading its config, not convert-confd,
// which prints), a file that judgeCommandFile refuses is an error, unread: a resource names the
// commands the agent runs.
func readConfdDir(dir string, judge bool) (*ConfdResources, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("confd_dir %s must be an absolute path", quotePath(dir, !unixModes))
	}
	dir = filepath.Clean(dir) // "/etc/confd/" is /etc/confd, as confd.toml's confdir says it
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("confd_dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("confd_dir %s is not a directory", dir)
	}
	if judge {
		for _, d := range []string{dir, filepath.Join(dir, "conf.d"), filepath.Join(dir, "templates")} {
			if err := judgeCommandDir(d); err != nil {
				return nil, fmt.Errorf("confd_dir: %w", err)
			}
		}
	}
	out := &ConfdResources{Dir: dir}
	var errs []string
	global, notes, gerrs := readConfdSettings(dir, judge)
	out.Notes, errs = notes, gerrs

	confDir := filepath.Join(dir, "conf.d")
	files, err := confdResourceFiles(confDir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		// confd warns "Found no templates" and renders nothing; say so, and why when conf.d
		// is a link (confd does not follow it either).
		why := ""
		if fi, err := os.Lstat(confDir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			why = ": it is a symbolic link, which confd does not follow either; point confd_dir at a directory whose conf.d is a directory"
		}
		out.Notes = append(out.Notes, fmt.Sprintf("%s: no resources (*toml files)%s", confDir, why))
	}
	for _, f := range files {
		if judge {
			if err := judgeLinkOwner(f); err != nil {
				errs = append(errs, err.Error())
				continue
			}
		}
		data, err := readConfdFile(f, judge)
		if err != nil {
			errs = append(errs, fmt.Sprintf("read %s: %v", f, err))
			continue
		}
		t, keys, fnotes, ferrs := parseConfdResource(f, data, dir, global)
		out.Notes = append(out.Notes, fnotes...)
		if len(ferrs) > 0 {
			errs = append(errs, ferrs...)
			continue
		}
		out.Templates = append(out.Templates, t)
		out.Keys = append(out.Keys, keys)
	}
	if len(errs) > 0 {
		return nil, &ConfigError{Problems: errs}
	}
	return out, nil
}

// confdResourceFiles lists the resource files of conf.d as confd finds them: a walk in lexical
// order (subdirectories too) of the files whose name matches "*toml". A missing conf.d holds
// none (confd warns and renders nothing). A directory whose name starts with ".." is not
// walked: conf.d mounted from a Kubernetes configmap holds a.toml -> ..data/a.toml, ..data ->
// ..2026_12_07_…, and the resources again in that directory. confd reads each twice and
// renders it twice; the agent refused the pair ("destination is also rendered by") and did
// not start.
func confdResourceFiles(confDir string) ([]string, error) {
	if _, err := os.Stat(confDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var files []string
	err := filepath.WalkDir(confDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if d.IsDir() && kubeHidden(d.Name()) && p != confDir {
			return fs.SkipDir
		}
		if ok, _ := filepath.Match("*toml", d.Name()); !ok {
			return nil
		}
		fi, err := os.Stat(p) // a link to a file counts, as in confd
		if err != nil {
			// confd stops on it too (a dangling or looping link): a resource that silently
			// dropped out would leave its file unrendered with exit 0.
			return fmt.Errorf("read %s: %w", p, err)
		}
		if fi.IsDir() {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files) // WalkDir's order already; said for the reader
	return files, nil
}

// kubeHidden reports whether name is one that the kubelet gives the directories of a configmap
// or secret volume that only its links lead into (..data, ..2026_12_07_10_00_00.123456).
func kubeHidden(name string) bool { return strings.HasPrefix(name, "..") }

// maxConfdFileBytes bounds a conf.d resource or confd.toml: each holds a few settings, and a
// stray large file whose name ends in "toml" must not take the VM's memory while it is read.
const maxConfdFileBytes = 1 << 20

// readConfdFile reads a resource or confd.toml of at most maxConfdFileBytes, judged by
// judgeCommandFile when judge is set.
func readConfdFile(name string, judge bool) ([]byte, error) {
	data, err := atomicfile.ReadInputCheck(name, maxConfdFileBytes, commandFileCheck(name, judge))
	var tooLarge *atomicfile.TooLargeError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%s is over %d bytes: a confd resource holds a few settings", name, maxConfdFileBytes)
	}
	return data, err
}

// readConfdSettings reads dir/confd.toml, if there is one.
func readConfdSettings(dir string, judge bool) (confdSettings, []string, []string) {
	var s confdSettings
	name := filepath.Join(dir, "confd.toml")
	data, err := readConfdFile(name, judge)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil, nil
	}
	if err != nil {
		return s, nil, []string{fmt.Sprintf("read %s: %v", name, err)}
	}
	md, err := toml.Decode(string(data), &s)
	if err != nil {
		return s, nil, []string{tomlError(name, err)}
	}
	var errs, ignored, notes, onetime []string
	for _, k := range md.Undecoded() {
		switch {
		case len(k) == 1 && confdConnectionSettings[strings.ToLower(k[0])]:
			// Regardless of case, as confd's TOML decoder matches its fields.
			ignored = append(ignored, k[0])
			if strings.EqualFold(k[0], "onetime") {
				onetime = append(onetime, fmt.Sprintf("%s: %s: for one pass, run shoelace-agent once --confdir %s", keyLine(name, data, k), k[0], dir))
			}
		default:
			errs = append(errs, fmt.Sprintf("%s: unsupported setting %q: confd.toml may hold prefix, confdir, noop, sync-only and confd's connection settings (which are ignored)",
				keyLine(name, data, k), k.String()))
		}
	}
	if len(ignored) > 0 {
		notes = append(notes, fmt.Sprintf("%s: %s ignored: the agent reads its keys from the Shoelace server (server: and token_file: in its config) and re-renders on every change",
			name, strings.Join(ignored, ", ")))
	}
	notes = append(notes, onetime...)
	if s.Confdir != "" && filepath.Clean(s.Confdir) != dir && !sameDir(s.Confdir, dir) {
		errs = append(errs, fmt.Sprintf("%s: confdir = %q, but the agent reads %s: point confd_dir (or --confdir) at %s", keyLine(name, data, toml.Key{"confdir"}), s.Confdir, dir, s.Confdir))
	}
	if s.Noop {
		errs = append(errs, fmt.Sprintf("%s: noop = true is not supported: run shoelace-agent render --dry to see what would change without writing", keyLine(name, data, toml.Key{"noop"})))
	}
	if s.Prefix != "" {
		p, err := cleanConfdPrefix(s.Prefix)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: prefix: %v", keyLine(name, data, toml.Key{"prefix"}), err))
		}
		s.Prefix = p
		notes = append(notes, fmt.Sprintf("%s: prefix %s applies to every resource (confd's global prefix wins over a resource's)", name, p))
	}
	if s.SyncOnly {
		notes = append(notes, fmt.Sprintf("%s: sync-only = true: no resource's check_cmd or reload_cmd runs", name))
	}
	return s, notes, errs
}

// sameDir reports whether a and b name one directory (a link to it, another path): confd read
// the files the agent reads.
func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// parseConfdResource decodes one conf.d file into a template in confd mode, and returns the
// resource's keys, notes on what it ignores as confd does, and its problems.
func parseConfdResource(name string, data []byte, dir string, global confdSettings) (Template, []string, []string, []string) {
	var r confdResource
	md, err := toml.Decode(string(data), &r)
	if err != nil {
		return Template{}, nil, nil, []string{tomlError(name, err)}
	}
	var errs []string
	for _, k := range md.Undecoded() {
		if len(k) >= 1 && k[0] == "template" {
			errs = append(errs, fmt.Sprintf("%s: unsupported field %q in [template]: a confd resource has %s", keyLine(name, data, k), strings.Join(k[1:], "."), confdResourceFields))
		} else {
			errs = append(errs, fmt.Sprintf("%s: unsupported field %q: a confd resource holds one [template] table", keyLine(name, data, k), k.String()))
		}
	}
	if r.Template == nil {
		if len(errs) == 0 {
			errs = append(errs, fmt.Sprintf("%s: no [template] table: a confd resource holds one, with src, dest and keys", name))
		}
		return Template{}, nil, nil, errs
	}
	rt := r.Template
	line := keyLine(name, data, toml.Key{"template"})
	t := Template{File: name, Line: keyLineNo(data, toml.Key{"template"}), Functions: templates.ModeConfd, Destination: rt.Dest, confdDir: dir}
	where := func(field string) string { return keyLine(name, data, toml.Key{"template", field}) }
	if rt.Dest != "" && !strings.ContainsRune(rt.Dest, 0) && (!filepath.IsAbs(rt.Dest) || filepath.Clean(rt.Dest) != rt.Dest) {
		// confd hands dest to the OS as written: a relative one ("./tmp/test.conf", as in
		// confd's own resource tests) is relative to the directory confd runs in, and
		// "/etc//x" is /etc/x. The agent does the same, so that the resource means the file it
		// meant to confd.
		abs, err := filepath.Abs(rt.Dest)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: dest %q: %v", where("dest"), rt.Dest, err))
		} else {
			t.Destination, t.confdDest = abs, rt.Dest
		}
	}
	if rt.Src == "" {
		errs = append(errs, fmt.Sprintf("%s: src is required: the template's file, relative to %s", line, filepath.Join(dir, "templates")))
	} else {
		// As confd: joined to the templates directory, even when it starts with '/'.
		t.Source = filepath.Join(dir, "templates", rt.Src)
	}
	t.Prefix = rt.Prefix
	if global.Prefix != "" {
		t.Prefix = global.Prefix
	}
	if t.Prefix != "" {
		p, err := cleanConfdPrefix(t.Prefix)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: prefix: %v", where("prefix"), err))
		}
		t.Prefix = p
	}
	if t.Prefix == "/" {
		t.Prefix = ""
	}
	var notes []string
	if rt.Mode != "" {
		// confd parses mode with strconv.ParseUint(mode, 0, 32): "0644" is octal, "644" decimal.
		m, err := strconv.ParseUint(rt.Mode, 0, 32)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("%s: mode %q is not a number: write an octal mode such as \"0644\"", where("mode"), rt.Mode))
		case m&^0o777 != 0 && !strings.HasPrefix(rt.Mode, "0") && octalPerms(rt.Mode):
			errs = append(errs, fmt.Sprintf("%s: mode %q is decimal to confd (mode %#o, with setuid/setgid/sticky or unknown bits): write %q", where("mode"), rt.Mode, m, "0"+rt.Mode))
		case m&^0o7777 != 0:
			errs = append(errs, fmt.Sprintf("%s: mode %q is %#o to confd, beyond a file's mode bits: write an octal mode such as \"0644\"", where("mode"), rt.Mode, m))
		default:
			t.Perms = fmt.Sprintf("%04o", m&0o777)
			if m&0o7000 != 0 {
				// confd hands the number to os.FileMode, whose setuid, setgid and sticky bits
				// are not these: its file got the permission bits alone.
				notes = append(notes, fmt.Sprintf("%s: mode %q: setuid, setgid and sticky bits dropped, as confd drops them (Go's os.FileMode has them elsewhere): the file is installed %s, as confd installed it", where("mode"), rt.Mode, t.Perms))
			}
		}
	}
	if rt.Owner != "" {
		// confd's quick-start guide writes owner = "nginx", but confd v0.16.0 has no such
		// field and leaves the file to its own user: so does the agent.
		notes = append(notes, fmt.Sprintf("%s: owner %q ignored, as confd v0.16.0 ignores it (its docs show owner, it reads only uid): the file belongs to the agent's user, as it did to confd's; give uid = N to set its owner", where("owner"), rt.Owner))
	}
	// -1 is confd's own "not set" (it starts uid and gid at -1 before decoding): the file gets
	// confd's user and group, as one without uid or gid.
	if rt.UID != nil && *rt.UID != -1 {
		t.Owner = strconv.FormatInt(*rt.UID, 10)
	}
	if rt.GID != nil && *rt.GID != -1 {
		t.Group = strconv.FormatInt(*rt.GID, 10)
	}
	if !global.SyncOnly {
		t.Command = rt.ReloadCmd
		if rt.CheckCmd != "" {
			c, err := confdCheckCommand(rt.CheckCmd, shells[0] == "cmd")
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: check_cmd: %v", where("check_cmd"), err))
			}
			t.Check = c
		}
		if t.Command != "" || t.Check != "" {
			t.CommandTimeout = Duration(ConfdCommandTimeout)
		}
	}
	// As confd loads them: the template sees only the keys at or below these (none without).
	t.Keys = []string{}
	seen := make(map[string]bool, len(rt.Keys))
	for _, k := range rt.Keys {
		if !seen[k] {
			seen[k] = true
			t.Keys = append(t.Keys, k)
		}
	}
	return t, rt.Keys, notes, errs
}

// octalPerms reports whether s read as octal is a mode of permission bits only ("644", not
// "7777" or "4755").
func octalPerms(s string) bool {
	m, err := strconv.ParseUint(s, 8, 32)
	return err == nil && m&^0o777 == 0
}

// stagedMark stands for {{.src}} while a check_cmd is expanded.
const stagedMark = "\x01shoelace-staged\x01"

// confdCheckCommand turns a confd check_cmd, a Go template whose .src is the staged file, into
// the agent's check, which finds the staged file in $SHOELACE_STAGED. Inside single quotes
// the quotes are closed around the variable, so that the shell expands it as confd's
// substitution did; inside double quotes it is left as it is; elsewhere it is double-quoted.
// With cmdExe (Windows, where confd ran check_cmd through cmd /C and the agent's default shell
// is cmd) it is %SHOELACE_STAGED%, which cmd expands inside double quotes too: cmd passed
// "$SHOELACE_STAGED" on as it is, so that every check failed.
func confdCheckCommand(cmd string, cmdExe bool) (string, error) {
	tm, err := template.New("check_cmd").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return "", fmt.Errorf("%w", err)
	}
	// Only text and {{.src}} (with spaces or a trim marker): anything else confd could run is
	// not used in practice, and a loop here would hang validate.
	for _, n := range tm.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
		case *parse.ActionNode:
			if len(n.Pipe.Decl) != 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 || n.Pipe.Cmds[0].Args[0].String() != ".src" {
				return "", fmt.Errorf("%s: only {{.src}}, the staged file, is supported", n)
			}
		default:
			return "", fmt.Errorf("%s: only {{.src}}, the staged file, is supported", n)
		}
	}
	var b bytes.Buffer
	if err := tm.Execute(&b, map[string]string{"src": stagedMark}); err != nil {
		return "", fmt.Errorf("%w", err)
	}
	s := b.String()
	if cmdExe {
		return cmdStaged(s), nil
	}
	var out strings.Builder
	single, double := false, false
	for i := 0; i < len(s); i++ {
		if strings.HasPrefix(s[i:], stagedMark) {
			switch {
			case single:
				out.WriteString(`'"$SHOELACE_STAGED"'`)
			case double:
				out.WriteString("$SHOELACE_STAGED")
			default:
				// Quoted, so that a destination with a space or a '*' in its name stays one
				// word (confd's bare path split there, and ran what a ';' in it said).
				out.WriteString(`"$SHOELACE_STAGED"`)
			}
			i += len(stagedMark) - 1
			continue
		}
		c := s[i]
		switch {
		case c == '\\' && !single && i+1 < len(s):
			out.WriteByte(c)
			i++
			c = s[i]
		case c == '\'' && !double:
			single = !single
		case c == '"' && !single:
			double = !double
		}
		out.WriteByte(c)
	}
	return out.String(), nil
}

// cmdStaged is confdCheckCommand's text s, stagedMark in it, for cmd.exe: %SHOELACE_STAGED%,
// double-quoted outside double quotes (cmd knows no single quotes; ^ escapes the next
// character outside double quotes, a quote too).
func cmdStaged(s string) string {
	var out strings.Builder
	double := false
	for i := 0; i < len(s); i++ {
		if strings.HasPrefix(s[i:], stagedMark) {
			if double {
				out.WriteString("%SHOELACE_STAGED%")
			} else {
				out.WriteString(`"%SHOELACE_STAGED%"`)
			}
			i += len(stagedMark) - 1
			continue
		}
		c := s[i]
		switch {
		case c == '^' && !double && i+1 < len(s) && !strings.HasPrefix(s[i+1:], stagedMark):
			out.WriteByte(c)
			i++
			c = s[i]
		case c == '"':
			double = !double
		}
		out.WriteByte(c)
	}
	return out.String()
}

var tomlLineRE = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "[^"]*"\))?: (.*)$`)

// tomlError rewrites a TOML decoding error as "file:line: what".
func tomlError(name string, err error) string {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s:%d: %s", name, pe.Position.Line, pe.Message)
	}
	if m := tomlLineRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Sprintf("%s:%s: %s", name, m[1], m[2])
	}
	return fmt.Sprintf("%s: %s", name, strings.TrimPrefix(err.Error(), "toml: "))
}

// keyLine names where key is written in a TOML file: "file:line", or "file" when it cannot be
// told. BurntSushi/toml keeps the positions of keys to itself, so the lines are scanned: table
// headers set the table, "k =" and "a.b =" lines name keys in it; a key of an inline table is
// found at the line of the table's own key.
func keyLine(name string, data []byte, key toml.Key) string {
	if n := keyLineNo(data, key); n > 0 {
		return fmt.Sprintf("%s:%d", name, n)
	}
	return name
}

// keyLineNo is the line keyLine names, 0 when it cannot be told.
func keyLineNo(data []byte, key toml.Key) int {
	best, bestLen := 0, 0
	var table []string
	for i, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			h := strings.Trim(strings.SplitN(l, "#", 2)[0], " \t[]")
			table = splitTOMLKey(h)
			if n := matchLen(table, key); n == len(table) && n > bestLen {
				best, bestLen = i+1, n
			}
			continue
		}
		k, _, ok := strings.Cut(l, "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		full := append(append([]string{}, table...), splitTOMLKey(k)...)
		if n := matchLen(full, key); n == len(full) && n > bestLen {
			best, bestLen = i+1, n
		}
	}
	return best
}

// splitTOMLKey splits a dotted key, dropping the quotes and spaces around its parts.
func splitTOMLKey(k string) []string {
	var out []string
	for _, p := range strings.Split(k, ".") {
		p = strings.Trim(strings.TrimSpace(p), `"'`)
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// matchLen is how many leading parts of have match want, or -1 when have goes beyond want.
func matchLen(have []string, want toml.Key) int {
	if len(have) > len(want) {
		return -1
	}
	for i := range have {
		if have[i] != want[i] {
			return -1
		}
	}
	return len(have)
}

// convertedTemplate is a template entry as convert-confd and convert-consul-template print it:
// the fields of Template that are set, in the order of DESIGN.md's schema.
type convertedTemplate struct {
	Source            yamlText    `yaml:"source,omitempty"`
	Contents          yamlText    `yaml:"contents,omitempty"`
	Destination       yamlText    `yaml:"destination"`
	Functions         string      `yaml:"functions,omitempty"`
	Prefix            yamlText    `yaml:"prefix,omitempty"`
	Keys              *[]yamlText `yaml:"keys,omitempty"`
	ErrorOnMissingKey bool        `yaml:"error_on_missing_key,omitempty"`
	AllowFile         bool        `yaml:"allow_file,omitempty"`
	FunctionDenylist  []string    `yaml:"function_denylist,flow,omitempty"`
	Perms             string      `yaml:"perms,omitempty"`
	Owner             yamlText    `yaml:"owner,omitempty"`
	Group             yamlText    `yaml:"group,omitempty"`
	Backup            bool        `yaml:"backup,omitempty"`
	LeftDelimiter     yamlText    `yaml:"left_delimiter,omitempty"`
	RightDelimiter    yamlText    `yaml:"right_delimiter,omitempty"`
	Check             yamlText    `yaml:"check,omitempty"`
	Command           yamlText    `yaml:"command,omitempty"`
	CommandTimeout    Duration    `yaml:"command_timeout,omitempty"`
}

// yamlText is a string a conversion prints that agent.yaml must read back as it is. yaml.v3
// writes a string of several lines as a block (contents: |), which is what a template should
// look like, but it drops the blank lines a block starts with and cannot read back one whose
// first line starts with a tab: such a string is written double-quoted, with escapes.
type yamlText string

func (s yamlText) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(s)}
	var back struct{ S []map[string]string }
	b, err := yaml.Marshal(struct{ S []map[string]*yaml.Node }{[]map[string]*yaml.Node{{"s": n}}})
	if err != nil || yaml.Unmarshal(b, &back) != nil || len(back.S) != 1 || back.S[0]["s"] != n.Value {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n, nil
}

// TemplatesYAML writes templates as the templates: block of an agent.yaml (after wait:, when it
// is enabled), each entry headed by its comment (comments[i], one line each; may be shorter
// than templates), the whole headed by head (one comment line each).
func TemplatesYAML(head []string, wait Wait, tmpls []Template, comments [][]string) ([]byte, error) {
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for i, t := range tmpls {
		var n yaml.Node
		ct := convertedTemplate{Source: yamlText(t.Source), Contents: yamlText(t.Contents), Destination: yamlText(t.Destination),
			Functions: t.Functions, Prefix: yamlText(t.Prefix), ErrorOnMissingKey: t.ErrorOnMissingKey, AllowFile: t.AllowFile,
			Perms: t.Perms, Owner: yamlText(t.Owner), Group: yamlText(t.Group), Backup: t.Backup,
			LeftDelimiter: yamlText(t.LeftDelimiter), RightDelimiter: yamlText(t.RightDelimiter), Check: yamlText(t.Check),
			Command: yamlText(t.Command), CommandTimeout: t.CommandTimeout, FunctionDenylist: t.FunctionDenylist}
		if t.Keys != nil {
			keys := make([]yamlText, len(t.Keys))
			for i, k := range t.Keys {
				keys[i] = yamlText(k)
			}
			ct.Keys = &keys
		}
		if err := n.Encode(ct); err != nil {
			return nil, err
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == "keys" {
				n.Content[j+1].Style = yaml.FlowStyle // keys: [/db, /upstream]
			}
		}
		if i < len(comments) {
			n.HeadComment = commentLines(comments[i])
		}
		list.Content = append(list.Content, &n)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode}
	if wait.Enabled() {
		var w yaml.Node
		if err := w.Encode(wait); err != nil {
			return nil, err
		}
		w.Style = yaml.FlowStyle
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "wait"}, &w)
	}
	doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "templates"}, list)
	doc.Content[0].HeadComment = commentLines(head)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func commentLines(lines []string) string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = "# " + l
	}
	return strings.Join(out, "\n")
}

// YAML prints r as the templates: block of an agent.yaml (convert-confd): the same templates
// that confd_dir: r.Dir gives, each headed by the resource it comes from (its confd keys are
// its keys:).
func (r *ConfdResources) YAML() ([]byte, error) {
	head := []string{
		fmt.Sprintf("Converted from the confd resources of %s by shoelace-agent convert-confd.", r.Dir),
		"Add these entries to agent.yaml (or set confd_dir: " + r.Dir + " to read the resources as they are).",
		"Each template reads the appliance's view, as confd reads its keys below its prefix: import them with",
		"  shoelace import --from-etcd URL --prefix PREFIX --appliance NAME",
		"PREFIX being their prefix; / when they have none, or different ones (/myapp, /yourapp): it keeps whole paths.",
	}
	for _, n := range r.Notes {
		head = append(head, "note: "+n)
	}
	for _, t := range r.Templates {
		if t.Command != "" || t.Check != "" {
			head = append(head, "note: confd ran check_cmd and reload_cmd with its own environment, in its working directory; the agent runs",
				"  them from / with PATH, HOME, LANG, LC_ALL, TZ and its SHOELACE_ variables: write their paths absolute,",
				"  and name the other variables they read in command_env.")
			break
		}
	}
	for _, t := range r.Templates {
		if t.Command != "" {
			head = append(head, "note: when reload_cmd fails, confd keeps the new file; the agent puts the previous one back (on_command_failure:",
				"  rollback, the default) and runs the command again: add on_command_failure: keep to the entries (all that share",
				"  a command) to keep the new file as confd did.")
			break
		}
	}
	for _, t := range r.Templates {
		if t.Owner == "" || t.Group == "" {
			head = append(head, "note: confd gave a file without uid or gid to its own user or group, and confd_dir does so with the",
				"  agent's; these entries keep an existing file's owner and group instead: add owner: and group: (the",
				"  agent's user) to have them changed as confd did. They also make a destination's missing directories,",
				"  where confd and confd_dir fail the resource.")
			break
		}
	}
	for _, t := range r.Templates {
		if t.confdDest != "" && !filepath.IsAbs(t.confdDest) {
			// The directory convert-confd runs in is neither confd's nor the agent's: said, as
			// convert-consul-template says it of a relative path.
			at := t.File
			if t.Line > 0 {
				at = fmt.Sprintf("%s:%d", t.File, t.Line)
			}
			head = append(head, fmt.Sprintf("note: %s: dest %q is relative: converted to %s, from the directory convert-confd ran in;", at, t.confdDest, t.Destination),
				"  confd took it from the one it ran in (/ as a service): check it, or write it absolute")
		}
	}
	comments := make([][]string, len(r.Templates))
	for i, t := range r.Templates {
		c := fmt.Sprintf("from %s", t.File)
		if t.Line > 0 {
			c = fmt.Sprintf("from %s:%d", t.File, t.Line)
		}
		comments[i] = []string{c}
	}
	return TemplatesYAML(head, Wait{}, r.Templates, comments)
}
