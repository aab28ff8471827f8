package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

func (t *tokenRecord) info() api.TokenInfo {
	return api.TokenInfo{TokenRequest: api.TokenRequest{Name: t.Name, Appliance: t.Appliance, Read: grantsShown(t.Read), Write: grantsShown(t.Write), Admin: t.Admin},
		Created: t.Created, Instance: t.Instance}
}

// grantsShown is a record's prefixes as a token request gives them: the root, kept as "", is
// "/", since an empty prefix is refused, never taken for every key (a grant read from the list
// and sent back, or checked for "/", must mean what it says).
func grantsShown(prefixes []string) []string {
	if !slices.Contains(prefixes, "") {
		return prefixes
	}
	out := slices.Clone(prefixes)
	for i, p := range out {
		if p == "" {
			out[i] = "/"
		}
	}
	return out
}

// validateTokenName checks the name of a user's token: a segment, never an instance token's
// reserved name (which has ':'), and never what may be a token's secret pasted where the name
// goes: the log writes a token's name in the lines of its requests and writes.
func validateTokenName(name string) error {
	if isInstanceToken(name) || strings.Contains(name, ":") {
		return api.Errorf(api.CodeInvalidName, "invalid token name %s: names with ':' are reserved for instance tokens (shoelace-agent run enrolls; shoelace appliance forget frees one)", shorten(name))
	}
	if api.RedactSecrets(name) != name {
		return api.Errorf(api.CodeInvalidName, "invalid token name %s: it holds what looks like a token's secret (sl_ and 43 base64url characters), which the log never writes; choose a name", shorten(name))
	}
	return api.ValidateSegment("token name", name)
}

