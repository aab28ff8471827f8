package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"
	jsonparser "github.com/hashicorp/hcl/json/parser"
	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// The CLI, not the agent, holds the HCL parser: it stays off the VMs.

func convertConsulTemplateCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "convert-consul-template",
		Usage:     "print the agent.yaml equivalent to a consul-template configuration file or directory (HCL or JSON)",
		UsageText: "shoelace convert-consul-template [FILE.hcl|DIR] [--config FILE.hcl|DIR …] [--template SRC:DEST[:COMMAND] …] [--wait MIN[:MAX]]",
		Description: `Reads a consul-template v0.41.1 configuration, a file or, as consul-template -config DIR
does, every file below a directory (merged in lexical order: every file's templates, the last
wait and default_delimiters), and prints, on stdout, the agent.yaml
wait: and templates: that do the same here, each template in functions: consul-template.
On stderr it names, with its line, every stanza and field that has no equivalent here (consul,
vault, nomad, exec, syslog, …). Relative source and destination paths are taken relative to
the file's directory. Exit 1 when the file cannot be read, or holds no template and no
--template is given.

consul-template's command-line flags convert too, as consul-template reads them after its
configuration: --config (-config) FILE|DIR, repeatable, is read as FILE|DIR is, each in the order
given (after FILE), merged as consul-template merges its -config flags; each --template (or -template) "SOURCE:DESTINATION[:COMMAND]" is one more
template (with the configuration's default_delimiters; a Windows drive letter such as C: is
part of its path; the command is what follows the second colon, colons included), --wait
(-wait) "MIN[:MAX]" replaces the configuration's wait, and --default-left-delimiter and
--default-right-delimiter its default_delimiters. consul-template's other flags (-consul-addr,
-log-level, -once, …) are taken, each named on stderr with why it has no equivalent here.
Relative paths in flags are taken relative
to the current directory: run the conversion
where consul-template ran (its service's WorkingDirectory), or give absolute paths. FILE may
then be left out.

EXAMPLES:
   shoelace convert-consul-template /etc/consul-template/config.hcl >> /etc/shoelace/agent.yaml
   shoelace convert-consul-template /etc/consul-template.d > converted.yaml
   shoelace convert-consul-template -template "/etc/ct/nginx.ctmpl:/etc/nginx/nginx.conf:systemctl reload nginx" -wait 5s:10s`,
		Flags: append([]cli.Flag{
			&cli.GenericFlag{Name: "config", Value: &repeatedFlag{}, Usage: "consul-template's -config `FILE|DIR` (repeatable, merged in order)"},
			&cli.GenericFlag{Name: "template", Value: &repeatedFlag{}, Usage: "consul-template's -template `SRC:DEST[:COMMAND]` (repeatable)"},
			&cli.StringFlag{Name: "wait", Usage: "consul-template's -wait `MIN[:MAX]`"},
			&cli.StringFlag{Name: "default-left-delimiter", Usage: "consul-template's -default-left-delimiter `DELIM`"},
			&cli.StringFlag{Name: "default-right-delimiter", Usage: "consul-template's -default-right-delimiter `DELIM`"},
		}, ctOtherFlags()...),
		Action: func(c *cli.Context) error {
			flags := []string(*c.Generic("template").(*repeatedFlag))
			configs := []string(*c.Generic("config").(*repeatedFlag))
			min := 1
			if len(flags) > 0 || c.IsSet("wait") || len(configs) > 0 {
				min = 0
			}
			args, err := wantArgs(c, min, 1, "FILE.hcl|DIR (or --template)")
			if err != nil {
				return err
			}
			conv, name := &ctConversion{}, "command-line flags"
			if paths := append(args, configs...); len(paths) > 0 {
				if conv, err = convertConsulTemplatePath(paths...); err != nil {
					return fmt.Errorf("convert-consul-template: %w", err)
				}
				if len(conv.tmpls) == 0 && len(flags) == 0 {
					// With -template, the files may hold the rest alone (consul { … }), as
					// consul-template takes them.
					return fmt.Errorf("convert-consul-template: %s: no template stanza to convert", strings.Join(paths, ", "))
				}
				name = strings.Join(paths, ", ")
				if len(flags) > 0 || c.IsSet("wait") {
					name += " and command-line flags"
				}
			}
			if len(flags) > 0 || c.IsSet("wait") {
				cwd, err := os.Getwd()
				if err != nil {
					return err
				}
				fc, err := convertConsulTemplateFlags(flags, c.String("wait"), c.IsSet("wait"), cwd)
				if err != nil {
					return fmt.Errorf("convert-consul-template: %w", err)
				}
				conv.merge(fc)
			}
			// Over the configuration's default_delimiters, as consul-template merges its flags.
			for _, d := range []struct {
				flag string
				to   **string
			}{{"default-left-delimiter", &conv.left}, {"default-right-delimiter", &conv.right}} {
				if c.IsSet(d.flag) {
					v := c.String(d.flag)
					*d.to = &v
				}
			}
			conv.delimit()
			if len(conv.tmpls) == 0 {
				return fmt.Errorf("convert-consul-template: no template to convert: give a configuration with a template stanza, or --template")
			}
			out, waitNotes, err := conv.yaml(name)
			if err != nil {
				return fmt.Errorf("convert-consul-template: %w", err)
			}
			for _, f := range ctFlagsWithoutEquivalent {
				if c.IsSet(f.name) {
					conv.notes = append(conv.notes, fmt.Sprintf("-%s has no equivalent here: %s", f.name, ctFlagWhy(f.name)))
				}
			}
			for _, n := range append(conv.notes, waitNotes...) {
				fmt.Fprintf(e.stderr, "shoelace: %s\n", n)
			}
			_, err = e.stdout.Write(out)
			return err
		},
	}
}

