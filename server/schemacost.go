package server

import (
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// maxSchemaCost bounds the work of validating one key path of a tree against a schema: the
// subschemas applied along the path from the tree's root to one value, each weighed by its enum
// and required lists. A schema of nested anyOf (or $ref to $defs that fan out) costs twice as
// much per level: 40 levels would keep a replica busy for hours, and its errors fill memory.
const maxSchemaCost = 20000

// schemaCost is the most schemaCost.of(s, depth) may cost before the schema is refused, with
// the memo of what it found.
type schemaCost struct {
	memo    map[costKey]int
	busy    map[costKey]bool
	anchors map[string][]*jsonschema.Schema // $dynamicAnchor → the subschemas that name it
	recurse []*jsonschema.Schema            // the subschemas with $recursiveAnchor
	looped  bool                            // a subschema applies itself to the same value
}

type costKey struct {
	s     *jsonschema.Schema
	depth int
}

// checkSchemaCost refuses a schema whose validation of one key path could cost more than
// maxSchemaCost. Trees hold objects and strings only (values stay strings), so the array
// keywords never apply; the instance is at most api.MaxSegments levels deep.
func checkSchemaCost(root *jsonschema.Schema) error {
	c := &schemaCost{memo: map[costKey]int{}, busy: map[costKey]bool{}, anchors: map[string][]*jsonschema.Schema{}}
	seen := map[*jsonschema.Schema]bool{}
	var collect func(s *jsonschema.Schema)
	collect = func(s *jsonschema.Schema) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		if s.DynamicAnchor != "" {
			c.anchors[s.DynamicAnchor] = append(c.anchors[s.DynamicAnchor], s)
		}
		if s.RecursiveAnchor {
			c.recurse = append(c.recurse, s)
		}
		for _, e := range c.inPlace(s) {
			collect(e)
		}
		for _, e := range c.below(s) {
			collect(e)
		}
		for _, e := range s.Properties {
			collect(e)
		}
	}
	collect(root)
	if n := c.of(root, api.MaxSegments); c.looped {
		return api.Errorf(api.CodeInvalidSchema, "invalid schema: a subschema applies itself to the same value (a $ref loop that never goes into a key)")
	} else if n > maxSchemaCost {
		return api.Errorf(api.CodeInvalidSchema, "invalid schema: validating it could apply over %d subschemas to one key path (nested anyOf, allOf, oneOf or $ref that fan out): simplify it", maxSchemaCost)
	}
	return nil
}

// inPlace are the subschemas s applies to the same value.
func (c *schemaCost) inPlace(s *jsonschema.Schema) []*jsonschema.Schema {
	out := []*jsonschema.Schema{s.Ref, s.Not, s.If, s.Then, s.Else}
	out = append(out, s.AllOf...)
	out = append(out, s.AnyOf...)
	out = append(out, s.OneOf...)
	for _, d := range s.DependentSchemas {
		out = append(out, d)
	}
	for _, d := range s.Dependencies {
		if d, ok := d.(*jsonschema.Schema); ok {
			out = append(out, d)
		}
	}
	if s.DynamicRef != nil {
		out = append(out, s.DynamicRef.Ref)
		if s.DynamicRef.Anchor != "" {
			out = append(out, c.anchors[s.DynamicRef.Anchor]...)
		}
	}
	if s.RecursiveRef != nil {
		out = append(out, s.RecursiveRef)
		out = append(out, c.recurse...)
	}
	return out
}

// below are the subschemas s applies to every (or any) member of an object, besides the
// member's own entry in properties, and to its names.
func (c *schemaCost) below(s *jsonschema.Schema) []*jsonschema.Schema {
	out := []*jsonschema.Schema{s.UnevaluatedProperties}
	if a, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
		out = append(out, a)
	}
	for _, p := range s.PatternProperties {
		out = append(out, p)
	}
	return out
}

// of is the cost of applying s to a value with depth levels of keys below it, at most
// maxSchemaCost+1.
func (c *schemaCost) of(s *jsonschema.Schema, depth int) int {
	if s == nil || depth < 0 {
		return 0
	}
	k := costKey{s, depth}
	if n, ok := c.memo[k]; ok {
		return n
	}
	if c.busy[k] {
		c.looped = true
		return maxSchemaCost + 1
	}
	c.busy[k] = true
	defer delete(c.busy, k)
	n := 1 + len(s.Required)
	if s.Enum != nil {
		n += len(s.Enum.Values)
	}
	add := func(m int) { n = min(n+m, maxSchemaCost+1) }
	for _, e := range c.inPlace(s) {
		add(c.of(e, depth))
	}
	// One member at a time: the most its own entry in properties costs, or its name against
	// propertyNames, plus what applies to every member.
	member := c.of(s.PropertyNames, depth-1)
	for _, p := range s.Properties {
		member = max(member, c.of(p, depth-1))
	}
	for _, e := range c.below(s) {
		member = min(member+c.of(e, depth-1), maxSchemaCost+1)
	}
	add(member)
	c.memo[k] = n
	return n
}
