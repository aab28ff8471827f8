package server

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Bounds of the answers made for one request (a listing, a history, a view read without an
// index: not a long-poll's answer, which its waiters share) that their clients have not taken
// yet. Such an answer stays in memory until the client has read it, for up to the write
// deadline (a minute): a client that asks at its rate limit and reads nothing held a copy per
// request (300 requests for an 8 MiB listing took the replica from 130 MiB to 2 GiB in three
// seconds, on the way to being killed for memory).
const (
	// answerCounted is the least answer counted: smaller ones go to the socket's buffer at once.
	answerCounted = 64 << 10
	// answerPerToken is what one token's answers may hold; one answer always fits when its
	// token holds none, however large.
	answerPerToken = 64 << 20
	// answerPerReplica is what every token's answers may hold together.
	answerPerReplica = 512 << 20
)

// answerBudget counts the bytes of the answers being written, per token and in all.
type answerBudget struct {
	// perToken and perReplica are the bounds (0: answerPerToken and answerPerReplica).
	perToken, perReplica int64

	mu      sync.Mutex
	total   int64
	byToken map[string]int64
}

// held is what the answers being written hold, in all.
func (b *answerBudget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// take charges an answer of n bytes to token (a token's name, or "enrolled " and the name of
// the agent token whose enrolled instance tokens share one share), or refuses it: 429 when the token holds its
// share, 503 when the replica holds its own.
func (b *answerBudget) take(token string, n int64) error {
	perToken, perReplica := b.perToken, b.perReplica
	if perToken <= 0 {
		perToken = answerPerToken
	}
	if perReplica <= 0 {
		perReplica = answerPerReplica
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.byToken[token]
	if held > 0 && held+n > perToken {
		whose := "token " + shorten(token)
		if parent, ok := strings.CutPrefix(token, "enrolled "); ok {
			whose = "the instance tokens that token " + shorten(parent) + " enrolled"
		}
		e := api.Errorf(api.CodeRateLimited, "the answers of %s not yet read by their clients hold %d MiB on this replica, its share; read them, then retry", whose, held>>20)
		e.RetryAfter = 1
		return e
	}
	if b.total > 0 && b.total+n > perReplica {
		e := api.Errorf(api.CodeUnavailable, "the answers not yet read by their clients hold %d MiB on this replica; retry later", b.total>>20)
		e.RetryAfter = 1
		return e
	}
	if b.byToken == nil {
		b.byToken = map[string]int64{}
	}
	b.byToken[token] = held + n
	b.total += n
	return nil
}

// give returns what take charged.
func (b *answerBudget) give(token string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if left := b.byToken[token] - n; left > 0 {
		b.byToken[token] = left
	} else {
		delete(b.byToken, token)
	}
}

// holdAnswer charges an answer of n bytes, made for the request that w answers alone, to the
// budget of its token; release gives it back once the answer is written. Answers under
// answerCounted, and writers that are not a request's (the console's inner calls), are free.
func holdAnswer(w http.ResponseWriter, n int) (release func(), err error) {
	return holdAnswerPart(w, n, true)
}

// holdAnswerPart is holdAnswer for a part of an answer written in parts (a paged listing),
// which charges the token's rate limit for the whole once (charge false), as for one answer.
func holdAnswerPart(w http.ResponseWriter, n int, charge bool) (release func(), err error) {
	sw, ok := w.(*statusWriter)
	if !ok || n < answerCounted {
		return func() {}, nil
	}
	b, token := &sw.s.answers, sw.info.token
	if p := sw.info.p; p != nil && p.parent != "" {
		// The instance tokens an agent token enrolled share one share, apart from the agent
		// token's own: each with a share of its own, one holder of the fleet's agent token
		// enrolling a few and stalling a view with each filled the replica's bound, and every
		// other token's large answers were 503.
		token = "enrolled " + p.parent
	}
	if err := b.take(token, int64(n)); err != nil {
		return nil, err
	}
	if charge {
		sw.s.chargeAnswer(sw.info.p, n)
	}
	return func() { b.give(token, int64(n)) }, nil
}

// answerUnit is the bytes of a large answer that cost its token one more request of its rate
// limit (chargeAnswer).
const answerUnit = 64 << 10

// chargeAnswer makes an operator's token (read, write or admin) pay for a large answer as for
// a request per answerUnit of it beyond the first, up to one burst of its rate limit: the rate
// limit counted requests, and one read token asking within it for an 8 MiB listing a hundred
// times a second kept the store reading 800 MB/s, until its reads timed out for every client.
// The answer is sent; the token's next requests wait for the limit to refill (the CLI retries
// after Retry-After). Agents' tokens are not charged: a view is one appliance's, and its
// long-polls share their answers.
func (s *Server) chargeAnswer(p *principal, n int) {
	if p == nil || p.appliance != "" || n < 2*answerUnit {
		return
	}
	s.auth.limits.charge("token "+p.name, n/answerUnit-1, time.Now())
}
