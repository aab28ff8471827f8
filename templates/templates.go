package templates

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// DefaultMaxOutputBytes bounds what one render may write when Options.MaxOutputBytes is 0,
// so that a runaway loop fails instead of filling memory and then the disk.
const DefaultMaxOutputBytes = 64 << 20

// Options configure one template.
type Options struct {
	// Name names the template in errors: usually the source path or the destination.
	Name string
	// LeftDelim and RightDelim default to "{{" and "}}".
	LeftDelim, RightDelim string
	// AllowFile enables the functions that read the local file system (file, fileExists).
	// Off by default: a template author must not be able to read the agent's files unasked.
	AllowFile bool
	// DenyFiles are files and directories that file and fileExists refuse even with AllowFile,
	// once symbolic links are followed: the agent's token file and cache, which a path taken
	// from a key must not lead to.
	DenyFiles []string
	// MaxOutputBytes bounds the rendered output; 0 means DefaultMaxOutputBytes, < 0 no limit.
	MaxOutputBytes int
	// Functions is the function set: ModeNative ("" too), ModeConfd or ModeConsulTemplate
	// (README.md, "Function modes"). Another value fails Parse.
	Functions string
	// ErrorOnMissingKey, in consul-template mode, makes a missing map key or field an error
	// (consul-template's error_on_missing_key; without it they print "<no value>" as there);
	// native and confd modes always treat one as an error.
	ErrorOnMissingKey bool
	// Prefix, in confd mode, is confd's prefix ("/production/web"), the confd keyspace the view
	// stands for. As in confd, a template's paths are relative to it: the view already holds
	// the etcd key "/production/web/db/host" as db/host (import --from-etcd --prefix strips it),
	// which the template reads as "/db/host"; "/production/web/db/host" reads the view's
	// production/web/db/host, as confd would read "/production/web/production/web/db/host".
	// A path the view lacks (a listing that finds nothing) is read below the prefix instead,
	// where a view imported with --prefix / holds it. A leading '/' does not matter. As confd
	// cuts the prefix off each key it loads as a string, a prefix ending in one '/'
	// ("/production/web/") leaves the prefix's own value at its whole path
	// ("/production/web", not "/"), and one with any other empty segment ("//app", "/app//")
	// cuts nothing: the template reads whole paths ("/app/x"), of the keys below the prefix.
	Prefix string
	// ConfdKeys, in confd mode, are a confd resource's keys ("/db", "/upstream"): as confd loads
	// only the keys at or below them, the template sees only those ("/db" sees db and db/…,
	// "/" everything). Nil sees the whole view; empty (a resource without keys) sees nothing.
	ConfdKeys []string
	// ConfdPrefixes, in confd mode, are the prefixes of the confd templates rendered from the
	// same view (this one's may be among them). When the view holds a key below any of them, it
	// is one imported with --prefix / (whole paths), and a Prefix below which it holds none
	// reads nothing there, as confd renders from nothing under its prefix; else such a view is
	// read as one imported with --prefix PREFIX, whose paths are relative.
	ConfdPrefixes []string
	// FunctionDenylist, in consul-template mode, is its function_denylist: each function whose
	// name one of these globs matches ('*' for any run of characters, "sprig_*") fails with
	// "function is disabled" when called, as in consul-template.
	FunctionDenylist []string

	// checkNoValue makes a native template fail an action that prints no value (see
	// Template.noValue): set only on the checked copy that Execute parses when it needs one.
	checkNoValue bool
}

// Function sets (Options.Functions; the agent's `functions:`).
const (
	ModeNative         = "native"
	ModeConfd          = "confd"
	ModeConsulTemplate = "consul-template"
)

// Data is what a template renders from.
type Data struct {
	Appliance string
	Instance  string
	Revision  int64
	// Keys is the appliance's view: relative path -> value.
	Keys map[string]string
	// Env looks up environment variables for env, getenv and expandenv; nil means os.Getenv.
	Env func(string) string
	// LookupEnv also says whether a variable is set (consul-template's envOrDefault gives a
	// variable set to "" as it is). nil: from Env (set means not empty), or os.LookupEnv when
	// Env is nil too.
	LookupEnv func(string) (string, bool)
	// Sorted, when set, must be NewSorted(Keys): the templates rendered from one view then sort
	// its keys once between them for their listings (ls, tree, getvs, …). nil: each execution
	// sorts them itself, on its first listing.
	Sorted *Sorted
}

// Sorted is a view's keys in order, sorted on first use. It is safe for concurrent use.
type Sorted struct {
	once sync.Once
	done atomic.Bool // s is built
	keys map[string]string
	s    []string
	// base and changed, when set, are the sorted names of an earlier view and the keys that
	// differ between it and keys (NewSortedFrom): s is merged from them, not sorted again.
	base, changed []string
}

// NewSorted returns keys' names in order, to be sorted on first use (see Data.Sorted).
func NewSorted(keys map[string]string) *Sorted { return &Sorted{keys: keys} }

// NewSortedFrom is NewSorted(keys) for a view that differs from prev's in changed (as Diff
// returns them). When prev's names are sorted already, keys' are merged from them in linear
// time instead of sorted again: a view that follows another by a few changes costs a copy.
func NewSortedFrom(prev *Sorted, keys map[string]string, changed []string) *Sorted {
	o := NewSorted(keys)
	if prev != nil && prev.done.Load() {
		o.base, o.changed = prev.s, changed
	}
	return o
}

