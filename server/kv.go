package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// query checks that q holds only the allowed parameters.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	return queryAlso(r, "", allowed...)
}

// queryAlso is query, whose refusal of an unknown parameter ends with also: the route's other
// parameters, which another handler reads.
func queryAlso(r *http.Request, also string, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalidRequest, "malformed query string: %v", err)
	}
outer:
	for k := range q {
		for _, a := range allowed {
			if k == a {
				continue outer
			}
		}
		if len(allowed) == 0 {
			return nil, api.Errorf(api.CodeInvalidRequest, "unknown query parameter %s: this route takes none", shorten(k))
		}
		return nil, api.Errorf(api.CodeInvalidRequest, "unknown query parameter %s: this route takes %v%s", shorten(k), allowed, also)
	}
	for k, v := range q {
		if len(v) > 1 {
			return nil, api.Errorf(api.CodeInvalidRequest, "query parameter %s is given %d times", shorten(k), len(v))
		}
	}
	return q, nil
}

// flag reads a boolean query parameter: present with no value, "true" or "1" is true.
func flag(q url.Values, name string) (bool, error) {
	return flagValue(name, queryParam{v: q.Get(name), set: q.Has(name)})
}

// flagValue reads p, the boolean query parameter name (see flag).
func flagValue(name string, p queryParam) (bool, error) {
	if !p.set {
		return false, nil
	}
	switch p.v {
	case "", "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, api.Errorf(api.CodeInvalidRequest, "query parameter %s must be true or false, not %s", name, shorten(p.v))
}

// revParam reads a revision parameter such as cas or index: -1 when absent.
func revParam(q url.Values, name string) (int64, error) {
	return revValue(name, queryParam{v: q.Get(name), set: q.Has(name)})
}

// revValue reads p, the revision parameter name (see revParam).
func revValue(name string, p queryParam) (int64, error) {
	if !p.set {
		return -1, nil
	}
	n, err := strconv.ParseInt(p.v, 10, 64)
	if err != nil || n < 0 {
		return 0, api.Errorf(api.CodeInvalidRequest, "query parameter %s must be a revision (an integer >= 0), not %s", name, shorten(p.v))
	}
	return n, nil
}

func (s *Server) opCtx(r *http.Request) (context.Context, context.CancelFunc) {
	ctx := r.Context()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// A write is not cut short when its client goes away: once sent to etcd it may apply,
		// and the server must learn whether it did, to write its audit line (and settle it,
		// see store.commit) even though nobody reads the answer. It ends, as at its
		// deadline, when the shutdown grace does (see graceCtx).
		ctx = withValues{Context: s.reqBase, vals: context.WithoutCancel(ctx)}
	}
	return context.WithTimeout(ctx, opTimeout)
}

func (s *Server) handleGetKV(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Query().Has("history") {
		return s.handleKeyHistory(w, r)
	}
	q, err := queryAlso(r, ", or history with limit (a key's history)", "recurse", "keys")
	if err != nil {
		return err
	}
	recurse, err := flag(q, "recurse")
	if err != nil {
		return err
	}
	keysOnly, err := flag(q, "keys")
	if err != nil {
		return err
	}
	p := principalOf(r)
	raw := r.PathValue("key")
	if !recurse {
		ctx, cancel := s.opCtx(r)
		defer cancel()
		if keysOnly {
			return api.Errorf(api.CodeInvalidRequest, "query parameter keys needs recurse")
		}
		if err := api.ValidateKey(raw); err != nil {
			return err
		}
		if err := p.mayRead(raw); err != nil {
			return err
		}
		kv, rev, err := s.st.Get(ctx, raw)
		setIndex(w, rev)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, rev, kv)
	}
	prefix, err := api.ValidatePrefix(raw)
	if err != nil {
		return err
	}
	filter, err := p.listFilter(prefix)
	if err != nil {
		return err
	}
	return s.writeListing(w, r, prefix, keysOnly, filter)
}

// listAnswer is api.List as the wire carries it: "entries" (or with &keys, "keys") is always
// there, [] when nothing is under the prefix, rather than left out.
type listAnswer struct {
	Revision int64     `json:"revision"`
	Entries  *[]api.KV `json:"entries,omitempty"`
	Keys     *[]string `json:"keys,omitempty"`
}