// ctFlagsWithoutEquivalent are consul-template v0.41.1's command-line flags other than those
// that convert (-config, -template, -wait, the default delimiters): a service's unit gives them
// beside those, and the conversion takes them, as consul-template does, with a note each, as
// for the configuration's settings. bool says the flag takes no value (-once).
var ctFlagsWithoutEquivalent = []struct {
	name string
	bool bool
}{
	{"consul-addr", false}, {"consul-auth", false}, {"consul-retry", true}, {"consul-retry-attempts", false},
	{"consul-retry-backoff", false}, {"consul-retry-max-backoff", false}, {"consul-ssl", true},
	{"consul-ssl-ca-cert", false}, {"consul-ssl-ca-path", false}, {"consul-ssl-cert", false},
	{"consul-ssl-key", false}, {"consul-ssl-server-name", false}, {"consul-ssl-verify", true},
	{"consul-token", false}, {"consul-token-file", false}, {"consul-transport-dial-keep-alive", false},
	{"consul-transport-dial-timeout", false}, {"consul-transport-disable-keep-alives", true},
	{"consul-transport-max-idle-conns-per-host", false}, {"consul-transport-tls-handshake-timeout", false},
	{"dedup", true}, {"exec", false}, {"exec-kill-signal", false}, {"exec-kill-timeout", false},
	{"exec-reload-signal", false}, {"exec-splay", false}, {"exec-env-pristine", true},
	{"exec-env-custom", false}, {"exec-env-allowlist", false}, {"exec-env-denylist", false},
	{"kill-signal", false}, {"log-level", false}, {"log-file", false}, {"log-rotate-bytes", false},
	{"log-rotate-duration", false}, {"log-rotate-max-files", false}, {"max-stale", false},
	{"once", true}, {"parse-only", true}, {"dry", true}, {"pid-file", false}, {"reload-signal", false},
	{"retry", false}, {"syslog", true}, {"syslog-facility", false}, {"syslog-name", false},
	{"template-error-fatal", true}, {"vault-addr", false}, {"vault-renew-token", true},
	{"vault-retry", true}, {"vault-retry-attempts", false}, {"vault-retry-backoff", false},
	{"vault-retry-max-backoff", false}, {"vault-client-user-agent", false}, {"vault-ssl", true},
	{"vault-ssl-ca-cert", false}, {"vault-ssl-ca-path", false}, {"vault-ssl-cert", false},
	{"vault-ssl-key", false}, {"vault-ssl-server-name", false}, {"vault-ssl-verify", true},
	{"vault-transport-dial-keep-alive", false}, {"vault-transport-dial-timeout", false},
	{"vault-transport-disable-keep-alives", true}, {"vault-transport-max-idle-conns-per-host", false},
	{"vault-transport-max-conns-per-host", false}, {"vault-transport-tls-handshake-timeout", false},
	{"vault-token", false}, {"vault-agent-token-file", false}, {"vault-unwrap-token", true},
	{"vault-default-lease-duration", false},
}

// ctOtherFlags declares ctFlagsWithoutEquivalent, hidden from --help.
func ctOtherFlags() []cli.Flag {
	flags := make([]cli.Flag, 0, len(ctFlagsWithoutEquivalent))
	for _, f := range ctFlagsWithoutEquivalent {
		if f.bool {
			flags = append(flags, &cli.BoolFlag{Name: f.name, Hidden: true})
		} else {
			flags = append(flags, &cli.StringFlag{Name: f.name, Hidden: true})
		}
	}
	return flags
}

// ctFlagWhy says why a flag of ctFlagsWithoutEquivalent has no equivalent: as the setting of the
// configuration it stands for.
func ctFlagWhy(name string) string {
	switch {
	case name == "parse-only" || name == "dry":
		return "check the converted config with shoelace-agent validate, and see what would change with shoelace-agent render --dry"
	case name == "retry" || strings.HasPrefix(name, "consul-"):
		return ctNoEquivalent["consul"]
	case strings.HasPrefix(name, "vault-"):
		return ctNoEquivalent["vault"]
	case name == "exec" || strings.HasPrefix(name, "exec-"):
		return ctNoEquivalent["exec"]
	case name == "dedup":
		return ctNoEquivalent["deduplicate"]
	case strings.HasPrefix(name, "log-rotate-") || name == "log-file":
		return ctNoEquivalent["log_file"]
	case strings.HasPrefix(name, "syslog"):
		return ctNoEquivalent["syslog"]
	}
	return ctNoEquivalent[strings.ReplaceAll(name, "-", "_")]
}

// repeatedFlag is a flag given any number of times, each value whole: urfave's string slices
// split values at commas, which a template's command may hold.
type repeatedFlag []string

func (f *repeatedFlag) Set(v string) error { *f = append(*f, v); return nil }
func (f *repeatedFlag) String() string     { return strings.Join(*f, " ") }

// ctTemplateFlag splits consul-template's -template flag as it does: runs of characters other
// than ':', each of which may start with a drive letter and its colon (C:\in.tmpl); the first
// is the source, the second the destination, and the rest, joined by ':' again, the command.
var ctTemplateFlag = regexp.MustCompile(`([a-zA-Z]:)?([^:]+)`)