// fits reports whether o is there and was made of keys (a cheap check: the same map).
func (o *Sorted) fits(keys map[string]string) bool {
	return o != nil && SameKeys(o.keys, keys)
}

// names returns the sorted names; callers must not modify them.
func (o *Sorted) names() []string {
	o.once.Do(func() {
		if o.base != nil {
			o.s = o.merge()
		} else {
			o.s = make([]string, 0, len(o.keys))
			for k := range o.keys {
				o.s = append(o.s, k)
			}
			slices.Sort(o.s)
		}
		o.base, o.changed = nil, nil
		o.done.Store(true)
	})
	return o.s
}

// merge builds the names of o.keys from the earlier view's sorted names and the keys that
// changed since: each changed key is kept, dropped or added as o.keys has it.
func (o *Sorted) merge() []string {
	out := make([]string, 0, len(o.keys))
	base, ch := o.base, o.changed
	for len(ch) > 0 {
		i, _ := slices.BinarySearch(base, ch[0])
		out = append(out, base[:i]...)
		base = base[i:]
		if len(base) > 0 && base[0] == ch[0] {
			base = base[1:] // the earlier view's copy: kept below if still there
		}
		if _, ok := o.keys[ch[0]]; ok {
			out = append(out, ch[0])
		}
		ch = ch[1:]
	}
	return append(out, base...)
}

// Template is a parsed template. It is safe for concurrent use by several goroutines.
type Template struct {
	name      string
	opts      Options
	mode      string   // ModeNative, ModeConfd or ModeConsulTemplate
	confdKeys []string // Options.ConfdKeys as confd store paths ("/db", "/"); nil: every key
	tmpl      *template.Template
	used      map[string][]parse.Node // function name -> the nodes that call it
	nondet    []string

	// confdPrefix is the view path of the prefix confd cuts off the keys it loads
	// ("production/web"; "" for none), and confdOwn the store path at which confd's store then
	// holds the prefix's own value: "/", or the prefix's whole path when it ends in '/'.
	confdPrefix, confdOwn string
	// confdOthers are the view paths of Options.ConfdPrefixes ("myapp"), those that are keys.
	confdOthers []string

	// own is tmpl itself as an execution, when none is using it: its view functions are bound
	// to a state that each execution resets, so that executions one at a time never clone the
	// template and its function maps. Concurrent ones take a clone from execs, or make one.
	own   atomic.Pointer[execution]
	execs sync.Pool

	// unparsed is the error of a template that could not be parsed (see Unparsed).
	unparsed error

	// text is a native template's text, and checked its copy with every action checked for
	// printing no value, parsed the first time an output holds "<no value>" (see noValue).
	text    string
	checked struct {
		once sync.Once
		t    *Template
		err  error
	}
}

// execution is a clone of a Template's text/template and the state its view functions read.
type execution struct {
	tmpl *template.Template
	st   *state
}

// Result is one render: the output and the inputs it read.
type Result struct {
	// Output is the rendered text.
	Output []byte
	// Keys are the exact keys read (sorted, deduplicated), including the ones found missing
	// and the ones only tested through exists, keyOr and the like.
	Keys []string
	// Prefixes are the prefixes listed by ls, keys, tree, lsdir, getvs, gets and friends
	// (sorted, deduplicated; "" is the root). For a glob such as "/app/*/port" the prefix is
	// the part before the first segment with a wildcard ("app").
	Prefixes []string
	// Secret is true when any key read or listed has a `secrets` segment (api.IsSecret):
	// the output may hold a secret and must not be logged or shown in a diff.
	Secret bool
	// Revision is true when the template read the view's revision; its output then changes
	// whenever the revision does, even when no key it reads changed.
	Revision bool
	// Files are the local files read or tested by file and fileExists (sorted, deduplicated).
	// They are read at render time; the agent's run watches them to render again.
	Files []string
}