// validateTokenRequest checks a token request and normalises its prefixes.
func validateTokenRequest(req *api.TokenRequest) error {
	if err := validateTokenName(req.Name); err != nil {
		return err
	}
	kinds := 0
	if req.Appliance != "" {
		kinds++
		if err := api.ValidateSegment("appliance name", req.Appliance); err != nil {
			return err
		}
	}
	if len(req.Read) > 0 || len(req.Write) > 0 {
		kinds++
	}
	if req.Admin {
		kinds++
	}
	if kinds != 1 {
		return bodyError("a token needs exactly one kind of grant: appliance, read/write prefixes, or admin")
	}
	for _, g := range []struct {
		field string
		list  *[]string
	}{{"read", &req.Read}, {"write", &req.Write}} {
		list := g.list
		if len(*list) > 100 {
			return bodyError("a token may hold at most 100 read and 100 write prefixes")
		}
		kept := (*list)[:0]
		for _, p := range *list {
			if p == "" {
				// The root: every key. An unset variable ("read":["$PREFIX"]) or a stray "" in a
				// list must not grant it by accident, as the CLI's --read "" does not.
				return api.Errorf(api.CodeInvalidKey, "%s prefix \"\" is an empty prefix, which would grant every key: give \"/\" to mean every key", g.field)
			}
			np, err := api.ValidatePrefix(p)
			if err != nil {
				return err
			}
			// "shared", "shared/" and "shared" again grant one prefix: keep it once.
			if !slices.Contains(kept, np) {
				kept = append(kept, np)
			}
		}
		*list = kept
	}
	return nil
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	if err := jsonContent(r); err != nil {
		return err
	}
	data, err := readBody(w, r, 64<<10, func() error {
		return api.Errorf(api.CodeBodyTooLarge, "token request is over the limit of 65536 bytes")
	})
	if err != nil {
		return err
	}
	var req api.TokenRequest
	if err := strictJSON(data, &req); err != nil {
		return err
	}
	if err := validateTokenRequest(&req); err != nil {
		return err
	}
	secret, err := newSecret()
	if err != nil {
		return err
	}
	rec := &tokenRecord{
		Name: req.Name, Hash: hashSecret(secret), Appliance: req.Appliance,
		Read: req.Read, Write: req.Write, Admin: req.Admin, Created: time.Now().UTC().Truncate(time.Second),
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	rev, err := s.st.SysPut(ctx, tokenPrefix+rec.Name, body, 0)
	if errors.Is(err, api.ErrConflict) {
		return api.Errorf(api.CodeConflict, "token %s exists already; revoke it first", shorten(rec.Name))
	}
	if err != nil {
		return err
	}
	s.auth.set(rec, rev)
	s.audit(r, "token-create", []string{rec.Name}, rev)
	return writeJSON(w, http.StatusCreated, rev, api.TokenCreated{TokenInfo: rec.info(), Token: secret, Revision: rev})
}

// handleListTokens answers GET /v1/tokens[?all&limit&after]: the tokens by name, a page of
// them with limit, as the other lists page (limit as theirs, but no limit is every token;
// after, the next of the previous page, is where this one starts). Only the page is read from etcd: with ?all, a fleet's instance tokens (one per
// VM) would make every request read them all; without it, their span is not read at all.
func (s *Server) handleListTokens(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "all", "limit", "after")
	if err != nil {
		return err
	}
	all, err := flag(q, "all") // instance tokens too; one per enrolled VM, they would drown the rest
	if err != nil {
		return err
	}
	limit, _, err := pageParams(q)
	if err != nil {
		return err
	}
	if q.Get("limit") == "" {
		// Every token, as before pages: a client that does not ask for a page gets them all,
		// never a first page it takes for the whole list.
		limit = 0
	}
	after := q.Get("after")
	if after != "" && !tokenListName(after) {
		return api.Errorf(api.CodeInvalidRequest, "query parameter after must be a token name (the next of the previous page), not %s", shorten(after))
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	from, end := tokenPrefix, tokenPrefix[:len(tokenPrefix)-1]+string(tokenPrefix[len(tokenPrefix)-1]+1)
	if after != "" {
		from = tokenPrefix + after + "\x00"
	}
	spans := []store.SysSpan{{From: from, To: end}}
	if !all {
		// Instance tokens are the names under "instance:" (':' is refused in the others).
		spans = []store.SysSpan{{From: from, To: tokenPrefix + "instance:"}, {From: max(from, tokenPrefix+"instance;"), To: end}}
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	kvs, rev, more, err := s.st.SysPage(ctx, limit, spans...)
	if err != nil {
		return err
	}
	// A page must not end on a record it does not list (whose key is no token name, or that
	// is no token's record: only a direct etcd write makes one): its next would be refused as
	// after, or name nothing listed. Read on past such records, at the page's revision, up to
	// a token's record, which the page then ends on (it held fewer than limit tokens): by keys,
	// many to a read, and with one more read for the values of the keys named as tokens, so
	// that a run of thousands of them costs a few reads, not one each.
	for more && len(kvs) > 0 && !listed(kvs[len(kvs)-1], all) {
		past := kvs[len(kvs)-1].Key + "\x00"
		var rest []store.SysSpan
		for _, sp := range spans {
			rest = append(rest, store.SysSpan{From: max(sp.From, past), To: sp.To})
		}
		keys, keysMore, err := s.st.SysPageAt(ctx, rev, strayReadKeys, true, rest...)
		if err != nil {
			return err
		}
		more = keysMore
		if len(keys) == 0 {
			break
		}
		last := keys[len(keys)-1]
		next := last // only the last key read is kept: the next read starts past it
		first := slices.IndexFunc(keys, func(kv store.SysKV) bool {
			return tokenListName(strings.TrimPrefix(kv.Key, tokenPrefix))
		})
		if first >= 0 {
			var named []store.SysSpan
			for _, sp := range rest {
				named = append(named, store.SysSpan{From: max(sp.From, keys[first].Key), To: min(sp.To, last.Key+"\x00")})
			}
			recs, _, err := s.st.SysPageAt(ctx, rev, len(keys)-first, false, named...)
			if err != nil {
				return err
			}
			for _, kv := range recs {
				if listed(kv, all) {
					next = kv
					more = more || kv.Key != last.Key
					break
				}
			}
		}
		kvs[len(kvs)-1] = next // in place of the record read before, which is not listed either
	}
	out := api.TokenList{Revision: rev, Tokens: []api.TokenInfo{}}
	for _, kv := range kvs {
		rec, ok := listedToken(kv, all)
		if !ok {
			continue
		}
		ti := rec.info()
		if t, ok := s.auth.used(rec.Name); ok {
			ti.LastUsed = &t
		}
		out.Tokens = append(out.Tokens, ti)
	}
	if more && len(kvs) > 0 {
		// The last key read, listed or not (a record that does not decode is left out): the
		// next page starts past it.
		out.Next = strings.TrimPrefix(kvs[len(kvs)-1].Key, tokenPrefix)
	}
	return writeJSON(w, http.StatusOK, rev, out)
}

// strayReadKeys is how many keys a read past records that are no token's takes at once.
const strayReadKeys = 1000

// listedToken returns the token of kv, when kv is a record GET /v1/tokens lists (with all,
// instance tokens' too): a token's record under its name.
func listedToken(kv store.SysKV, all bool) (*tokenRecord, bool) {
	rec, err := decodeToken(kv.Key, kv.Value)
	return rec, err == nil && (rec.Instance == "" || all) && tokenListName(rec.Name)
}

// listed reports whether kv is a record GET /v1/tokens lists (see listedToken).
func listed(kv store.SysKV, all bool) bool {
	_, ok := listedToken(kv, all)
	return ok
}

// tokenListName reports whether name may be a token's name as listings give it (a page's
// next): a segment, or an instance token's segments joined by ':'.
func tokenListName(name string) bool {
	for part := range strings.SplitSeq(name, ":") {
		if api.ValidateSegment("token name", part) != nil {
			return false
		}
	}
	return true
}

func (s *Server) handleDeleteToken(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	name := r.PathValue("name")
	if isInstanceToken(name) {
		// Its instance would stay enrolled, its name refused for --instance-stale.
		return api.Errorf(api.CodeInvalidName, "token %s is an instance token: free its instance with shoelace appliance forget APPLIANCE INSTANCE, which revokes it too", shorten(name))
	}
	if err := api.ValidateSegment("token name", name); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	admins, err := s.keepsAnAdmin(ctx, name)
	if err != nil {
		return err
	}
	// Revoking an admin token, the other admin tokens seen must still be there when it is
	// deleted: two admins revoked at once must not both go.
	rev, err := s.st.SysDeleteIfPresent(ctx, tokenPrefix+name, admins)
	if errors.Is(err, api.ErrConflict) {
		return api.Errorf(api.CodeConflict, "token %s not revoked: another admin token was revoked meanwhile; run the revocation again", shorten(name))
	}
	setIndex(w, rev)
	if errors.Is(err, api.ErrNotFound) {
		return api.Errorf(api.CodeNotFound, "token %s not found", shorten(name))
	}
	if err != nil {
		return err
	}
	s.auth.remove(name, rev)
	s.hub.revoke(name)
	s.audit(r, "token-revoke", []string{name}, rev)
	return writeJSON(w, http.StatusOK, rev, api.WriteResult{Revision: rev})
}

// keepsAnAdmin refuses to revoke the last admin token: without one nobody could create or
// revoke tokens again (the server makes an admin token only for a store with no tokens at all).
// When name is an admin token, it returns the keys of the other admin tokens, which must still
// exist when it is deleted.
func (s *Server) keepsAnAdmin(ctx context.Context, name string) (others []string, err error) {
	m, _, err := s.st.SysList(ctx, tokenPrefix)
	if err != nil {
		return nil, err
	}
	target := false
	for k, v := range m {
		rec, err := decodeToken(k, v)
		if err != nil || !rec.Admin {
			continue
		}
		if rec.Name == name {
			target = true
		} else {
			others = append(others, k)
		}
	}
	if !target {
		return nil, nil
	}
	if len(others) == 0 {
		return nil, api.Errorf(api.CodeConflict, "token %s is the last admin token: create another one first (shoelace token create --name NAME --admin), or nobody can manage tokens any more", shorten(name))
	}
	return others, nil
}
