package templates

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/Masterminds/sprig/v3"
)

// A count that comes from a key (a lists' length, a loop's, a string's) fails the render past
// the bounds: before, seq, loop, until, repeat and indent built whatever the value said, and
// executeTemplate's output escaped MaxOutputBytes.
func TestTemplates_CountFromKeyBounded(t *testing.T) {
	n := strconv.Itoa(2 * MaxItems)
	big := strconv.Itoa(maxBuilt + 1)
	for _, c := range []struct {
		name, mode, text, n string
	}{
		{"confd seq", ModeConfd, `{{range seq 1 (atoi (getv "/n"))}}{{end}}`, n},
		{"native loop", ModeNative, `{{range loop (key "n" | parseInt)}}{{end}}`, n},
		{"native until", ModeNative, `{{range until (key "n" | atoi)}}{{end}}`, n},
		{"native untilStep", ModeNative, `{{range untilStep 0 (key "n" | atoi) 1}}{{end}}`, n},
		{"native seq", ModeNative, `{{seq (key "n" | atoi) | len}}`, n},
		{"native repeat", ModeNative, `{{repeat (key "n" | atoi) "x" | len}}`, big},
		{"native indent", ModeNative, `{{indent (key "n" | atoi) "a" | len}}`, big},
		{"native nindent", ModeNative, `{{nindent (key "n" | atoi) "a" | len}}`, big},
		{"consul-template loop", ModeConsulTemplate, `{{range loop (key "n" | parseInt)}}{{end}}`, n},
		{"consul-template indent", ModeConsulTemplate, `{{indent (key "n" | sprig_atoi) "a" | len}}`, big},
		{"consul-template sprig_until", ModeConsulTemplate, `{{range sprig_until (key "n" | sprig_atoi)}}{{end}}`, n},
		{"consul-template sprig_repeat", ModeConsulTemplate, `{{sprig_repeat (key "n" | sprig_atoi) "x" | len}}`, big},
		{"consul-template executeTemplate", ModeConsulTemplate,
			`{{define "d"}}{{if lt (len .) (key "n" | sprig_atoi)}}{{executeTemplate "d" (print . .)}}{{else}}{{.}}{{end}}{{end}}{{executeTemplate "d" "x" | len}}`, big},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := mustParse(t, c.text, Options{Functions: c.mode})
			res, err := tmpl.Execute(Data{Keys: map[string]string{"n": c.n}})
			if err == nil {
				t.Fatalf("rendered %d bytes (%.40q), want an error", len(res.Output), res.Output)
			}
			if !strings.Contains(err.Error(), "limit") && !strings.Contains(err.Error(), "MaxOutputBytes") {
				t.Fatalf("error %v does not name the limit", err)
			}
		})
	}
}

