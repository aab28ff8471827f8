package templates

import (
	"fmt"
	"reflect"
	"strings"
	"text/template"
)

// The bounds of bounds.go hold for the functions that multiply what they are given in one
// call. A template also multiplies by calling: a loop that doubles a string
// ({{$s = printf "%s%s" $s $s}}, cat, b64enc…), collects a value into a list a key's count of
// times (append $l (printf "%s-%d" (key "prefix") .)), or formats a list that holds one long
// value many times (toJson, printf "%v") builds gigabytes from keys within the server's
// limits, and Go's runtime ends the agent with a fatal error that no render recovers from.
// So every function the template calls is wrapped: a string it returns, and a list or map's
// items, stay within the bounds; a function that formats its arguments whole is refused when
// they would be over the bound; and the strings handed to functions that build lists and maps
// count against one bound per render.

// formatters are the functions whose result holds all of their arguments, lists and maps
// included: their arguments are measured whole before the call.
var formatters = map[string]bool{
	"print": true, "printf": true, "println": true, "html": true, "js": true, "urlquery": true,
	"cat": true, "toString": true, "toStrings": true, "quote": true, "squote": true,
	"toJson": true, "mustToJson": true, "toPrettyJson": true, "mustToPrettyJson": true,
	"toRawJson": true, "mustToRawJson": true, "toDecimal": false,
	"toJSON": true, "toJSONPretty": true, "toUnescapedJSON": true, "toUnescapedJSONPretty": true,
	"toTOML": true, "toYAML": true,
}

// builtinFormatters are text/template's own functions that format their arguments; a
// function map may replace them.
var builtinFormatters = template.FuncMap{
	"print":    fmt.Sprint,
	"printf":   fmt.Sprintf,
	"println":  fmt.Sprintln,
	"html":     template.HTMLEscaper,
	"js":       template.JSEscaper,
	"urlquery": template.URLQueryEscaper,
}

// maxDepth bounds how deep argSize looks into nested lists and maps (a map may hold itself).
const maxDepth = 100

// bounded wraps the functions of m (the used builtin formatters added) as the comment above says.
func (s *state) bounded(m template.FuncMap) template.FuncMap {
	for name, f := range builtinFormatters {
		if _, ok := s.t.used[name]; ok {
			if _, mine := m[name]; !mine {
				m[name] = f
			}
		}
	}
	for name, f := range m {
		m[name] = s.boundFunc(name, f)
	}
	return m
}

// boundFunc is f with the bounds.
func (s *state) boundFunc(name string, f any) any {
	fv := reflect.ValueOf(f)
	if fv.Kind() != reflect.Func {
		return f
	}
	ft := fv.Type()
	formats := formatters[strings.TrimPrefix(name, "sprig_")]
	inserts, putsIn := mapInserters[strings.TrimPrefix(name, "sprig_")]
	return reflect.MakeFunc(ft, func(args []reflect.Value) []reflect.Value {
		if putsIn && len(args) > inserts {
			if dst := unwrap(args[0]); dst.Kind() == reflect.Map && !dst.IsNil() {
				for _, a := range args[inserts:] {
					if reaches(a, dst.Pointer()) {
						panic(fmt.Errorf("%s: the map would hold itself, which no file can print (printing it would end the agent)", name))
					}
				}
			}
		}
		if formats {
			budget := int64(maxBuilt)
			for _, a := range args {
				if budget = argSize(a, budget, 0); budget < 0 {
					panic(overLimit(name))
				}
			}
		}
		var out []reflect.Value
		if ft.IsVariadic() {
			out = fv.CallSlice(args)
		} else {
			out = fv.Call(args)
		}
		if len(out) == 0 {
			return out
		}
		r := out[0]
		for r.Kind() == reflect.Interface && !r.IsNil() {
			r = r.Elem()
		}
		n := 0
		if r.Kind() == reflect.String {
			n = r.Len()
		}
		if err := s.checkWork(n); err != nil {
			panic(fmt.Errorf("%s: %w", name, err))
		}
		switch r.Kind() {
		case reflect.String:
			if r.Len() > maxBuilt {
				panic(overLimit(name))
			}
		case reflect.Slice, reflect.Map:
			if r.Kind() == reflect.Slice && r.Type().Elem().Kind() == reflect.Uint8 {
				if r.Len() > maxBuilt {
					panic(overLimit(name))
				}
				break
			}
			if r.Len() > MaxItems {
				panic(fmt.Errorf("%s: %d items, over the limit of %d", name, r.Len(), MaxItems))
			}
			// The strings handed to a function that returns a list or map may be held by it.
			for _, a := range args {
				for a.Kind() == reflect.Interface && !a.IsNil() {
					a = a.Elem()
				}
				if a.Kind() == reflect.String {
					s.collected += int64(a.Len())
				}
			}
			if s.collected > maxBuilt {
				panic(fmt.Errorf("%s: the lists and maps of this render would hold over %d bytes of strings, the limit of a render's output", name, maxBuilt))
			}
		}
		return out
	}).Interface()
}