// Parse parses a template. Parse errors name the template and the line. Functions that
// are disabled (file without Options.AllowFile) or not supported (confd's lookupIP,
// cget, …) are refused here, so that `validate` reports them.
func Parse(text string, opts Options) (*Template, error) {
	name := opts.Name
	if name == "" {
		name = "template"
	}
	mode := opts.Functions
	switch mode {
	case "":
		mode = ModeNative
	case ModeNative, ModeConfd, ModeConsulTemplate:
	default:
		return nil, fmt.Errorf("parse %s: functions %q: want %s, %s or %s", name, opts.Functions, ModeNative, ModeConfd, ModeConsulTemplate)
	}
	t := &Template{name: name, opts: opts, mode: mode}
	// confd loads the keys below path.Join(PREFIX, key) for each of its keys and stores each
	// at "/" + strings.TrimPrefix(etcdKey, PREFIX), PREFIX as written with a leading '/'.
	raw := opts.Prefix
	if !strings.HasPrefix(raw, "/") {
		raw = "/" + raw
	}
	clean, under := path.Clean(raw), "/"
	switch {
	case clean == "/": // "", "/", "//": whole paths, every key
	case raw == clean:
		t.confdPrefix, t.confdOwn = clean[1:], "/"
	case raw == clean+"/": // cuts "/production/web/": the prefix's own value keeps its path
		t.confdPrefix, t.confdOwn = clean[1:], clean
	default: // "//app", "/app//": cuts nothing from the keys it loads, all below the prefix
		under = clean
	}
	for _, p := range opts.ConfdPrefixes {
		if v := strings.Trim(path.Clean("/"+p), "/"); v != "" && api.ValidateKey(v) == nil {
			t.confdOthers = append(t.confdOthers, v)
		}
	}
	if opts.ConfdKeys != nil || under != "/" {
		keys := opts.ConfdKeys
		if keys == nil {
			keys = []string{"/"}
		}
		t.confdKeys = make([]string, 0, len(keys))
		for _, k := range keys {
			// As store paths: "/" + what confd loads for the key, the prefix cut off.
			t.confdKeys = append(t.confdKeys, path.Join(under, k))
		}
	}
	st := &state{t: t}
	// Parsed once for its trees alone, to learn which functions the text calls, then as a
	// text/template with only those: a text/template keeps two copies of its function map (one
	// to parse, one of reflect.Values to execute), ~40 KB for a mode's whole map, for as long
	// as it lives (an agent holds one per template), and making them cost ~230 KB of garbage.
	trees, err := skim(t, text)
	if err != nil {
		// text/template's own error, which names an undefined function met before the syntax
		// error that skim stopped at.
		if _, ferr := parseText(t, text, parseFuncMap(t, st, nil)); ferr != nil {
			err = ferr
		}
		return nil, err
	}
	t.used = usedFuncs(maps.Values(trees))
	tmpl, err := parseText(t, text, st.bounded(parseFuncMap(t, st, t.used)))
	if err != nil {
		return nil, err
	}
	switch mode {
	case ModeConfd:
		confdCheckPrinted(tmpl)
		tmpl.Funcs(template.FuncMap{confdPrintedName: st.boundFunc(confdPrintedName, confdPrinted)})
	case ModeNative:
		// missingkey=error fails {{ .x }}; index of a missing map key and a JSON null are no
		// value too, which text/template would print as "<no value>". Checking every action
		// as confd mode does cost a function call each (a first render of 200 templates over
		// 10,000 keys took 1.6 times as long): Execute checks a copy only when the output
		// holds the text.
		if opts.checkNoValue {
			confdCheckPrinted(tmpl)
			tmpl.Funcs(template.FuncMap{confdPrintedName: st.boundFunc(confdPrintedName, nativePrinted)})
		} else {
			t.text = text
		}
	}
	t.tmpl = tmpl
	t.own.Store(&execution{tmpl: tmpl, st: st})
	t.used = usedFuncs(templateTrees(tmpl)) // the same names, at the nodes of the template kept
	delete(t.used, confdPrintedName)        // Shoelace's own check of what an action prints
	refused := refusedIn(mode)
	for _, fn := range sortedNames(t.used) {
		nodes := t.used[fn]
		if why, ok := refused[fn]; ok {
			return nil, t.nodeError(nodes[0], fmt.Sprintf("function %q is not supported in Shoelace (%s functions): %s", fn, mode, why))
		}
		if fileFuncsIn(mode)[fn] && !opts.AllowFile {
			return nil, t.nodeError(nodes[0], fmt.Sprintf("function %q is disabled: it reads local files, which is off unless the template sets allow_file: true in the agent config", fn))
		}
		if nondeterministic[fn] || mode == ModeConsulTemplate && nondeterministic[strings.TrimPrefix(fn, "sprig_")] || mode != ModeConfd && fn == "timestamp" {
			t.nondet = append(t.nondet, fn)
		}
	}
	if mode == ModeConsulTemplate {
		if err := t.refuseConsulFields(); err != nil {
			return nil, err
		}
	}
	// Last: what is judged above reads the template's pipelines as written.
	boundExecution(tmpl)
	return t, nil
}

// skim parses text's trees without checking that the functions it calls exist: parseText does,
// with only those.
func skim(t *Template, text string) (map[string]*parse.Tree, error) {
	tr := parse.New(t.name)
	tr.Mode = parse.SkipFuncCheck
	trees := map[string]*parse.Tree{}
	if _, err := tr.Parse(text, t.opts.LeftDelim, t.opts.RightDelim, trees); err != nil {
		return nil, fmt.Errorf("parse %w", err)
	}
	return trees, nil
}

// parseText parses text as t's text/template with the functions funcs.
func parseText(t *Template, text string, funcs template.FuncMap) (*template.Template, error) {
	tmpl := template.New(t.name).Delims(t.opts.LeftDelim, t.opts.RightDelim).Funcs(funcs)
	// Native mode fails on a missing map key or field; consul-template mode prints "<no value>"
	// (its missingkey=zero) unless error_on_missing_key; confd mode tests one as confd does
	// (its missingkey=default) and fails only where it is printed (confdCheckPrinted).
	switch {
	case t.mode == ModeConfd:
	case t.mode != ModeConsulTemplate || t.opts.ErrorOnMissingKey:
		tmpl.Option("missingkey=error")
	default:
		tmpl.Option("missingkey=zero")
	}
	if _, err := tmpl.Parse(text); err != nil {
		return nil, fmt.Errorf("parse %w", err)
	}
	return tmpl, nil
}

// onlyUsed keeps of m the functions the template calls (t.used).
func (t *Template) onlyUsed(m template.FuncMap) template.FuncMap {
	for k := range m {
		if _, ok := t.used[k]; !ok {
			delete(m, k)
		}
	}
	return m
}

