package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// printer renders the schema library's messages.
var printer = message.NewPrinter(language.English)

// schemaURL is the name a schema is compiled under; it appears in no message.
const schemaURL = "shoelace:schema.json"

// compileSchema compiles an appliance schema: JSON Schema (2020-12 unless it names its draft
// with $schema), with format assertion on and the formats port, hostname and duration. A
// schema may not load anything ($ref to files or URLs): only the drafts' own meta-schemas.
func compileSchema(data []byte) (*jsonschema.Schema, error) {
	// What the decoder would rewrite or drop without a word: a member given twice (it keeps the
	// last), bytes that are not UTF-8 and lone surrogate escapes (U+FFFD).
	if err := api.CheckJSONText(data); err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: %v", err)
	}
	if err := api.CheckJSONMembers(data); err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: not JSON: %s", jsonErrText(err))
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	c.RegisterFormat(&jsonschema.Format{Name: "port", Validate: validatePort})
	c.RegisterFormat(&jsonschema.Format{Name: "duration", Validate: validateDuration})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: %s", err.Error())
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: %s", schemaErrText(err))
	}
	if err := checkSchemaCost(sch); err != nil {
		return nil, err
	}
	return sch, nil
}

// schemaErrText is a compile error without the schema's internal URL.
func schemaErrText(err error) string {
	msg := err.Error()
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	if errors.As(err, &sve) && errors.As(sve.Err, &ve) {
		var parts []string
		for _, l := range leaves(ve) {
			parts = append(parts, fmt.Sprintf("at /%s: %s", strings.Join(l.InstanceLocation, "/"), l.ErrorKind.LocalizedString(printer)))
		}
		msg = "not valid JSON Schema: " + strings.Join(parts, "; ")
	}
	msg = strings.ReplaceAll(msg, "'"+schemaURL+"'", "the schema")
	msg = strings.ReplaceAll(msg, strconv.Quote(schemaURL), "the schema")
	return strings.ReplaceAll(msg, schemaURL, "")
}

// noLoader refuses to load any URL: a schema stands alone.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("a schema may not refer to %s: only to itself", url)
}

// validatePort accepts a TCP/UDP port as a string of digits, 1 to 65535.
func validatePort(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil // formats apply to strings only
	}
	if s == "" || strings.Trim(s, "0123456789") != "" || len(s) > 1 && s[0] == '0' {
		return errors.New("want digits, 1 to 65535")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("want 1 to 65535")
	}
	return nil
}

// validateDuration accepts a Go duration such as 30s or 1h30m.
func validateDuration(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	if _, err := time.ParseDuration(s); err != nil {
		return errors.New("want a duration such as 30s or 1h30m")
	}
	return nil
}

// schemas caches compiled schemas by appliance name and mod_revision.
type schemas struct {
	mu sync.Mutex
	m  map[string]compiledSchema
}

type compiledSchema struct {
	rev int64
	sch *jsonschema.Schema
}

// checkTree is the store's TreeCheck: appliance name's tree, nested, against its schema.
func (s *Server) checkTree(name string, data []byte, rev int64, tree map[string]string) error {
	sch, err := s.schemas.get(name, data, rev)
	if err != nil {
		// Stored before it was checked, or by another version: refuse rather than skip.
		return api.Errorf(api.CodeSchemaViolation, "appliance %q: its stored schema does not compile (%s): set a valid one or remove it", name, err.Error())
	}
	return validateTree(name, sch, data, tree)
}

// validateTree checks appliance name's tree (relative keys) against sch, compiled from the JSON
// data: nil, or the 422 error that names the broken rules.
func validateTree(name string, sch *jsonschema.Schema, data []byte, tree map[string]string) error {
	doc, err := nestTree(tree)
	if err != nil {
		return api.Errorf(api.CodeSchemaViolation, "appliance %q breaks its schema: %s", name, err.Error())
	}
	if err := sch.Validate(doc); err != nil {
		return violation(name, err, schemaWords(data))
	}
	return nil
}