// convertConsulTemplateFlags converts consul-template's command-line -template flags and its
// -wait (when waitSet) as the configuration they stand for, relative paths taken from cwd.
func convertConsulTemplateFlags(specs []string, wait string, waitSet bool, cwd string) (*ctConversion, error) {
	all := &ctConversion{}
	var errs []string
	q := strconv.Quote
	if waitSet {
		name := "-wait " + q(wait)
		c, err := convertConsulTemplateIn(name, cwd, cwdNote, []byte("wait = "+q(wait)+"\n"))
		if err != nil {
			errs = append(errs, flagLine(name, err.Error()))
		} else {
			all.merge(c.flag(name))
		}
	}
	for _, spec := range specs {
		name := "-template " + q(spec)
		if strings.TrimSpace(spec) == "" {
			errs = append(errs, name+": empty (consul-template v0.41.1 refuses it too)")
			continue
		}
		parts := ctTemplateFlag.FindAllString(spec, -1)
		fields := []string{"source = " + q(parts[0])}
		if len(parts) > 1 {
			fields = append(fields, "destination = "+q(parts[1]))
		}
		if len(parts) > 2 {
			// A list: consul-template takes the flag's command whole (ParseTemplateConfig), where
			// it splits a command string of a configuration at its commas.
			fields = append(fields, "command = ["+q(strings.Join(parts[2:], ":"))+"]")
		}
		c, err := convertConsulTemplateIn(name, cwd, cwdNote, []byte("template { "+strings.Join(fields, ", ")+" }\n"))
		if err != nil {
			errs = append(errs, flagLine(name, err.Error()))
			continue
		}
		all.merge(c.flag(name))
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return all, nil
}

// cwdNote says where relative paths of command-line flags were taken from.
const cwdNote = "the current directory, where the conversion ran"

// flagLine drops the line number of the one-line configuration a flag stands for from text.
func flagLine(name, text string) string { return strings.ReplaceAll(text, name+":1", name) }

// flag drops the line number of the one-line configuration flag name stands for from c's
// notes, comments and wait.
func (c *ctConversion) flag(name string) *ctConversion {
	c.wait.at = flagLine(name, c.wait.at)
	for i, n := range c.notes {
		c.notes[i] = flagLine(name, n)
	}
	for _, cs := range c.comments {
		for i, n := range cs {
			cs[i] = flagLine(name, n)
		}
	}
	return c
}

// maxConsulTemplateConfigBytes bounds a configuration file: the HCL parser takes about a hundred
// times the file's size in memory, and no configuration comes near this.
var maxConsulTemplateConfigBytes = 4 << 20

// readConsulTemplateConfig reads a configuration file of at most maxConsulTemplateConfigBytes.
func readConsulTemplateConfig(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(maxConsulTemplateConfigBytes)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConsulTemplateConfigBytes {
		return nil, fmt.Errorf("%s is over %d bytes: a consul-template configuration is far smaller (keep large templates in source files)", name, maxConsulTemplateConfigBytes)
	}
	return data, nil
}

// ctConversion is a consul-template configuration converted: the agent's wait and templates,
// and what has no equivalent here (one line each, naming file and line).
type ctConversion struct {
	wait     ctWaitConfig
	tmpls    []agent.Template
	comments [][]string
	// exports are, by template, the export of its exec env's custom variables that its
	// command starts with ("" for none; missing for the templates of -template flags).
	exports []string
	notes   []string
	// left and right are default_delimiters' fields, where the configuration sets them.
	left, right *string
}

// convertConsulTemplatePath converts what consul-template -config PATH (given once for each
// path, in order) reads: a file, or every file below a directory (in lexical order,
// subdirectories included), merged as consul-template merges them: the templates of all, each
// field of wait and default_delimiters from the last file that sets it (delimit applies the
// latter, once the -template flags are merged too). The files may hold no template.
func convertConsulTemplatePath(paths ...string) (*ctConversion, error) {
	var files []string
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, path)
			continue
		}
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	all := &ctConversion{}
	var errs []string
	for _, name := range files {
		data, err := readConsulTemplateConfig(name)
		if err == nil {
			var c *ctConversion
			if c, err = convertConsulTemplate(name, data); err == nil {
				all.merge(c)
			}
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return all, nil
}

// delimit gives the templates that set no delimiters those of default_delimiters, as
// consul-template gives them to every template once its configuration is merged: those of
// every file, and those of its -template flags.
func (c *ctConversion) delimit() {
	for i := range c.tmpls {
		t := &c.tmpls[i]
		if t.LeftDelimiter == "" && c.left != nil {
			t.LeftDelimiter = *c.left
		}
		if t.RightDelimiter == "" && c.right != nil {
			t.RightDelimiter = *c.right
		}
	}
}

// merge adds the conversion of a later file of a configuration directory to c.
func (c *ctConversion) merge(o *ctConversion) {
	c.exports = append(c.exports, make([]string, len(c.tmpls)-len(c.exports))...)
	c.tmpls = append(c.tmpls, o.tmpls...)
	c.comments = append(c.comments, o.comments...)
	c.exports = append(c.exports, o.exports...)
	c.notes = append(c.notes, o.notes...)
	c.wait.merge(o.wait)
	if o.left != nil {
		c.left = o.left
	}
	if o.right != nil {
		c.right = o.right
	}
}

// ctNoEquivalent says, for each top-level setting of consul-template v0.41.1 that the agent has
// no use for, why.
var ctNoEquivalent = map[string]string{
	"consul":               "the agent reads its keys from the Shoelace server (server: and token_file: in agent.yaml); copy Consul's KV with shoelace import",
	"vault":                "there is no Vault source here: keep secrets under a secrets/ segment of the appliance's keys; Vault's template functions fail at parse time",
	"nomad":                "there is no Nomad source here: Nomad's template functions fail at parse time",
	"exec":                 "the agent supervises no child process: run the service under systemd and give its templates command: systemctl reload SERVICE",
	"deduplicate":          "each agent reads its view from the server, which fans one change out to every agent",
	"max_stale":            "the server answers every read from etcd, consistently",
	"block_query_wait":     "the agent long-polls the server (DefaultPollWait)",
	"err_on_failed_lookup": "a key that is missing is always an error outside a default (keyOr, keyOrDefault)",
	"template_error_fatal": "a template that fails keeps its old file and fails the pass; the agent goes on with the others (once exits non-zero)",
	"once":                 "run shoelace-agent once instead",
	"log_level":            "give the agent --log-level (it logs JSON to stderr)",
	"log_file":             "the agent logs to stderr, for journald",
	"syslog":               "the agent logs to stderr, for journald",
	"pid_file":             "the agent runs as a systemd service (shoelace-agent install)",
	"kill_signal":          "the agent stops on SIGTERM and SIGINT",
	"reload_signal":        "the agent reloads its config on SIGHUP",
	"auth":                 "the agent authenticates to the server with its token_file",
	"ssl":                  "the agent trusts the server's certificate through ca_file",
}

// ctTemplateNoEquivalent is the same for the fields of a template stanza.
var ctTemplateNoEquivalent = map[string]string{
	"error_fatal":  "a template that fails keeps its old file and fails the pass; the agent goes on with the others",
	"sandbox_path": "the template functions that read local files (file) are off unless allow_file: true, and then unrestricted",
}

// convertConsulTemplate converts a consul-template configuration file (HCL or JSON, as
// consul-template reads it with hashicorp/hcl v1); its default_delimiters are left to delimit
// to apply.
func convertConsulTemplate(name string, data []byte) (*ctConversion, error) {
	return convertConsulTemplateIn(name, filepath.Dir(name), "the file's directory", data)
}

// ctParse parses a configuration as consul-template v0.41.1's hcl.Decode does: JSON when it
// starts with '{', else HCL, where a field set twice (destination = "a", then destination = "b")
// is no error: the last one counts, as in consul-template. hcl.ParseBytes refuses it.
func ctParse(data []byte) (*ast.File, error) {
	if t := bytes.TrimLeftFunc(data, unicode.IsSpace); len(t) > 0 && t[0] == '{' {
		return jsonparser.Parse(data)
	}
	return hclparser.ParseDontErrorOnDuplicateKeys(data)
}

// convertConsulTemplateIn is convertConsulTemplate with relative paths taken from dir, which
// the notes call from.
func convertConsulTemplateIn(name, dir, from string, data []byte) (*ctConversion, error) {
	f, err := ctParse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	root, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("%s: not a consul-template configuration (a list of settings and stanzas)", name)
	}
	conv := &ctConversion{}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	var errs []string
	var tmplItems []*ast.ObjectItem
	for _, item := range root.Items {
		key := itemKey(item)
		at := ctAt(name, item.Pos().Line)
		switch {
		case key == "template":
			tmplItems = append(tmplItems, item)
		case key == "wait":
			w, err := ctWait(item.Val)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: wait: %v", at, err))
				continue
			}
			w.at = at
			conv.wait.merge(w)
		case key == "default_delimiters":
			m, err := ctObject(item.Val)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: default_delimiters: %v", at, err))
				continue
			}
			for k, v := range m {
				s, _ := v.(string)
				switch strings.ToLower(k) {
				case "left":
					conv.left = &s
				case "right":
					conv.right = &s
				default:
					errs = append(errs, fmt.Sprintf("%s: default_delimiters: unknown field %q (left, right)", at, k))
				}
			}
		case ctNoEquivalent[key] != "":
			conv.notes = append(conv.notes, fmt.Sprintf("%s: %s has no equivalent here: %s", at, key, ctNoEquivalent[key]))
		default:
			errs = append(errs, fmt.Sprintf("%s: unknown setting %q (consul-template v0.41.1 refuses it too)", at, key))
		}
	}
	var waits []string
	for _, item := range tmplItems {
		objs, err := ctObjects(item.Val)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: template: %v", ctAt(name, item.Pos().Line), err))
			continue
		}
		for _, o := range objs {
			t, export, w, terrs, notes := ctTemplate(name, dir, from, o)
			errs = append(errs, terrs...)
			conv.notes = append(conv.notes, notes...)
			if w != "" {
				waits = append(waits, w)
			}
			conv.tmpls = append(conv.tmpls, t)
			conv.exports = append(conv.exports, export)
			conv.comments = append(conv.comments, []string{"from " + ctAt(name, o.Pos().Line)})
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	for _, w := range waits {
		conv.notes = append(conv.notes, w)
	}
	for _, t := range conv.tmpls {
		if t.Command != "" {
			conv.notes = append(conv.notes, name+": "+ctCommandNote)
			break
		}
	}
	return conv, nil
}