// checkBodyEncoding refuses (415) a body sent with a Content-Encoding other than identity: every
// header of that name and every entry of their lists is read ("identity" then "gzip" is gzip).
// Bodies are read as sent: a gzip body stored as its compressed bytes (or a plain one labelled
// gzip stored as if it were not) is refused rather than guessed at. what names the body.
func checkBodyEncoding(r *http.Request, what string) error {
	vs := r.Header.Values("Content-Encoding")
	for _, v := range vs {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "identity") {
				return api.Errorf(api.CodeUnsupportedType, "%s is read as sent: Content-Encoding %s is not supported; send it uncompressed, without Content-Encoding", what, shorten(strings.Join(vs, ", ")))
			}
		}
	}
	return nil
}

// readBody reads a request body of at most max bytes; over it is a 413 error made by tooBig.
func readBody(w http.ResponseWriter, r *http.Request, max int64, tooBig func() error) ([]byte, error) {
	return readBodyWatched(w, r, max, tooBig, nil)
}

// readBodyWatched is readBody that lets watch (when not nil) read the body as it arrives: an
// *api.Error of watch refuses the request at once, before the rest is read; any other error of
// it is left to whoever parses the whole body, which is read on.
func readBodyWatched(w http.ResponseWriter, r *http.Request, max int64, tooBig func() error, watch func(io.Reader) error) ([]byte, error) {
	if err := checkBodyEncoding(r, "the request body"); err != nil {
		return nil, err
	}
	if r.ContentLength > max {
		return nil, tooBig()
	}
	body := http.MaxBytesReader(w, r.Body, max)
	var data []byte
	var err error
	if watch == nil {
		data, err = readAll(body, r.ContentLength)
	} else {
		var buf bytes.Buffer
		tee := io.TeeReader(body, &buf)
		var e *api.Error
		if werr := watch(tee); errors.As(werr, &e) {
			return nil, werr
		}
		// What watch left unread, into buf too; a read error it met comes again here.
		_, err = io.Copy(io.Discard, tee)
		data = buf.Bytes()
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooBig()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			e := api.Errorf(api.CodeInvalidBody, "the request body did not arrive in time")
			e.Status = http.StatusRequestTimeout
			return nil, e
		}
		return nil, api.Errorf(api.CodeInvalidBody, "read request body: %v", err)
	}
	// The body is in: lift its read deadline, which would otherwise end the request's context
	// (net/http watches the idle connection for the client going away).
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	return data, nil
}

// readAll is io.ReadAll of a body of size bytes (-1: not known), in a buffer of that size up to
// readAllAhead: a body with a Content-Length (a value of a few dozen bytes, as most are) took
// io.ReadAll's first 512 bytes. A larger body grows the buffer as its bytes come: a
// Content-Length is the client's word, and a client that claims a large body and sends none
// must not hold that much of the server's memory per connection.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, min(size, readAllAhead)+1) // one more: the read that finds the end finds it in place
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than it said: grow as io.ReadAll does
		}
	}
}

// readAllAhead is the most that readAll takes for a body before its bytes come.
const readAllAhead = 4 << 10

// putKVQuery is what PUT /v1/kv/{key} takes in its query.
var putKVQuery = append([]string{"cas"}, rolloutQuery...)

func (s *Server) handlePutKV(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, putKVQuery...)
	if err != nil {
		return err
	}
	cas, err := revParam(q, "cas")
	if err != nil {
		return err
	}
	strat, force, err := rolloutParams(q)
	if err != nil {
		return err
	}
	if strat != nil && q.Has("cas") {
		return api.Errorf(api.CodeInvalidRequest, "cas and canary do not go together: a rollout writes the live tree only when it is promoted")
	}
	key := r.PathValue("key")
	if err := api.ValidateKey(key); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayWrite(key); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	max := s.cfg.MaxValueBytes
	sh, err := s.bodyBudget.take(r, int64(max))
	if err != nil {
		return err
	}
	defer sh.release()
	value, err := readBody(w, r, int64(max), func() error {
		return api.Errorf(api.CodeValueTooLarge, "value of %s is over the limit of %d bytes (--max-value-bytes)", shorten(key), max)
	})
	if err != nil {
		return err
	}
	if err := api.ValidateValue(key, value, max); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	v := string(value)
	if err := s.rolloutWrite(ctx, w, r, strat, force, []api.Op{{Op: api.OpPut, Key: key, Value: v}}, api.KindPut, sh); err != errPlainWrite {
		return err
	}
	res, err := s.st.PutResult(s.releaseCtx(ctx, r, api.KindPut, "", 0), key, v, cas)
	if err != nil {
		return err
	}
	return s.wrote(w, r, "put", []string{key}, res)
}

