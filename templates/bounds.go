package templates

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// The functions that build a list, a loop or a string from a number (seq, loop, until,
// untilStep, repeat, indent, rand…) are bounded: the number often comes from a key
// (`seq 1 (atoi (getv "/workers"))`), and a value written as 1e12 must fail the render with an
// error, not exhaust the VM's memory (a fatal error, not a panic the render recovers from) or
// spin for years in a loop that writes nothing. Within the bounds they give their peers' results.

// MaxItems bounds the items of a list or loop a function builds from numbers.
const MaxItems = 1 << 20

// maxBuilt bounds a string a function builds from a count: the most a render may write.
const maxBuilt = DefaultMaxOutputBytes

// itemCount is how many items start, start+step, … before stop (exclusive) hold, without
// overflow; 0 when step goes away from stop or is 0.
func itemCount(start, stop, step int64) uint64 {
	switch {
	case step > 0 && stop > start:
		d := uint64(stop) - uint64(start)
		n := d / uint64(step)
		if d%uint64(step) != 0 {
			n++
		}
		return n
	case step < 0 && stop < start:
		d := uint64(start) - uint64(stop)
		s := uint64(-(step + 1)) + 1 // |step| without overflow at MinInt64
		n := d / s
		if d%s != 0 {
			n++
		}
		return n
	}
	return 0
}

// MaxRanged bounds the items that a render's ranges go through, all of them together, nested
// ones at each of their evaluations: within MaxItems each, `{{range loop $n}}{{range loop
// $n}}{{end}}{{end}}` with a key of 1048576 went through 2^40 items, writing nothing, and a
// render that does not end holds the agent's loop (and its SIGTERM) for good. 4,194,304 empty
// items take text/template under a second (1.4 s through loop's channel); a template over a
// 10,000-key view ranges over a few tens of thousands.
const MaxRanged = 1 << 22

// maxRanged is MaxRanged, lowered by tests.
var maxRanged uint64 = MaxRanged

// rangedName is the function Parse appends to the pipeline of every range, and templateName
// the one it calls for each {{template}} (boundExecution).
// Each is its keyword's own name: no template can call a function of that name (the parser
// reads the keyword), so they shadow none and no user can call them, and an error at one reads
// as the template wrote it (`executing "r" at <template "r">: error calling template: …`, `at
// <range>: can't use 3 to iterate …`).
const (
	rangedName   = "range"
	templateName = "template"
)

// boundExecution bounds what executing tmpl's trees may cost: the value of every range passes
// through ranged first, and every {{template "name" pipeline}} becomes an action that calls
// executeTemplate, whose nesting is bounded (maxTemplateDepth), with the same output.
// text/template's own bound on {{template}} nesting is 100,000 deep, where a range at each
// level (`{{define "r"}}{{range seq 1 10}}{{template "r"}}{{end}}{{end}}`) ran for minutes.
func boundExecution(tmpl *template.Template) {
	walkTrees(templateTrees(tmpl), func(tr *parse.Tree, n parse.Node) {
		switch n := n.(type) {
		case *parse.RangeNode:
			if n.Pipe != nil {
				n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: n.Pos, Args: []parse.Node{
					parse.NewIdentifier(rangedName).SetTree(tr).SetPos(n.Pos),
				}})
			}
		case *parse.ListNode:
			for i, c := range n.Nodes {
				tn, ok := c.(*parse.TemplateNode)
				if !ok {
					continue
				}
				args := []parse.Node{
					parse.NewIdentifier(templateName).SetTree(tr).SetPos(tn.Pos),
					&parse.StringNode{NodeType: parse.NodeString, Pos: tn.Pos, Quoted: strconv.Quote(tn.Name), Text: tn.Name},
				}
				if tn.Pipe != nil {
					args = append(args, tn.Pipe)
				}
				n.Nodes[i] = &parse.ActionNode{NodeType: parse.NodeAction, Pos: tn.Pos, Line: tn.Line, Pipe: &parse.PipeNode{
					NodeType: parse.NodePipe, Pos: tn.Pos, Line: tn.Line,
					Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Pos: tn.Pos, Args: args}},
				}}
			}
		}
	})
}