// ctCommandNote says how the agent runs a converted command otherwise than consul-template.
const ctCommandNote = "consul-template ran commands with its own environment, in its working directory; the agent runs them from / with PATH, HOME, LANG, LC_ALL, TZ and its SHOELACE_ variables: write their paths absolute, and name the other variables they read in command_env"

// yaml prints the conversion as agent.yaml's wait: and templates:, and returns the notes on
// its wait with it.
func (c *ctConversion) yaml(name string) (out []byte, notes []string, err error) {
	head := []string{
		fmt.Sprintf("Converted from the consul-template configuration %s by shoelace convert-consul-template.", name),
		"Append it to agent.yaml, which holds server:, token_file: and appliance: (the packaged /etc/shoelace/agent.yaml does),",
		"then check it with shoelace-agent validate --config FILE.",
	}
	w, notes, err := c.wait.finalize()
	if err != nil {
		return nil, nil, err
	}
	c.allowFile()
	c.shareCommands()
	out, err = agent.TemplatesYAML(head, w, c.tmpls, c.comments)
	return out, notes, err
}

// shareCommands gives the templates that share a command, each with its exec env, one command:
// consul-template v0.41.1 runs a command once per pass however many of its templates changed,
// telling commands apart by exec's command alone (its runner's findCommand), with the env of the
// first of them, in the configuration's order, that changed. Each template's command with its
// own export made as many commands as envs, and the agent, which runs each distinct command
// once, ran it once per env. The one command exports the env of the first template whose
// destination is in $SHOELACE_DESTINATIONS (the changed files the agent runs it for).
func (c *ctConversion) shareCommands() {
	var order []string
	byCommand := map[string][]int{}
	for i, t := range c.tmpls {
		if t.Command == "" {
			continue
		}
		export := ""
		if i < len(c.exports) {
			export = c.exports[i]
		}
		cmd := strings.TrimPrefix(t.Command, export)
		if byCommand[cmd] == nil {
			order = append(order, cmd)
		}
		byCommand[cmd] = append(byCommand[cmd], i)
	}
	for _, cmd := range order {
		ids := byCommand[cmd]
		if !slices.ContainsFunc(ids, func(i int) bool { return c.tmpls[i].Command != c.tmpls[ids[0]].Command }) {
			continue // one template, or one env for all: already one command
		}
		var dests []string
		for _, i := range ids {
			dests = append(dests, c.tmpls[i].Destination)
		}
		var b strings.Builder
		holders := destinationHolders(dests)
		if len(holders) == 0 {
			b.WriteString(`case " $SHOELACE_DESTINATIONS " in`)
		} else {
			// $SHOELACE_DESTINATIONS joins them with spaces: " /a " is in " /a b " too. Each
			// destination that holds another so is taken out, longest first, and a flag (y or
			// n, one a holder, in the order taken) put before what is left says whether it was
			// there.
			b.WriteString(`_shoelace_d=" $SHOELACE_DESTINATIONS " _shoelace_f=;`)
			for _, h := range holders {
				q := shellQuote(" " + h + " ")
				fmt.Fprintf(&b, " case $_shoelace_d in *%s*) _shoelace_f=${_shoelace_f}y _shoelace_d=${_shoelace_d%%%%%s*}' '${_shoelace_d#*%s};; *) _shoelace_f=${_shoelace_f}n;; esac;", q, q, q)
			}
			b.WriteString(` case $_shoelace_f$_shoelace_d in`)
		}
		for _, i := range ids {
			set := strings.TrimSuffix(c.tmpls[i].Command[:len(c.tmpls[i].Command)-len(cmd)], "; ")
			pattern := "*" + shellQuote(" "+c.tmpls[i].Destination+" ") + "*"
			if k := slices.Index(holders, c.tmpls[i].Destination); k >= 0 {
				pattern = strings.Repeat("?", k) + "y*"
			}
			fmt.Fprintf(&b, " %s) %s;;", pattern, cmp.Or(set, ":"))
		}
		b.WriteString(" esac; " + cmd)
		for _, i := range ids {
			c.tmpls[i].Command = b.String()
		}
		c.notes = append(c.notes, fmt.Sprintf("the templates of %s share the command %q with different exec env: consul-template runs it once when several of them change, with the env of the first of them (in its configuration's order) that changed; the converted command is one, run once, and exports that env as $SHOELACE_DESTINATIONS names the files it runs for",
			strings.Join(dests, ", "), cmd))
	}
}

