package server

import (
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// TestBodies_ByteOrderMarkIgnored: a JSON or YAML body that begins with a UTF-8 byte order mark
// (a file written by Notepad or Windows PowerShell, sent with curl --data-binary @file) is read
// as without it, as RFC 8259 lets a parser do and as the CLI does with the files it sends;
// before, it was refused as not valid JSON with a hint to send YAML's Content-Type. A kv value
// keeps its bytes, the mark included.
func TestBodies_ByteOrderMarkIgnored(t *testing.T) {
	f := newFixture(t)
	const bom = "\ufeff"
	f.must(f.do("POST", "/v1/txn", bom+`{"ops":[{"op":"put","key":"shared/a","value":"1"}]}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web", bom+`{"keys":{"port":"80"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web", bom+"keys:\n  port: \"81\"\n", "Content-Type", "application/yaml"), 200, nil)
	f.must(f.do("POST", "/v1/tokens", bom+`{"name":"ci","read":["shared"]}`), 201, nil)
	f.must(f.do("PUT", "/v1/appliances/web/schema", bom+`{"required":["port"]}`), 200, nil)
	var sch map[string]any
	f.must(f.do("GET", "/v1/appliances/web/schema", ""), 200, &sch)
	if len(sch) != 1 || sch["required"] == nil {
		t.Errorf("schema kept as %v, want the body without its mark", sch)
	}
	f.must(f.do("PUT", "/v1/kv/shared/bom", bom+"v"), 200, nil)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/shared/bom", ""), 200, &kv)
	if got := kv.Value; got != bom+"v" {
		t.Errorf("a kv value with a mark reads back %q, want it kept", got)
	}
}