// refuseConsulFields refuses the fields of consul-template's key pairs that have no value here.
func (t *Template) refuseConsulFields() error {
	var bad parse.Node
	var field string
	for _, tt := range t.tmpl.Templates() {
		if tt.Tree == nil || bad != nil {
			continue
		}
		walk(tt.Tree.Root, func(n parse.Node) {
			var idents []string
			switch n := n.(type) {
			case *parse.FieldNode:
				idents = n.Ident
			case *parse.ChainNode:
				idents = n.Field
			case *parse.VariableNode:
				idents = n.Ident[1:]
			}
			for _, id := range idents {
				if ctRefusedFields[id] && bad == nil {
					bad, field = n, id
				}
			}
		})
	}
	if bad != nil {
		return t.nodeError(bad, fmt.Sprintf("field .%s of a Consul key pair is not supported in Shoelace: a view has no Consul indexes, flags or sessions", field))
	}
	if n := wholePairPrinted(t.tmpl); n != nil {
		return t.nodeError(n, "printing a whole Consul key pair is not supported in Shoelace: consul-template prints its Consul indexes with it (and a list of pairs as memory addresses), which a view does not have; print .Key, .Value or .Path")
	}
	return nil
}

// ctPairFuncs are consul-template's functions whose result holds key pairs.
var ctPairFuncs = map[string]bool{"ls": true, "safeLs": true, "tree": true, "safeTree": true, "byKey": true}

// wholePairPrinted returns an action that prints key pairs whole: the result of ls, tree and
// the like ({{ ls "web" }}), or the item of a range over one ({{ range ls "web" }}{{ . }}).
func wholePairPrinted(tmpl *template.Template) parse.Node {
	var bad parse.Node
	pairPipe := func(p *parse.PipeNode) bool {
		if p == nil || len(p.Cmds) == 0 {
			return false
		}
		last := p.Cmds[len(p.Cmds)-1]
		id, ok := last.Args[0].(*parse.IdentifierNode)
		return ok && ctPairFuncs[id.Ident]
	}
	// printsItem reports whether an action prints dot or the variable v as it is.
	printsItem := func(a *parse.ActionNode, v string) bool {
		if len(a.Pipe.Decl) > 0 || len(a.Pipe.Cmds) != 1 || len(a.Pipe.Cmds[0].Args) != 1 {
			return false
		}
		switch arg := a.Pipe.Cmds[0].Args[0].(type) {
		case *parse.DotNode:
			return true
		case *parse.VariableNode:
			return v != "" && len(arg.Ident) == 1 && arg.Ident[0] == v
		}
		return false
	}
	var inRange func(list *parse.ListNode, v string)
	inRange = func(list *parse.ListNode, v string) {
		if list == nil {
			return
		}
		for _, n := range list.Nodes {
			switch n := n.(type) {
			case *parse.ActionNode:
				if bad == nil && printsItem(n, v) {
					bad = n
				}
			case *parse.IfNode:
				inRange(n.List, v)
				inRange(n.ElseList, v)
			}
		}
	}
	for _, tt := range tmpl.Templates() {
		if tt.Tree == nil {
			continue
		}
		walk(tt.Tree.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.ActionNode:
				if bad == nil && len(n.Pipe.Decl) == 0 && pairPipe(n.Pipe) {
					bad = n
				}
			case *parse.RangeNode:
				if pairPipe(n.Pipe) {
					v := ""
					if d := n.Pipe.Decl; len(d) > 0 {
						v = d[len(d)-1].Ident[0]
					}
					inRange(n.List, v)
				}
			}
		})
	}
	return bad
}

// Unparsed returns a template that stands for one whose text could not be read or parsed
// (err, which says why): its every Execute fails with err. A caller that renders several
// templates renders the others, as confd renders its other resources when one's template is
// broken.
func Unparsed(opts Options, err error) *Template {
	name := opts.Name
	if name == "" {
		name = "template"
	}
	mode := opts.Functions
	if mode == "" {
		mode = ModeNative
	}
	return &Template{name: name, opts: opts, mode: mode, unparsed: err}
}

// Mode returns the template's function set: ModeNative, ModeConfd or ModeConsulTemplate.
func (t *Template) Mode() string { return t.mode }

// nodeError formats an error at a node as text/template does: "parse template: NAME:LINE:COL: msg".
func (t *Template) nodeError(n parse.Node, msg string) error {
	loc := t.name
	for _, tt := range t.tmpl.Templates() {
		if tt.Tree != nil && treeHas(tt.Tree.Root, n) {
			loc, _ = tt.Tree.ErrorContext(n)
			break
		}
	}
	return fmt.Errorf("parse template: %s: %s", loc, msg)
}

// Name returns the name the template reports in errors.
func (t *Template) Name() string { return t.name }

// Nondeterministic lists the functions used by the template whose output changes on every
// render (now, rand…, uuidv4, bcrypt, …), sorted; `validate` warns about them.
func (t *Template) Nondeterministic() []string { return slices.Clone(t.nondet) }

// Functions lists every function the template calls, sorted.
func (t *Template) Functions() []string { return sortedNames(t.used) }