// ranged counts the items a range is about to go through (a number's, a list's or a map's; a
// channel's are counted where it is made: loop) against MaxRanged, and passes v on.
func (s *state) ranged(v reflect.Value) (reflect.Value, error) {
	u := v
	for u.IsValid() && (u.Kind() == reflect.Interface || u.Kind() == reflect.Pointer) && !u.IsNil() {
		u = u.Elem()
	}
	var n uint64
	switch u.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n = uint64(max(u.Int(), 0))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n = u.Uint()
	case reflect.Slice, reflect.Array, reflect.Map:
		n = uint64(u.Len())
	}
	return v, s.countRanged(n)
}

// MaxRenderTime bounds how long one render may run: within every other bound, work per item
// (a printf of 100 KB at each of a million items, a template that calls itself twice at each
// level) could still hold the agent's loop for hours. A render over it fails at its next
// function call or range. A large template over a 10,000-key view renders in milliseconds.
const MaxRenderTime = 30 * time.Second

// maxRenderTime is MaxRenderTime, lowered by tests.
var maxRenderTime = MaxRenderTime

// maxBuiltInAll bounds the bytes of the strings that a render's function calls return, all
// of them together (each is bounded by maxBuilt): made and dropped at each item of a range
// (`{{$x := printf "%0100000d" 0}}`), they cost work, not output.
var maxBuiltInAll int64 = 16 * maxBuilt // lowered by tests

// checkWork fails a render that ran for MaxRenderTime, or whose function calls built more than
// maxBuiltInAll bytes of strings (n more now).
func (s *state) checkWork(n int) error {
	s.built += int64(n)
	switch {
	case s.built > maxBuiltInAll:
		return fmt.Errorf("the render's function calls built over %d bytes of strings in all: is a key's value a count?", maxBuiltInAll)
	case !s.start.IsZero() && time.Since(s.start) > maxRenderTime:
		return fmt.Errorf("the render ran for over %s: is a key's value a count?", maxRenderTime)
	}
	return nil
}

// countRanged adds n items to the render's ranges, and fails once they pass MaxRanged.
func (s *state) countRanged(n uint64) error {
	if err := s.checkWork(0); err != nil {
		return err
	}
	if n > maxRanged || s.rangedItems+n > maxRanged {
		return fmt.Errorf("the render's ranges go through more than %d items in all (nested ones at each pass): is a key's value a count?", maxRanged)
	}
	s.rangedItems += n
	return nil
}

// checkItems refuses a list of n items over MaxItems.
func checkItems(fn string, n uint64) error {
	if n > MaxItems {
		return fmt.Errorf("%s: %d items, over the limit of %d (is a key's value the count?)", fn, n, MaxItems)
	}
	return nil
}

// boundedStep lists start, start+step, … before stop, as sprig's untilStep does, within MaxItems.
func boundedStep(fn string, start, stop, step int) ([]int, error) {
	n := itemCount(int64(start), int64(stop), int64(step))
	if err := checkItems(fn, n); err != nil {
		return nil, err
	}
	v := make([]int, 0, n)
	for k := uint64(0); k < n; k++ {
		v = append(v, start+int(k)*step)
	}
	return v, nil
}

// checkBuilt refuses a string of n bytes (n < 0: it overflowed) over maxBuilt.
func checkBuilt(fn string, n int64) error {
	if n < 0 || n > maxBuilt {
		return fmt.Errorf("%s: the result would be over %d bytes, the limit of a render's output (is a key's value the count?)", fn, maxBuilt)
	}
	return nil
}

// indentedSize is the size of s with pad bytes before each of its lines (n newlines: n+1
// lines), or -1 on overflow.
func indentedSize(fn string, spaces int, s string) error {
	if spaces <= 0 {
		return nil
	}
	lines := int64(strings.Count(s, "\n")) + 1
	if int64(spaces) > maxBuilt/lines {
		return checkBuilt(fn, -1)
	}
	return checkBuilt(fn, int64(spaces)*lines+int64(len(s)))
}

