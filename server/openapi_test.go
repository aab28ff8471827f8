package server

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The OpenAPI description (docs/openapi.yaml) is checked against the code three ways: its
// operations against the routes routes() registers (read from the source, then resolved by the
// real router), its status codes against the codes each handler's code can answer, and its
// response schemas against real answers of a server on etcd.

// openAPIDoc is the served description, decoded as JSON Schema documents are.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	data, err := openAPIJSON()
	if err != nil {
		t.Fatalf("openapi: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc.(map[string]any)
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

// docOps lists the description's operations as "METHOD /path".
func docOps(doc map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for p, item := range doc["paths"].(map[string]any) {
		for _, m := range httpMethods {
			if op, ok := item.(map[string]any)[m]; ok {
				out[strings.ToUpper(m)+" "+p] = op.(map[string]any)
			}
		}
	}
	return out
}

// routeDecl is one mux registration of routes(): its pattern and, for the open and v1 helpers,
// the name of its handler method.
type routeDecl struct {
	pattern string
	handler string
	v1      bool
}

// parseFile parses one file of this package.
func parseFile(t *testing.T, fset *token.FileSet, name string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(fset, name, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return f
}

// sourceRoutes reads the registrations of routes() in server.go: every call of open, v1,
// mux.Handle or mux.HandleFunc with a literal pattern.
func sourceRoutes(t *testing.T) []routeDecl {
	t.Helper()
	f := parseFile(t, token.NewFileSet(), "server.go")
	var out []routeDecl
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "routes" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			var name string
			switch fun := call.Fun.(type) {
			case *ast.Ident:
				name = fun.Name
			case *ast.SelectorExpr:
				name = fun.Sel.Name
			}
			if name != "open" && name != "v1" && name != "Handle" && name != "HandleFunc" {
				return true
			}
			pattern, _ := strconv.Unquote(lit.Value)
			rd := routeDecl{pattern: pattern, v1: name == "v1"}
			if sel, ok := call.Args[1].(*ast.SelectorExpr); ok {
				rd.handler = sel.Sel.Name
			}
			out = append(out, rd)
			return true
		})
	}
	if len(out) < 10 {
		t.Fatalf("found only %d routes in routes(): has it moved?", len(out))
	}
	return out
}

// docPath turns a mux pattern's path into the description's: {key...} is {key}.
func docPath(pattern string) string { return strings.ReplaceAll(pattern, "...}", "}") }

// described reports whether the description must hold pattern: not the console under /ui/
// (ui.go registers it), nor the catch-all "/" (404 and 405 for anything else).
func described(pattern string) bool {
	method, p, ok := strings.Cut(pattern, " ")
	if !ok {
		p = method
	}
	return ok && p != "/ui" && !strings.HasPrefix(p, "/ui/")
}

// sampleURL fills the description path's parameters with values that the router matches.
func sampleURL(p string) string {
	return strings.NewReplacer("{key}", "shared/a/b", "{name}", "web", "{instance}", "vm-1", "{revision}", "7").Replace(p)
}

// Every route the server registers is described, and every described operation is a route
// of the real router, under the same pattern.
func TestOpenAPIRoutesMatchRouter(t *testing.T) {
	doc := openAPIDoc(t)
	ops := docOps(doc)
	f := newFixture(t)

	registered := map[string]bool{}
	for _, rd := range sourceRoutes(t) {
		if !described(rd.pattern) {
			continue
		}
		method, p, _ := strings.Cut(rd.pattern, " ")
		key := method + " " + docPath(p)
		registered[key] = true
		if ops[key] == nil {
			t.Errorf("route %s is registered by routes() but not in docs/openapi.yaml", rd.pattern)
		}
	}
	for key := range ops {
		if !registered[key] {
			t.Errorf("operation %s is in docs/openapi.yaml but routes() does not register it", key)
		}
		method, p, _ := strings.Cut(key, " ")
		req := httptest.NewRequest(method, sampleURL(p), nil)
		_, pattern := f.s.mux.Handler(req)
		if m, pp, _ := strings.Cut(pattern, " "); m != method || docPath(pp) != p {
			t.Errorf("operation %s: the server's router routes %s %s to %q", key, method, sampleURL(p), pattern)
		}
	}
}

