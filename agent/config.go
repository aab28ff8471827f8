package agent

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/internal/nss"
	"github.com/shoelace-dev/shoelace/templates"
)

// Defaults of the agent's configuration.
const (
	DefaultCommandTimeout = 30 * time.Second
	// DefaultHealthTimeout bounds one run of a template's health command.
	DefaultHealthTimeout = 10 * time.Second
	// DefaultHealthRetries is how many more times a failing health command runs before the
	// reload counts as failed.
	DefaultHealthRetries = 3
	// DefaultHealthInterval is the pause before each retry of a health command.
	DefaultHealthInterval = time.Second
	// maxHealthRetries bounds health_retries: a reload must end.
	maxHealthRetries = 100
	// maxCommandWait bounds command_timeout, health_timeout and health_interval: a reload must
	// end, and the loop waits for it (no view is rendered meanwhile).
	maxCommandWait = 24 * time.Hour
	// DefaultPollWait is how long one long-poll may be held by the server.
	DefaultPollWait = 55 * time.Second
	// MaxWait bounds wait.min and wait.max, and the max that defaults to 4 × min: a change
	// reaches the files at the latest this long after it, a third of a staged rollout's default
	// deadline (30m), past which the rollout halts for a cohort that has not applied it.
	MaxWait = 10 * time.Minute
)

// Stages of a template.
const (
	StageApplication = "application"
	StageSystem      = "system"
)

// What a template's on_command_failure does when its group's reload (command, then health)
// fails.
const (
	// OnFailureRollback restores the group's previous files and runs the command again (the
	// default). A group none of whose files existed before has nothing to go back to: it is kept.
	OnFailureRollback = "rollback"
	// OnFailureKeep leaves the new files in place.
	OnFailureKeep = "keep"
)

// maxTokenBytes bounds a token file, which holds one line.
const maxTokenBytes = 4096

// maxConfigBytes bounds the config and each templates_dir file, which are read whole: they hold
// settings and template entries (a large template goes in its source file), and a path given by
// mistake to a log or a disk image must not take its size in memory before any error.
const maxConfigBytes = 1 << 20

// commandFileCheck is the check that atomicfile.ReadInputCheck makes of path's file opened:
// judgeCommandFile's with judge (the agent loading its config), none without (convert-confd,
// which only prints).
func commandFileCheck(path string, judge bool) func(fs.FileInfo) error {
	if !judge {
		return nil
	}
	return func(fi fs.FileInfo) error { return judgeCommandFile(path, fi) }
}

// readConfigText reads a config or templates_dir file of at most maxConfigBytes; with judge,
// one that judgeCommandFile refuses is an error, unread.
func readConfigText(path string, judge bool) ([]byte, error) {
	data, err := atomicfile.ReadInputCheck(path, maxConfigBytes, commandFileCheck(path, judge))
	var tooLarge *atomicfile.TooLargeError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%s is over %d bytes (1 MiB), the limit of an agent config file: keep large templates in source files", path, maxConfigBytes)
	}
	return data, err
}

// Config is the agent's configuration file (DESIGN.md, "Agent").
type Config struct {
	Server        string   `yaml:"server"`
	CAFile        string   `yaml:"ca_file"`
	TokenFile     string   `yaml:"token_file"`
	Token         string   `yaml:"token"`
	Appliance     string   `yaml:"appliance"`
	Instance      string   `yaml:"instance"`
	CacheDir      string   `yaml:"cache_dir"`
	Wait          Wait     `yaml:"wait"`
	MetricsListen string   `yaml:"metrics_listen"`
	AllowedDirs   []string `yaml:"allowed_dirs"`
	TemplatesDir  string   `yaml:"templates_dir"`
	// CommandEnv names variables of the agent's environment that checks, commands and health
	// checks get, beyond PATH, HOME, LANG, LC_ALL and TZ (and on Windows the variables its
	// programs need): those that the service's unit sets for them (Environment=), as confd and
	// consul-template passed theirs on whole.
	CommandEnv []string `yaml:"command_env"`
	// ConfdDir is a confd directory whose resources (conf.d/*.toml, templates/) are rendered
	// as templates in confd mode, after those of templates and templates_dir (confd.go).
	ConfdDir  string     `yaml:"confd_dir"`
	Templates []Template `yaml:"templates"`

	// Path is the file the config was loaded from (for messages); empty when built in code.
	Path string `yaml:"-"`
	// Notes say what loading confd_dir ignored or applied to every resource (for validate and
	// the logs).
	Notes []string `yaml:"-"`
	// Unparsed are the problems of confd_dir's resources whose template could not be read or
	// parsed, one each: Validate does not refuse the config for them. Each such template fails
	// alone at every render and the others render, as in confd (whose templates are read at
	// render time); `validate` fails on them.
	Unparsed []string `yaml:"-"`

	// allowedReal is AllowedDirs with their symbolic links resolved when Validate ran: an
	// allowed directory swapped for a link afterwards must not take the installs with it.
	allowedReal []string
	// cacheReal is CacheDir with its symbolic links resolved when Validate judged the
	// directories above it (checkCacheParents): the agent reads and writes there, so that a link
	// on the way swapped afterwards cannot lead it elsewhere.
	cacheReal string
	// own are the agent's own files, which no template may render (ownFileProblem), each by
	// its name and with its symbolic links resolved, as Validate found them.
	own []agentFile
}

// agentFile is one of the agent's own files: what it is, its names (as written and resolved),
// and whether it is a directory whose whole content is the agent's (cache_dir).
type agentFile struct {
	what  string
	names []string
	dir   bool
}