// boundedNames are the sprig functions boundedSprig replaces; TestTemplates_BoundedSprigSameResults
// shows that they give sprig's results within the bounds.
var boundedNames = []string{"until", "untilStep", "seq", "repeat", "indent", "nindent", "randAlphaNum", "randAlpha", "randAscii", "randNumeric", "randBytes",
	"replace", "join", "regexReplaceAll", "regexReplaceAllLiteral", "mustRegexReplaceAll", "mustRegexReplaceAllLiteral", "wrapWith",
	"uniq", "mustUniq"}

// boundedSprig returns sprig's functions m (named prefix+name) with those that build from a
// count replaced by bounded ones with the same results.
func boundedSprig(m template.FuncMap, prefix string) template.FuncMap {
	out := template.FuncMap{}
	for k, v := range m {
		out[k] = v
	}
	set := func(name string, f any) {
		if _, ok := out[prefix+name]; ok {
			out[prefix+name] = f
		}
	}
	set("until", func(count int) ([]int, error) {
		step := 1
		if count < 0 {
			step = -1
		}
		return boundedStep("until", 0, count, step)
	})
	set("untilStep", func(start, stop, step int) ([]int, error) {
		return boundedStep("untilStep", start, stop, step)
	})
	set("seq", sprigSeq)
	set("repeat", func(count int, str string) (string, error) {
		if count < 0 {
			return "", fmt.Errorf("repeat: negative count %d", count)
		}
		if len(str) > 0 && int64(count) > maxBuilt/int64(len(str)) {
			return "", checkBuilt("repeat", -1)
		}
		return strings.Repeat(str, count), nil
	})
	sprigIndent := m[prefix+"indent"]
	set("indent", func(spaces int, v string) (string, error) {
		if err := indentedSize("indent", spaces, v); err != nil {
			return "", err
		}
		return sprigIndent.(func(int, string) string)(spaces, v), nil
	})
	sprigNindent := m[prefix+"nindent"]
	set("nindent", func(spaces int, v string) (string, error) {
		if err := indentedSize("nindent", spaces, v); err != nil {
			return "", err
		}
		return sprigNindent.(func(int, string) string)(spaces, v), nil
	})
	for _, name := range []string{"randAlphaNum", "randAlpha", "randAscii", "randNumeric"} {
		f, ok := m[prefix+name].(func(int) string)
		if !ok {
			continue
		}
		set(name, func(count int) (string, error) {
			if err := checkBuilt(name, int64(count)); err != nil {
				return "", err
			}
			return f(count), nil
		})
	}
	set("replace", func(old, new, src string) (string, error) {
		return boundedReplace("replace", src, old, new, -1)
	})
	if toStrings, ok := m[prefix+"toStrings"].(func(any) []string); ok {
		set("join", func(sep string, v any) (string, error) {
			return boundedJoin("join", toStrings(v), sep)
		})
	}
	for _, name := range []string{"regexReplaceAll", "regexReplaceAllLiteral", "mustRegexReplaceAll", "mustRegexReplaceAllLiteral"} {
		orig := m[prefix+name]
		literal := strings.HasSuffix(name, "Literal")
		set(name, func(regex, s, repl string) (string, error) {
			re, err := regexp.Compile(regex)
			if err != nil {
				// sprig's own answer: a panic (regexReplaceAll) or the error (must…).
				res := reflect.ValueOf(orig).Call([]reflect.Value{reflect.ValueOf(regex), reflect.ValueOf(s), reflect.ValueOf(repl)})
				if len(res) == 2 && !res[1].IsNil() {
					return "", res[1].Interface().(error)
				}
				return res[0].String(), nil
			}
			return boundedRegexReplace(name, re, s, repl, literal)
		})
	}
	if f, ok := m[prefix+"wrapWith"].(func(int, string, string) string); ok {
		set("wrapWith", func(l int, sep, str string) (string, error) {
			if err := checkWrap("wrapWith", l, sep, str); err != nil {
				return "", err
			}
			return f(l, sep, str), nil
		})
	}
	// sprig's uniq compares each item with every one it kept (reflect.DeepEqual): quadratic, so
	// that one call on a list within MaxItems (`uniq (until N)`, N from a key) ran for hours,
	// which no bound of a render stops (MaxRenderTime is checked between calls).
	if f, ok := m[prefix+"uniq"].(func(any) []any); ok {
		set("uniq", func(list any) []any {
			if l, ok := uniqItems(list); ok {
				return l
			}
			return f(list)
		})
	}
	if f, ok := m[prefix+"mustUniq"].(func(any) ([]any, error)); ok {
		set("mustUniq", func(list any) ([]any, error) {
			if l, ok := uniqItems(list); ok {
				return l, nil
			}
			return f(list)
		})
	}
	if f, ok := m[prefix+"randBytes"].(func(int) (string, error)); ok {
		set("randBytes", func(count int) (string, error) {
			if err := checkBuilt("randBytes", int64(count)); err != nil {
				return "", err
			}
			return f(count)
		})
	}
	return out
}