// destinationHolders are the destinations of dests that hold another of them with spaces
// around it ("/a b" holds "/a"), longest first: in $SHOELACE_DESTINATIONS, which joins them with
// spaces, the other is found where the holder alone is.
func destinationHolders(dests []string) []string {
	var out []string
	for _, h := range dests {
		if slices.ContainsFunc(dests, func(d string) bool { return d != h && strings.Contains(" "+h+" ", " "+d+" ") }) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(x, y string) int { return len(y) - len(x) })
	return out
}

// allowFile sets allow_file on the templates that call file: consul-template's file reads local
// files without being asked to, and the agent's only with allow_file: true (as convert-confd
// sets it for confd's fileExists). A template whose source cannot be read or that does not
// parse is left as it is, for the agent's validate to name what is wrong. What validate would
// warn of a template (a relative path given to file, read from consul-template's working
// directory and from / by the agent; a function_denylist entry that denies nothing) is a note.
func (c *ctConversion) allowFile() {
	for i := range c.tmpls {
		t := &c.tmpls[i]
		text := t.Contents
		if t.Source != "" {
			b, err := atomicfile.ReadInput(t.Source, templates.DefaultMaxOutputBytes)
			if err != nil {
				continue
			}
			text = string(b)
		}
		p, err := templates.Parse(text, templates.Options{Name: t.Destination, LeftDelim: t.LeftDelimiter, RightDelim: t.RightDelimiter,
			Functions: t.Functions, AllowFile: true, FunctionDenylist: t.FunctionDenylist})
		if err != nil {
			continue
		}
		if slices.Contains(p.Functions(), "file") {
			t.AllowFile = true
		}
		for _, w := range p.Warnings() {
			c.notes = append(c.notes, fmt.Sprintf("%s: %s", strings.TrimPrefix(c.comments[i][0], "from "), w))
		}
	}
}

// ctTemplate converts one template stanza. wait is a note when the stanza has its own wait,
// which the agent has only for all its templates.
func ctTemplate(name, dir, from string, o *ast.ObjectType) (t agent.Template, export, wait string, errs, notes []string) {
	t.Functions = templates.ModeConsulTemplate
	var execCmd, execTimeout, execEnv *ast.ObjectItem
	var command, commandTimeout *ast.ObjectItem
	var user, uid, group, gid *ast.ObjectItem
	for _, item := range o.List.Items {
		key := itemKey(item)
		at := ctAt(name, item.Pos().Line)
		bad := func(err error) { errs = append(errs, fmt.Sprintf("%s: template: %s: %v", at, key, err)) }
		// path reads a path field; a relative one is made relative to the file's directory.
		path := func() string {
			s, err := ctString(item.Val)
			if err != nil {
				bad(err)
			}
			p := ctPath(dir, s)
			if p != s {
				notes = append(notes, fmt.Sprintf("%s: template %s %q is relative: converted to %s, from %s (consul-template took it from its working directory)", at, key, s, p, from))
			}
			return p
		}
		switch key {
		case "source":
			t.Source = path()
		case "contents":
			s, err := ctString(item.Val)
			if err != nil {
				bad(err)
			}
			t.Contents = s
		case "destination":
			t.Destination = path()
		case "create_dest_dirs":
			if b, err := ctBool(item.Val); err != nil {
				bad(err)
			} else if !b {
				notes = append(notes, fmt.Sprintf("%s: create_dest_dirs = false has no equivalent here: the agent creates a destination's missing directories", at))
			}
		case "error_on_missing_key":
			b, err := ctBool(item.Val)
			if err != nil {
				bad(err)
			}
			t.ErrorOnMissingKey = b
		case "function_denylist", "function_blacklist":
			l, err := ctStringList(item.Val)
			if err != nil {
				bad(errors.New("want a list of function names"))
				continue
			}
			t.FunctionDenylist = append(t.FunctionDenylist, l...)
		case "perms":
			p, note, err := ctPerms(item.Val)
			if err != nil {
				bad(err)
			}
			if note != "" {
				notes = append(notes, fmt.Sprintf("%s: template %s", at, note))
			}
			t.Perms = p
		case "user":
			user = item
		case "uid":
			uid = item
		case "group":
			group = item
		case "gid":
			gid = item
		case "backup":
			b, err := ctBool(item.Val)
			if err != nil {
				bad(err)
			}
			t.Backup = b
		case "left_delimiter", "right_delimiter":
			s, err := ctString(item.Val)
			if err != nil {
				bad(err)
			}
			if key == "left_delimiter" {
				t.LeftDelimiter = s
			} else {
				t.RightDelimiter = s
			}
		case "command":
			command = item
		case "command_timeout":
			commandTimeout = item
		case "exec":
			m, err := ctObjects(item.Val)
			if err != nil || len(m) != 1 {
				bad(errors.New("want one exec { command = …, timeout = … } block"))
				continue
			}
			for _, ei := range m[0].List.Items {
				switch k := itemKey(ei); k {
				case "command":
					execCmd = ei
				case "timeout":
					execTimeout = ei
				case "env":
					execEnv = ei
				default:
					notes = append(notes, fmt.Sprintf("%s: template exec %s has no equivalent here: the template's command runs once per change, under /bin/sh -c, bounded by command_timeout", ctAt(name, ei.Pos().Line), k))
				}
			}
		case "wait":
			w, err := ctWait(item.Val)
			if err != nil {
				bad(err)
				continue
			}
			on, lo, hi := w.final()
			if !on || lo == 0 {
				continue // not enabled: the global wait applies, as in consul-template
			}
			wait = fmt.Sprintf("%s: template wait {min = %s, max = %s} has no per-template equivalent here: the agent's wait: applies to every template", at, lo, hi)
		default:
			if why := ctTemplateNoEquivalent[key]; why != "" {
				if ctEmpty(item.Val) {
					continue // function_denylist = [], sandbox_path = "": nothing asked
				}
				notes = append(notes, fmt.Sprintf("%s: template %s has no equivalent here: %s", at, key, why))
				continue
			}
			errs = append(errs, fmt.Sprintf("%s: template: unknown field %q (consul-template v0.41.1 refuses it too)", at, key))
		}
	}
	// exec's command and timeout win over the older command and command_timeout, as in
	// consul-template.
	if execCmd != nil {
		command = execCmd
	}
	if execTimeout != nil {
		commandTimeout = execTimeout
	}
	if command != nil {
		s, err := ctCommand(command.Val)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: template: command: %v", ctAt(name, command.Pos().Line), err))
		}
		t.Command = s
	}
	if execEnv != nil {
		var enotes []string
		var err error
		export, enotes, err = ctExecEnv(ctAt(name, execEnv.Pos().Line), execEnv.Val)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: template: exec env: %v", ctAt(name, execEnv.Pos().Line), err))
		}
		notes = append(notes, enotes...)
		if t.Command != "" && export != "" {
			t.Command = export + t.Command
		} else {
			export = ""
		}
	}
	if commandTimeout != nil {
		s, err := ctString(commandTimeout.Val)
		d, perr := time.ParseDuration(s)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("%s: template: command_timeout: %v", ctAt(name, commandTimeout.Pos().Line), err))
		case perr != nil || d < 0:
			errs = append(errs, fmt.Sprintf("%s: template: command_timeout %q is not a duration such as \"30s\"", ctAt(name, commandTimeout.Pos().Line), s))
		case d == 0 && t.Command != "":
			// consul-template starts the command and goes on without waiting for it or reading
			// its exit status; the agent has no such mode: it waits, within command_timeout.
			field := "command_timeout"
			if commandTimeout == execTimeout {
				field = "exec timeout"
			}
			notes = append(notes, fmt.Sprintf("%s: template %s %q has no equivalent here: consul-template ran the command in the background, not waiting for it nor checking how it exited; the agent waits for it and fails the reload when it fails, within command_timeout (%s when not set): give the time it needs",
				ctAt(name, commandTimeout.Pos().Line), field, s, agent.DefaultCommandTimeout))
		default:
			t.CommandTimeout = agent.Duration(d)
		}
	}
	owner := func(name1 string, byName, byID *ast.ObjectItem) string {
		if byName != nil && byID != nil {
			// consul-template v0.41.1 takes uid (gid) only when user (group) is not set: it
			// is the older name, kept for configurations of v0.28.0.
			notes = append(notes, fmt.Sprintf("%s: template %s is ignored, as consul-template ignores it when %s is set: the file gets %s's", ctAt(name, byID.Pos().Line), itemKey(byID), name1, name1))
			byID = nil
		}
		for _, it := range []*ast.ObjectItem{byName, byID} {
			if it == nil {
				continue
			}
			s, err := ctScalar(it.Val)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: template: %s: %v", ctAt(name, it.Pos().Line), itemKey(it), err))
			}
			return s
		}
		return ""
	}
	t.Owner = owner("user", user, uid)
	t.Group = owner("group", group, gid)
	// -1 is consul-template's "leave it" (os.Chown's), as no user or group: the agent keeps an
	// existing file's owner and group too.
	if t.Owner == "-1" {
		t.Owner = ""
	}
	if t.Group == "-1" {
		t.Group = ""
	}
	errs = append(errs, ctTemplateIncomplete(ctAt(name, o.Pos().Line), t)...)
	return t, export, wait, errs, notes
}