// schemaWords are the member names and strings of a schema's JSON: a key's name under a secrets
// segment is shown in a violation only when the schema itself holds it (as in
// "properties":{"secrets":{"properties":{"db":…}}}), never when the writer typed it (which may be
// a value typed where a name belongs).
func schemaWords(data []byte) map[string]bool {
	words := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return words
		}
		if w, ok := tok.(string); ok {
			words[w] = true
		}
	}
}

func (c *schemas) get(name string, data []byte, rev int64) (*jsonschema.Schema, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs, ok := c.m[name]; ok && cs.rev == rev {
		return cs.sch, nil
	}
	sch, err := compileSchema(data)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]compiledSchema{}
	}
	c.m[name] = compiledSchema{rev: rev, sch: sch}
	return sch, nil
}

// nestTree turns an appliance's keys into nested JSON objects: a/b/c = "v" becomes
// {"a":{"b":{"c":"v"}}}. Values stay strings. A key that is both a value and the parent of
// other keys cannot be nested and is an error naming both.
func nestTree(tree map[string]string) (map[string]any, error) {
	keys := make([]string, 0, len(tree))
	for k := range tree {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	root := map[string]any{}
	for _, k := range keys {
		segs := strings.Split(k, "/")
		m := root
		for i, seg := range segs[:len(segs)-1] {
			switch next := m[seg].(type) {
			case nil:
				child := map[string]any{}
				m[seg] = child
				m = child
			case map[string]any:
				m = next
			default:
				return nil, fmt.Errorf("key %s has a value and also keys under it (%s), which a schema cannot describe", shownKey(segs[:i+1], nil), shownKey(segs, nil))
			}
		}
		last := segs[len(segs)-1]
		if _, ok := m[last].(map[string]any); ok {
			return nil, fmt.Errorf("key %s has a value and also keys under it, which a schema cannot describe", shownKey(segs, nil))
		}
		m[last] = tree[k]
	}
	return root, nil
}

// violation is the 422 error of a tree that breaks its schema: the first broken rules, each
// with the key (path in the tree) and the rule's keyword; names under a secrets segment that
// are not among known (the schema's words) are left out.
func violation(name string, err error, known map[string]bool) error {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return api.Errorf(api.CodeSchemaViolation, "appliance %q breaks its schema: %s", name, err.Error())
	}
	// Rules broken alike are said once: two names of one object that break its propertyNames
	// rule are the same line (a name is never shown).
	var all []string
	for _, l := range leaves(ve) {
		if d := describeViolation(l, known); !slices.Contains(all, d) {
			all = append(all, d)
		}
	}
	const shown = 3
	parts := all[:min(len(all), shown)]
	more := ""
	if len(all) > shown {
		more = fmt.Sprintf(" (and %d more)", len(all)-shown)
	}
	return api.Errorf(api.CodeSchemaViolation, "appliance %q breaks its schema: %s%s", name, strings.Join(parts, "; "), more)
}

// leaf is a rule that broke; name says that a property name broke it, not a value.
type leaf struct {
	*jsonschema.ValidationError
	name bool
}

// leaves returns the rules that broke: the errors of e's tree that have no causes. The rules a
// property name broke are placed where the name is, in the object that holds it: the library
// checks a name as an instance of its own, at the root, which named no key and showed the
// length of a name under a secrets segment.
func leaves(e *jsonschema.ValidationError) []leaf {
	if len(e.Causes) == 0 {
		return []leaf{{ValidationError: e}}
	}
	_, names := e.ErrorKind.(*kind.PropertyNames)
	var out []leaf
	for _, c := range e.Causes {
		ls := leaves(c)
		if names {
			for i := range ls {
				ls[i].InstanceLocation, ls[i].name = e.InstanceLocation, true
			}
		}
		out = append(out, ls...)
	}
	return out
}