// wrote answers a write of keys that succeeded: its audit line and {"revision"}; for one that
// changed nothing (and wrote nothing), {"revision","unchanged":true}.
func (s *Server) wrote(w http.ResponseWriter, r *http.Request, op string, keys []string, res store.Applied) error {
	if res.Unchanged {
		s.audit(r, op, keys, res.Revision, slog.Bool("unchanged", true))
		return writeJSON(w, http.StatusOK, res.Revision, api.WriteResult{Revision: res.Revision, Unchanged: true})
	}
	s.audit(r, op, keys, res.Revision)
	return writeRevision(w, res.Revision)
}

func (s *Server) handleDeleteKV(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "recurse", "force")
	if err != nil {
		return err
	}
	recurse, err := flag(q, "recurse")
	if err != nil {
		return err
	}
	force, err := flag(q, "force")
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	if recurse {
		if key, err = api.ValidatePrefix(key); err != nil {
			return err
		}
		if key == "" {
			return api.Errorf(api.CodeInvalidKey, "refusing to delete the root recursively: name a prefix")
		}
	} else if err := api.ValidateKey(key); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayWrite(key); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	if err := s.rolloutWrite(ctx, w, r, nil, force, []api.Op{{Op: api.OpDelete, Key: key, Recurse: recurse}}, api.KindDelete, nil); err != errPlainWrite {
		return err
	}
	rev, n, err := s.st.Delete(s.releaseCtx(ctx, r, api.KindDelete, "", 0), key, recurse)
	setIndex(w, rev)
	if err != nil {
		return err
	}
	op := "delete"
	if recurse {
		op = "delete-recurse"
	}
	s.audit(r, op, []string{key}, rev)
	return writeJSON(w, http.StatusOK, rev, api.DeleteResult{Revision: rev, Deleted: n})
}

func (s *Server) handleTxn(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, rolloutQuery...)
	if err != nil {
		return err
	}
	strat, force, err := rolloutParams(q)
	if err != nil {
		return err
	}
	if err := jsonContent(r); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayWriteAny(); err != nil {
		// Before the body is read: a token that may write nothing (an agent's) must not make
		// the replica read and parse 5 MiB bodies, many at once.
		return err
	}
	max := s.cfg.maxBodyBytes()
	sh, err := s.bodyBudget.take(r, max)
	if err != nil {
		return err
	}
	defer sh.release()
	data, err := readBody(w, r, max, func() error {
		return api.Errorf(api.CodeBodyTooLarge, "txn body is over the limit of %s", s.cfg.bodyLimit())
	})
	if err != nil {
		return err
	}
	t, err := parseTxn(data, s.cfg.MaxValueBytes, s.cfg.MaxTxnOps)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(t.Ops))
	for _, op := range t.Ops {
		if err := p.mayWrite(op.Key); err != nil {
			return err
		}
		keys = append(keys, op.Key)
	}
	for _, g := range t.Guards {
		if err := p.mayRead(g.Key); err != nil {
			return err
		}
	}
	if err := s.writable(); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	kind := api.KindTxn
	if r.Header.Get(api.HeaderImport) != "" {
		kind = api.KindImport
	}
	if strat != nil && len(t.Guards) > 0 {
		return api.Errorf(api.CodeInvalidRequest, "guards and canary do not go together: a rollout writes the live tree only when it is promoted")
	}
	if err := s.rolloutWrite(ctx, w, r, strat, force, t.Ops, kind, sh); err != errPlainWrite {
		return err
	}
	res, err := s.st.TxnResult(s.releaseCtx(ctx, r, kind, "", 0), t)
	setIndex(w, res.Revision)
	if err != nil {
		return err
	}
	return s.wrote(w, r, "txn", keys, res)
}

// jsonContent refuses a body that says it is not JSON (curl's default form type is read as JSON).
func jsonContent(r *http.Request) error {
	if isJSONMedia(mediaType(r)) {
		return nil
	}
	return api.Errorf(api.CodeUnsupportedType, "content type %s is not supported: send application/json", shorten(r.Header.Get("Content-Type")))
}