// A function that multiplies the strings it is given (a key's value replacing each match in
// another's, a list holding one value many times joined) fails the render past the bound of a
// render's output. Before, it built the whole result: two 1 MiB values asked for a terabyte, a
// fatal error of Go's runtime that no render recovers from (the agent died at every start).
func TestTemplates_StringProductBounded(t *testing.T) {
	keys := map[string]string{"a": strings.Repeat("x", 64<<10), "b": strings.Repeat("y", 2<<10)}
	list := `{{$l := list}}{{range until 1100}}{{$l = append $l (key "a")}}{{end}}`
	for _, c := range []struct {
		name, mode, text string
	}{
		{"native replace (sprig)", ModeNative, `{{replace "x" (key "b") (key "a") | len}}`},
		{"native replace (confd)", ModeNative, `{{replace (key "a") "x" (key "b") -1 | len}}`},
		{"native replaceAll", ModeNative, `{{replaceAll "x" (key "b") (key "a") | len}}`},
		{"native regexReplaceAll", ModeNative, `{{regexReplaceAll "x" (key "b") (key "a") | len}}`},
		{"native regexReplaceAll with a group", ModeNative, `{{regexReplaceAll "(x)" (print (key "b") "$1") (key "a") | len}}`},
		{"native regexReplaceAllLiteral", ModeNative, `{{regexReplaceAllLiteral "x" (key "a") (key "b") | len}}`},
		{"native mustRegexReplaceAll", ModeNative, `{{mustRegexReplaceAll "x" (key "a") (key "b") | len}}`},
		{"native join", ModeNative, list + `{{join "," $l | len}}`},
		{"native join (confd)", ModeNative, `{{join (splitList "x" (key "a")) (key "b") | len}}`},
		{"confd replace", ModeConfd, `{{replace (getv "/a") "x" (getv "/b") -1 | len}}`},
		{"confd join", ModeConfd, `{{join (split (getv "/a") "") (getv "/b") | len}}`},
		{"consul-template replaceAll", ModeConsulTemplate, `{{key "a" | replaceAll "x" (key "b") | len}}`},
		{"consul-template regexReplaceAll", ModeConsulTemplate, `{{key "a" | regexReplaceAll "x" (key "b") | len}}`},
		{"consul-template join", ModeConsulTemplate, `{{key "a" | split "" | join (key "b") | len}}`},
		{"consul-template sprig_replace", ModeConsulTemplate, `{{sprig_replace "x" (key "b") (key "a") | len}}`},
		{"consul-template sprig_regexReplaceAll", ModeConsulTemplate, `{{sprig_regexReplaceAll "x" (key "a") (key "b") | len}}`},
		{"native wrapWith", ModeNative, `{{wrapWith 1 (key "b") (key "a") | len}}`},
		{"consul-template sprig_wrapWith", ModeConsulTemplate, `{{sprig_wrapWith 1 (key "b") (key "a") | len}}`},
		{"consul-template sprig_join", ModeConsulTemplate, `{{$l := sprig_list}}{{range loop 1100}}{{$l = sprig_append $l (key "a")}}{{end}}{{sprig_join "" $l | len}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := mustParse(t, c.text, Options{Functions: c.mode})
			res, err := tmpl.Execute(Data{Keys: keys})
			if err == nil {
				t.Fatalf("rendered %.40q, want an error", res.Output)
			}
			if !strings.Contains(err.Error(), "the limit of a render's output") {
				t.Fatalf("error %v does not name the limit", err)
			}
		})
	}
}

// regexReplaceAll far within the bound (a value of a few KiB, as templates use it) costs what the
// replacement itself costs: the exact bound, which runs the regular expression a second time and
// allocates for every match, is computed only near the limit.
func TestTemplates_RegexReplaceBoundCostsNothingWithin(t *testing.T) {
	re := regexp.MustCompile(`([a-z]+)-([0-9]+)`)
	s := strings.Repeat("host-1.example.com,", 50)
	for _, literal := range []bool{false, true} {
		plain := testing.AllocsPerRun(50, func() {
			if literal {
				re.ReplaceAllLiteralString(s, "${2}_$1")
			} else {
				re.ReplaceAllString(s, "${2}_$1")
			}
		})
		bounded := testing.AllocsPerRun(50, func() {
			if _, err := boundedRegexReplace("regexReplaceAll", re, s, "${2}_$1", literal); err != nil {
				t.Fatal(err)
			}
		})
		// The exact bound allocates for each of the 50 matches; the margin allows for the
		// race detector, under which sync.Pool (the regexp's machines) drops what it holds.
		if bounded >= plain+25 {
			t.Errorf("literal %v: %v allocations per call, the replacement alone %v", literal, bounded, plain)
		}
	}
}

// Counts that would loop forever or ask for all memory fail at once; within the bounds the
// functions give their peers' results.
func TestTemplates_CountBoundsExtreme(t *testing.T) {
	for _, c := range []struct {
		mode, text, want string // want "" means an error
	}{
		{ModeConfd, `{{range seq 1 9223372036854775807}}{{end}}`, ""},
		{ModeConfd, `{{range seq -9223372036854775808 9223372036854775807}}{{end}}`, ""},
		{ModeConfd, `{{seq 3 5}}|{{seq 5 3}}|{{range seq 9223372036854775806 9223372036854775807}}{{.}} {{end}}`, "[3 4 5]|[]|9223372036854775806 9223372036854775807 "},
		{ModeConsulTemplate, `{{range loop 9223372036854775807}}{{end}}`, ""},
		{ModeConsulTemplate, `{{range loop -9223372036854775808 9223372036854775807}}{{end}}`, ""},
		{ModeConsulTemplate, `{{range loop 2 5}}{{.}}{{end}}`, "234"},
		// sprig's own untilStep never ends here: i += step overflows before reaching stop.
		{ModeConsulTemplate, `{{sprig_untilStep 9223372036854775800 9223372036854775807 100}}`, "[9223372036854775800]"},
		{ModeConsulTemplate, `{{sprig_untilStep 0 10 3}} {{sprig_untilStep 10 0 -3}} {{sprig_until -3}} {{sprig_untilStep 0 10 0}}`, "[0 3 6 9] [10 7 4 1] [0 -1 -2] []"},
		{ModeConsulTemplate, `{{sprig_seq 3}}|{{sprig_seq 0}}|{{sprig_seq 2 5}}|{{sprig_seq 5 2}}|{{sprig_seq 1 2 7}}|{{sprig_seq 7 -2 1}}|{{sprig_seq 7 2 1}}`, "1 2 3|1 0|2 3 4 5|5 4 3 2|1 3 5 7|7 5 3 1|"},
		{ModeConsulTemplate, `{{sprig_repeat 9223372036854775807 "xy"}}`, ""},
		{ModeConsulTemplate, `{{sprig_repeat 3 "xy"}}|{{sprig_indent 2 "a\nb"}}|{{sprig_nindent 1 "a"}}`, "xyxyxy|  a\n  b|\n a"},
		{ModeNative, `{{randAlpha 9223372036854775807}}`, ""},
		{ModeNative, `{{indent 9223372036854775807 "a\nb"}}`, ""},
	} {
		tmpl := mustParse(t, c.text, Options{Functions: c.mode})
		res, err := tmpl.Execute(Data{})
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s: rendered %.40q, want an error", c.text, res.Output)
		case c.want != "" && err != nil:
			t.Errorf("%s: %v", c.text, err)
		case c.want != "" && string(res.Output) != c.want:
			t.Errorf("%s: got %q, want %q", c.text, res.Output, c.want)
		}
	}
}

// Within the bounds, the bounded functions give sprig's own results (the peers call sprig's).
func TestTemplates_BoundedSprigSameResults(t *testing.T) {
	orig, bounded := sprig.TxtFuncMap(), boundedSprig(sprig.TxtFuncMap(), "")
	call := func(m template.FuncMap, name string, args ...any) (out string) {
		defer func() {
			if r := recover(); r != nil {
				out = "panic"
			}
		}()
		in := make([]reflect.Value, len(args))
		for i, a := range args {
			in[i] = reflect.ValueOf(a)
		}
		res := reflect.ValueOf(m[name]).Call(in)
		if len(res) == 2 && !res[1].IsNil() {
			return "error"
		}
		if strings.HasPrefix(name, "rand") {
			return fmt.Sprint(len(res[0].String()))
		}
		return fmt.Sprint(res[0].Interface())
	}
	check := func(name string, args ...any) {
		t.Helper()
		want, got := call(orig, name, args...), call(bounded, name, args...)
		if want == "panic" {
			want = "error" // a panic fails the render as an error does
		}
		if got == "panic" {
			got = "error"
		}
		if got != want {
			t.Errorf("%s%v: got %s, sprig gives %s", name, args, got, want)
		}
	}
	for a := -6; a <= 6; a++ {
		check("until", a)
		check("seq", a)
		check("repeat", a, "ab")
		check("repeat", a, "")
		check("indent", max(a, 0), "a\nb\n")
		check("nindent", max(a, 0), "")
		for _, name := range []string{"randAlphaNum", "randAlpha", "randAscii", "randNumeric", "randBytes"} {
			check(name, max(a, 0))
		}
		for b := -6; b <= 6; b++ {
			check("seq", a, b)
			for step := -3; step <= 3; step++ {
				check("untilStep", a, b, step)
				check("seq", a, step, b)
			}
		}
	}
	for _, in := range []string{"", "a", "aaa", "xay", "日本a語", "a-b-a"} {
		for _, o := range []string{"", "a", "-", "aa", "語"} {
			for _, n := range []string{"", "b", "bb", "$0", "${1}", "$x"} {
				check("replace", o, n, in)
				for _, re := range []string{"a", "(a)", "a*", "x?", "(", "[語]"} {
					for _, name := range []string{"regexReplaceAll", "regexReplaceAllLiteral", "mustRegexReplaceAll", "mustRegexReplaceAllLiteral"} {
						check(name, re, in, n)
					}
				}
			}
		}
		check("join", in, []string{"x", "", "y"})
		check("join", in, []any{1, "b", nil})
		for l := -1; l <= 4; l++ {
			check("wrapWith", l, "<br>", in+" "+in+"  xyzzy")
			check("wrapWith", l, "", in)
		}
		check("join", in, "one")
		check("join", in, nil)
	}
	nan := math.NaN()
	type named string
	for _, l := range []any{
		[]int{}, []int{1, 2, 1, 3, 2}, [2]string{"a", "a"}, []string{"b", "a", "b", ""},
		[]any{1, int64(1), "1", 1.0, 1, nil, nil, true, true, named("1"), "1", named("1")},
		[]any{nan, nan, 0.0, math.Copysign(0, -1), []int{1}, []int{1}, map[string]any{"a": 1}, map[string]any{"a": 1}, []any{nil}, []any{nil}},
		[]any{&struct{}{}, &struct{}{}, []string{"x"}, "x"},
		"abc", 3, map[string]int{"a": 1}, nil,
	} {
		check("uniq", l)
		check("mustUniq", l)
	}
	for _, name := range boundedNames {
		if reflect.ValueOf(orig[name]).Pointer() == reflect.ValueOf(bounded[name]).Pointer() {
			t.Errorf("%s is not replaced", name)
		}
	}
}

// A template that multiplies by calling (a loop that doubles a string or encodes it again, a
// list that collects a value a key's count of times, a list that holds one value many times
// formatted whole) fails the render past the bound of a render's output, in each mode.
// Before, each built what the keys asked: here 128 MiB; with a count from a key, gigabytes,
// and Go's runtime ended the agent with a fatal out-of-memory error. Within the bound the
// same templates render as before.
func TestTemplates_GrowthByCallsBounded(t *testing.T) {
	keys := map[string]string{"a": strings.Repeat("x", 1<<20), "k": "7", "n": "128", "small": "ab"}
	refs := `{{$l := list (key "a")}}{{range until (key "k" | atoi)}}{{$l = concat $l $l}}{{end}}`
	for _, c := range []struct {
		name, mode, text string
	}{
		{"native printf doubling", ModeNative, `{{$s := key "a"}}{{range until (key "k" | atoi)}}{{$s = printf "%s%s" $s $s}}{{end}}{{len $s}}`},
		{"native cat doubling", ModeNative, `{{$s := key "a"}}{{range until (key "k" | atoi)}}{{$s = cat $s $s}}{{end}}{{len $s}}`},
		{"native b64enc again and again", ModeNative, `{{$s := key "a"}}{{range until 15}}{{$s = b64enc $s}}{{end}}{{len $s}}`},
		{"native append collects", ModeNative, `{{$l := list}}{{range until (key "n" | atoi)}}{{$l = append $l (printf "%s-%d" (key "a") .)}}{{end}}{{len $l}}`},
		{"native set collects", ModeNative, `{{$d := dict}}{{range until (key "n" | atoi)}}{{$_ := set $d (toString .) (print (key "a") .)}}{{end}}{{len $d}}`},
		{"native toJson of one value many times", ModeNative, refs + `{{toJson $l | len}}`},
		{"native printf %v of one value many times", ModeNative, refs + `{{printf "%v" $l | len}}`},
		{"consul-template print doubling", ModeConsulTemplate, `{{$s := key "a"}}{{range loop (key "k" | parseInt)}}{{$s = print $s $s}}{{end}}{{len $s}}`},
		{"consul-template toJSON of one value many times", ModeConsulTemplate,
			`{{$l := sprig_list (key "a")}}{{range loop (key "k" | parseInt)}}{{$l = sprig_concat $l $l}}{{end}}{{toJSON $l | len}}`},
		{"confd printf doubling", ModeConfd, `{{$s := getv "/a"}}{{range seq 1 (atoi (getv "/k"))}}{{$s = printf "%s%s" $s $s}}{{end}}{{len $s}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := mustParse(t, c.text, Options{Functions: c.mode})
			res, err := tmpl.Execute(Data{Keys: keys})
			if err == nil {
				t.Fatalf("rendered %.40q, want an error", res.Output)
			}
			// Under the race detector on a busy machine encoding 64 MiB again and again may
			// take longer than a render's 30 s first: bounded all the same.
			if !strings.Contains(err.Error(), "limit") && !strings.Contains(err.Error(), "the render ran for over") {
				t.Fatalf("error %v does not name the limit", err)
			}
			small := map[string]string{"a": "x", "k": "3", "n": "3"}
			if res, err := tmpl.Execute(Data{Keys: small}); err != nil || len(res.Output) == 0 {
				t.Fatalf("with small values: %v", err)
			}
		})
	}
}

