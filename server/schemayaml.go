package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// yamlSchemaNodes bounds the nodes a YAML schema may expand to: aliases can make a small body
// stand for a huge tree.
const yamlSchemaNodes = 100_000

// yamlSchemaDepth bounds a YAML schema's nesting (aliases count as a level), far above any
// schema's and below what the conversion's recursion could not afford.
const yamlSchemaDepth = 1000

// errSchemaYAMLTooLarge is a YAML schema whose JSON, its aliases expanded, is over the limit:
// the conversion stops there, so that a small body cannot make the server hold a huge one.
var errSchemaYAMLTooLarge = errors.New("over the limit as JSON")

// schemaJSON is a PUT …/schema body as JSON: as sent when its media type is JSON's (or none),
// converted when it is YAML's, for schemas kept as YAML in a pipeline's repository. A YAML
// body whose JSON would be over max bytes is errSchemaYAMLTooLarge.
func schemaJSON(data []byte, media string, max int) ([]byte, error) {
	data = api.WithoutBOM(data)
	switch {
	case isJSONMedia(media) || media == "application/schema+json":
		return data, nil
	case isYAMLMedia(media):
	default:
		return nil, api.Errorf(api.CodeUnsupportedType, "content type %s is not supported for a schema: send application/schema+json, application/json or %s",
			shorten(media), api.ContentTypeYAML)
	}
	out, err := yamlSchemaToJSON(data, max)
	if errors.Is(err, errSchemaYAMLTooLarge) {
		return nil, err
	}
	if err != nil {
		return nil, api.Errorf(api.CodeInvalidSchema, "invalid schema: %v", err)
	}
	return out, nil
}

// yamlSchemaToJSON converts one YAML document to JSON indented by two spaces (as json.Indent
// writes it), keeping its keys' order and what YAML says of each scalar: an unquoted 8080 is a
// number, true a boolean, and a date or a time stays the text it was written as. What JSON
// cannot hold is refused, saying where: a key that is not a string (an unquoted 200, true or
// null), a merge key, a binary, infinity. JSON over max bytes is errSchemaYAMLTooLarge, found
// as it is written: an alias of a long string used many times would otherwise grow gigabytes.
func yamlSchemaToJSON(data []byte, max int) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the YAML document is empty")
		}
		return nil, fmt.Errorf("not valid YAML: %s", yamlErrText(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document (a second ---): send one schema")
	}
	c := yamlConv{budget: yamlSchemaNodes, max: max - 1} // the newline at the end counts
	if err := c.value(&doc, nil, 0, 0); err != nil {
		return nil, err
	}
	if c.out.Len() > c.max {
		return nil, errSchemaYAMLTooLarge
	}
	c.out.WriteByte('\n')
	return c.out.Bytes(), nil
}

// yamlConv writes YAML nodes as indented JSON into out; budget is the nodes it may still
// write, max the bytes.
type yamlConv struct {
	out    bytes.Buffer
	budget int
	max    int
}

// yamlAt is a position in the schema, built into a path only for a message: building each
// node's path as it is met would hold depth × path bytes at once.
type yamlAt struct {
	up    *yamlAt
	key   string
	index int // when key is ""
}

func (a *yamlAt) String() string {
	if a == nil {
		return "the top"
	}
	var segs []string
	for ; a != nil; a = a.up {
		if a.key != "" {
			segs = append(segs, a.key)
		} else {
			segs = append(segs, strconv.Itoa(a.index))
		}
	}
	var b strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(segs[i])
	}
	return shortenPath(b.String())
}

// shortenPath keeps a path in a message short: the keys on it may be long.
func shortenPath(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// newline starts a line at JSON nesting level.
func (c *yamlConv) newline(level int) {
	c.out.WriteByte('\n')
	for range level {
		c.out.WriteString("  ")
	}
}

// value writes n at JSON nesting level; depth counts aliases too.
func (c *yamlConv) value(n *yaml.Node, at *yamlAt, depth, level int) error {
	if c.budget--; c.budget < 0 {
		return fmt.Errorf("over %d nodes once its aliases are expanded", yamlSchemaNodes)
	}
	if c.out.Len() > c.max {
		return errSchemaYAMLTooLarge
	}
	if depth > yamlSchemaDepth {
		return fmt.Errorf("nested deeper than %d levels at %s", yamlSchemaDepth, at)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return errors.New("the YAML document is empty")
		}
		return c.value(n.Content[0], at, depth, level)
	case yaml.AliasNode:
		return c.value(n.Alias, at, depth+1, level)
	case yaml.SequenceNode:
		c.out.WriteByte('[')
		for i, e := range n.Content {
			if i > 0 {
				c.out.WriteByte(',')
			}
			c.newline(level + 1)
			if err := c.value(e, &yamlAt{up: at, index: i}, depth+1, level+1); err != nil {
				return err
			}
		}
		if len(n.Content) > 0 {
			c.newline(level)
		}
		c.out.WriteByte(']')
		return nil
	case yaml.MappingNode:
		c.out.WriteByte('{')
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			for k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				if k.ShortTag() == "!!merge" {
					return fmt.Errorf("line %d: merge keys (<<) are not supported: write the members out", k.Line)
				}
				return fmt.Errorf("line %d: key %s at %s is not a string (JSON keys are): quote it", k.Line, shorten(k.Value), at)
			}
			if seen[k.Value] {
				return fmt.Errorf("line %d: key %s at %s is given twice", k.Line, shorten(k.Value), at)
			}
			seen[k.Value] = true
			if i > 0 {
				c.out.WriteByte(',')
			}
			c.newline(level + 1)
			c.str(k.Value)
			c.out.WriteString(": ")
			if err := c.value(n.Content[i+1], &yamlAt{up: at, key: k.Value}, depth+1, level+1); err != nil {
				return err
			}
		}
		if len(n.Content) > 0 {
			c.newline(level)
		}
		c.out.WriteByte('}')
		return nil
	case yaml.ScalarNode:
		return c.scalar(n, at)
	}
	return fmt.Errorf("line %d: a YAML node of kind %d at %s", n.Line, n.Kind, at)
}

func (c *yamlConv) scalar(n *yaml.Node, at *yamlAt) error {
	switch tag := n.ShortTag(); tag {
	case "!!str", "!!timestamp":
		c.str(n.Value) // a date stays as written: JSON has no dates
	case "!!null":
		c.out.WriteString("null")
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %s", n.Line, yamlErrText(err))
		}
		c.out.WriteString(strconv.FormatBool(v))
	case "!!int", "!!float":
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %s", n.Line, yamlErrText(err))
		}
		if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return fmt.Errorf("line %d: %s at %s is not a number JSON can hold: quote it for a string", n.Line, n.Value, at)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: %v", n.Line, err)
		}
		c.out.Write(b)
	default:
		return fmt.Errorf("line %d: the YAML tag %s at %s has no JSON equivalent", n.Line, tag, at)
	}
	return nil
}

func (c *yamlConv) str(s string) {
	b, _ := json.Marshal(s) // a string always encodes
	c.out.Write(b)
}
