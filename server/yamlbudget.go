package server

import (
	"context"
	"net/http"
	"slices"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// yamlParseWait is how long an apply body in YAML waits for the replica's YAML budget.
const yamlParseWait = 10 * time.Second

// yamlBudget bounds the YAML bodies a replica parses at once, weighed by their bytes, to one
// body at the limit (--max-value-bytes + 4 MiB): the YAML parser builds the document's whole tree first,
// some 100 bytes of memory for each byte of a body of tiny nodes (a 5 MiB body of "- 1" lines:
// about 470 MB), so a writer sending many at once could take a replica's memory. Small bodies
// pass side by side; a large one waits for the others, and its writer is answered 503 to retry
// when it waited yamlParseWait.
type yamlBudget struct {
	sem  *semaphore.Weighted
	max  int64
	wait time.Duration // how long a body waits for its share
}

func newYAMLBudget(max int64) *yamlBudget {
	return &yamlBudget{sem: semaphore.NewWeighted(max), max: max, wait: yamlParseWait}
}

// take waits for n bytes of the budget (at most all of it) until r's client goes away or
// b.wait passes, and returns what gives them back.
func (b *yamlBudget) take(r *http.Request, n int) (release func(), err error) {
	w := min(max(int64(n), 1), b.max)
	ctx, cancel := context.WithTimeout(r.Context(), b.wait)
	defer cancel()
	if err := b.sem.Acquire(ctx, w); err != nil {
		e := api.Errorf(api.CodeUnavailable, "this replica is parsing other large YAML bodies (up to %d bytes at once); nothing was written: retry, or send the body as JSON", b.max)
		e.RetryAfter = 1
		return nil, e
	}
	return func() { b.sem.Release(w) }, nil
}

// yamlMedia are the media types a YAML body may be sent with.
var yamlMedia = [...]string{api.ContentTypeYAML, "application/x-yaml", "text/yaml", "text/x-yaml"}

// isYAMLMedia says whether media type m is one of YAML's.
func isYAMLMedia(m string) bool { return slices.Contains(yamlMedia[:], m) }