// Execute renders the template from d. A key read through key (or getv/get without a
// default) that is absent fails the whole render: no output is returned, and the error
// names the key and the template (errors.As finds a *MissingKeyError).
func (t *Template) Execute(d Data) (*Result, error) {
	if t.unparsed != nil {
		return nil, t.unparsed
	}
	e := t.own.Swap(nil)
	if e == nil {
		e, _ = t.execs.Get().(*execution)
	}
	if e == nil {
		tmpl, err := t.tmpl.Clone()
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", t.name, err)
		}
		// The functions close over st, not over its fields: each execution resets *st.
		e = &execution{tmpl: tmpl, st: &state{t: t}}
		// Every function again, not only the execution's own: bounded ties each to its execution.
		tmpl.Funcs(e.st.bounded(parseFuncMap(t, e.st, t.used)))
	}
	st := e.st
	*st = *newState(t, d)
	st.tmpl = e.tmpl
	st.done = make(chan struct{})
	w := &limitedBuffer{max: t.maxOutput(), held: &st.held}
	err := e.tmpl.Execute(w, nil)
	close(st.done)
	var res *Result
	var files []string
	if err == nil {
		res = st.result(w.buf.Bytes())
	} else if len(st.files) > 0 {
		files = sortedSet(st.files)
	}
	*st = state{t: t} // let go of the view
	if e.tmpl == t.tmpl {
		t.own.Store(e)
	} else {
		t.execs.Put(e)
	}
	if err != nil {
		if files != nil {
			return nil, &FilesError{Err: fmt.Errorf("render %w", err), Files: files}
		}
		return nil, fmt.Errorf("render %w", err)
	}
	if err := t.noValue(d, res.Output); err != nil {
		return nil, err
	}
	return res, nil
}

// noValue fails a native render whose output holds "<no value>" because an action printed no
// value (a missing map key through index, a JSON null), naming the action: it renders d again
// through a copy of the template that checks what each action prints. An output that holds the
// text because a key's value does renders the same through the copy, and stands.
func (t *Template) noValue(d Data, out []byte) error {
	if t.text == "" || !bytes.Contains(out, []byte("<no value>")) {
		return nil
	}
	c := &t.checked
	c.once.Do(func() {
		opts := t.opts
		opts.checkNoValue = true
		c.t, c.err = Parse(t.text, opts)
	})
	if c.err != nil {
		return fmt.Errorf("render %s: %w", t.name, c.err)
	}
	_, err := c.t.Execute(d)
	return err
}

// maxOutput is the bound of the render's output (Options.MaxOutputBytes), <= 0 for none.
func (t *Template) maxOutput() int {
	if t.opts.MaxOutputBytes == 0 {
		return DefaultMaxOutputBytes
	}
	return t.opts.MaxOutputBytes
}

// FilesError is Execute's error for a render that failed after it read or tested local files
// (file, fileExists; a file not there yet): Files are those, as Result.Files, so that a caller
// that watches them renders again when one appears or changes.
type FilesError struct {
	Err   error
	Files []string
}

func (e *FilesError) Error() string { return e.Err.Error() }
func (e *FilesError) Unwrap() error { return e.Err }

// ErrOutputTooLarge is returned when a render writes more than Options.MaxOutputBytes.
var ErrOutputTooLarge = errors.New("output too large")

// limitedBuffer is an output buffer of at most max bytes. When held is set, the bound is on
// what every buffer that shares it holds together: those of nested executeTemplate calls are
// alive at once, and 100 levels of 64 MiB each must fail as one render of 64 MiB does.
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	held *int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	n := b.buf.Len()
	if b.held != nil {
		n = *b.held
	}
	if b.max > 0 && n+len(p) > b.max {
		return 0, fmt.Errorf("%w: over %d bytes (MaxOutputBytes)", ErrOutputTooLarge, b.max)
	}
	if b.held != nil {
		*b.held += len(p)
	}
	return b.buf.Write(p)
}

// MissingKeyError is the error of a render that read a key absent from the view without a default.
type MissingKeyError struct {
	Template string
	Key      string
	// Mode is the template's function set: the advice names functions it has.
	Mode string
	// Hint, when set, says why a key of the view was not found (confd mode: the path as
	// written is not the key's, or the resource's keys do not load it); it replaces the advice.
	Hint string
	// Path (confd mode) is the path as the template wrote it: the message starts with confd's
	// own "key does not exist: PATH", so that what watched confd's logs still finds it.
	Path string
}

func (e *MissingKeyError) Error() string {
	confd := ""
	if e.Path != "" {
		confd = "key does not exist: " + e.Path + ": "
	}
	if e.Hint != "" {
		return fmt.Sprintf("%skey %q not found (template %s): %s", confd, e.Key, e.Template, e.Hint)
	}
	advice := "use keyOr, getv with a default or exists"
	switch e.Mode {
	case ModeConfd:
		// The template's path, which a view imported with --prefix / reads below the
		// resource's prefix: the view's key would be read below it again.
		p := e.Path
		if p == "" {
			p = "/" + e.Key
		}
		advice = fmt.Sprintf("use getv with a default (getv %q \"DEFAULT\") or exists", p)
	case ModeConsulTemplate:
		advice = "use keyOrDefault or keyExists"
	}
	return fmt.Sprintf("%skey %q is not in the view (template %s); %s to make it optional", confd, e.Key, e.Template, advice)
}

// Changed reports whether the inputs r recorded differ between two views: a key it read was
// added, removed or changed, or any key strictly below a prefix it listed was. The agent
// re-renders only templates whose inputs changed. It does not look at the revision (see
// Result.Revision) or at local files.
func (r *Result) Changed(old, new map[string]string) bool {
	return r.ReadAny(Diff(old, new))
}

// NeedsRenderChanged is Changed for whole views, given changed = Diff(old.Keys, new.Keys): it
// also reports a change of revision when the template read it, and of appliance or instance.
// A caller that checks many templates rendered from the same old view compares the two views
// once (the agent does, for each view its long-poll brings), and each check then costs what
// the template read, not the size of the view.
func (r *Result) NeedsRenderChanged(old, new Data, changed []string) bool {
	if old.Appliance != new.Appliance || old.Instance != new.Instance {
		return true
	}
	if r.Revision && old.Revision != new.Revision {
		return true
	}
	return r.ReadAny(changed)
}