// Wait coalesces bursts of changes: render once the view has been quiet for Min, and at
// the latest Max after the first change. Zero values turn it off.
type Wait struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`

	// minLine and maxLine are where min and max were written (0: not in a file), for Validate's
	// messages.
	minLine, maxLine int
}

// UnmarshalYAML reads a mapping {min: …, max: …}, or one duration, as consul-template reads
// its wait = "5s": the min, with max 4 × min (at most MaxWait, see bounds).
func (w *Wait) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*w = Wait{minLine: n.Line}
		return w.Min.parse(n, "wait: ")
	case yaml.MappingNode:
	default:
		return lineError(n, "wait must be a mapping such as {min: 2s, max: 10s}, or one duration such as 5s (the min; max 4 × min)")
	}
	*w = Wait{}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if line, dup := seen[k.Value]; dup {
			return lineError(k, fmt.Sprintf("mapping key %q already defined at line %d", k.Value, line))
		}
		seen[k.Value] = k.Line
		var err error
		switch k.Value {
		case "min":
			w.minLine = v.Line
			err = w.Min.parse(v, "wait: min: ")
		case "max":
			w.maxLine = v.Line
			err = w.Max.parse(v, "wait: max: ")
		default:
			err = lineError(k, fmt.Sprintf("field %s not found in type agent.Wait", k.Value))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Enabled reports whether changes are coalesced.
func (w Wait) Enabled() bool { return w.Min > 0 || w.Max > 0 }

// bounds returns the quiet time and the latest render after a first change: Max, or when it
// is not set, 4 × Min (a steady stream of changes must not postpone the render for ever), at
// most MaxWait.
func (w Wait) bounds() (quiet, latest time.Duration) {
	quiet, latest = time.Duration(w.Min), time.Duration(w.Max)
	if latest <= 0 && quiet > 0 {
		latest = min(4*quiet, MaxWait)
	}
	return quiet, latest
}

// Template is one file the agent renders.
type Template struct {
	Source         string `yaml:"source"`
	Contents       string `yaml:"contents"`
	Destination    string `yaml:"destination"`
	Stage          string `yaml:"stage"`
	Perms          string `yaml:"perms"`
	Owner          string `yaml:"owner"`
	Group          string `yaml:"group"`
	Backup         bool   `yaml:"backup"`
	LeftDelimiter  string `yaml:"left_delimiter"`
	RightDelimiter string `yaml:"right_delimiter"`
	Check          string `yaml:"check"`
	Command        string `yaml:"command"`
	// Shell runs check, command and health: "" for the system's (sh; cmd on Windows), or on
	// Windows powershell. Templates that share a command must agree.
	Shell          string   `yaml:"shell"`
	CommandTimeout Duration `yaml:"command_timeout"`
	// OnCommandFailure is rollback (default) or keep: what a failed reload of the template's
	// group does to the files it installed. Templates that share a command must agree.
	OnCommandFailure string `yaml:"on_command_failure"`
	// Health runs after the reload command (or after the install, without one); its failure
	// fails the reload. HealthRetries more runs, HealthInterval apart, may pass it first.
	Health         string   `yaml:"health"`
	HealthTimeout  Duration `yaml:"health_timeout"`
	HealthRetries  *int     `yaml:"health_retries"`
	HealthInterval Duration `yaml:"health_interval"`
	// AllowFile enables the template functions that read local files (file, fileExists). Off by
	// default: a template sees only its appliance's view. (An extension of DESIGN.md's schema.)
	AllowFile bool `yaml:"allow_file"`
	// Functions is the template's function set: native (the default), confd or consul-template
	// (templates.ModeNative, ModeConfd, ModeConsulTemplate).
	Functions string `yaml:"functions"`
	// ErrorOnMissingKey, with functions: consul-template, makes a missing map key or field an
	// error, as consul-template's error_on_missing_key does (the other modes always do).
	ErrorOnMissingKey bool `yaml:"error_on_missing_key"`
	// Prefix, with functions: confd, is confd's prefix, the confd keyspace the appliance's view
	// stands for (templates.Options.Prefix): as in confd, the template reads "/db/host" for the
	// etcd key PREFIX/db/host, from the view's db/host or, when the view lacks that, from
	// PREFIX/db/host (a view imported with --prefix /).
	Prefix string `yaml:"prefix"`
	// Keys, with functions: confd, are a confd resource's keys: the template sees only the
	// keys at or below them, as confd loads them (templates.Options.ConfdKeys). Unset: every
	// key of the view; an empty list: none.
	Keys []string `yaml:"keys"`
	// FunctionDenylist, with functions: consul-template, is consul-template's
	// function_denylist: the functions it names (globs such as "sprig_*") fail when called.
	FunctionDenylist []string `yaml:"function_denylist"`

	// File and Line say where the entry was written (for messages).
	File string `yaml:"-"`
	Line int    `yaml:"-"`
	// confdDir, for a resource of confd_dir, is that directory: a resource has no allow_file.
	confdDir string
	// confdDest, for a resource whose dest is relative (or not clean), is dest as written:
	// Destination is it made absolute from the directory the agent runs in.
	confdDest string
	// denyFiles are the agent's token file and cache dir, and the config when it holds the
	// token inline, which file and fileExists refuse (set by Validate).
	denyFiles []string
	// confdPrefixes are the prefixes of the agent's confd-mode templates, which tell a view
	// imported with --prefix / from one imported with --prefix PREFIX (templates.Options,
	// set by Validate).
	confdPrefixes []string
	// judge says that the source is judged by judgeCommandFile when it is read: set for the
	// templates of a config the agent loads, not for those convert-confd only prints.
	judge bool

	// Resolved by Validate.
	mode     os.FileMode
	uid, gid int
}

// Mode is the file mode asked by perms (0: keep the current one, 0644 for a new file).
func (t *Template) Mode() os.FileMode { return t.mode }

// UID is the owner asked by owner, or -1 to keep it.
func (t *Template) UID() int { return t.uid }

// GID is the group asked by group, or -1 to keep it.
func (t *Template) GID() int { return t.gid }

// Timeout is command_timeout or its default; it bounds check and command.
func (t *Template) Timeout() time.Duration {
	if t.CommandTimeout > 0 {
		return time.Duration(t.CommandTimeout)
	}
	return DefaultCommandTimeout
}

// OnFailure is on_command_failure or its default.
func (t *Template) OnFailure() string { return cmp.Or(t.OnCommandFailure, OnFailureRollback) }

// HealthTimeoutOrDefault is health_timeout or its default.
func (t *Template) HealthTimeoutOrDefault() time.Duration {
	if t.HealthTimeout > 0 {
		return time.Duration(t.HealthTimeout)
	}
	return DefaultHealthTimeout
}

// Retries is health_retries or its default.
func (t *Template) Retries() int {
	if t.HealthRetries != nil {
		return *t.HealthRetries
	}
	return DefaultHealthRetries
}

// Interval is health_interval or its default.
func (t *Template) Interval() time.Duration {
	if t.HealthInterval > 0 {
		return time.Duration(t.HealthInterval)
	}
	return DefaultHealthInterval
}

// where names the entry in messages: file:line and its destination.
func (t *Template) where() string {
	loc := t.File
	if t.Line > 0 {
		loc = fmt.Sprintf("%s:%d", t.File, t.Line)
	}
	if t.Destination != "" && controlChar(t.Destination) >= 0 {
		return fmt.Sprintf("%s: template %q", loc, t.Destination)
	}
	if t.Destination != "" {
		return fmt.Sprintf("%s: template %s", loc, t.Destination)
	}
	return fmt.Sprintf("%s: template", loc)
}

// controlChar returns the first control character of p (C0, DEL or C1), or -1.
func controlChar(p string) rune {
	for _, r := range p {
		if unicode.IsControl(r) {
			return r
		}
	}
	return -1
}

// pathCharProblem says why the path p of field holds a control character, or "" when it holds
// none. No file is meant to be named so: a Windows path in YAML (or TOML) double quotes
// ("C:\new\table.conf") is read with \n and \t as a newline and a tab, and rendered or read
// under that name without a word.
func pathCharProblem(field, p string) string {
	r := controlChar(p)
	if r < 0 {
		return ""
	}
	var what string
	switch r {
	case 0:
		what = "a NUL byte"
	case '\n':
		what = `a newline (\n)`
	case '\t':
		what = `a tab (\t)`
	case '\r':
		what = `a carriage return (\r)`
	default:
		what = fmt.Sprintf("the control character %U", r)
	}
	// The path as it was written in double quotes: "C:\new\table.conf".
	q := strconv.Quote(p)
	written := q[1 : len(q)-1]
	single := strings.ReplaceAll(written, `\\`, `\`)
	msg := fmt.Sprintf("%s %s holds %s: in double quotes (YAML, TOML) a backslash starts an escape (\\n is a newline, \\t a tab); write the path in single quotes ('%s')",
		field, q, what, single)
	// Forward slashes for backslashes, when that is a path the config takes ("C:/new/table.conf"):
	// "/etc/app/\tx.conf" so written is "/etc/app//tx.conf", which the clean-path rule refuses.
	if slashes := strings.ReplaceAll(single, `\`, "/"); path.Clean(slashes) == slashes {
		msg += fmt.Sprintf(" or with forward slashes (%s)", slashes)
	}
	return msg
}

// pathFields are the config's own paths, by field name.
func (c *Config) pathFields() []struct{ field, path string } {
	fs := []struct{ field, path string }{{"token_file", c.TokenFile}, {"ca_file", c.CAFile}, {"cache_dir", c.CacheDir},
		{"templates_dir", c.TemplatesDir}, {"confd_dir", c.ConfdDir}}
	for i, d := range c.AllowedDirs {
		fs = append(fs, struct{ field, path string }{fmt.Sprintf("allowed_dirs[%d]", i), d})
	}
	return fs
}

// Duration is a time.Duration written as "30s", "2m" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return d.parse(n, "") }

// parse reads a Go duration string; field ("wait: min: ") heads its errors, for a field
// whose line alone does not name it (wait: {min: 1s, max: -1s}).
func (d *Duration) parse(n *yaml.Node, field string) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, field+"a duration must be a string like \"30s\"")
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return lineError(n, fmt.Sprintf("%sinvalid duration %q: use a number with a unit, like \"500ms\", \"30s\" or \"2m\"", field, n.Value))
	}
	if v < 0 {
		return lineError(n, fmt.Sprintf("%sduration %q is negative: it must be 0 or more", field, n.Value))
	}
	*d = Duration(v)
	return nil
}

// durationProblem is a Duration's error without its field's name ("line 9: invalid duration
// \"abc\": …"): UnmarshalYAML sees the value alone, not the key that holds it.
var durationProblem = regexp.MustCompile(`^line (\d+): ((?:invalid duration|duration |a duration must be).*)$`)

// typeProblem is yaml.v3's error of a value of the wrong type, which names the line only.
var typeProblem = regexp.MustCompile(`^line (\d+): (cannot unmarshal .*)$`)

// namedField puts the key of the mapping entry whose value an error is about at the head of
// the error, when one key's value is at its line: a Duration's ("line 9: health_timeout:
// invalid duration \"abc\": …"; UnmarshalYAML sees the value alone), or one of the wrong type
// ("line 9: backup: cannot unmarshal …", which fileLine words "backup: want true or false, not
// a string"). Other errors, and one whose key is not known for sure, are left as they are.
func namedField(root *yaml.Node, msg string) string {
	field := func(k string) bool { return durationFields[k] }
	m := durationProblem.FindStringSubmatch(msg)
	if m == nil {
		field = func(string) bool { return true }
		if m = typeProblem.FindStringSubmatch(msg); m == nil {
			return msg
		}
	}
	line, _ := strconv.Atoi(m[1])
	var keys []string
	keysAt(root, line, field, &keys)
	if len(keys) == 1 {
		return fmt.Sprintf("line %d: %s: %s", line, keys[0], m[2])
	}
	return msg
}

// durationFields are the YAML names of Template's Duration fields.
var durationFields = func() map[string]bool {
	f := map[string]bool{}
	t := reflect.TypeFor[Template]()
	for i := range t.NumField() {
		if sf := t.Field(i); sf.Type == reflect.TypeFor[Duration]() {
			f[strings.Split(sf.Tag.Get("yaml"), ",")[0]] = true
		}
	}
	return f
}()

// keysAt adds to keys those of the mapping entries under n that field accepts with their value
// at line (one, unless a flow mapping holds several on one line).
func keysAt(n *yaml.Node, line int, field func(string) bool, keys *[]string) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; field(k.Value) && n.Content[i+1].Line == line {
				*keys = append(*keys, k.Value)
			}
		}
	}
	for _, c := range n.Content {
		keysAt(c, line, field, keys)
	}
}

// lineError is a decoding error that yaml.v3 collects with the others, so that one run
// reports every problem of a file.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultConfig returns a config with every default set and no templates.
func DefaultConfig() *Config {
	return &Config{CacheDir: DefaultCacheDir}
}

// Overrides are settings given on the command line, over the config file's.
type Overrides struct {
	// ConfdDir replaces confd_dir (--confdir).
	ConfdDir string
}

// LoadConfig reads the config file at path strictly (an unknown field is an error naming the
// file and line), then every *.yaml in templates_dir (each a list of template entries, read as
// strictly), then the resources of confd_dir, fills defaults and validates the whole.
func LoadConfig(path string) (*Config, error) { return LoadConfigWith(path, Overrides{}) }

// LoadConfigWith is LoadConfig with the overrides o.
func LoadConfigWith(path string, o Overrides) (*Config, error) {
	data, err := readConfigFile(path, true)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	if o.ConfdDir != "" {
		cfg.ConfdDir = o.ConfdDir
	}
	// A directory named with a newline or a tab (a Windows path in double quotes) is not read:
	// "no such file" would hide why.
	for _, f := range []struct{ field, path string }{{"templates_dir", cfg.TemplatesDir}, {"confd_dir", cfg.ConfdDir}} {
		if why := pathCharProblem(f.field, f.path); why != "" {
			return nil, fmt.Errorf("%s: %s", path, why)
		}
	}
	// A relative templates_dir is not read (Validate refuses it): read against the directory
	// the agent runs in, its errors hid the one that matters.
	if cfg.TemplatesDir != "" && filepath.IsAbs(cfg.TemplatesDir) {
		if err := cfg.loadTemplatesDir(); err != nil {
			return nil, err
		}
	}
	if cfg.ConfdDir != "" {
		r, err := readConfdDir(cfg.ConfdDir, true)
		if err != nil {
			if strings.HasPrefix(err.Error(), "confd_dir") { // it names the setting already
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return nil, fmt.Errorf("%s: confd_dir: %w", path, err)
		}
		cfg.Templates = append(cfg.Templates, r.Templates...)
		cfg.Notes = append(cfg.Notes, r.Notes...)
	}
	for i := range cfg.Templates {
		cfg.Templates[i].judge = true
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ParseConfig decodes a config file's content (name is used in messages) over DefaultConfig,
// without reading templates_dir and without validating.
func ParseConfig(name string, data []byte) (*Config, error) {
	data, err := utf8Text(data)
	if err != nil {
		return nil, fmt.Errorf("%s %w", name, err)
	}
	cfg := DefaultConfig()
	if err := decodeStrict(name, data, cfg); err != nil {
		return nil, err
	}
	// A second, lenient pass over the nodes gives each template entry its line.
	var lines struct {
		Templates []yaml.Node `yaml:"templates"`
	}
	_ = yaml.Unmarshal(data, &lines)
	at := entryLines(lines.Templates)
	for i := range cfg.Templates {
		cfg.Templates[i].File = name
		if i < len(at) {
			cfg.Templates[i].Line = at[i]
		}
	}
	cfg.Path = name
	return cfg, nil
}

// entryLines are the lines of the template entries that yaml.v3 decodes from a list's nodes:
// it drops a null entry (a "-" with nothing after it, "- ~"), so the n-th template decoded is
// the n-th entry that is not null, and the lines of those after one are not its neighbour's.
func entryLines(nodes []yaml.Node) []int {
	lines := make([]int, 0, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			continue
		}
		lines = append(lines, nodes[i].Line)
	}
	return lines
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var notFound = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
var cannotUnmarshal = regexp.MustCompile("^(?:([A-Za-z_][\\w-]*): )?cannot unmarshal (!!\\w+)(?: (`.*`))? into (\\S+)$")

// yamlTagNames names yaml.v3's node tags in messages.
var yamlTagNames = map[string]string{"str": "string", "map": "mapping", "seq": "list", "int": "number", "float": "number", "bool": "boolean", "null": "null"}

// goTypeNames says in the config's words what yaml.v3's "cannot unmarshal … into T" expected.
var goTypeNames = map[string]string{
	"[]agent.Template": "a list of template entries (each starting with \"- \")",
	"agent.Template":   "a template entry (a mapping such as {destination: …, contents: …})",
	"agent.Wait":       "a mapping such as {min: 2s, max: 10s}, or one duration (the min)",
	"agent.Config":     "a mapping of settings (server: …, appliance: …, templates: …)",
	"[]string":         "a list such as [/etc/nginx]",
	"string":           "a string",
	"bool":             "true or false",
	"int":              "a whole number",
}

// decodeStrict decodes one YAML document into out with unknown fields refused, and rewrites
// yaml.v3's messages as "file:line: what".
func decodeStrict(name string, data []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(out)
	if errors.Is(err, io.EOF) {
		return nil // an empty file holds nothing
	}
	if err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var root yaml.Node
			_ = yaml.Unmarshal(data, &root) // it decoded as far as these errors: it parses
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				msgs[i] = fileLine(name, namedField(&root, m))
			}
			return &ConfigError{Problems: msgs}
		}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil && (strings.Contains(m[2], "cannot start any token") || strings.Contains(m[2], "tab character")) {
			// yaml.v3's words for a tab in the indentation, at its line or the one before.
			from, _ := strconv.Atoi(m[1])
			if n := tabIndentedLine(data, from); n > 0 {
				return fmt.Errorf("%s:%d: a tab indents this line: YAML indents with spaces only", name, n)
			}
		}
		msg := fileLine(name, err.Error())
		if strings.Contains(msg, "unknown escape character") || strings.Contains(msg, "did not find expected hexdecimal number") ||
			strings.Contains(msg, "found invalid Unicode character escape code") {
			// "C:\ProgramData\shoelace": a Windows path in double quotes; "C:\Users\…" and
			// "C:\xampp" start the escapes \U, \u and \x, which want hexadecimal digits.
			msg += `: in double quotes a backslash starts an escape (\n, \t); write a Windows path unquoted or in single quotes ('C:\ProgramData\shoelace'), or double each backslash`
		}
		return errors.New(msg)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("%s:%d: a second YAML document is not allowed", name, extra.Line)
	}
	return nil
}

// tabIndentedLine is the number of the first line of data from line from on whose indentation
// holds a tab, or 0.
func tabIndentedLine(data []byte, from int) int {
	for i, line := range strings.Split(string(data), "\n") {
		if i+1 < from {
			continue
		}
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(line) != "" {
			return i + 1
		}
	}
	return 0
}

func fileLine(name, msg string) string {
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Sprintf("%s: %s", name, strings.TrimPrefix(msg, "yaml: "))
	}
	what := m[2]
	if f := notFound.FindStringSubmatch(what); f != nil {
		what = fmt.Sprintf("unknown field %q", f[1])
	}
	if u := cannotUnmarshal.FindStringSubmatch(what); u != nil {
		if want, ok := goTypeNames[u[4]]; ok {
			got := strings.TrimPrefix(u[2], "!!")
			if n, ok := yamlTagNames[got]; ok {
				got = n
			}
			if u[3] != "" {
				got += " " + u[3]
			}
			what = fmt.Sprintf("want %s, not a %s", want, got)
			if u[1] != "" {
				what = u[1] + ": " + what // the field, named by namedField
			}
		}
	}
	// Nested errors (from Duration.UnmarshalYAML) may carry their own line.
	if n := yamlLine.FindStringSubmatch(what); n != nil {
		return fmt.Sprintf("%s:%s: %s", name, n[1], n[2])
	}
	return fmt.Sprintf("%s:%s: %s", name, m[1], what)
}

// judgeCommandDir refuses a directory whose files tell the agent what to write and run
// (templates_dir, confd_dir and its conf.d and templates) when someone other than root and the
// agent's user may add files to it, as judgeCommandFile refuses such a file: a sticky /tmp
// does not keep another user from planting a file there, or a link to one of root's. A
// directory that is not there is not judged (whoever reads it says so).
func judgeCommandDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return nil
	}
	return judgeTrustedFile(path, fi, "whoever may add a file to it tells the agent what to write and run, so %s could have the agent write or run anything")
}

// TemplateFiles lists the *.yaml files of templates_dir in the order they are read.
func (c *Config) TemplateFiles() ([]string, error) {
	if c.TemplatesDir == "" {
		return nil, nil
	}
	files, err := filepath.Glob(filepath.Join(c.TemplatesDir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("templates_dir %s: %w", c.TemplatesDir, err)
	}
	// Hidden files are left out, as the shell's *.yaml leaves them out and systemd skips them in
	// drop-in directories: an editor's lock file (Emacs's .#web.yaml, a link to nowhere) or
	// another tool's temp file (.ansible_tmp…web.yaml) is no list of entries.
	files = slices.DeleteFunc(files, hiddenFile)
	sort.Strings(files)
	return files, nil
}

// TemplatesDirWarnings names the files of templates_dir that look like lists of template
// entries but are not read, since only *.yaml files are: an entry list saved as web.yml (the
// other usual name) or WEB.YAML left its templates out without a word.
func (c *Config) TemplatesDirWarnings() []string {
	if c.TemplatesDir == "" || !filepath.IsAbs(c.TemplatesDir) {
		return nil
	}
	entries, err := os.ReadDir(c.TemplatesDir)
	if err != nil {
		return nil // a missing drop-in directory is fine; another error is loadTemplatesDir's
	}
	var w []string
	for _, e := range entries {
		name, ext := e.Name(), filepath.Ext(e.Name())
		if e.IsDir() || ext == ".yaml" || !yamlName(name) || hiddenFile(name) {
			continue
		}
		w = append(w, fmt.Sprintf("%s: templates_dir: %s is not read: only *.yaml files are (rename it %s)",
			c.Path, filepath.Join(c.TemplatesDir, name), strings.TrimSuffix(name, ext)+".yaml"))
	}
	return w
}

// hiddenFile reports whether the base name of name starts with a dot.
func hiddenFile(name string) bool { return strings.HasPrefix(filepath.Base(name), ".") }

// yamlName reports whether name ends in .yaml or .yml, in any case: a file of templates_dir
// that a user meant as a list of template entries (only *.yaml ones are read).
func yamlName(name string) bool {
	ext := filepath.Ext(name)
	return strings.EqualFold(ext, ".yaml") || strings.EqualFold(ext, ".yml")
}

func (c *Config) loadTemplatesDir() error {
	fi, err := os.Stat(c.TemplatesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // an empty drop-in directory may not exist yet
	}
	if err != nil {
		return fmt.Errorf("%s: templates_dir: %w", c.Path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: templates_dir %s is not a directory", c.Path, c.TemplatesDir)
	}
	if err := judgeCommandDir(c.TemplatesDir); err != nil {
		return fmt.Errorf("%s: templates_dir: %w", c.Path, err)
	}
	files, err := c.TemplateFiles()
	if err != nil {
		return err
	}
	self, _ := os.Stat(c.Path)
	for _, f := range files {
		if err := judgeLinkOwner(f); err != nil {
			return fmt.Errorf("%s: templates_dir: %w", c.Path, err)
		}
		if fi, err := os.Stat(f); err == nil && self != nil && os.SameFile(fi, self) {
			// templates_dir: /etc/shoelace read agent.yaml as a list of entries ("want a list").
			return fmt.Errorf("%s: templates_dir %s holds this config file: its *.yaml files are read as lists of template entries; give templates_dir a directory of its own, such as %s",
				c.Path, c.TemplatesDir, filepath.Join(c.TemplatesDir, "templates.d"))
		}
		data, err := readConfigText(f, true)
		if err != nil {
			return fmt.Errorf("%s: templates_dir: %w", c.Path, err)
		}
		if data, err = utf8Text(data); err != nil {
			return fmt.Errorf("%s %w", f, err)
		}
		var list []Template
		if err := decodeStrict(f, data, &list); err != nil {
			return err
		}
		var nodes []yaml.Node
		_ = yaml.Unmarshal(data, &nodes)
		at := entryLines(nodes)
		for i := range list {
			list[i].File = f
			if i < len(at) {
				list[i].Line = at[i]
			}
		}
		c.Templates = append(c.Templates, list...)
	}
	return nil
}

var permsRE = regexp.MustCompile(`^0?[0-7]{3}$`)

// envNameRE matches an environment variable's name, as a shell takes one.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// specialPermsRE matches a mode with setuid, setgid or sticky bits ("4755", "01777").
var specialPermsRE = regexp.MustCompile(`^0?[1-7][0-7]{3}$`)

// Validate checks the whole config and resolves owners, groups and modes. The error lists
// every problem found, one per line, each naming the file, the template and the rule.
func (c *Config) Validate() error {
	var errs []string
	c.Unparsed = nil
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	name := c.Path
	if name == "" {
		name = "config"
	}
	if !unixModes {
		c.windowsPaths()
	}
	qp := func(p string) string { return quotePath(p, !unixModes) }
	// A path with a control character is refused before anything else is said of it (it is not
	// absolute, it does not exist: not why it is wrong).
	bad := map[string]bool{}
	for _, f := range c.pathFields() {
		if why := pathCharProblem(f.field, f.path); why != "" {
			add("%s: %s", name, why)
			bad[f.field] = true
		}
	}

	if c.Server == "" {
		add("%s: server is required (for example https://shoelace.internal:7400)", name)
	} else if u, err := url.Parse(c.Server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("%s: server %q must be an http:// or https:// URL with a host", name, c.Server)
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		add("%s: server %q must not carry user info, a query or a fragment", name, c.Server)
	} else if port := u.Port(); port != "" && !api.ValidPort(port) {
		add("%s: server %q: port %q must be a number from 1 to 65535", name, c.Server, port)
	} else if p := strings.TrimSuffix(u.Path, "/"); p != "" && (path.Clean(p) != p || strings.HasSuffix(p, "/") || path.Base(p) == "v1") {
		// A path prefix (a proxy's) is joined to every request: "//" or "/./" in it is a
		// request the server refuses, every time, and so is /v1, which the agent adds itself.
		add("%s: server %q: its path %q must be clean (no '//', '.' or '..') and not end in /v1, which the agent adds to every request; did you mean %q?", name, c.Server, u.Path, u.Scheme+"://"+u.Host+strings.TrimSuffix(strings.TrimSuffix(path.Clean(p), "/"), "/v1"))
	}
	if c.Appliance == "" {
		add("%s: appliance is required", name)
	} else if err := api.ValidateSegment("appliance name", c.Appliance); err != nil {
		add("%s: %v", name, err)
	}
	if c.Instance != "" {
		if err := api.ValidateSegment("instance name", c.Instance); err != nil {
			add("%s: %v (it is sent as X-Shoelace-Instance)", name, err)
		} else if r := api.RedactSecrets(c.Instance); r != c.Instance {
			// The server refuses such a name in X-Shoelace-Instance (its token would be named
			// after it, and the log writes token names): every request of run would fail.
			add("%s: invalid instance name %q: it holds what looks like a token's secret (sl_ and 43 base64url characters), which the server refuses (it is sent as X-Shoelace-Instance); choose a name", name, r)
		}
	}
	switch {
	case c.Token != "" && c.TokenFile != "":
		add("%s: set token_file or token, not both", name)
	case c.Token == "" && c.TokenFile == "":
		// The server refuses every request without a token: say so now, not at the first fetch.
		add("%s: token_file is required (or an inline token:): the agent token that `shoelace token create --appliance %s` prints", name, cmp.Or(c.Appliance, "NAME"))
	}
	if c.Token != "" {
		if err := checkTokenChars(c.Token); err != nil {
			add("%s: token %v", name, err)
		}
	}
	// Relative paths are refused as cache_dir's are: read against the directory the agent runs
	// in, one that validate finds beside the config is not there for the service (run in /).
	switch {
	case bad["token_file"], c.TokenFile == "":
	case !filepath.IsAbs(c.TokenFile):
		add("%s: token_file %s must be an absolute path", name, qp(c.TokenFile))
	default:
		if _, err := readTokenFile(c.TokenFile); err != nil {
			add("%s: %v", name, err)
		}
	}
	switch {
	case bad["ca_file"], c.CAFile == "":
	case !filepath.IsAbs(c.CAFile):
		add("%s: ca_file %s must be an absolute path", name, qp(c.CAFile))
	default:
		if fi, err := os.Stat(c.CAFile); err != nil {
			add("%s: ca_file: %v", name, err)
		} else if err := judgeTrustedFile(c.CAFile, fi, "it says which server the agent trusts, so %s could have the agent take what it writes and runs from another server"); err != nil {
			add("%s: ca_file %v", name, err)
		}
	}
	if bad["cache_dir"] {
		// Said above: nothing else is judged of it.
	} else if c.CacheDir == "" {
		add("%s: cache_dir must not be empty", name)
	} else if !filepath.IsAbs(c.CacheDir) {
		add("%s: cache_dir %s must be an absolute path", name, qp(c.CacheDir))
	} else if fi, err := os.Stat(c.CacheDir); err == nil && unixModes && fi.Mode().Perm()&0o022 != 0 {
		// Whoever can write there can plant a view the agent renders when the server is away.
		if fi.Mode()&fs.ModeSticky != 0 {
			// /tmp, /var/tmp: a directory everyone shares, whose mode is not to be changed.
			add("%s: cache_dir %s is a directory that others share (mode %04o): the agent renders its cached view when the server is away; give cache_dir a directory of its own, such as %s", name, c.CacheDir, uint32(fi.Mode().Perm())|0o1000, DefaultCacheDir)
		} else {
			add("%s: cache_dir %s is writable by group or others (mode %04o): the agent renders its cached view when the server is away; run chmod 700 %s", name, c.CacheDir, fi.Mode().Perm(), c.CacheDir)
		}
	} else if uid := cacheDirOwner(fi, err); uid >= 0 && uid != os.Getuid() && uid != 0 {
		// Its owner can plant a view (or replace the directory's files) as well.
		add("%s: cache_dir %s is owned by uid %d, neither the agent's user (uid %d) nor root: its owner could plant a view the agent renders when the server is away; run chown %d %s", name, c.CacheDir, uid, os.Getuid(), os.Getuid(), c.CacheDir)
	} else if err == nil && !unixModes {
		if who, err := othersMay(c.CacheDir, writeRights|readRights); err != nil {
			add("%s: cache_dir: %v", name, err)
		} else if who != "" {
			add("%s: cache_dir %s may be read or written by %s: the agent keeps the view (secrets too) there and renders it when the server is away; remove it and let the agent make it (SYSTEM and Administrators only), or restrict its ACL", name, c.CacheDir, who)
		} else if who, err := foreignOwner(c.CacheDir); err != nil {
			add("%s: cache_dir: %v", name, err)
		} else if who != "" {
			add("%s: cache_dir %s is owned by %s, neither SYSTEM, Administrators nor the agent's user: its owner may read the view (secrets too) and plant one the agent renders when the server is away; remove it and let the agent make it", name, c.CacheDir, who)
		}
	}
	c.cacheReal = ""
	if filepath.IsAbs(c.CacheDir) && !bad["cache_dir"] {
		real, err := checkCacheParents(c.CacheDir)
		if err == nil {
			c.cacheReal = real
			err = cacheClash(real, c.Appliance)
		}
		if err != nil {
			add("%s: cache_dir %s: %v", name, c.CacheDir, err)
		}
	}
	// Each bound names its line, as a decoding error would.
	atLine := func(line int) string {
		if line > 0 && c.Path != "" {
			return fmt.Sprintf("%s:%d", name, line)
		}
		return name
	}
	for _, f := range []struct {
		field string
		d     time.Duration
		line  int
	}{{"min", time.Duration(c.Wait.Min), c.Wait.minLine}, {"max", time.Duration(c.Wait.Max), c.Wait.maxLine}} {
		switch {
		case f.d < 0:
			add("%s: wait: %s %s must not be negative", atLine(f.line), f.field, f.d)
		case f.d > MaxWait:
			add("%s: wait: %s %s is over %s, the longest a change may wait to be rendered (a staged rollout halts when its cohort has not applied within its deadline, 30m by default)", atLine(f.line), f.field, f.d, MaxWait)
		}
	}
	if c.Wait.Min > 0 && c.Wait.Max > 0 && c.Wait.Min > c.Wait.Max {
		// The later of the two lines, where the pair stopped making sense.
		add("%s: wait: min %s is greater than max %s", atLine(max(c.Wait.minLine, c.Wait.maxLine)), time.Duration(c.Wait.Min), time.Duration(c.Wait.Max))
	}
	if c.MetricsListen != "" {
		if _, _, err := splitHostPort(c.MetricsListen); err != nil {
			add("%s: metrics_listen %q: %v", name, c.MetricsListen, err)
		}
	}
	for i, d := range c.AllowedDirs {
		// A trailing slash ("/etc/nginx/") names the same directory: accept it.
		d = trimDir(d, `/`+string(filepath.Separator), len(filepath.VolumeName(d)))
		c.AllowedDirs[i] = d
		if !bad[fmt.Sprintf("allowed_dirs[%d]", i)] && (!filepath.IsAbs(d) || filepath.Clean(d) != d) {
			add("%s: allowed_dirs[%d] %s must be an absolute, clean path", name, i, qp(d))
		}
	}
	c.allowedReal = resolveDirs(c.AllowedDirs)
	for i, v := range c.CommandEnv {
		switch {
		case !envNameRE.MatchString(v):
			add("%s: command_env[%d] %q is not a variable's name (letters, digits and '_', not starting with a digit)", name, i, v)
		case strings.HasPrefix(strings.ToUpper(v), "SHOELACE_"):
			add("%s: command_env[%d] %q: the agent sets the SHOELACE_ variables of a command itself, and its own (a token) are not passed on", name, i, v)
		}
	}
	c.own = c.ownFiles()
	if c.TemplatesDir != "" && !filepath.IsAbs(c.TemplatesDir) && !bad["templates_dir"] {
		add("%s: templates_dir %s must be an absolute path", name, qp(c.TemplatesDir))
	}

	var confdPrefixes []string
	for _, t := range c.Templates {
		if t.Functions == templates.ModeConfd && t.Prefix != "" && !slices.Contains(confdPrefixes, t.Prefix) {
			confdPrefixes = append(confdPrefixes, t.Prefix)
		}
	}
	seen, seenReal := map[string]string{}, map[string]string{}
	for i := range c.Templates {
		t := &c.Templates[i]
		if t.File == "" {
			t.File = fmt.Sprintf("%s: templates[%d]", name, i)
		}
		w := t.where()
		before := len(errs)
		if (t.Source == "") == (t.Contents == "") {
			add("%s: set exactly one of source and contents", w)
		}
		if why := pathCharProblem("source", t.Source); why != "" {
			add("%s: %s", w, why)
		} else if t.Source != "" && !filepath.IsAbs(t.Source) {
			add("%s: source %s must be an absolute path", w, qp(t.Source))
		}
		switch destProblem := pathCharProblem("destination", t.Destination); {
		case destProblem != "":
			add("%s: %s", w, destProblem)
		case t.Destination == "":
			add("%s: destination is required", w)
		case !filepath.IsAbs(t.Destination):
			add("%s: destination %s must be an absolute path", w, qp(t.Destination))
		case filepath.Clean(t.Destination) != t.Destination || strings.HasSuffix(t.Destination, "/"):
			sep := string(filepath.Separator)
			add("%s: destination %s must be a clean path (no '..', '.', '%s%s' or trailing '%s'); did you mean %s?", w, qp(t.Destination), sep, sep, sep, qp(filepath.Clean(t.Destination)))
		case t.Destination == "/":
			add("%s: destination must be a file, not /", w)
		case !unixModes && windowsNameProblem(t.Destination) != "":
			add("%s: destination %s", w, windowsNameProblem(t.Destination))
		case atomicfile.TempNameLen(filepath.Base(t.Destination), t.Backup) > atomicfile.MaxNameLen:
			// Its install could never stage it: say so now, not at every pass ("file name too long").
			n, unit := atomicfile.TempNameLen(filepath.Base(t.Destination), t.Backup), "bytes"
			if !unixModes {
				unit = "characters"
			}
			add("%s: destination's file name is too long to be installed: the temp files made beside it (.NAME.shoelace-N; with backup, .NAME.bak.shoelace-N) would have names of up to %d %s, over the %d a file name may have; shorten it by %d",
				w, n, unit, atomicfile.MaxNameLen, n-atomicfile.MaxNameLen)
		default:
			// The same file by another name (a directory on its way that is a symbolic link)
			// too: the two templates overwrote each other at every pass, each reported in place.
			real := resolveLinks(t.Destination)
			// Windows names files regardless of case: C:\App\a.conf and c:\app\A.conf are one.
			key := destKey(t.Destination, !unixModes)
			if prev, dup := seen[key]; dup {
				add("%s: destination is also rendered by %s", w, prev)
			} else if prev, dup := seenReal[destKey(real, !unixModes)]; dup {
				add("%s: destination is the file %s through a symbolic link, which %s also renders", w, real, prev)
			}
			seen[key] = w
			seenReal[destKey(real, !unixModes)] = w
			if why := c.ownFileProblem(t.Destination, real); why != "" {
				add("%s: %s", w, why)
			} else if t.Source != "" && isSource(t.Destination, real, t.Source) {
				// Its first render replaced the template with its output, for good.
				add("%s: destination is the template's own source %s: its first render would replace the template with what it renders; render another file", w, t.Source)
			} else if t.Backup {
				// The install would refuse the .bak at every pass: validate says so first.
				bak := t.Destination + ".bak"
				if what := cmp.Or(c.ownFile(bak), c.ownFile(resolveLinks(bak))); what != "" {
					add("%s: backup keeps the previous content as %s, which is %s: it must not be replaced; render another file or leave backup out", w, bak, what)
				}
			}
			if err := c.checkAllowed(t.Destination); err != nil {
				add("%s: %v", w, err)
			}
			if strings.HasPrefix(filepath.Base(t.Destination), ".") && strings.Contains(filepath.Base(t.Destination), ".shoelace-") {
				add("%s: destination looks like one of the agent's own temp files", w)
			}
		}
		switch t.Stage {
		case "":
			t.Stage = StageApplication
		case StageApplication, StageSystem:
		default:
			add("%s: stage %q must be %q or %q", w, t.Stage, StageApplication, StageSystem)
		}
		t.mode = 0
		if t.Perms != "" {
			if specialPermsRE.MatchString(t.Perms) {
				add("%s: perms %q: setuid, setgid and sticky bits are not supported; give the permission bits only, such as \"0755\"", w, t.Perms)
			} else if !permsRE.MatchString(t.Perms) {
				add("%s: perms %q must be an octal mode string such as \"0644\" (quote it in YAML)", w, t.Perms)
			} else {
				m, _ := strconv.ParseUint(t.Perms, 8, 32)
				t.mode = os.FileMode(m)
				if t.mode == 0 {
					add("%s: perms %q would make the file unreadable even by its owner", w, t.Perms)
				}
			}
		}
		var err error
		if t.uid, err = lookupID(t.Owner, false); err != nil {
			add("%s: owner: %v", w, err)
		}
		if t.gid, err = lookupID(t.Group, true); err != nil {
			add("%s: group: %v", w, err)
		}
		if t.confdDir != "" && unixModes {
			// A confd resource without uid or gid: confd v0.16.0 sets them to its own
			// (os.Geteuid, os.Getegid) and chowns every file it installs to them, an existing
			// file of another owner too, so the file belongs to the agent's user as it did to
			// confd's.
			if t.Owner == "" {
				t.uid = os.Geteuid()
			}
			if t.Group == "" {
				t.gid = os.Getegid()
			}
		}
		// One delimiter may be set alone (DESIGN.md's example sets only left_delimiter): the
		// other keeps its default, as text/template's Delims does.
		if left, right := cmp.Or(t.LeftDelimiter, "{{"), cmp.Or(t.RightDelimiter, "}}"); left == right {
			add("%s: left_delimiter and right_delimiter must differ (both are %q)", w, left)
		}
		if err := ValidShell(t.Shell); err != nil {
			add("%s: %v", w, err)
		}
		if !unixModes && (t.Perms != "" || t.Owner != "" || t.Group != "") {
			add("%s: owner, group and perms are not supported on Windows: an installed file takes its ACL from its directory", w)
		}
		if strings.ContainsRune(t.Command, 0) || strings.ContainsRune(t.Check, 0) || strings.ContainsRune(t.Health, 0) {
			add("%s: check, command and health must not contain NUL bytes", w)
		}
		if t.CommandTimeout > 0 && time.Duration(t.CommandTimeout) < 10*time.Millisecond {
			add("%s: command_timeout %s is too short (at least 10ms)", w, time.Duration(t.CommandTimeout))
		}
		for _, d := range []struct {
			key string
			d   Duration
		}{{"command_timeout", t.CommandTimeout}, {"health_timeout", t.HealthTimeout}, {"health_interval", t.HealthInterval}} {
			if time.Duration(d.d) > maxCommandWait {
				add("%s: %s %s is too long (at most 24h: a reload must end, and no view is rendered while it runs)", w, d.key, time.Duration(d.d))
			}
		}
		switch t.OnCommandFailure {
		case "", OnFailureRollback, OnFailureKeep:
		default:
			add("%s: on_command_failure %q must be %q (restore the previous files, the default) or %q (leave the new ones)", w, t.OnCommandFailure, OnFailureRollback, OnFailureKeep)
		}
		if t.Health == "" && (t.HealthTimeout > 0 || t.HealthRetries != nil || t.HealthInterval > 0) {
			add("%s: health_timeout, health_retries and health_interval need a health command", w)
		}
		if t.HealthTimeout > 0 && time.Duration(t.HealthTimeout) < 10*time.Millisecond {
			add("%s: health_timeout %s is too short (at least 10ms)", w, time.Duration(t.HealthTimeout))
		}
		if t.HealthRetries != nil && (*t.HealthRetries < 0 || *t.HealthRetries > maxHealthRetries) {
			add("%s: health_retries %d must be between 0 and %d", w, *t.HealthRetries, maxHealthRetries)
		}
		c.validateFunctions(t, add)
		t.denyFiles = []string{c.TokenFile, c.CacheDir}
		if len(confdPrefixes) > 1 && t.Functions == templates.ModeConfd {
			t.confdPrefixes = confdPrefixes
		}
		if c.Token != "" && c.Path != "" {
			t.denyFiles = append(t.denyFiles, c.Path) // the token is in it
		}
		// Read and parse the template too, so that a missing source or a syntax error is
		// reported with the rest instead of after they are mended.
		if before == len(errs) {
			if _, err := parseTemplate(t); err != nil {
				switch {
				case t.confdDir != "" && !t.AllowFile && strings.Contains(err.Error(), "allow_file: true"):
					c.Unparsed = append(c.Unparsed, fmt.Sprintf("%v (a confd resource has no allow_file: shoelace-agent convert-confd %s prints its entry with allow_file: true; put that in agent.yaml instead of confd_dir)", err, t.confdDir))
				case t.confdDir != "":
					c.Unparsed = append(c.Unparsed, err.Error())
				default:
					add("%v", err)
				}
			}
		}
	}
	// A template's .bak must not be another's destination: each pass would replace the backup
	// with the other's content, and the other's file with a backup.
	for i := range c.Templates {
		t := &c.Templates[i]
		if !t.Backup || t.Destination == "" {
			continue
		}
		bak := t.Destination + ".bak"
		prev, dup := seen[destKey(bak, !unixModes)]
		if !dup {
			prev, dup = seenReal[destKey(resolveLinks(bak), !unixModes)]
		}
		if dup {
			add("%s: backup keeps the previous content as %s, which is the destination of %s: render that file elsewhere or leave backup out", t.where(), bak, prev)
		}
	}
	// Templates that share a command are one group: installed together and undone together.
	byCommand := map[string]*Template{}
	for i := range c.Templates {
		t := &c.Templates[i]
		if t.Command == "" {
			continue
		}
		first, ok := byCommand[t.Command]
		if !ok {
			byCommand[t.Command] = t
			continue
		}
		if first.Shell != t.Shell {
			add("%s: shell %q differs from %q of %s, which shares its command %q: a command runs in one shell",
				t.where(), t.Shell, first.Shell, first.where(), t.Command)
		}
		if first.OnFailure() != t.OnFailure() {
			add("%s: on_command_failure %s differs from %s of %s, which shares its command %q: templates that share a command are undone together, so they must agree",
				t.where(), t.OnFailure(), first.OnFailure(), first.where(), t.Command)
		}
	}
	if len(errs) > 0 {
		return &ConfigError{Problems: errs}
	}
	return nil
}

// validateFunctions checks functions, error_on_missing_key and prefix, which belong to one mode
// each, and cleans prefix as confd does (a leading '/' added, '//' and a trailing '/' dropped).
func (c *Config) validateFunctions(t *Template, add func(string, ...any)) {
	w := t.where()
	switch t.Functions {
	case "", templates.ModeNative, templates.ModeConfd, templates.ModeConsulTemplate:
	default:
		add("%s: functions %q must be %s (the default), %s or %s", w, t.Functions, templates.ModeNative, templates.ModeConfd, templates.ModeConsulTemplate)
		return
	}
	if t.ErrorOnMissingKey && t.Functions != templates.ModeConsulTemplate {
		add("%s: error_on_missing_key is consul-template's option: it needs functions: %s (the %s mode always fails on a missing key)",
			w, templates.ModeConsulTemplate, cmp.Or(t.Functions, templates.ModeNative))
	}
	if len(t.FunctionDenylist) > 0 && t.Functions != templates.ModeConsulTemplate {
		add("%s: function_denylist is consul-template's option: it needs functions: %s", w, templates.ModeConsulTemplate)
	}
	for _, pat := range t.FunctionDenylist {
		// Taken literally but for '*', an entry such as "[" or "sprig_[ab]*" (a shell's or
		// path.Match's glob) denied nothing, silently.
		if pat == "" || strings.IndexFunc(pat, func(r rune) bool { return r != '*' && r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) }) >= 0 {
			add("%s: function_denylist entry %q can match no function: a function's name is letters, digits and _, and * (any run of them) is the only wildcard, not path.Match's ?, [...] or \\", w, pat)
		}
	}
	// An empty list outside confd mode selects nothing to change, as function_denylist: [] and
	// prefix: "" do (DESIGN.md's schema writes all three so); in confd mode it means no key.
	if len(t.Keys) > 0 && t.Functions != templates.ModeConfd {
		add("%s: keys is confd's option: it needs functions: %s", w, templates.ModeConfd)
	}
	if t.Prefix == "" {
		return
	}
	if t.Functions != templates.ModeConfd {
		add("%s: prefix is confd's option: it needs functions: %s", w, templates.ModeConfd)
		return
	}
	if p, err := cleanConfdPrefix(t.Prefix); err != nil {
		add("%s: prefix: %v", w, err)
	} else {
		t.Prefix = p
	}
}

// cleanConfdPrefix returns a confd prefix as confd uses it, with a leading '/' added
// ("production/web/" is "/production/web/"), or "/" for one of slashes alone: confd cuts it
// off each key it loads as a string, so that a trailing '/' or another empty segment changes
// the paths its templates read (templates.Options.Prefix). A "." or ".." segment or a control
// character is refused: no confd keyspace a migration imports has one.
func cleanConfdPrefix(p string) (string, error) {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return "", fmt.Errorf("%q must not have a %q segment", p, seg)
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%q must not hold control characters", p)
		}
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if path.Clean(p) == "/" {
		return "/", nil
	}
	return p, nil
}

// ConfigError lists every problem Validate found.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return fmt.Sprintf("%d problems:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if under(p, d, filepath.Separator, !unixModes) {
			return true
		}
	}
	return false
}

// under reports whether path p lies below directory d, by whole segments, both clean paths
// with separator sep; fold compares them as Windows compares file names, regardless of case.
// Pure, so that the Windows form is tested on every system.
func under(p, d string, sep byte, fold bool) bool {
	if fold {
		p, d = strings.ToLower(p), strings.ToLower(d)
	}
	if strings.HasSuffix(d, string(sep)) { // a root: / or C:\
		return len(p) > len(d) && strings.HasPrefix(p, d)
	}
	return strings.HasPrefix(p, d+string(sep))
}

// trimDir drops the trailing separators of a directory ("/etc/nginx/", `C:\app\`), but not
// the one of a root ("/", `C:\`), whose separator is its name.
func trimDir(d string, seps string, volume int) string {
	t := strings.TrimRight(d, seps)
	if len(t) <= volume {
		return d[:min(len(d), volume+1)]
	}
	return t
}

// ownFiles lists the agent's own files for ownFileProblem: its config (which names what it
// runs), its token file, and cache_dir (its view, status, instance token, enrollment key and
// owed commands).
func (c *Config) ownFiles() []agentFile {
	var own []agentFile
	names := func(p string, resolved ...string) []string {
		ns := []string{p, resolveLinks(p)}
		for _, r := range resolved {
			if r != "" {
				ns = append(ns, r)
			}
		}
		return ns
	}
	if c.Path != "" {
		if abs, err := filepath.Abs(c.Path); err == nil {
			own = append(own, agentFile{what: "the agent's config file", names: names(abs)})
		}
	}
	if c.TokenFile != "" && filepath.IsAbs(c.TokenFile) {
		own = append(own, agentFile{what: "the agent's token_file", names: names(c.TokenFile)})
	}
	if c.CacheDir != "" && filepath.IsAbs(c.CacheDir) {
		own = append(own, agentFile{what: "cache_dir", names: names(c.CacheDir, c.cacheReal), dir: true})
	}
	return own
}

// ownFileProblem says why a template must not render p (real: p with its symbolic links
// resolved, or "" when p is resolved already), or "": p is one of the agent's own files. A render
// there would replace the agent's token (every request after it refused), its config, or
// what it keeps in cache_dir, which the agent writes back at every pass.
func (c *Config) ownFileProblem(p, real string) string {
	for _, q := range []string{p, real} {
		switch what := c.ownFile(q); {
		case what == "":
		case q == p:
			return fmt.Sprintf("destination %s is %s: a template must not replace it; render another file", p, what)
		default:
			return fmt.Sprintf("destination %s leads through a symbolic link to %s, which is %s: a template must not replace it; render another file", p, q, what)
		}
	}
	return ""
}

// ownFile says which of the agent's own files q is ("the agent's token_file", …), or "".
func (c *Config) ownFile(q string) string {
	if q == "" {
		return ""
	}
	fold := !unixModes
	own := c.own
	if own == nil { // a Config that never went through Validate
		own = c.ownFiles()
	}
	for _, o := range own {
		for _, n := range o.names {
			switch {
			case !o.dir && destKey(q, fold) == destKey(n, fold):
				return o.what
			case o.dir && (destKey(q, fold) == destKey(n, fold) || under(q, n, filepath.Separator, fold)):
				return fmt.Sprintf("in cache_dir %s, where the agent keeps its own files (its view, status and instance token)", o.names[0])
			}
		}
	}
	return ""
}

// checkInstall says whether the install may replace p, a path whose links are resolved (see
// checkReal): neither one of the agent's own files nor outside allowed_dirs. A link planted at
// a destination after the config was loaded must not lead a render over the token.
func (c *Config) checkInstall(p string) error {
	if why := c.ownFileProblem(p, ""); why != "" {
		return errors.New(why)
	}
	return c.checkReal(p)
}

// installProblem says why an install of dest would be refused as things are on disk now, or
// nil: a symbolic link on its way that the install does not follow, or one that leads to one
// of the agent's own files or outside allowed_dirs, or another user's directory on its way where
// others may write. render --dry asks it, so that it does not
// promise (nor read through a link) what once and run refuse.
func (c *Config) installProblem(dest string) error {
	if err := linkOnTheWay(dest); err != nil {
		return err
	}
	if why := c.ownFileProblem(dest, resolveLinks(dest)); why != "" {
		return errors.New(why)
	}
	return c.checkAllowed(dest)
}

// checkAllowed says whether dest lies under allowed_dirs (anywhere when there are none), by
// its name and once symbolic links are followed: those of its directories, and a link at dest
// itself, which the install replaces the target of (as with /etc/resolv.conf). The agent checks
// at load and again before each install, so that a link made later cannot lead it outside.
func (c *Config) checkAllowed(dest string) error {
	if len(c.AllowedDirs) == 0 {
		return nil
	}
	if !underAny(dest, c.AllowedDirs) {
		return fmt.Errorf("destination is outside allowed_dirs %v", c.AllowedDirs)
	}
	return c.checkResolved(dest)
}

// checkResolved says whether p, once every symbolic link on its way is followed, lies under
// allowed_dirs (as resolved when the config was validated: a directory of allowed_dirs that
// is swapped for a link later leads outside).
func (c *Config) checkResolved(p string) error {
	if len(c.AllowedDirs) == 0 {
		return nil
	}
	if real := resolveLinks(p); !underAny(real, c.allowedDirsReal()) {
		return fmt.Errorf("destination resolves to %s through a symbolic link, outside allowed_dirs %v", real, c.AllowedDirs)
	}
	return nil
}

// checkReal says whether p, a path whose links are already resolved (as atomicfile resolves the
// one it replaces), lies under allowed_dirs as resolved when the config was validated. A link
// at p's name is not followed: it is what the install replaces.
func (c *Config) checkReal(p string) error {
	if len(c.AllowedDirs) == 0 {
		return nil
	}
	if !underAny(p, c.allowedDirsReal()) {
		return fmt.Errorf("%s is outside allowed_dirs %v", p, c.AllowedDirs)
	}
	return nil
}

// cacheDir is where the agent keeps its files: cache_dir as resolved when the config was
// validated (as written for a Config that never went through Validate).
func (c *Config) cacheDir() string { return cmp.Or(c.cacheReal, c.CacheDir) }

// allowedDirsReal is allowed_dirs as resolved when the config was validated (resolved now for
// a Config that never went through Validate).
func (c *Config) allowedDirsReal() []string {
	if c.allowedReal == nil {
		return resolveDirs(c.AllowedDirs)
	}
	return c.allowedReal
}

// isSource reports whether dest (real: with its symbolic links resolved) is the file src names:
// by name, through links, or as another name of the same file (a hard link).
func isSource(dest, real, src string) bool {
	fold := !unixModes
	if k := destKey(src, fold); k == destKey(dest, fold) || k == destKey(real, fold) || destKey(resolveLinks(src), fold) == destKey(real, fold) {
		return true
	}
	a, aerr := os.Stat(dest)
	b, berr := os.Stat(src)
	return aerr == nil && berr == nil && os.SameFile(a, b)
}

// resolveLinks follows p while it is a symbolic link (dangling or not), then resolves the
// directories of where it leads (see resolvePath).
func resolveLinks(p string) string {
	if real, err := atomicfile.RealDir(p); err == nil {
		return real
	}
	for range 40 { // as many links as the kernel follows
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			// From where the link really is, as the kernel resolves it: its directory may be
			// reached through links itself.
			target = filepath.Join(resolvePath(filepath.Dir(p)), target)
		}
		p = filepath.Clean(target)
	}
	return resolvePath(p)
}

// resolvePath resolves the symbolic links of the longest part of p that exists.
func resolvePath(p string) string {
	dir, rest := p, ""
	for {
		if real, err := atomicfile.RealDir(dir); err == nil {
			return filepath.Join(real, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return p
		}
		dir, rest = parent, filepath.Join(filepath.Base(dir), rest)
	}
}

// resolveDirs resolves the symbolic links of dirs (see resolvePath).
func resolveDirs(dirs []string) []string {
	out := make([]string, 0, len(dirs))
	for _, d := range dirs {
		out = append(out, resolvePath(d))
	}
	return out
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, errors.New("must be host:port, such as 127.0.0.1:9740")
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil || p < 0 || p > 65535 {
		return "", 0, errors.New("has an invalid port")
	}
	return s[:i], p, nil
}

// maxID is the largest user or group id: ids are 32 bits, and (uid_t)-1 is no id.
const maxID = 1<<32 - 2

// lookupID resolves a user or group name or numeric id; "" means keep (-1).
func lookupID(s string, group bool) (int, error) {
	if s == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return -1, fmt.Errorf("id %d is negative", n)
		}
		// The kernel's ids are 32 bits and 4294967295 means "leave it": a larger number would
		// be cut to its low 32 bits by chown (4294967296 is root).
		if int64(n) > maxID {
			return -1, fmt.Errorf("id %d is over %d, the largest user or group id", n, maxID)
		}
		return n, nil
	}
	id, err := nss.Lookup(s, group)
	switch {
	case errors.Is(err, nss.ErrNotFound) && group:
		return -1, fmt.Errorf("no group named %q on this host", s)
	case errors.Is(err, nss.ErrNotFound):
		return -1, fmt.Errorf("no user named %q on this host", s)
	}
	return id, err
}

// readTokenFile reads a token file, refusing one that group or others may read, or that
// another user than root or the agent's owns. Links on the way are followed only when root or
// the agent's user owns them, and the file is opened once (a link at its name not followed)
// and judged by what was opened, not by name: what is checked is what is read.
func readTokenFile(path string) (string, error) {
	real, err := atomicfile.EvalLinks(path)
	if err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	if !unixModes {
		if who, err := othersMay(real, readRights); err != nil || who != "" {
			if err != nil {
				return "", fmt.Errorf("token_file: %w", err)
			}
			return "", fmt.Errorf("token_file %s may be read by %s: only SYSTEM and Administrators may; keep it in a directory the agent made (its cache_dir) or remove that entry of its ACL (icacls)", path, who)
		}
	}
	var judged error // what the check below found wrong with the file opened
	b, _, err := atomicfile.ReadRegular(nil, real, maxTokenBytes+1, func(fi fs.FileInfo) error {
		switch uid, _, ok := atomicfile.Owner(fi); {
		case unixModes && fi.Mode().Perm()&0o077 != 0:
			judged = fmt.Errorf("token_file %s has mode %04o: group and others must not have access; run: chmod 600 %s", path, fi.Mode().Perm(), path)
		case ok && uid != 0 && uid != os.Geteuid():
			judged = fmt.Errorf("token_file %s is owned by uid %d, neither root nor the agent's user (uid %d): its owner can read the token, which reads the appliance's view (secrets too), and put another in its place; run chown root %s",
				path, uid, os.Geteuid(), path)
		case fi.Size() > maxTokenBytes:
			judged = fmt.Errorf("token_file %s is %d bytes, over %d (4 KiB), the limit of a token file: a token file holds one token", path, fi.Size(), maxTokenBytes)
		}
		return judged
	})
	switch nr := (*atomicfile.NotRegularError)(nil); {
	case judged != nil:
		return "", judged
	case errors.As(err, &nr):
		return "", fmt.Errorf("token_file %s is not a regular file", path)
	case err != nil:
		return "", fmt.Errorf("token_file: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("token_file %s is over %d bytes (4 KiB), the limit of a token file: a token file holds one token", path, maxTokenBytes)
	}
	// A byte order mark (Notepad writes one) is no part of the token; UTF-16 (PowerShell 5's
	// > writes it) is read as the text it is.
	if b, err = utf8Text(b); err != nil {
		return "", fmt.Errorf("token_file %s %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token_file %s is empty", path)
	}
	if strings.ContainsAny(tok, "\r\n\t ") {
		return "", fmt.Errorf("token_file %s must hold one token on one line", path)
	}
	if err := checkTokenChars(tok); err != nil {
		return "", fmt.Errorf("token_file %s %v", path, err)
	}
	return tok, nil
}

// checkTokenChars refuses a token with a byte that cannot be in one (a control character, or
// anything outside printable ASCII): sent as it is, the server answered "unknown or revoked
// token", or Go's client refused the header, which read as a network failure.
func checkTokenChars(tok string) error {
	if i := unprintable(tok); i >= 0 {
		return fmt.Errorf("holds byte 0x%02x at offset %d: a token is one word of printable ASCII, as `shoelace token create` prints it", tok[i], i)
	}
	return nil
}

// unprintable is the offset of the first byte of s that a header value of one word cannot hold
// (outside printable ASCII, a space included), -1 when there is none.
func unprintable(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return i
		}
	}
	return -1
}

// TokenWarning says, when the token is inline and the config file may be read by group or
// others, that the token is exposed; "" otherwise. (token_file must be 0600 or stricter; an
// inline token deserves the same.)
func (c *Config) TokenWarning() string {
	if c.Token == "" || c.Path == "" {
		return ""
	}
	if !unixModes {
		if who, err := othersMay(c.Path, readRights); err == nil && who != "" {
			return fmt.Sprintf("%s: the token is inline in a file that %s may read: restrict its ACL (icacls), or move the token to a token_file that only SYSTEM and Administrators may read", c.Path, who)
		}
		return ""
	}
	fi, err := os.Stat(c.Path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s: the token is inline in a file of mode %04o that group or others can read: run chmod 600 %s, or move the token to a token_file (mode 0600)",
		c.Path, fi.Mode().Perm(), c.Path)
}

// LoadToken returns the token to send: the inline token or the content of token_file.
func (c *Config) LoadToken() (string, error) {
	if c.TokenFile == "" {
		return c.Token, nil
	}
	return readTokenFile(c.TokenFile)
}

// InstanceName is instance, or the hostname when it is empty.
func (c *Config) InstanceName() string {
	if c.Instance != "" {
		return c.Instance
	}
	h, err := os.Hostname()
	if err != nil {
		h = ""
	}
	return instanceFromHostname(h)
}

// instanceFromHostname makes a hostname a valid instance name (a key segment): characters
// other than letters, digits, '.', '_' and '-' become '-'.
func instanceFromHostname(h string) string {
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	s := strings.TrimLeft(string(b), "._-")
	if len(s) > api.MaxSegmentBytes {
		s = s[:api.MaxSegmentBytes]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// ParseConfigFile reads and decodes a config file without validating it, for tools that only
// need a few of its fields (such as `status`).
func ParseConfigFile(path string) (*Config, error) {
	data, err := readConfigFile(path, false)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// readConfigFile reads the config file (judged by judgeCommandFile when judge is set); a missing
// one is explained with the ways to name another.
func readConfigFile(path string, judge bool) ([]byte, error) {
	data, err := readConfigText(path, judge)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read config: %w (give the agent's config with --config FILE or SHOELACE_AGENT_CONFIG=FILE; the default is %s)", err, DefaultConfigPath)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

// cacheDirOwner is the owner of the cache_dir that os.Stat found (fi, err), or -1 when it has
// none to check (missing: the agent makes it; or Windows, which checks ACLs).
func cacheDirOwner(fi os.FileInfo, err error) int {
	if err != nil || fi == nil {
		return -1
	}
	if uid, _, ok := atomicfile.Owner(fi); ok {
		return uid
	}
	return -1
}
