package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// tokenCount is what countJSONKeys answers, counted with encoding/json's tokens: the values
// that are neither objects nor arrays, in objects; -1 when the body is not one JSON value.
func tokenCount(body string) int {
	if !json.Valid([]byte(body)) {
		return -1
	}
	dec := json.NewDecoder(strings.NewReader(body))
	type frame struct{ obj, name bool }
	var stack []frame
	n := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		top := len(stack) - 1
		switch d, delim := tok.(json.Delim); {
		case delim && (d == '}' || d == ']'):
			stack = stack[:top]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].name = true
			}
		case top >= 0 && stack[top].obj && stack[top].name:
			stack[top].name = false
		case delim:
			stack = append(stack, frame{obj: d == '{', name: true})
		default:
			if top >= 0 && stack[top].obj {
				n++
				stack[top].name = true
			}
		}
	}
}

// randomJSON is a random JSON value of at most depth levels, with names and strings that hold
// what a scanner must not take for structure.
func randomJSON(r *rand.Rand, depth int) string {
	strs := []string{`""`, `"a"`, `"{"`, `"}]"`, `"a:b,c"`, `"\""`, `"\\"`, `"\\\""`, `"\u00e9"`, `"é"`, `"\n\t"`}
	lits := []string{"1", "-1.5e+3", "0", "true", "false", "null"}
	ws := []string{"", " ", "\n", "\t ", "\r\n"}
	w := func() string { return ws[r.IntN(len(ws))] }
	if depth == 0 || r.IntN(3) == 0 {
		if r.IntN(2) == 0 {
			return strs[r.IntN(len(strs))]
		}
		return lits[r.IntN(len(lits))]
	}
	var b strings.Builder
	if r.IntN(3) == 0 {
		b.WriteString("[" + w())
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteString("," + w())
			}
			b.WriteString(randomJSON(r, depth-1) + w())
		}
		b.WriteString("]")
		return b.String()
	}
	b.WriteString("{" + w())
	for i := range r.IntN(5) {
		if i > 0 {
			b.WriteString("," + w())
		}
		fmt.Fprintf(&b, "%s%s:%s%s%s", strs[r.IntN(len(strs))], w(), w(), randomJSON(r, depth-1), w())
	}
	b.WriteString("}")
	return b.String()
}

// TestCountJSONKeys_AsTheTokensCountThem: countJSONKeys refuses a body exactly when it holds
// more values in objects than max, as counted with encoding/json's tokens, however its bytes
// arrive (one at a time here too), and takes what is not JSON for the parse to judge.
func TestCountJSONKeys_AsTheTokensCountThem(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bodies := []string{`{"keys":{}}`, `{"keys":{"a":"1","b":{"c":"2","d":[1,{"e":3}]}}}`, `{}`, `[]`, `"x"`, `1`}
	for range 2000 {
		bodies = append(bodies, `{"keys":`+randomJSON(r, 4)+`}`)
	}
	refused := func(err error) bool {
		var e *api.Error
		return errors.As(err, &e) && e.Code == api.CodeTooLarge
	}
	for _, body := range bodies {
		want := tokenCount(body)
		for _, max := range []int{0, 1, 2, 3, 5, 8} {
			for _, src := range []io.Reader{strings.NewReader(body), iotest.OneByteReader(strings.NewReader(body))} {
				if got := refused(countJSONKeys(max)(src)); got != (want > max) {
					t.Fatalf("body %s, max %d: refused %v, want %v (%d values in objects)", body, max, got, want > max, want)
				}
			}
		}
	}
	// Not JSON, or JSON broken before the limit: left to the parse, whatever follows.
	for _, body := range []string{"a: 1\nb: 2\nc: 3\n", `{a: 1, b: 2, c: 3}`, `{"a":1,}`, `{"a":}`, `{"a" "b"}`, `{"a":1]`, `[1,]`, `{"a":1"b":2,"c":3,"d":4}`} {
		if err := countJSONKeys(1)(strings.NewReader(body)); refused(err) {
			t.Errorf("%q refused: %v", body, err)
		}
	}
}

// countJSONKeys reads an apply body with a fixed amount of memory, not an allocation per name
// and value as json.Decoder.Token does (21,000 for a body of 1,000 keys): every apply body goes
// through it before it is parsed.
func TestCountJSONKeys_AllocatesNothingPerKey(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"keys":{`)
	for i := range 1000 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"group%d":{"key":"value-%d","list":[1,2]}`, i, i)
	}
	b.WriteString(`}}`)
	body := b.String()
	count := countJSONKeys(10000)
	allocs := testing.AllocsPerRun(20, func() {
		if err := count(strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 20 {
		t.Fatalf("%v allocations to count a body of 1,000 keys", allocs)
	}
}

// FuzzCountJSONKeys: on any body that is one JSON value, countJSONKeys refuses exactly when it
// holds more values in objects than max (as tokenCount counts them), so no apply body a client
// may send is ever refused as too large while it arrives. Its only answer readBodyWatched acts
// on is an *api.Error, and that must be too_large (a read error, io.EOF at the end, is read again
// by the copy after it).
func FuzzCountJSONKeys(f *testing.F) {
	for _, s := range []string{`{"keys":{"a":"1","b":{"c":"2","d":[1,{"e":3}]}}}`, `{"a":1e5,"b":-0.5E-3,"c":[true,false,null]}`, `{"\"":"\\","{":"}"}`, `[{"a":1},{"b":2}]`, `{"a":tru}`, `{"a":1}{"b":2}`} {
		f.Add(s, 1)
	}
	f.Fuzz(func(t *testing.T, body string, max int) {
		max = max & 7
		err := countJSONKeys(max)(strings.NewReader(body))
		var e *api.Error
		refused := errors.As(err, &e) && e.Code == api.CodeTooLarge
		if errors.As(err, &e) && !refused {
			t.Fatalf("body %q, max %d: %v", body, max, err)
		}
		if want := tokenCount(body); want >= 0 && refused != (want > max) {
			t.Fatalf("body %q, max %d: refused %v, want %v (%d values in objects)", body, max, refused, want > max, want)
		}
	})
}