// sprigSeq is sprig's seq (a string "1 2 3", like the Unix command), bounded.
func sprigSeq(params ...int) (string, error) {
	var v []int
	var err error
	switch len(params) {
	case 0:
		return "", nil
	case 1:
		end, inc := params[0], 1
		if end < 1 {
			inc = -1
		}
		v, err = boundedStep("seq", 1, end+inc, inc)
	case 2:
		start, end, step := params[0], params[1], 1
		if end < start {
			step = -1
		}
		v, err = boundedStep("seq", start, end+step, step)
	case 3:
		start, step, end := params[0], params[1], params[2]
		inc := 1
		if end < start {
			inc = -1
			if step > 0 {
				return "", nil
			}
		}
		v, err = boundedStep("seq", start, end+inc, step)
	default:
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.Trim(strings.Join(strings.Fields(fmt.Sprint(v)), " "), "[]"), nil
}

// readBounded reads the regular file name (file's argument, which may come from a key) of at
// most max bytes (max <= 0: no bound): a device such as /dev/zero would fill memory, and a named
// pipe or /dev/tty would block the render, and with it every render after it, for ever. The
// file is judged by its handle (someone who may write a directory on the way may swap another
// file in at the name after a look), and check, when set, judges it too, before anything of it
// is read. A file the kernel calls regular that waits for its bytes (/proc/kmsg) fails after a
// bounded wait.
func readBounded(name string, max int, check func(os.FileInfo) error) (string, error) {
	limit := int64(-1)
	if max > 0 {
		limit = int64(max) + 1
	}
	b, fi, err := atomicfile.ReadRegularFollow(name, limit, check)
	var nr *atomicfile.NotRegularError
	switch {
	case errors.As(err, &nr):
		return "", fmt.Errorf("%v: file reads regular files only", err)
	case fi != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return "", fmt.Errorf("%s waited more than %s for its bytes: file reads files that hold them (not /proc/kmsg and the like)", name, atomicfile.WaitLimit)
	case err != nil:
		return "", err
	case max > 0 && len(b) > max:
		return "", fmt.Errorf("%s is over %d bytes, the limit of a render's output", name, max)
	}
	return string(b), nil
}

// errAgentFile is what denied and deniedOpened refuse with.
var errAgentFile = errors.New("the agent's own token and cache are not for templates")

// maxDenyWalk bounds the entries deniedOpened compares below each directory of DenyFiles (the
// agent's cache_dir holds a few files).
const maxDenyWalk = 10000

// deniedOpened refuses fi, the file that file opened for name, when it is one of
// Options.DenyFiles or a file below one of them, whatever the name: denied judged the name
// before the open, and a name someone swapped since (a symbolic link turned to the token
// between the look and the open) or a hard link of a file in cache_dir has a path and
// directories that match none of DenyFiles.
func (s *state) deniedOpened(fn, name string, fi os.FileInfo) error {
	refused := fmt.Errorf("%s %q: %w", fn, name, errAgentFile)
	for _, d := range s.t.opts.DenyFiles {
		if d == "" {
			continue
		}
		di, err := os.Stat(d)
		if err != nil {
			continue
		}
		if os.SameFile(fi, di) {
			return refused
		}
		if !di.IsDir() {
			continue
		}
		found, n := false, 0
		_ = filepath.WalkDir(realPath(d), func(_ string, e fs.DirEntry, err error) error {
			if n++; n > maxDenyWalk {
				return fs.SkipAll
			}
			if err != nil || !e.Type().IsRegular() {
				return nil
			}
			if i, err := e.Info(); err == nil && os.SameFile(fi, i) {
				found = true
				return fs.SkipAll
			}
			return nil
		})
		if found {
			return refused
		}
	}
	return nil
}

// denied refuses name when it is, or lies below, one of Options.DenyFiles: by its path, links
// followed, and by the file it names (os.SameFile, for name and each directory above it), since
// a file has other names than its path: a hard link; on Windows, another case, a short (8.3)
// name, the \\?\ form, a data stream (token::$DATA, cache::$INDEX_ALLOCATION\view.json),
// which each read the token or the view though the path matched none of DenyFiles.
func (s *state) denied(fn, name string) error {
	if len(s.t.opts.DenyFiles) == 0 {
		return nil
	}
	refused := fmt.Errorf("%s %q: %w", fn, name, errAgentFile)
	real := realPath(name)
	var infos []os.FileInfo
	for _, d := range s.t.opts.DenyFiles {
		if d == "" {
			continue
		}
		if fi, err := os.Stat(d); err == nil {
			infos = append(infos, fi)
		}
		d = realPath(d)
		if real == d || strings.HasPrefix(real, strings.TrimSuffix(d, string(filepath.Separator))+string(filepath.Separator)) {
			return refused
		}
	}
	if len(infos) == 0 {
		return nil
	}
	p := name
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	for {
		if fi, err := os.Stat(p); err == nil {
			for _, d := range infos {
				if os.SameFile(fi, d) {
					return refused
				}
			}
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// realPath is p absolute with its links followed, as far as they exist.
func realPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// The functions that multiply strings they are given are bounded as those that build from a
// count: replace (and replaceAll), regexReplaceAll (and its Literal form) and join. Their
// inputs are often keys' values, and `replace (key "a") "x" (key "b") -1` of two 1 MiB values
// asks for a terabyte, which Go's runtime refuses with a fatal error (the agent dies at every
// start on that view) rather than a panic the render recovers from. Their results are computed
// only once their size is known to be within maxBuilt; within it they are their peers' results.

// overLimit is the error of a function whose result would be over maxBuilt.
func overLimit(fn string) error {
	return fmt.Errorf("%s: the result would be over %d bytes, the limit of a render's output", fn, maxBuilt)
}

// checkReplace refuses strings.Replace(s, old, new, n) when its result would be over maxBuilt.
func checkReplace(fn, s, old, new string, n int) error {
	if len(new) <= len(old) {
		return nil // never longer than s
	}
	var count int
	if old == "" {
		count = utf8.RuneCountInString(s) + 1
	} else {
		count = strings.Count(s, old)
	}
	if n >= 0 && n < count {
		count = n
	}
	if count == 0 {
		return nil
	}
	if int64(len(new)-len(old)) > (maxBuilt-int64(len(s)))/int64(count) {
		return overLimit(fn)
	}
	return nil
}

// boundedReplace is strings.Replace(s, old, new, n), bounded.
func boundedReplace(fn, s, old, new string, n int) (string, error) {
	if err := checkReplace(fn, s, old, new, n); err != nil {
		return "", err
	}
	return strings.Replace(s, old, new, n), nil
}

// checkJoin refuses strings.Join(parts, sep) when its result would be over maxBuilt (a list
// may hold one long value many times: it is not as long as the bytes it stands for).
func checkJoin(fn string, parts []string, sep string) error {
	if len(parts) == 0 {
		return nil
	}
	n := int64(len(parts) - 1)
	if n > 0 && int64(len(sep)) > maxBuilt/n {
		return overLimit(fn)
	}
	total := n * int64(len(sep))
	for _, p := range parts {
		if total += int64(len(p)); total > maxBuilt {
			return overLimit(fn)
		}
	}
	return nil
}

// boundedJoin is strings.Join(parts, sep), bounded.
func boundedJoin(fn string, parts []string, sep string) (string, error) {
	if err := checkJoin(fn, parts, sep); err != nil {
		return "", err
	}
	return strings.Join(parts, sep), nil
}

// checkRegexReplace refuses re.ReplaceAllString(s, repl) (ReplaceAllLiteralString when
// literal) when its result would be over maxBuilt. Each match's expansion is computed only once
// its bound (repl, plus its longest submatch for each '$' of repl) fits what is left.
func checkRegexReplace(fn string, re *regexp.Regexp, s, repl string, literal bool) error {
	dollars := int64(strings.Count(repl, "$"))
	if literal {
		dollars = 0
	}
	// Most calls cannot come near the bound whatever matches: at most len(s)+1 matches, each
	// replaced by repl with a submatch (at most s) for each '$'. Those need no second run of the
	// regular expression, which would double the function's cost at every render.
	if n, per := int64(len(s)), int64(len(repl))+dollars*int64(len(s)); n <= maxBuilt && per <= (maxBuilt-n)/(n+1) {
		return nil
	}
	var total int64
	var buf []byte
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
		total += int64(m[0] - last)
		last = m[1]
		if literal {
			total += int64(len(repl))
		} else {
			longest := 0
			for i := 0; i+1 < len(m); i += 2 {
				if m[i] >= 0 && m[i+1]-m[i] > longest {
					longest = m[i+1] - m[i]
				}
			}
			if dollars > 0 && int64(longest) > (maxBuilt-total)/dollars {
				return overLimit(fn)
			}
			if bound := int64(len(repl)) + dollars*int64(longest); total+bound <= maxBuilt {
				buf = re.ExpandString(buf[:0], repl, s, m)
				total += int64(len(buf))
			} else {
				return overLimit(fn)
			}
		}
		if total > maxBuilt {
			return overLimit(fn)
		}
	}
	if total+int64(len(s)-last) > maxBuilt {
		return overLimit(fn)
	}
	return nil
}

// checkWrap refuses sprig's wrapWith l sep str when its result could be over maxBuilt: each
// sep it puts in takes the place of a space of str or follows l bytes of it (l < 1 is 1).
func checkWrap(fn string, l int, sep, str string) error {
	if sep == "" {
		sep = "\n"
	}
	l = max(l, 1)
	breaks := min(int64(len(str)), int64(strings.Count(str, " "))+int64(len(str)/l)+1)
	if int64(len(sep)) > (maxBuilt-int64(len(str)))/max(breaks, 1) {
		return overLimit(fn)
	}
	return nil
}

// boundedRegexReplace is re.ReplaceAllString(s, repl) (ReplaceAllLiteralString when
// literal), bounded.
func boundedRegexReplace(fn string, re *regexp.Regexp, s, repl string, literal bool) (string, error) {
	if err := checkRegexReplace(fn, re, s, repl, literal); err != nil {
		return "", err
	}
	if literal {
		return re.ReplaceAllLiteralString(s, repl), nil
	}
	return re.ReplaceAllString(s, repl), nil
}

// uniqItems gives sprig's uniq of a list or array (false for another value, which sprig's own
// answers): its items in order without those reflect.DeepEqual to one before, in time linear in
// the list for items of a basic kind (a number, string or bool, which DeepEqual compares with ==,
// as a map's key is: a NaN is kept each time), and nil; items of other kinds, which DeepEqual
// never finds equal to these, are compared with the others kept, as sprig does.
func uniqItems(list any) ([]any, bool) {
	v := reflect.ValueOf(list)
	if k := v.Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, false
	}
	dest := []any{}
	seen := map[any]struct{}{}
	var others []any
	sawNil := false
	for i := 0; i < v.Len(); i++ {
		item := v.Index(i).Interface()
		if item == nil {
			if !sawNil {
				sawNil = true
				dest = append(dest, item)
			}
			continue
		}
		switch reflect.TypeOf(item).Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
			reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
			if _, ok := seen[item]; !ok {
				seen[item] = struct{}{}
				dest = append(dest, item)
			}
		default:
			if !slices.ContainsFunc(others, func(o any) bool { return reflect.DeepEqual(o, item) }) {
				others = append(others, item)
				dest = append(dest, item)
			}
		}
	}
	return dest, true
}