// ReadAny reports whether r read any of keys (sorted, as Diff returns them), or listed a prefix
// any of them is below.
func (r *Result) ReadAny(keys []string) bool {
	if len(keys) == 0 {
		return false
	}
	for _, k := range r.Keys {
		if _, ok := slices.BinarySearch(keys, k); ok {
			return true
		}
	}
	for _, p := range r.Prefixes {
		if len(namesBelow(keys, p)) > 0 {
			return true
		}
	}
	return false
}

// Diff returns the keys that differ between two views, sorted: added, removed or changed.
func Diff(old, new map[string]string) []string {
	if SameKeys(old, new) {
		return nil
	}
	var out []string
	removed := 0
	for k, ov := range old {
		if nv, ok := new[k]; !ok {
			out = append(out, k)
			removed++
		} else if nv != ov {
			out = append(out, k)
		}
	}
	if len(new) != len(old)-removed {
		// new holds keys old does not: find them.
		for k := range new {
			if _, ok := old[k]; !ok {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// SameKeys reports whether a and b are the same map (not equal ones: the same one). A view's
// keys are never modified once made, so the same map is the same view: a cheap check.
func SameKeys(a, b map[string]string) bool {
	return len(a) == len(b) && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// state is one execution: the view and what the template read from it.
type state struct {
	t           *Template
	d           Data
	env         func(string) string
	lookupEnv   func(string) (string, bool)
	tmpl        *template.Template // the execution's clone, for executeTemplate
	done        chan struct{}      // closed when the execution ends (loop's feeders stop)
	depth       int                // executeTemplate nesting
	held        int                // bytes in the output buffers of this execution (nested executeTemplate ones too)
	collected   int64              // bytes of strings handed to functions that return lists and maps (growth.go)
	scratch     *ctScratch
	sorted      []string  // the view's keys, sorted; built on the first listing
	rangedItems uint64    // the items the render's ranges went through (countRanged)
	start       time.Time // when the render began (checkWork)
	built       int64     // bytes of the strings its function calls returned (checkWork)
	nestedErr   error     // the deepest error of a nested template call (execNested)
	confdBaseOf *string   // where confd mode reads the store (see confdBase); set on first use
	keys        map[string]struct{}
	prefixes    map[string]struct{}
	files       map[string]struct{}
	secret      bool
	revision    bool
}

func newState(t *Template, d Data) *state {
	env, lookup := d.Env, d.LookupEnv
	if env == nil {
		env = os.Getenv
		if lookup == nil {
			lookup = os.LookupEnv
		}
	}
	if lookup == nil {
		lookup = func(name string) (string, bool) { v := env(name); return v, v != "" }
	}
	// In an appliance named "secrets" every key's whole path has a secrets segment: whatever
	// the template reads is a secret.
	return &state{t: t, d: d, env: env, lookupEnv: lookup, scratch: &ctScratch{}, keys: map[string]struct{}{}, prefixes: map[string]struct{}{}, files: map[string]struct{}{},
		secret: d.Appliance != "" && api.IsSecret(api.ApplianceRoot(d.Appliance)), start: time.Now()}
}

func (s *state) result(out []byte) *Result {
	return &Result{
		Output:   out,
		Keys:     sortedSet(s.keys),
		Prefixes: sortedSet(s.prefixes),
		Secret:   s.secret,
		Revision: s.revision,
		Files:    sortedSet(s.files),
	}
}

func sortedSet(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readKey records a read of key and returns its value.
func (s *state) readKey(key string) (string, bool) {
	s.keys[key] = struct{}{}
	if api.IsSecret(key) {
		s.secret = true
	}
	v, ok := s.d.Keys[key]
	return v, ok
}

// below records a listing of prefix and returns the keys strictly below it, sorted.
func (s *state) below(prefix string) []string {
	s.prefixes[prefix] = struct{}{}
	if api.IsSecret(prefix) {
		s.secret = true
	}
	if s.sorted == nil {
		o := s.d.Sorted
		if !o.fits(s.d.Keys) {
			o = NewSorted(s.d.Keys)
		}
		s.sorted = o.names()
	}
	return namesBelow(s.sorted, prefix)
}

// namesBelow returns the names of sorted strictly below prefix ("" is the whole view).
func namesBelow(sorted []string, prefix string) []string {
	if prefix == "" {
		return sorted
	}
	// Keys strictly below "p" are the contiguous run from "p/" up to (not including) "p0",
	// '0' being the byte after '/'.
	lo, _ := slices.BinarySearch(sorted, prefix+"/")
	hi, _ := slices.BinarySearch(sorted, prefix+"0")
	return sorted[lo:hi]
}

// seen marks a key whose value or name a listing returned.
func (s *state) seen(key string) {
	if !s.secret && api.IsSecret(key) {
		s.secret = true
	}
}

// normKey turns a template's key argument into a view key: one leading '/' (confd style) is
// dropped; the rest must be a valid key.
func normKey(p string) (string, error) {
	k := strings.TrimPrefix(p, "/")
	if err := api.ValidateKey(k); err != nil {
		return "", err
	}
	return k, nil
}

// normPrefix turns a prefix argument into a view prefix without leading or trailing '/'.
func normPrefix(p string) (string, error) {
	return api.ValidatePrefix(strings.TrimPrefix(p, "/"))
}

// relative returns key relative to prefix ("" = root).
func relative(key, prefix string) string {
	if prefix == "" {
		return key
	}
	return key[len(prefix)+1:]
}

// templateTrees are the parse trees of tmpl and the templates associated with it.
func templateTrees(tmpl *template.Template) iter.Seq[*parse.Tree] {
	return func(yield func(*parse.Tree) bool) {
		for _, tt := range tmpl.Templates() {
			if !yield(tt.Tree) {
				return
			}
		}
	}
}

// confdPrintedName is the function confd mode appends to the pipeline of every action that
// prints (confdCheckPrinted).
const confdPrintedName = "shoelaceConfdPrinted"

// confdCheckPrinted makes every action of tmpl's trees that prints a value (not one that only
// declares or assigns a variable) pass it through confdPrinted first: confd mode tests a
// missing map key or field as confd does ({{if $d.opt}} is false), and fails only where confd
// would write "<no value>" into the file.
func confdCheckPrinted(tmpl *template.Template) {
	walkTrees(templateTrees(tmpl), func(tr *parse.Tree, n parse.Node) {
		a, ok := n.(*parse.ActionNode)
		if !ok || a.Pipe == nil || len(a.Pipe.Decl) > 0 {
			return
		}
		text := a.String()
		a.Pipe.Cmds = append(a.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: a.Pos, Args: []parse.Node{
			parse.NewIdentifier(confdPrintedName).SetTree(tr).SetPos(a.Pos),
			&parse.StringNode{NodeType: parse.NodeString, Pos: a.Pos, Quoted: strconv.Quote(text), Text: text},
		}})
	})
}

// confdPrinted passes on v, the value the action printed, or fails when it is no value at all:
// a missing map key or field, or a JSON null, which confd prints as "<no value>".
func confdPrinted(action string, v reflect.Value) (reflect.Value, error) {
	if !v.IsValid() {
		return v, fmt.Errorf("%s prints no value (a missing map key or field, or a JSON null), which confd would write as \"<no value>\": test it first ({{if ...}}, {{with ...}})", action)
	}
	return v, nil
}

// nativePrinted is confdPrinted's check in native mode, with native's advice.
func nativePrinted(action string, v reflect.Value) (reflect.Value, error) {
	if !v.IsValid() {
		return v, fmt.Errorf("%s prints no value (a missing map key, or a JSON null), which would write \"<no value>\" into the file: test it first ({{if ...}}, {{with ...}}) or give a default (| default \"...\")", action)
	}
	return v, nil
}

// usedFuncs walks every tree and collects the identifiers it calls.
func usedFuncs(trees iter.Seq[*parse.Tree]) map[string][]parse.Node {
	used := map[string][]parse.Node{}
	walkTrees(trees, func(_ *parse.Tree, n parse.Node) {
		if id, ok := n.(*parse.IdentifierNode); ok {
			used[id.Ident] = append(used[id.Ident], id)
		}
	})
	return used
}

// walkTrees walks every node of trees (those with a body), telling fn the tree it is in.
func walkTrees(trees iter.Seq[*parse.Tree], fn func(tr *parse.Tree, n parse.Node)) {
	for tr := range trees {
		if tr == nil || tr.Root == nil {
			continue
		}
		walk(tr.Root, func(n parse.Node) { fn(tr, n) })
	}
}

func treeHas(root parse.Node, target parse.Node) bool {
	found := false
	walk(root, func(n parse.Node) {
		if n == target {
			found = true
		}
	})
	return found
}

func walk(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		fn(n)
		for _, c := range n.Nodes {
			walk(c, fn)
		}
		return
	case *parse.PipeNode:
		if n == nil {
			return
		}
		fn(n)
		for _, c := range n.Cmds {
			walk(c, fn)
		}
		return
	}
	fn(n)
	switch n := n.(type) {
	case *parse.ActionNode:
		walk(n.Pipe, fn)
	case *parse.CommandNode:
		for _, a := range n.Args {
			walk(a, fn)
		}
	case *parse.ChainNode:
		walk(n.Node, fn)
	case *parse.IfNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.TemplateNode:
		walk(n.Pipe, fn)
	}
}

func walkBranch(b *parse.BranchNode, fn func(parse.Node)) {
	walk(b.Pipe, fn)
	if b.List != nil {
		walk(b.List, fn)
	}
	if b.ElseList != nil {
		walk(b.ElseList, fn)
	}
}

func sortedNames(m map[string][]parse.Node) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// confdMeanings are the names whose meaning in native mode differs from confd's, each with
// both meanings and what a confd template must change (Template.Warnings).
var confdMeanings = map[string]string{
	"ls":             "native `ls P` is consul-template's (items with .Key, .Value, .Path of the direct children that hold a value); confd's `ls P` gives the names of all children: use `keys P`",
	"contains":       "native `contains NEEDLE HAYSTACK` is consul-template's (`$s | contains \"x\"`); confd's is `contains S SUBSTR` (strings.Contains): swap the arguments",
	"trimSuffix":     "native `trimSuffix SUFFIX S` is consul-template's and sprig's; confd's is `trimSuffix S SUFFIX`: swap the arguments",
	"split":          "native `split SEP S` is consul-template's (a list, surrounding space trimmed); confd's is `split S SEP` (strings.Split): swap the arguments",
	"seq":            "native `seq` is sprig's (a string \"1 2 3\"); confd's `seq FIRST LAST` gives a list of integers: use `untilStep FIRST (add LAST 1) 1`",
	"atoi":           "native `atoi` is sprig's (0 for a value that is not a number); confd's fails the render",
	"reverse":        "native `reverse` is sprig's (a reversed copy of any list); confd's reverses in place and leaves the result of gets unchanged",
	"sortByLength":   "native `sortByLength` returns a stable sorted copy; confd's sorts in place, not stably (keys of equal length may come in another order)",
	"sortKVByLength": "native `sortKVByLength` returns a stable sorted copy; confd's sorts in place, not stably (keys of equal length may come in another order)",
	"get":            "native `get K` gives an item with .Key, .Value and .Path (printed whole, it shows the path too); confd's prints as {KEY VALUE}",
	"gets":           "native `gets PATTERN` gives items with .Key, .Value and .Path (printed whole, they show the path too) and also matches a pattern without a leading `/`; confd's print as {KEY VALUE} and match only `/`-rooted patterns",
	"lsdir":          "native `lsdir \"/\"` lists the root's directories and reads a path without a leading `/` from the root; confd's `lsdir \"/\"` is always empty and finds nothing without the leading `/`",
}

// Warnings lists, for a native-mode template, the functions it calls whose meaning differs
// from confd's function of the same name, each naming both meanings: a template written for
// confd renders other bytes with them unless it sets `functions: confd`. `validate` shows
// them. Other modes have none: their functions are their peer's. In every mode, it lists the
// relative paths the template gives a function that reads a local file.
func (t *Template) Warnings() []string {
	out := append(t.relativeFiles(), t.denyNothing()...)
	if t.mode != ModeNative {
		return out
	}
	for _, fn := range sortedNames(t.used) {
		if fn == "ls" && t.rangesReadingItems(fn) {
			continue
		}
		if m, ok := confdMeanings[fn]; ok {
			out = append(out, fmt.Sprintf("%s: %s; or set functions: confd on this template", fn, m))
		}
	}
	return out
}

// denyNothing warns of each function_denylist entry that matches no function of consul-template
// mode: a typo ("fiel") denied nothing, silently, as in consul-template. A built-in of Go's
// templates (printf, len) is not one: consul-template cannot deny those either.
func (t *Template) denyNothing() []string {
	if t.mode != ModeConsulTemplate {
		return nil
	}
	names := parseFuncMap(t, &state{t: t}, nil)
	var out []string
	for _, pat := range t.opts.FunctionDenylist {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(names)), func(name string) bool {
			return name != rangedName && name != templateName && globMatch(pat, name)
		}) {
			out = append(out, fmt.Sprintf("function_denylist entry %q matches no function of consul-template mode, and denies nothing (a built-in of Go's templates, such as printf, cannot be denied)", pat))
		}
	}
	return out
}

// relativeFiles warns of each relative path that the template gives as it is (a string
// literal, as an argument or piped) to a function of its mode that reads a local file: it is
// read from the agent's working directory, which is / under systemd, not from the template's.
func (t *Template) relativeFiles() []string {
	if t.tmpl == nil {
		return nil // unparsed (Unparsed)
	}
	fileFns := fileFuncsIn(t.mode)
	var out []string
	seen := map[string]bool{}
	walkTrees(templateTrees(t.tmpl), func(_ *parse.Tree, n parse.Node) {
		p, ok := n.(*parse.PipeNode)
		if !ok {
			return
		}
		for i, c := range p.Cmds {
			id, ok := c.Args[0].(*parse.IdentifierNode)
			if !ok || !fileFns[id.Ident] {
				continue
			}
			var lit *parse.StringNode
			if len(c.Args) > 1 {
				lit, _ = c.Args[1].(*parse.StringNode)
			} else if i > 0 && len(p.Cmds[i-1].Args) == 1 {
				lit, _ = p.Cmds[i-1].Args[0].(*parse.StringNode)
			}
			if lit == nil || lit.Text == "" || filepath.IsAbs(lit.Text) || seen[id.Ident+" "+lit.Text] {
				continue
			}
			seen[id.Ident+" "+lit.Text] = true
			out = append(out, fmt.Sprintf("%s %q: a relative path is read from the agent's working directory (/ under systemd), not from the template's or the config's: give it absolute", id.Ident, lit.Text))
		}
	})
	return out
}

// rangesReadingItems reports whether every call of fn is a range over its result whose body
// reads .Key, .Value or .Path of the items (`{{range ls "app"}}{{.Value}}{{end}}`, or through
// the range's variable): confd's `ls` gives names, which have none of them, so such a template
// was written for the native meaning and needs no warning about confd's.
func (t *Template) rangesReadingItems(fn string) bool {
	items := map[parse.Node]bool{} // fn's identifiers that such a range calls
	walkTrees(templateTrees(t.tmpl), func(_ *parse.Tree, n parse.Node) {
		r, ok := n.(*parse.RangeNode)
		if !ok || r.Pipe == nil || len(r.Pipe.Cmds) == 0 || len(r.Pipe.Cmds[0].Args) == 0 || r.List == nil {
			return
		}
		id, ok := r.Pipe.Cmds[0].Args[0].(*parse.IdentifierNode)
		if !ok || id.Ident != fn {
			return
		}
		walk(r.List, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.FieldNode:
				items[id] = items[id] || itemField(n.Ident[0])
			case *parse.VariableNode:
				items[id] = items[id] || len(n.Ident) > 1 && itemField(n.Ident[1])
			}
		})
	})
	for _, n := range t.used[fn] {
		if !items[n] {
			return false
		}
	}
	return true
}

func itemField(name string) bool { return name == "Key" || name == "Value" || name == "Path" }