// ctTemplateIncomplete names what a template stanza lacks that consul-template v0.41.1 fails on
// when it runs it (its config parser takes template {} whole), and the agent's validate refuses:
// neither source nor contents, both, or no destination.
func ctTemplateIncomplete(at string, t agent.Template) []string {
	var errs []string
	switch {
	case t.Source == "" && t.Contents == "":
		errs = append(errs, at+": template: neither source nor contents: give one (consul-template v0.41.1 refuses it too: \"must specify exactly one of 'source' or 'contents'\")")
	case t.Source != "" && t.Contents != "":
		errs = append(errs, at+": template: both source and contents: give one (consul-template v0.41.1 refuses it too: \"cannot specify both 'source' and 'contents'\")")
	}
	if t.Destination == "" {
		errs = append(errs, at+": template: no destination: give the file to render (consul-template v0.41.1 fails too: \"missing destination\")")
	}
	return errs
}

// ctEmpty reports whether a value is an empty string or list.
func ctEmpty(n ast.Node) bool {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return false
	}
	switch v := v.(type) {
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	}
	return false
}

// ctAt is "file:line", or "file" where the parser kept no line (JSON).
func ctAt(name string, line int) string {
	if line <= 0 {
		return name
	}
	return fmt.Sprintf("%s:%d", name, line)
}

// ctPath makes a relative path absolute from the configuration file's directory.
func ctPath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// itemKey is an item's key in lower case: consul-template's decoder (mapstructure) takes a field
// written in any case (Destination, TEMPLATE) when no key matches its name exactly.
func itemKey(item *ast.ObjectItem) string {
	if len(item.Keys) == 0 {
		return ""
	}
	if s, ok := item.Keys[0].Token.Value().(string); ok {
		return strings.ToLower(s)
	}
	return strings.ToLower(item.Keys[0].Token.Text)
}

// ctObjects returns the blocks of a stanza: one (template { … }) or a JSON list of them.
func ctObjects(n ast.Node) ([]*ast.ObjectType, error) {
	switch v := n.(type) {
	case *ast.ObjectType:
		return []*ast.ObjectType{v}, nil
	case *ast.ListType:
		var out []*ast.ObjectType
		for _, e := range v.List {
			o, ok := e.(*ast.ObjectType)
			if !ok {
				return nil, errors.New("want a block { … }")
			}
			out = append(out, o)
		}
		return out, nil
	}
	return nil, errors.New("want a block { … }")
}

func ctObject(n ast.Node) (map[string]any, error) {
	var m map[string]any
	if err := hcl.DecodeObject(&m, n); err != nil {
		return nil, err
	}
	return m, nil
}

func ctString(n ast.Node) (string, error) {
	var s string
	if err := hcl.DecodeObject(&s, n); err != nil {
		return "", errors.New("want a string")
	}
	return s, nil
}

func ctBool(n ast.Node) (bool, error) {
	var b bool
	if err := hcl.DecodeObject(&b, n); err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

// ctScalar reads a name or an id (user = "nginx", uid = 1000).
func ctScalar(n ast.Node) (string, error) {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case int, int64:
		return fmt.Sprint(v), nil
	}
	return "", errors.New("want a name or a number")
}