// shownKey is the key path segs as a violation names it: cut before the first name under a
// "secrets" segment that known (the schema's words; nil: none) does not hold, since the names
// under one are not shown (a value typed where a name belongs becomes part of a key; see
// api.KeyText) unless the schema names them itself.
func shownKey(segs []string, known map[string]bool) string {
	secret := false
	for i, seg := range segs {
		if secret && !known[seg] {
			return strings.Join(segs[:i], "/") + "/…"
		}
		secret = secret || seg == api.SecretSegment
	}
	return strings.Join(segs, "/")
}

// secretNames is the note of a violation that leaves out names under a secrets segment.
const secretNames = "names under a secrets segment are not shown"

// describeViolation says one broken rule: "key nginx/port: format: …", or for a rule that a
// name broke, "key hosts: propertyNames/pattern: a name does not match …".
func describeViolation(l leaf, known map[string]bool) string {
	e := l.ValidationError
	loc := e.InstanceLocation
	key := shownKey(loc, known)
	// The names of loc's members are secret when loc has a secrets segment.
	namesHidden := slices.Contains(loc, api.SecretSegment)
	if r, ok := e.ErrorKind.(*kind.Required); ok && len(r.Missing) > 0 {
		// Name the missing key itself, not its parent. Its name comes from the schema, but a
		// path above it under a secrets segment may not.
		var missing []string
		for _, m := range r.Missing {
			if shown := shownKey(append(slices.Clip(loc), m), known); !slices.Contains(missing, shown) {
				missing = append(missing, shown)
			}
		}
		return fmt.Sprintf("key %s: required, missing", strings.Join(missing, ", "))
	}
	rule := strings.Join(e.ErrorKind.KeywordPath(), "/")
	subject := "the value"
	if l.name {
		rule, subject = "propertyNames/"+rule, "a name"
	}
	where := "the appliance's tree"
	if key != "" {
		where = "key " + key
	}
	// Never the value: it may be a secret, or a key the writer may not read (the whole tree is
	// checked, not only the keys written).
	var msg string
	switch k := e.ErrorKind.(type) {
	case *kind.Pattern:
		msg = fmt.Sprintf("%s does not match pattern %s", subject, strconv.Quote(k.Want))
	case *kind.Format:
		msg = subject + " is not valid " + k.Want
		if k.Want == "port" || k.Want == "duration" { // ours, which do not quote the value
			msg += ": " + k.Err.Error()
		}
	case *kind.AdditionalProperties:
		msg = e.ErrorKind.LocalizedString(printer)
		if namesHidden {
			msg = fmt.Sprintf("%d additional properties not allowed (%s)", len(k.Properties), secretNames)
		}
	case *kind.MaxLength:
		msg = e.ErrorKind.LocalizedString(printer)
		if namesHidden { // a secret's length is a clue to it
			msg = fmt.Sprintf("length must be <= %d (a secret's length is not shown)", k.Want)
		}
	case *kind.MinLength:
		msg = e.ErrorKind.LocalizedString(printer)
		if namesHidden {
			msg = fmt.Sprintf("length must be >= %d (a secret's length is not shown)", k.Want)
		}
	case *kind.PropertyNames:
		msg = e.ErrorKind.LocalizedString(printer)
		if namesHidden {
			msg = "invalid property name (" + secretNames + ")"
		}
	default:
		msg = e.ErrorKind.LocalizedString(printer)
	}
	return fmt.Sprintf("%s: %s: %s", where, rule, msg)
}

// checkSchema checks tree, appliance name's tree as an apply would make it, against its schema
// if it has one: an apply's dry run answers the 422 that the apply would.
func (s *Server) checkSchema(ctx context.Context, name string, tree map[string]string) error {
	data, rev, err := s.st.SysGet(ctx, store.SchemaPrefix+name)
	if errors.Is(err, api.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.checkTree(name, data, rev, tree)
}

// Schema routes. The schema is a system key; setting one checks that it compiles. It does not
// check the appliance's current keys: the next write to the appliance is checked.

func (s *Server) schemaAccess(r *http.Request, write bool) (string, error) {
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return "", err
	}
	p := principalOf(r)
	if write {
		return name, p.mayWrite(api.ApplianceRoot(name))
	}
	return name, p.mayRead(api.ApplianceRoot(name))
}

