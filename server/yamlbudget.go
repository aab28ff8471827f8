package server

import (
	"context"
	"fmt"
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
	return takeBudget(r, b.sem, b.max, int64(n), b.wait, func() string {
		return fmt.Sprintf("this replica is parsing other large YAML bodies (up to %d bytes at once); nothing was written: retry, or send the body as JSON", b.max)
	})
}

// takeBudget waits for n units of sem (of size, n at least 1 and at most size) until r's client
// goes away or wait passes, and returns what gives them back; else 503, with why's text.
func takeBudget(r *http.Request, sem *semaphore.Weighted, size, n int64, wait time.Duration, why func() string) (release func(), err error) {
	w, err := acquireBudget(r, sem, size, n, wait, why)
	if err != nil {
		return nil, err
	}
	return func() { sem.Release(w) }, nil
}

// acquireBudget is takeBudget, returning the units it took (0 with its error).
func acquireBudget(r *http.Request, sem *semaphore.Weighted, size, n int64, wait time.Duration, why func() string) (int64, error) {
	w := min(max(n, 1), size)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	if err := sem.Acquire(ctx, w); err != nil {
		e := api.Errorf(api.CodeUnavailable, "%s", why())
		e.RetryAfter = 1
		return 0, e
	}
	return w, nil
}

// largeBody is the size from which a kv, txn or apply body is read within the replica's
// bodyBudget: pipelines' bodies are smaller, and read without it.
const largeBody = 256 << 10

// bodiesAtOnce is how many bodies at the limit a replica reads and parses at once: a JSON body
// takes some 3 times its bytes in memory as it is parsed (a 4 MiB txn of tiny ops 11-18 MB),
// and 300 of them sent at once took 5 GB.
const bodiesAtOnce = 8

// bodyBudget bounds the bytes of large kv, txn and apply bodies a replica reads and parses at
// once, weighed by their Content-Length (a body without one, by its route's limit), to
// bodiesAtOnce bodies at the txn limit: 2,500 kv PUTs of 1 MiB held open took 4.35 GB.
type bodyBudget struct {
	sem  *semaphore.Weighted
	max  int64 // the limit of one body
	wait time.Duration
}

func newBodyBudget(max int64) *bodyBudget {
	b := &bodyBudget{max: max, wait: yamlParseWait}
	b.sem = semaphore.NewWeighted(b.size())
	return b
}

// size is the budget's whole: the most bytes of bodies (and of rollbacks' trees) held at once.
func (b *bodyBudget) size() int64 { return bodiesAtOnce * b.max }

// hold adds n bytes to *held, a share of the budget that its caller gives back (sem.Release)
// once done, waiting at most the budget's wait for them: a share over the whole budget is
// refused (413, tooLarge's message), one the budget cannot give in time is 503 to retry.
//
// A share that cannot be had at once is waited for whole, *held given back meanwhile: two
// rollbacks that each held part of their trees while they waited for the rest waited for each
// other until both were refused, and what they held kept kv and txn bodies waiting too. The
// part already read stays in memory while it waits, uncounted: as many as historyReadsAtOnce
// rollbacks read a tree at once (each in its slot), so that is at most that many budgets.
func (b *bodyBudget) hold(ctx context.Context, held *int64, n int64, tooLarge func() string) error {
	if *held+n > b.size() {
		return api.Errorf(api.CodeTooLarge, "%s", tooLarge())
	}
	if n <= 0 || b.sem.TryAcquire(n) {
		*held += max(n, 0)
		return nil
	}
	if *held > 0 {
		b.sem.Release(*held)
		n, *held = *held+n, 0
	}
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		e := api.Errorf(api.CodeUnavailable, "this replica is reading other large bodies or trees (up to %d bytes at once); nothing was written: retry", b.size())
		e.RetryAfter = 1
		return e
	}
	*held += n
	return nil
}

// bodyShareKey marks the context of a request whose share of the bodyBudget is taken, with
// that share (a *share): the console's form, whose handler writes its value through the API's
// (which must not wait for a second share, in vain when the forms on their way hold the whole
// budget).
type bodyShareKey struct{}

// share is what one request holds of the bodyBudget: its body's share, and the trees it reads
// within the budget added to it (a rollback's tree at its revision, a canary write's live tree).
// One count, so that a wait for more gives all of it back meanwhile (see hold): a write with
// canary that held its body's share while it waited for its live tree's waited, in the
// budget's queue, behind a larger share that could not be had while it held its own.
type share struct {
	b    *bodyBudget
	held int64
}

// release gives the whole share back; it may be called again.
func (sh *share) release() { sh.give(sh.held) }

// give gives n of the share back (what it holds, at most): the part of a tree let go.
func (sh *share) give(n int64) {
	if n = min(n, sh.held); n > 0 {
		sh.b.sem.Release(n)
		sh.held -= n
	}
}

// take waits for r's body's share of the budget when it is large, and returns the request's
// share, whose release gives it back (none for a small body); limit is the route's bound on
// the body. A request of the console's form has its share already: that one is returned.
func (b *bodyBudget) take(r *http.Request, limit int64) (*share, error) {
	if sh, ok := r.Context().Value(bodyShareKey{}).(*share); ok {
		return sh, nil
	}
	sh := &share{b: b}
	n := r.ContentLength
	switch {
	case n < 0:
		n = limit // not known until read: at most the limit
	case n < largeBody:
		return sh, nil
	}
	w, err := acquireBudget(r, b.sem, b.size(), min(n, limit, b.max), b.wait, func() string {
		return fmt.Sprintf("this replica is reading other large bodies (up to %d bytes at once); nothing was written: retry", b.size())
	})
	sh.held = w
	return sh, err
}

// shareOf is r's share of the bodyBudget when its console form took one (see bodyShareKey),
// else a new one of nothing.
func (b *bodyBudget) shareOf(r *http.Request) *share {
	if sh, ok := r.Context().Value(bodyShareKey{}).(*share); ok {
		return sh
	}
	return &share{b: b}
}

// yamlMedia are the media types a YAML body may be sent with.
var yamlMedia = [...]string{api.ContentTypeYAML, "application/x-yaml", "text/yaml", "text/x-yaml"}

// isYAMLMedia says whether media type m is one of YAML's.
func isYAMLMedia(m string) bool { return slices.Contains(yamlMedia[:], m) }