// ctPerms reads perms as consul-template does: a string is octal ("0644", at most "07777"); a
// number is taken as written by HCL (0644 in HCL is octal). 0 is consul-template's "not set" (the
// existing file's mode, 0644 for a new one), which is the agent's default too: it converts to no
// perms (""). consul-template gives the file its os.FileMode with os.Chmod, which keeps only the
// permission bits of such a number: setuid, setgid and sticky bits ("04755") are dropped, and so
// they are here, with a note saying so.
func ctPerms(n ast.Node) (perms, note string, err error) {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return "", "", err
	}
	var m uint64
	decimal := false
	switch v := v.(type) {
	case string:
		p, err := strconv.ParseUint(v, 8, 12)
		if err != nil {
			return "", "", fmt.Errorf("%q is not an octal mode such as \"0644\"", v)
		}
		m = p
	case int:
		m = uint64(v)
	case int64:
		m = uint64(v)
	default:
		return "", "", errors.New("want an octal mode such as \"0644\"")
	}
	if lit, ok := n.(*ast.LiteralType); ok && lit.Token.Type == token.NUMBER {
		decimal = !strings.HasPrefix(lit.Token.Text, "0")
	}
	if m == 0 {
		return "", "", nil
	}
	if m&^0o777 == 0 {
		return fmt.Sprintf("%04o", m), "", nil
	}
	if d := strconv.FormatUint(m, 10); decimal && strings.Trim(d, "01234567") == "" {
		// perms = 640: HCL reads a number without a leading 0 as decimal, and so does
		// consul-template (mode 01200: the file installed 0200), which is rarely what was meant.
		return "", "", fmt.Errorf("perms = %s is the decimal number %s, mode %#o (consul-template installs such a file with mode %#o): write perms = 0%s (HCL's octal) or \"0%s\"", d, d, m, m&0o777, d, d)
	}
	if m&^0o7777 != 0 {
		return "", "", fmt.Errorf("mode %#o is not a file mode (at most 07777): write it as \"0644\"", m)
	}
	if m&0o777 == 0 {
		return "", "", fmt.Errorf("mode %#o: consul-template drops its setuid, setgid and sticky bits and installs the file with mode 0000, unreadable even by its owner, which the agent refuses: give the permission bits (\"0644\")", m)
	}
	return fmt.Sprintf("%04o", m&0o777), fmt.Sprintf("perms %#o: setuid, setgid and sticky bits dropped, converted to %04o: consul-template drops them too (os.Chmod of its os.FileMode keeps only the permission bits) and installs the file with mode %04o", m, m&0o777, m&0o777), nil
}

// ctCommand reads a command as consul-template v0.41.1 runs it. Its decoder turns a string into
// a list by splitting it at each comma (mapstructure's StringToSliceHookFunc(",")), which a list
// is not; a list whose first element is empty runs nothing; a list of one element of several
// words runs under sh -c; any other list runs its first element as the program and the others
// as its arguments, without a shell, so each is quoted for /bin/sh -c here. A string whose
// commas split it into a program holding spaces ("sh -c 'echo a,b'", run as the program
// "sh -c 'echo a") is an error: consul-template fails to run it after each render.
func ctCommand(n ast.Node) (string, error) {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return "", err
	}
	var words []string
	switch v := v.(type) {
	case string:
		if v == "" {
			return "", nil
		}
		words = strings.Split(v, ",")
		if len(words) > 1 && len(strings.Fields(words[0])) > 1 {
			return "", fmt.Errorf("%q: consul-template splits a command string at its commas and runs %q as a program, with the rest as its arguments, which fails: write the command as a list, [\"sh\", \"-c\", %q], which runs it whole", v, words[0], v)
		}
	case []any:
		for _, w := range v {
			s, ok := w.(string)
			if !ok {
				return "", errors.New("want a string or a list of strings")
			}
			words = append(words, s)
		}
	default:
		return "", errors.New("want a string or a list of strings")
	}
	if len(words) == 0 || words[0] == "" {
		return "", nil // consul-template's empty command: none is run
	}
	if len(words) == 1 {
		return words[0], nil
	}
	for i, w := range words {
		words[i] = shellQuote(w)
	}
	return strings.Join(words, " "), nil
}

// ctStringList reads a list of strings as consul-template v0.41.1 decodes one: a string is split
// at its commas (its decoder's StringToSliceHookFunc(",")), "" being none; a list is taken whole.
func ctStringList(n ast.Node) ([]string, error) {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return nil, err
	}
	return stringList(v)
}

// stringList is ctStringList of a decoded value.
func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil, nil
		}
		return strings.Split(v, ","), nil
	case []any:
		l := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("want a list of strings")
			}
			l = append(l, s)
		}
		return l, nil
	}
	return nil, errors.New("want a list of strings")
}

// shellName is a name /bin/sh can export.
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ctExecEnv reads a template's exec env { … } as consul-template v0.41.1 gives it to the
// template's command (exec's or the older command's): custom's NAME=VALUE entries (a string is
// split at its commas, as its decoder splits it) are set over the inherited environment, which
// the agent's sh -c does with the export it returns, to be put before the command. pristine and
// the allow and deny lists, which choose among the inherited variables, are notes: the agent
// passes its commands a few variables and those command_env names.
func ctExecEnv(at string, n ast.Node) (export string, notes []string, err error) {
	var v any
	if err := hcl.DecodeObject(&v, n); err != nil {
		return "", nil, err
	}
	ms, ok := v.([]map[string]any)
	if m, isMap := v.(map[string]any); isMap {
		ms, ok = []map[string]any{m}, true // one object, not a list of blocks
	}
	if !ok {
		return "", nil, errors.New("want a block env { custom = [\"NAME=VALUE\", …] }")
	}
	var assigns []string
	for _, m := range ms {
		for _, field := range slices.Sorted(maps.Keys(m)) {
			val, k := m[field], strings.ToLower(field)
			switch k {
			case "pristine":
				b, ok := val.(bool)
				if !ok {
					return "", nil, errors.New("pristine: want true or false")
				}
				if b {
					notes = append(notes, at+": template exec env pristine = true has no equivalent here: consul-template ran the command with the custom variables alone; the agent runs it with PATH, HOME, LANG, LC_ALL, TZ and its SHOELACE_ variables too, and the custom variables")
				}
			case "custom", "allowlist", "whitelist", "denylist", "blacklist":
				list, err := stringList(val)
				if err != nil {
					return "", nil, fmt.Errorf("%s: %w", k, err)
				}
				if k != "custom" {
					if len(list) > 0 {
						notes = append(notes, fmt.Sprintf("%s: template exec env %s has no equivalent here: the agent passes its commands PATH, HOME, LANG, LC_ALL, TZ, its SHOELACE_ variables and those command_env names, and the custom variables", at, k))
					}
					continue
				}
				for _, e := range list {
					name, value, ok := strings.Cut(e, "=")
					if !ok || !shellName.MatchString(name) {
						return "", nil, fmt.Errorf("custom %q: want NAME=VALUE, NAME a variable /bin/sh can export", e)
					}
					assigns = append(assigns, name+"="+shellQuote(value))
				}
			default:
				return "", nil, fmt.Errorf("unknown field %q (custom, pristine, allowlist, denylist; consul-template v0.41.1 refuses it too)", k)
			}
		}
	}
	if len(assigns) == 0 {
		return "", notes, nil
	}
	return "export " + strings.Join(assigns, " ") + "; ", notes, nil
}