// uniq of a list within MaxItems (its length from a key) renders in linear time, in each mode.
// Before, sprig's uniq compared each item with every one kept: `uniq (until 1048576)` ran for
// hours in one call, which MaxRenderTime (checked between calls) did not stop, holding the
// agent's loop.
func TestTemplates_UniqLinear(t *testing.T) {
	n := strconv.Itoa(MaxItems)
	for _, c := range []struct{ name, mode, text string }{
		{"native uniq", ModeNative, `{{uniq (until (key "n" | atoi)) | len}}`},
		{"native mustUniq", ModeNative, `{{mustUniq (until (key "n" | atoi)) | len}}`},
		{"native strings", ModeNative, `{{uniq (splitList "," (repeat 100000 "a,") | concat (until 1000 | toStrings)) | len}}`},
		{"consul-template sprig_uniq", ModeConsulTemplate, `{{sprig_uniq (sprig_until (key "n" | sprig_atoi)) | len}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := mustParse(t, c.text, Options{Functions: c.mode})
			done := make(chan struct{})
			var out string
			var err error
			go func() {
				defer close(done)
				var res *Result
				res, err = tmpl.Execute(Data{Keys: map[string]string{"n": n}})
				if res != nil {
					out = string(res.Output)
				}
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("uniq of %s items still running after 20s", n)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := n
			if c.name == "native strings" {
				want = "1002"
			}
			if out != want {
				t.Fatalf("got %q, want %q", out, want)
			}
		})
	}
}

// containsAll, containsAny, containsNone and containsNotAll answer as ctIn item by item does
// (consul-template's containsSomeFunc), and in linear time for two lists of MaxItems.
func TestTemplates_ContainsSomeLinear(t *testing.T) {
	type named string
	naive := func(whenNoneHit, invert bool, vs []any, l any) (out string) {
		defer func() {
			if r := recover(); r != nil {
				out = "panic"
			}
		}()
		for _, v := range vs {
			if ok, _ := ctIn(l, v); ok != invert {
				return fmt.Sprint(!whenNoneHit)
			}
		}
		return fmt.Sprint(whenNoneHit)
	}
	fast := func(whenNoneHit, invert bool, vs []any, l any) (out string) {
		defer func() {
			if r := recover(); r != nil {
				out = "panic"
			}
		}()
		ok, _ := ctContainsSome(whenNoneHit, invert)(vs, l)
		return fmt.Sprint(ok)
	}
	lists := []any{
		[]any{}, []int{1, 2}, []int8{-1}, []uint{1}, []float32{1.5}, []float64{math.NaN(), 0},
		[]string{"a", "b"}, []named{"a"}, []any{1, "a", 2.5, nil, named("b"), true, []int{1}},
		[2]any{int64(3), "x"}, "abc", named("abc"), 7, nil, map[string]int{"a": 1},
	}
	values := []any{1, int8(2), int64(-1), uint(1), 1.5, float32(2.5), math.NaN(), math.Copysign(0, -1), 3,
		"a", "b", named("a"), named("b"), "", "x", "bc", true, nil, []int{1}}
	for _, l := range lists {
		for _, v := range values {
			for _, vs := range [][]any{{v}, {v, v}, {v, 1, "a"}, {1, "a", v}, {}} {
				for _, c := range [][2]bool{{true, true}, {false, false}, {true, false}, {false, true}} {
					if got, want := fast(c[0], c[1], vs, l), naive(c[0], c[1], vs, l); got != want {
						t.Errorf("containsSome(%v, %v)(%#v, %#v) = %s, item by item %s", c[0], c[1], vs, l, got, want)
					}
				}
			}
		}
	}
	n := strconv.Itoa(MaxItems)
	for _, name := range []string{"containsAll", "containsAny", "containsNone", "containsNotAll"} {
		t.Run(name, func(t *testing.T) {
			tmpl := mustParse(t, `{{`+name+` (concat (until (key "n" | atoi))) (until (key "n" | atoi))}}`, Options{Functions: ModeNative})
			done := make(chan struct{})
			var err error
			go func() {
				defer close(done)
				_, err = tmpl.Execute(Data{Keys: map[string]string{"n": n}})
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("%s of %s items still running after 20s", name, n)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A map cannot be made to hold itself (set, merge…, in each mode): printing one, {{ $d }},
// recursed until Go's runtime ended the agent with a fatal stack overflow, which no render
// recovers from. A map put in another, or the same values again, still is.
func TestTemplates_MapHoldingItselfRefused(t *testing.T) {
	for _, c := range []struct{ name, mode, text string }{
		{"set", ModeNative, `{{$d := dict "a" (key "n")}}{{$_ := set $d "self" $d}}{{$d}}`},
		{"set through another", ModeNative, `{{$a := dict}}{{$b := dict "a" $a}}{{$_ := set $a "b" (list $b)}}{{$a}}`},
		{"merge", ModeNative, `{{$d := dict "a" 1}}{{$_ := merge $d (dict "x" $d)}}{{$d}}`},
		{"mergeOverwrite", ModeNative, `{{$d := dict "a" 1}}{{$_ := mergeOverwrite $d (dict "x" (dict "y" $d))}}{{$d}}`},
		{"consul-template mergeMap", ModeConsulTemplate, `{{$d := sprig_dict "a" 1}}{{$_ := mergeMap $d (sprig_dict "x" $d)}}{{$d}}`},
		{"consul-template sprig_set", ModeConsulTemplate, `{{$d := sprig_dict "a" 1}}{{$_ := sprig_set $d "x" $d}}{{$d}}`},
		{"consul-template scratch.MapSet", ModeConsulTemplate, `{{scratch.MapSet "m" "k" "v"}}{{scratch.MapSet "m" "self" (scratch.Get "m")}}{{scratch.Get "m"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := mustParse(t, c.text, Options{Functions: c.mode})
			_, err := tmpl.Execute(Data{Keys: map[string]string{"n": "1"}})
			if err == nil || !strings.Contains(err.Error(), "hold itself") {
				t.Fatalf("got %v, want the map holding itself refused", err)
			}
		})
	}
	tmpl := mustParse(t, `{{$a := dict "k" "v"}}{{$b := dict}}{{$_ := set $b "a" $a}}{{$_ := set $b "a2" $a}}{{$_ := merge $b (dict "c" (list $a $a))}}{{$_ := set $a "k" "w"}}{{len $b}} {{$b.a.k}}`, Options{Functions: ModeNative})
	res, err := tmpl.Execute(Data{})
	if err != nil || string(res.Output) != "3 w" {
		t.Fatalf("got %v, %v", res, err)
	}
}