// The error codes of the description are those of internal/api, and each names its status.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc := openAPIDoc(t)
	codes := apiCodes(t)
	var want []string
	for _, v := range codes {
		want = append(want, v)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	ec := schemas["ErrorCode"].(map[string]any)
	var got []string
	for _, v := range ec["enum"].([]any) {
		got = append(got, v.(string))
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("ErrorCode enum %v, want the codes of internal/api %v", got, want)
	}
	desc := ec["description"].(string)
	for _, c := range want {
		if !regexp.MustCompile(`\b` + c + `\b[^;]*\b` + strconv.Itoa((&api.Error{Code: c}).HTTPStatus()) + `\b`).MatchString(desc) {
			t.Errorf("ErrorCode description does not give %s its status %d", c, (&api.Error{Code: c}).HTTPStatus())
		}
	}
}

// apiCodes reads the Code* string constants of internal/api, by name.
func apiCodes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../internal/api/*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		for _, d := range parseFile(t, fset, name).Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d error codes in internal/api", len(out))
	}
	return out
}

// httpStatusNames are the net/http status constants the handlers use, by name.
var httpStatusNames = map[string]int{
	"StatusOK": 200, "StatusCreated": 201, "StatusAccepted": 202, "StatusNotModified": 304,
	"StatusBadRequest": 400, "StatusUnauthorized": 401, "StatusForbidden": 403, "StatusNotFound": 404,
	"StatusRequestTimeout": 408, "StatusConflict": 409, "StatusGone": 410,
	"StatusRequestEntityTooLarge": 413, "StatusUnsupportedMediaType": 415,
	"StatusUnprocessableEntity": 422, "StatusTooManyRequests": 429,
	"StatusInternalServerError": 500, "StatusServiceUnavailable": 503,
}

// handlerCodes derives the statuses a handler's code can answer: those of the api.Code* and
// http.Status* it names, in its own body and in the bodies of the functions of this package it
// calls, depth levels deep. It is a static approximation: a code reached only through a
// deeper call, or through a value of another package (the store's errors), is not seen.
type codeFinder struct {
	t     *testing.T
	funcs map[string]*ast.FuncDecl // by name; methods by their name alone
	codes map[string]string
}

func newCodeFinder(t *testing.T) *codeFinder {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	cf := &codeFinder{t: t, funcs: map[string]*ast.FuncDecl{}, codes: apiCodes(t)}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, "ui") {
			continue
		}
		for _, d := range parseFile(t, fset, name).Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Body != nil {
				cf.funcs[fn.Name.Name] = fn
			}
		}
	}
	return cf
}

func (cf *codeFinder) statuses(fn string, depth int, seen map[string]bool, out map[int]bool) {
	d := cf.funcs[fn]
	if d == nil || seen[fn] {
		return
	}
	seen[fn] = true
	ast.Inspect(d.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.BinaryExpr:
			if x.Op == token.EQL || x.Op == token.NEQ {
				return false // a code compared (e.Code == api.CodeX) is not one answered
			}
		case *ast.SelectorExpr:
			pkg, ok := x.X.(*ast.Ident)
			if !ok {
				return true
			}
			switch {
			case pkg.Name == "api" && strings.HasPrefix(x.Sel.Name, "Code"):
				v, ok := cf.codes[x.Sel.Name]
				if !ok {
					cf.t.Fatalf("%s: unknown api.%s", fn, x.Sel.Name)
				}
				out[(&api.Error{Code: v}).HTTPStatus()] = true
			case pkg.Name == "http" && strings.HasPrefix(x.Sel.Name, "Status"):
				s, ok := httpStatusNames[x.Sel.Name]
				if !ok {
					cf.t.Fatalf("%s: http.%s is not in httpStatusNames: add it", fn, x.Sel.Name)
				}
				out[s] = true
			}
		case *ast.CallExpr:
			if depth == 0 {
				return true
			}
			switch f := x.Fun.(type) {
			case *ast.Ident:
				cf.statuses(f.Name, depth-1, seen, out)
			case *ast.SelectorExpr:
				if _, isPkg := f.X.(*ast.Ident); isPkg && (f.X.(*ast.Ident).Name == "api" || f.X.(*ast.Ident).Name == "http") {
					return true
				}
				cf.statuses(f.Sel.Name, depth-1, seen, out)
			}
		}
		return true
	})
}

// notStatic are statuses an operation answers that the static look cannot find, each with
// its reason; TestOpenAPIAnswersFitSchemas provokes each of them.
var notStatic = map[string][]int{
	"GET /v1/kv":          {404}, // the store's not_found for a missing key
	"GET /v1/kv/{key}":    {404},
	"PUT /v1/kv/{key}":    {422}, // the schema check, deeper in the write path
	"DELETE /v1/kv/{key}": {422},
	"POST /v1/txn":        {422},
	"GET /v1/snapshot":    {200}, // the stream's writer sends it at the first byte
	// the view's not_found, from the view's flight (appliances.go changed → hub.viewFlight)
	"GET /v1/appliances/{name}": {404},
}

// staticOnly are statuses the static look finds that an operation cannot answer, each with its
// reason.
var staticOnly = map[string][]int{
	"DELETE /v1/kv/{key}": {202}, // the write path is shared with canary writes; a delete takes no canary
	// readRollout's not_found, which endRollout (force, a failure report) turns into "no rollout runs"
	"PUT /v1/appliances/{name}":         {404},
	"POST /v1/appliances/{name}/report": {404},
	// writeJSON's bound on unread answers (answers.go), which an answer of a few bytes never reaches
	"GET /health": {429, 503},
	// writeJSON writes through statusWriter.Write, whose implicit 200 a 201 answer never takes
	"POST /v1/appliances/{name}/enroll": {200},
	"POST /v1/tokens":                   {200},
}

// refused are the operations whose handler refuses every request with 400 at once (an empty
// key): they answer only what the wrapper and that refusal answer.
var refused = map[string]bool{"PUT /v1/kv": true, "DELETE /v1/kv": true}

// wrapStatuses are what the wrapper of every /v1 route answers before its handler runs
// (authenticate: 401, 429, 503; release headers: 400), and 500 for any unexpected error.
var wrapStatuses = []int{400, 401, 429, 500, 503}

// Each operation lists every status its handler's code can answer (as far as a static look
// finds them), and every status it lists is one the code can answer.
func TestOpenAPIStatusCodes(t *testing.T) {
	ops := docOps(openAPIDoc(t))
	cf := newCodeFinder(t)
	for _, rd := range sourceRoutes(t) {
		if !described(rd.pattern) || rd.handler == "" {
			continue
		}
		method, p, _ := strings.Cut(rd.pattern, " ")
		key := method + " " + docPath(p)
		op := ops[key]
		if op == nil {
			continue // TestOpenAPIRoutesMatchRouter says so
		}
		derived := map[int]bool{}
		if !refused[key] {
			cf.statuses(rd.handler, 3, map[string]bool{}, derived)
		}
		if rd.v1 {
			for _, s := range wrapStatuses {
				derived[s] = true
			}
		}
		for _, s := range notStatic[key] {
			derived[s] = true
		}
		for _, s := range staticOnly[key] {
			delete(derived, s)
		}
		documented := map[int]bool{}
		for code := range op["responses"].(map[string]any) {
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s: response %q is not a status code", key, code)
				continue
			}
			documented[n] = true
		}
		for s := range derived {
			if !documented[s] {
				t.Errorf("%s (%s): the code can answer %d, which the description does not list", key, rd.handler, s)
			}
		}
		for s := range documented {
			if !derived[s] {
				t.Errorf("%s (%s): the description lists %d, which the code does not answer", key, rd.handler, s)
			}
		}
	}
}

// validator validates answers against the description's response schemas.
type validator struct {
	t       *testing.T
	doc     map[string]any
	ops     map[string]map[string]any
	c       *jsonschema.Compiler
	covered map[string]bool
	// missingHeaders are "METHOD /path STATUS Header" sent by the server, not declared.
	missingHeaders map[string]bool
	f              *fixture
}

const openAPIURL = "https://shoelace.invalid/openapi.json"

func newValidator(t *testing.T, f *fixture) *validator {
	doc := openAPIDoc(t)
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(openAPIURL, doc); err != nil {
		t.Fatalf("add openapi.json: %v", err)
	}
	return &validator{t: t, doc: doc, ops: docOps(doc), c: c, covered: map[string]bool{}, missingHeaders: map[string]bool{}, f: f}
}

// ptr escapes a JSON pointer token.
func ptr(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1") }

// check finds the operation the router gives r's request, checks that it lists r's status,
// and validates r's JSON body against the response's schema.
func (v *validator) check(r resp) {
	v.t.Helper()
	req := r.Request
	_, pattern := v.f.s.mux.Handler(httptest.NewRequest(req.Method, req.URL.RequestURI(), nil))
	method, p, _ := strings.Cut(pattern, " ")
	key := method + " " + docPath(p)
	op := v.ops[key]
	if op == nil {
		v.t.Fatalf("%s %s: routed to %q, which the description does not have", req.Method, req.URL, pattern)
	}
	code := strconv.Itoa(r.StatusCode)
	res, ok := op["responses"].(map[string]any)[code].(map[string]any)
	if !ok {
		v.t.Fatalf("%s %s answered %s, which %s does not list; body %s", req.Method, req.URL, code, key, r.body)
	}
	v.covered[key+" "+code] = true
	loc := "#/paths/" + ptr(docPath(p)) + "/" + strings.ToLower(method) + "/responses/" + code
	if ref, ok := res["$ref"].(string); ok {
		loc = ref
		res = v.resolve(ref)
	}
	// The server's own headers on the answer are those the description gives the response.
	declared, _ := res["headers"].(map[string]any)
	for h := range r.Header {
		if !strings.HasPrefix(h, "X-Shoelace-") && h != "Retry-After" {
			continue
		}
		found := false
		for d := range declared {
			found = found || strings.EqualFold(d, h)
		}
		if !found {
			v.missingHeaders[key+" "+code+" "+h] = true
		}
	}
	content, _ := res["content"].(map[string]any)
	ct := r.Header.Get("Content-Type")
	if content == nil {
		if len(r.body) > 0 {
			v.t.Fatalf("%s %s: %s has a body, and the description none", req.Method, req.URL, code)
		}
		return
	}
	mt, _, _ := strings.Cut(ct, ";")
	if _, ok := content[mt]; !ok {
		v.t.Fatalf("%s %s: content type %q is not among those of %s %s", req.Method, req.URL, ct, key, code)
	}
	var bodies [][]byte
	switch mt {
	case "application/json":
		bodies = [][]byte{r.body}
	case "application/x-ndjson": // a stream: every line is one document of the schema
		for _, line := range bytes.Split(bytes.TrimSpace(r.body), []byte("\n")) {
			bodies = append(bodies, line)
		}
	default:
		return
	}
	sch, err := v.c.Compile(openAPIURL + loc + "/content/" + ptr(mt) + "/schema")
	if err != nil {
		v.t.Fatalf("compile the schema of %s %s: %v", key, code, err)
	}
	for _, body := range bodies {
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			v.t.Fatalf("%s %s: body is not JSON: %v", req.Method, req.URL, err)
		}
		if err := sch.Validate(inst); err != nil {
			v.t.Errorf("%s %s (%s %s): the answer does not fit the description: %v\nbody %s", req.Method, req.URL, key, code, err, body)
		}
	}
}

func (v *validator) resolve(ref string) map[string]any {
	var cur any = v.doc
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		cur = cur.(map[string]any)[tok]
	}
	return cur.(map[string]any)
}

// Real answers of a server on etcd, for every route, fit the description's schemas: no field
// the schema does not allow, no required field missing, and a status the operation lists.
func TestOpenAPIAnswersFitSchemas(t *testing.T) {
	parallelShared(t)
	f := newOwnEtcdFixture(t)
	v := newValidator(t, f)
	ok := func(r resp, status int) resp {
		t.Helper()
		if r.StatusCode != status {
			t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
		}
		v.check(r)
		return r
	}
	ct := []string{"Content-Type", "application/json"}

	// No token.
	ok(f.doToken("", "GET", "/health", ""), 200)
	ok(f.doToken("", "GET", "/health/deps", ""), 200)
	ok(f.doToken("", "GET", "/metrics", ""), 200)
	spec := ok(f.doToken("", "GET", "/v1/openapi.json", ""), 200)
	if !strings.Contains(string(spec.body), `"openapi": "3.1.0"`) {
		t.Fatalf("GET /v1/openapi.json: %.200s", spec.body)
	}
	ok(f.doToken("", "GET", "/v1/kv/shared/a", ""), 401)
	ok(f.do("GET", "/v1/openapi.json?x=1", ""), 400)

	// Keys.
	ok(f.do("PUT", "/v1/kv/shared/a", "1", "X-Shoelace-Message", "first"), 200)
	ok(f.do("PUT", "/v1/kv/shared/b", "2"), 200)
	ok(f.do("PUT", "/v1/kv", "2"), 400)
	ok(f.do("PUT", "/v1/kv/shared/a?cas=1", "3"), 409)
	ok(f.do("GET", "/v1/kv/shared/a", ""), 200)
	ok(f.do("GET", "/v1/kv/shared/nope", ""), 404)
	ok(f.do("GET", "/v1/kv/shared?recurse", ""), 200)
	ok(f.do("GET", "/v1/kv/shared?recurse&keys", ""), 200)
	ok(f.do("GET", "/v1/kv?recurse", ""), 200)
	ok(f.do("GET", "/v1/kv/shared/a?history", ""), 200)
	ok(f.do("GET", "/v1/kv/shared/a?zzz=1", ""), 400)
	ok(f.do("DELETE", "/v1/kv/shared/b", ""), 200)
	ok(f.do("DELETE", "/v1/kv?recurse", ""), 400)
	ok(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/c","value":"x"},{"op":"delete","key":"shared/b"}],"guards":[{"key":"shared/z","mod_revision":0}]}`, ct...), 200)
	ok(f.do("POST", "/v1/txn", `{"ops":[]}`, "Content-Type", "text/plain"), 415)

	// Appliances, schemas, history.
	w := ok(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","name":"w"}}`, ct...), 200)
	var wr api.WriteResult
	_ = json.Unmarshal(w.body, &wr)
	ok(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"port":"81"}}`, ct...), 200)
	ok(f.do("PUT", "/v1/appliances/web", "keys:\n  port: \"80\"\n  name: w\n", "Content-Type", "application/yaml"), 200)
	ok(f.do("GET", "/v1/appliances", ""), 200)
	view := ok(f.do("GET", "/v1/appliances/web", ""), 200)
	ok(f.do("GET", "/v1/appliances/web?index="+view.Header.Get(api.HeaderIndex)+"&wait=1s", ""), 304)
	// A delta from the revision before the last write, and a stream (its heartbeat, then its
	// end when wait expires): each line an Update.
	// (A view worth a delta: larger than the delta's sum.)
	since := ok(f.do("PUT", "/v1/kv/appliances/web/blob", strings.Repeat("x", 1000)), 200).Header.Get(api.HeaderIndex)
	ok(f.do("PUT", "/v1/kv/appliances/web/extra", "1"), 200)
	d := ok(f.do("GET", "/v1/appliances/web?delta&index="+since, ""), 200)
	if !bytes.Contains(d.body, []byte(`"base"`)) {
		t.Fatalf("delta: the answer is no delta: %s", d.body)
	}
	st := ok(f.do("GET", "/v1/appliances/web?stream&delta&wait=1s&index="+since, ""), 200)
	if !strings.HasPrefix(st.Header.Get("Content-Type"), "application/x-ndjson") {
		t.Fatalf("stream: content type %q, body %s", st.Header.Get("Content-Type"), st.body)
	}
	if !bytes.Contains(st.body, []byte(`"revision"`)) {
		t.Fatalf("stream: no line: %q", st.body)
	}
	ok(f.do("DELETE", "/v1/kv/appliances/web/extra", ""), 200)
	ok(f.do("DELETE", "/v1/kv/appliances/web/blob", ""), 200)
	ok(f.do("GET", "/v1/appliances/web/at/"+strconv.FormatInt(wr.Revision, 10), ""), 200)
	ok(f.do("GET", "/v1/appliances/web/at/x", ""), 400)
	ok(f.do("GET", "/v1/appliances/web/schema", ""), 404)
	ok(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object","required":["port"],"properties":{"port":{"type":"string","pattern":"^[0-9]+$"}}}`, ct...), 200)
	ok(f.do("GET", "/v1/appliances/web/schema", ""), 200)
	ok(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"eighty"}}`, ct...), 422)
	ok(f.do("PUT", "/v1/kv/appliances/web/port", "eighty"), 422)
	ok(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/port","value":"eighty"}]}`, ct...), 422)
	ok(f.do("DELETE", "/v1/kv/appliances/web/port", ""), 422)
	ok(f.do("DELETE", "/v1/appliances/web/schema", ""), 200)
	ok(f.do("GET", "/v1/releases", ""), 200)
	ok(f.do("GET", "/v1/releases?limit=1&prefix=shared/", ""), 200)
	ok(f.do("GET", "/v1/appliances/web/releases?include_shared", ""), 200)
	ok(f.do("GET", "/v1/appliances/web/rollout", ""), 404)

	// Tokens, enrollment, agents, rollouts.
	ok(f.do("POST", "/v1/tokens", `{"name":"reader","read":["shared/"]}`, ct...), 201)
	ok(f.do("POST", "/v1/tokens", `{"name":"reader","read":["shared/"]}`, ct...), 409)
	agent := ok(f.do("POST", "/v1/tokens", `{"name":"web-agent","appliance":"web"}`, ct...), 201)
	var tok api.TokenCreated
	_ = json.Unmarshal(agent.body, &tok)
	ok(f.doToken(tok.Token, "GET", "/v1/status", ""), 403)
	enr := ok(f.doToken(tok.Token, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`, ct...), 201)
	var e api.Enrolled
	_ = json.Unmarshal(enr.body, &e)
	iv := ok(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1", api.HeaderApplied, strconv.FormatInt(wr.Revision, 10)), 200)
	var vw api.View
	_ = json.Unmarshal(iv.body, &vw)
	rep, _ := jsonMarshal(api.Report{Instance: "vm-1", Revision: vw.Revision, Applied: vw.Revision, Version: "test"})
	ok(f.doToken(e.Token, "POST", "/v1/appliances/web/report", rep, "Content-Type", "application/json", api.HeaderInstance, "vm-1"), 200)
	fail, _ := jsonMarshal(api.Report{Instance: "vm-1", Revision: vw.Revision, Applied: 1, Error: "boom", Stage: api.StageCheck, Template: "t"})
	ok(f.doToken(e.Token, "POST", "/v1/appliances/web/report", fail, "Content-Type", "application/json", api.HeaderInstance, "vm-1"), 200)
	ok(f.do("GET", "/v1/appliances/web/instances", ""), 200)
	ok(f.do("GET", "/v1/tokens", ""), 200)
	ok(f.do("GET", "/v1/tokens?all", ""), 200)
	ok(f.do("PUT", "/v1/appliances/web?canary=50%25&bake=1h&deadline=1h", `{"keys":{"port":"82","name":"w"}}`, ct...), 202)
	ok(f.do("PUT", "/v1/kv/appliances/web/port", "83"), 409)
	ok(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 200)
	ok(f.do("GET", "/v1/appliances/web/rollout", ""), 200)
	ok(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, ct...), 200)
	ok(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, ct...), 409)
	ok(f.do("POST", "/v1/txn?canary=50%25&bake=1h&deadline=1h", `{"ops":[{"op":"put","key":"appliances/web/port","value":"84"}]}`, ct...), 202)
	ok(f.do("POST", "/v1/appliances/web/rollout", `{"action":"promote"}`, ct...), 200)
	ok(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&bake=1h&deadline=1h&force", "85"), 400)
	if r := f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, ct...); r.StatusCode != 200 && r.StatusCode != 409 {
		t.Fatalf("abort after promote: %d %s", r.StatusCode, r.body)
	} else {
		v.check(r)
	}
	ok(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&bake=1h&deadline=1h", "85"), 202)
	ok(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, ct...), 200)
	ok(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200)
	ok(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 404)
	ok(f.do("DELETE", "/v1/tokens/web-agent", ""), 200)
	ok(f.do("DELETE", "/v1/tokens/web-agent", ""), 404)

	// Operations.
	ok(f.do("GET", "/v1/status", ""), 200)
	ok(f.do("GET", "/v1/maintenance", ""), 200)
	ok(f.do("PUT", "/v1/maintenance", `{"on":true}`, ct...), 200)
	ok(f.do("PUT", "/v1/kv/shared/a", "9"), 503)
	ok(f.do("PUT", "/v1/maintenance", `{"on":false}`, ct...), 200)
	ok(f.do("GET", "/v1/snapshot", ""), 200)

	var missed []string
	for key, op := range v.ops {
		for code := range op["responses"].(map[string]any) {
			if code[0] == '2' || code[0] == '3' {
				if !v.covered[key+" "+code] {
					missed = append(missed, key+" "+code)
				}
			}
		}
	}
	sort.Strings(missed)
	if len(missed) > 0 {
		t.Errorf("answers not exercised against the description: %v", missed)
	}
	if len(v.missingHeaders) > 0 {
		t.Errorf("headers sent, not in the description of their response:\n%s", strings.Join(slices.Sorted(maps.Keys(v.missingHeaders)), "\n"))
	}
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// The description converts to JSON; an unquoted status code (a YAML integer key) is refused.
func TestOpenAPIYAMLToJSON(t *testing.T) {
	if _, err := openAPIJSON(); err != nil {
		t.Fatal(err)
	}
	if _, err := yamlToJSON([]byte("responses:\n  200:\n    description: x\n")); err == nil || !strings.Contains(err.Error(), "quote it") {
		t.Fatalf("integer key: err %v, want one that says to quote it", err)
	}
	out, err := yamlToJSON([]byte("a: &x {b: 1}\nc: *x\n"))
	if err != nil || !strings.Contains(string(out), `"c": {`) {
		t.Fatalf("alias: %s, %v", out, err)
	}
}

// Each operation's query parameters are those its handler takes: the server names them when it
// refuses an unknown one. (GET /v1/kv also takes history and limit, which switch to another
// handler before the check.)
func TestOpenAPIQueryParameters(t *testing.T) {
	doc := openAPIDoc(t)
	f := newFixture(t)
	takes := regexp.MustCompile(`this route takes (none|\[([^\]]*)\])`)
	extra := map[string][]string{"GET /v1/kv": {"history", "limit"}, "GET /v1/kv/{key}": {"history", "limit"}}
	for key, op := range docOps(doc) {
		method, p, _ := strings.Cut(key, " ")
		if p == "/health" || p == "/health/deps" || p == "/metrics" || refused[key] {
			continue // they read no query, or refuse every request
		}
		var documented []string
		params, _ := op["parameters"].([]any)
		if item, ok := doc["paths"].(map[string]any)[p].(map[string]any)["parameters"].([]any); ok {
			params = append(params, item...)
		}
		for _, prm := range params {
			pm := prm.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				pm = doc["components"].(map[string]any)["parameters"].(map[string]any)[strings.TrimPrefix(ref, "#/components/parameters/")].(map[string]any)
			}
			if pm["in"] == "query" {
				documented = append(documented, pm["name"].(string))
			}
		}
		r := f.do(method, sampleURL(p)+"?zz_unknown=1", "")
		m := takes.FindStringSubmatch(r.errMessage())
		if r.StatusCode != 400 || m == nil {
			t.Errorf("%s ?zz_unknown=1: %d %s, want 400 naming the parameters taken", key, r.StatusCode, r.body)
			continue
		}
		var taken []string
		if m[1] != "none" {
			taken = strings.Fields(m[2])
		}
		taken = append(taken, extra[key]...)
		sort.Strings(taken)
		sort.Strings(documented)
		if !slices.Equal(taken, documented) {
			t.Errorf("%s: the description's query parameters %v, the server's %v", key, documented, taken)
		}
	}
}

// Client generators name a type after each component (oapi-codegen: schemas, parameters,
// responses, headers, request bodies alike, first letter upper-cased) and stop at two of one
// name: components.parameters.Instance beside components.schemas.Instance kept a client from
// being generated at all. A name is used in one section only.
func TestOpenAPIComponentNamesUnique(t *testing.T) {
	doc := openAPIDoc(t)
	seen := map[string]string{}
	for section, v := range doc["components"].(map[string]any) {
		if section == "securitySchemes" {
			continue
		}
		for name := range v.(map[string]any) {
			goName := strings.ToUpper(name[:1]) + name[1:]
			if other, ok := seen[goName]; ok {
				t.Errorf("components.%s.%s and components.%s name one type %s in a generated client: rename one", section, name, other, goName)
			}
			seen[goName] = section + "." + name
		}
	}
}