// shellQuote quotes s for /bin/sh when it holds anything but plain word characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// ctWaitConfig is a wait as consul-template reads it (its WaitConfig before Finalize): each
// field nil until a file or -wait sets it, so that a later one replaces only the fields it gives.
// at is where the last of them was set; fourMin, that max is the 4 × min of a "MIN" string.
type ctWaitConfig struct {
	enabled  *bool
	min, max *time.Duration
	fourMin  bool
	at       string
}

// merge sets the fields o gives over w's, as consul-template's WaitConfig.Merge does.
func (w *ctWaitConfig) merge(o ctWaitConfig) {
	if o.enabled == nil && o.min == nil && o.max == nil {
		return
	}
	if o.enabled != nil {
		w.enabled = o.enabled
	}
	if o.min != nil {
		w.min = o.min
	}
	if o.max != nil {
		w.max, w.fourMin = o.max, o.fourMin
	}
	w.at = o.at
}

// final is the wait consul-template runs with (WaitConfig.Finalize): enabled when bool says so,
// else when min is given and not 0; min 0 when not given; max 4 × min when not given.
func (w ctWaitConfig) final() (enabled bool, lo, hi time.Duration) {
	if w.min != nil {
		lo = *w.min
	}
	hi = 4 * lo
	if w.max != nil {
		hi = *w.max
	}
	enabled = lo != 0
	if w.enabled != nil {
		enabled = *w.enabled
	}
	return enabled, lo, hi
}

// finalize turns w into the agent's wait. A wait consul-template does not enable, or one with a
// min of 0 (consul-template renders at once then), is none, the zero Wait. A min or a given max
// over agent.MaxWait is an error, as the agent would refuse it; consul-template's 4 × min over it
// is capped, as the agent caps it, with a note that says so.
func (w ctWaitConfig) finalize() (agent.Wait, []string, error) {
	on, lo, hi := w.final()
	if !on || lo == 0 {
		return agent.Wait{}, nil, nil
	}
	var notes []string
	switch {
	case lo > agent.MaxWait:
		return agent.Wait{}, nil, fmt.Errorf("%s: wait: min %s is over %s, the longest the agent lets a change wait to be rendered", w.at, lo, agent.MaxWait)
	case hi > agent.MaxWait && (w.max == nil || w.fourMin):
		notes = append(notes, fmt.Sprintf("%s: wait: consul-template's max is 4 × min, %s, when not given; the agent lets a change wait at most %s (as it caps 4 × min): max %s here",
			w.at, hi, agent.MaxWait, agent.MaxWait))
		hi = agent.MaxWait
	case hi > agent.MaxWait:
		return agent.Wait{}, nil, fmt.Errorf("%s: wait: max %s is over %s, the longest the agent lets a change wait to be rendered", w.at, hi, agent.MaxWait)
	case hi < lo:
		// Fields from two files, each within the rule alone.
		return agent.Wait{}, nil, fmt.Errorf("%s: wait: min %s and max %s (a max set before it): want min ≤ max", w.at, lo, hi)
	}
	return agent.Wait{Min: agent.Duration(lo), Max: agent.Duration(hi)}, notes, nil
}

// ctWait reads a wait as consul-template does: "5s" (min, and max 4 × min), "5s:10s" (both), or
// a block { min = "5s" max = "10s" bool = … } that sets the fields it gives. consul-template's
// switch is named bool (its mapstructure tag): it refuses enabled, and so does the conversion.
func ctWait(n ast.Node) (w ctWaitConfig, err error) {
	var v any
	if err = hcl.DecodeObject(&v, n); err != nil {
		return w, err
	}
	dur := func(field, s, example string) (*time.Duration, error) {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s %q is not a duration such as %q", field, s, example)
		}
		if d < 0 {
			return nil, fmt.Errorf("%s %s: want 0 or more", field, d)
		}
		return &d, nil
	}
	if m, ok := v.(map[string]any); ok {
		v = []map[string]any{m}
	}
	switch v := v.(type) {
	case string:
		parts := strings.Split(strings.TrimSpace(v), ":")
		if len(parts) > 2 {
			return w, fmt.Errorf("%q: want \"MIN\" or \"MIN:MAX\"", v)
		}
		if w.min, err = dur("min", parts[0], "5s"); err != nil {
			return w, err
		}
		hi := 4 * *w.min
		w.max, w.fourMin = &hi, true
		if len(parts) == 2 {
			w.fourMin = false
			if w.max, err = dur("max", parts[1], "10s"); err != nil {
				return w, err
			}
		}
	case []map[string]any:
		for _, m := range v {
			for k, val := range m {
				s, _ := val.(string)
				switch k = strings.ToLower(k); k {
				case "min":
					w.min, err = dur("min", s, "5s")
				case "max":
					w.max, err = dur("max", s, "10s")
				case "bool":
					b, ok := val.(bool)
					if !ok {
						return w, errors.New("bool: want true or false")
					}
					w.enabled = &b
				case "enabled":
					return w, errors.New(`unknown field "enabled" (consul-template v0.41.1 refuses it too: its switch is bool = true or false)`)
				default:
					return w, fmt.Errorf("unknown field %q (min, max, bool)", k)
				}
				if err != nil {
					return w, err
				}
			}
		}
	default:
		return w, errors.New("want \"MIN:MAX\" or { min = …, max = … }")
	}
	if w.min != nil && w.max != nil && *w.max < *w.min {
		return w, fmt.Errorf("min %s and max %s: want 0 ≤ min ≤ max", *w.min, *w.max)
	}
	return w, nil
}