func (s *Server) handleGetSchema(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name, err := s.schemaAccess(r, false)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	// X-Shoelace-Index is the revision read at, as for every answer, not the schema's own.
	v, rev, err := s.st.SysRead(ctx, store.SchemaPrefix+name)
	setIndex(w, rev)
	if errors.Is(err, api.ErrNotFound) {
		return api.Errorf(api.CodeNotFound, "appliance %q has no schema", name)
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/schema+json")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(v.Data)
	return err
}

func (s *Server) handlePutSchema(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name, err := s.schemaAccess(r, true)
	if err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	max := s.cfg.MaxSchemaBytes
	data, err := readBody(w, r, int64(max), func() error {
		return api.Errorf(api.CodeValueTooLarge, "schema of appliance %q is over the limit of %d bytes (--max-schema-bytes)", name, max)
	})
	if err != nil {
		return err
	}
	if data, err = schemaJSON(data, mediaType(r), max); errors.Is(err, errSchemaYAMLTooLarge) {
		// a YAML schema whose JSON, its aliases expanded, is the larger
		return api.Errorf(api.CodeValueTooLarge, "schema of appliance %q is over the limit of %d bytes (--max-schema-bytes) as JSON", name, max)
	} else if err != nil {
		return err
	}
	sch, err := compileSchema(data)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	rev, err := s.st.SysPut(ctx, store.SchemaPrefix+name, data, -1)
	if err != nil {
		return err
	}
	s.audit(r, "schema-set", []string{api.ApplianceRoot(name)}, rev)
	return writeJSON(w, http.StatusOK, rev, api.SchemaResult{Revision: rev, Warning: s.currentViolation(ctx, name, sch, data)})
}

// currentViolation says how appliance name's keys as they are break sch; "" when they do not,
// when it has none, or when they cannot be read (the schema is set either way). The tree is
// read within the replica's bodyBudget when it is of largeBody and more, as a dry run's is:
// read whole in no budget, schema puts at once to an appliance of large values held its tree
// each. When the budget does not give its share, the warning says the keys were not checked.
func (s *Server) currentViolation(ctx context.Context, name string, sch *jsonschema.Schema, data []byte) string {
	sh := &share{b: s.bodyBudget}
	defer sh.release()
	kvs, _, err := s.applyBase(ctx, name, -1, sh, "the check of a schema against appliance "+strconv.Quote(name)+"'s keys", "the check reads it whole")
	switch {
	case err == nil:
	case api.AsError(err).Code == api.CodeUnavailable:
		// The budget's share not given in time, or the tree compacted while it was read.
		return "the keys it has now were not checked against it (they could not be read now: this replica is reading other large bodies or trees, or etcd compacted them meanwhile), so its next write is the first checked"
	case api.AsError(err).Code == api.CodeTooLarge:
		return "the keys it has now were not checked against it (they are more than this replica reads at once), so its next write is the first checked"
	default:
		return ""
	}
	tree := treeOf(name, kvs)
	if len(tree) == 0 {
		return ""
	}
	if err := validateTree(name, sch, data, tree); err != nil {
		return "the keys it has now break it, so its next write must fix them: " + err.Error()
	}
	return ""
}

func (s *Server) handleDeleteSchema(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name, err := s.schemaAccess(r, true)
	if err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	rev, err := s.st.SysDelete(ctx, store.SchemaPrefix+name)
	if errors.Is(err, api.ErrNotFound) {
		return api.Errorf(api.CodeNotFound, "appliance %q has no schema", name)
	}
	if err != nil {
		return err
	}
	s.audit(r, "schema-delete", []string{api.ApplianceRoot(name)}, rev)
	return writeJSON(w, http.StatusOK, rev, api.WriteResult{Revision: rev})
}