// argSize is budget less the bytes of v's strings (lists and maps whole, a value as many
// times as it appears), or -1 once that is below 0.
func argSize(v reflect.Value, budget int64, depth int) int64 {
	if depth > maxDepth {
		return -1
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return budget - 1
		}
		return argSize(v.Elem(), budget, depth+1)
	case reflect.String:
		budget -= int64(v.Len())
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			budget -= int64(v.Len())
			break
		}
		for i := 0; i < v.Len() && budget >= 0; i++ {
			budget = argSize(v.Index(i), budget-1, depth+1)
		}
	case reflect.Map:
		it := v.MapRange()
		for budget >= 0 && it.Next() {
			budget = argSize(it.Key(), budget-1, depth+1)
			if budget >= 0 {
				budget = argSize(it.Value(), budget, depth+1)
			}
		}
	case reflect.Struct:
		for i := 0; i < v.NumField() && budget >= 0; i++ {
			budget = argSize(v.Field(i), budget, depth+1)
		}
	default:
		budget--
	}
	if budget < 0 {
		return -1
	}
	return budget
}

// mapInserters are the functions that put values into the map that is their first argument,
// each with the index of its first argument put in: a map that came to hold itself (`set $d "x"
// $d`) is one whose printing, {{ $d }}, recursed until Go's runtime ended the agent with a
// fatal stack overflow that no render recovers from.
var mapInserters = map[string]int{
	"set": 2, "merge": 1, "mergeOverwrite": 1, "mustMerge": 1, "mustMergeOverwrite": 1,
	"mergeMap": 1, "mergeMapWithOverride": 1,
}

func unwrap(v reflect.Value) reflect.Value {
	for (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) && !v.IsNil() {
		v = v.Elem()
	}
	return v
}

// reaches tells whether the map at target is v or held in v, at any depth (each map and list
// looked into once).
func reaches(v reflect.Value, target uintptr) bool {
	seen, seenPtr := map[[2]uintptr]bool{}, map[uintptr]bool{}
	stack := []reflect.Value{v}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) && !v.IsNil() {
			if v.Kind() == reflect.Pointer {
				if seenPtr[v.Pointer()] {
					v = reflect.Value{}
					break
				}
				seenPtr[v.Pointer()] = true
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Map:
			if v.IsNil() {
				continue
			}
			if v.Pointer() == target {
				return true
			}
			k := [2]uintptr{v.Pointer(), 0}
			if seen[k] {
				continue
			}
			seen[k] = true
			for it := v.MapRange(); it.Next(); {
				stack = append(stack, it.Value())
			}
		case reflect.Slice:
			if v.IsNil() || v.Type().Elem().Kind() == reflect.Uint8 {
				continue
			}
			k := [2]uintptr{v.Pointer(), uintptr(v.Len())}
			if seen[k] {
				continue
			}
			seen[k] = true
			for i := 0; i < v.Len(); i++ {
				stack = append(stack, v.Index(i))
			}
		case reflect.Array:
			for i := 0; i < v.Len(); i++ {
				stack = append(stack, v.Index(i))
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					stack = append(stack, v.Field(i))
				}
			}
		}
	}
	return false
}
