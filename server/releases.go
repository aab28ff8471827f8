package server

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Defaults of the release limits.
const (
	// DefaultReleaseRetention is how many releases are kept (the newest).
	DefaultReleaseRetention = 1000
	// DefaultReleaseMaxAge is how long a release is kept at most.
	DefaultReleaseMaxAge = 90 * 24 * time.Hour
	// DefaultReleaseMaxBytes bounds the bytes of the releases kept, records and copies.
	DefaultReleaseMaxBytes = 256 << 20
	// releasePruneEvery is how often a replica prunes releases.
	releasePruneEvery = 10 * time.Minute
	// defaultReleasePage and maxReleasePage bound a page of history.
	defaultReleasePage = 50
	maxReleasePage     = 1000
)

// ParseAge parses --release-max-age: a number of days ("90d") or a Go duration ("2160h").
func ParseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("age %q: want a number of days such as 90d, or a duration such as 720h", s)
		}
		// More days than a time.Duration holds would wrap around to a short age (213504d is
		// 25 minutes) and prune nearly every release.
		if maxDays := int(math.MaxInt64 / int64(24*time.Hour)); n > maxDays {
			return 0, fmt.Errorf("age %q: at most %dd (about 292 years); 0 keeps releases of any age", s, maxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("age %q: want a number of days such as 90d, or a duration such as 720h", s)
	}
	return v, nil
}

// sealer encrypts the secret values of release copies with AES-256-GCM: with its first key,
// and decrypts with any of its keys (the older ones kept for rotation).
type sealer struct {
	id   string
	aead cipher.AEAD
	old  map[string]cipher.AEAD // every key by id, the current one included
}

// loadSealer reads --secrets-key-file: one 32-byte key per line, as 64 hex digits or base64
// (`openssl rand -hex 32`). The first seals; the others only open what they sealed before a
// rotation, until no retained release needs them. The file must not be readable by group or
// others. "" is no key.
func loadSealer(path string) (*sealer, error) {
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--secrets-key-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("--secrets-key-file %s has mode %04o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--secrets-key-file: %w", err)
	}
	s := &sealer{old: map[string]cipher.AEAD{}}
	for n, line := range strings.Split(string(data), "\n") {
		text := strings.TrimSpace(line)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, err := hex.DecodeString(text)
		if err != nil {
			key, err = base64.StdEncoding.DecodeString(text)
		}
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("--secrets-key-file %s line %d: want a 32-byte key as 64 hex digits or base64 (openssl rand -hex 32)", path, n+1)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		sum := sha256.Sum256(key)
		id := hex.EncodeToString(sum[:8])
		if s.aead == nil {
			s.id, s.aead = id, aead
		}
		s.old[id] = aead
	}
	if s.aead == nil {
		return nil, fmt.Errorf("--secrets-key-file %s holds no key: want a 32-byte key as 64 hex digits (openssl rand -hex 32)", path)
	}
	return s, nil
}

// seal encrypts plain: base64 of nonce and ciphertext, with the key's id.
func (s *sealer) seal(plain []byte) (string, string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", "", fmt.Errorf("nonce: %w", err)
	}
	return s.id, base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, nil)), nil
}

// open decrypts what seal made with the key keyID.
func (s *sealer) open(keyID, sealed string) ([]byte, error) {
	var aead cipher.AEAD
	if s != nil {
		aead = s.old[keyID]
	}
	if aead == nil {
		return nil, fmt.Errorf("sealed with key %s, which this server does not have (--secrets-key-file)", keyID)
	}
	data, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(data) < aead.NonceSize() {
		return nil, errors.New("sealed value is malformed")
	}
	n := aead.NonceSize()
	return aead.Open(nil, data[:n], data[n:], nil)
}

// releaseCtx returns ctx marked so that the write made with it records a release of kind.
func (s *Server) releaseCtx(ctx context.Context, r *http.Request, kind, appliance string, rollbackTo int64) context.Context {
	ri := store.ReleaseInfo{
		Token:      info(r).token,
		Remote:     r.RemoteAddr,
		Message:    r.Header.Get(api.HeaderMessage),
		Source:     r.Header.Get(api.HeaderSource),
		Kind:       kind,
		Appliance:  appliance,
		RollbackTo: rollbackTo,
	}
	if kind == api.KindRollback {
		what := fmt.Sprintf("rollback of %s to revision %d", appliance, rollbackTo)
		if ri.Message != "" {
			what += ": " + ri.Message
		}
		ri.Message = what
	}
	if s.sealer != nil {
		ri.Seal = s.sealer.seal
	}
	s.kickPruner()
	return store.WithRelease(ctx, ri)
}

// checkReleaseHeaders refuses an X-Shoelace-Message or X-Shoelace-Source that a history listing
// could not show as it is: past its limit, not UTF-8, or with a control character (C0, DEL, C1
// such as the CSI of terminal escape sequences; a tab is allowed) or a bidi control.
// Each may be given once, as X-Shoelace-Rollback and X-Shoelace-Import, which set the release's
// kind: of two, the release would keep the first and drop the other unseen.
func checkReleaseHeaders(r *http.Request) error {
	for _, h := range []string{api.HeaderMessage, api.HeaderSource, api.HeaderRollback, api.HeaderImport} {
		if n := len(r.Header.Values(h)); n > 1 {
			return api.Errorf(api.CodeInvalidRequest, "the request has %d %s headers: send at most one", n, h)
		}
	}
	if err := api.CheckReleaseText(api.HeaderMessage, r.Header.Get(api.HeaderMessage), api.MaxMessageBytes); err != nil {
		return err
	}
	return api.CheckReleaseText(api.HeaderSource, r.Header.Get(api.HeaderSource), api.MaxSourceBytes)
}

// pageParams reads ?limit= and ?before=.
func pageParams(q map[string][]string) (limit int, before int64, err error) {
	limit = defaultReleasePage
	if v := first(q, "limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReleasePage {
			return 0, 0, api.Errorf(api.CodeInvalidRequest, "query parameter limit must be from 1 to %d, not %s", maxReleasePage, shorten(v))
		}
		limit = n
	}
	if v := first(q, "before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, api.Errorf(api.CodeInvalidRequest, "query parameter before must be a revision (a positive integer), not %s", shorten(v))
		}
		before = n
	}
	return limit, before, nil
}

func first(q map[string][]string, k string) string {
	if v := q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// page answers the releases that keep says to keep, newest first, a page of limit before
// revision before (0: from the newest).
//
// Writes committed together (the store's group commit) share a revision, each with its own
// release, and before= is a revision: a page never ends between two releases of one revision,
// since the next page, before that revision, would leave out the rest of them. A page that
// would end so ends before that revision's releases instead, its Next the revision above
// them; one that holds nothing else holds them all, over limit.
//
// A page ends too once its releases would be maxReleasePageBytes of JSON (releaseJSONLen), as
// one of limit releases would: its Next goes on from there.
func page(all []api.Release, rev int64, limit int, before int64, keep func(*api.Release) bool) api.Releases {
	out := api.Releases{Revision: rev, Releases: []api.Release{}}
	size := 0
	for i := range all {
		r := all[i]
		if before > 0 && r.Revision >= before || !keep(&r) {
			continue
		}
		if len(out.Releases) >= limit || len(out.Releases) > 0 && size >= maxReleasePageBytes {
			last := out.Releases[len(out.Releases)-1].Revision
			if r.Revision != last {
				out.Next = last
				break
			}
			if j := slices.IndexFunc(out.Releases, func(p api.Release) bool { return p.Revision == last }); j > 0 {
				out.Releases = out.Releases[:j]
				out.Next = last + 1
				break
			}
		}
		out.Releases = append(out.Releases, r)
		size += releaseJSONLen(&r)
	}
	return out
}

// maxReleasePageBytes bounds the JSON of a page of releases: a release names up to 1000 keys of
// each of its changes (up to 512 bytes each), and a page of 1000 of them, built whole before the
// bound on answers (holdAnswer) sees it, was as large as the records retained (up to
// --release-max-bytes): twenty pages of 23 MB asked at once took a replica from 0.9 to 1.8 GB.
// A variable for tests.
var maxReleasePageBytes = 4 << 20

// releaseJSONLen is about the length of r's JSON, at least it: its text fields counted twice
// (an escaped character takes two bytes; a control character other than a tab is refused in a
// message), key names once (they need no escape), and room for the rest.
func releaseJSONLen(r *api.Release) int {
	n := 256 + 2*(len(r.ID)+len(r.Token)+len(r.Remote)+len(r.Message)+len(r.Source)+len(r.Kind)+len(r.Rollout)+len(r.Copy)+len(r.CopySkipped))
	for _, c := range r.Changes {
		n += 160 + len(c.Scope) + 2*len(c.Appliance)
		for _, names := range [...][]string{c.Created, c.Changed, c.Deleted} {
			for _, k := range names {
				n += len(k) + 3
			}
		}
	}
	return n
}

// handleApplianceReleases answers GET /v1/appliances/{name}/releases: the releases that
// changed the appliance's own keys (with include_shared, also those of shared/).
func (s *Server) handleApplianceReleases(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "limit", "before", "include_shared")
	if err != nil {
		return err
	}
	shared, err := flag(q, "include_shared")
	if err != nil {
		return err
	}
	limit, before, err := pageParams(q)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayRead(api.ApplianceRoot(name)); err != nil {
		return err
	}
	if shared {
		if err := p.mayRead(api.SharedPrefix); err != nil {
			return err
		}
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	all, rev, err := s.st.Releases(ctx)
	if err != nil {
		return err
	}
	out := page(all, rev, limit, before, func(rel *api.Release) bool {
		if !rel.Touches(name, shared) {
			return false
		}
		// Only this appliance's part (and shared/'s): the rest may be another team's.
		keep := []api.ReleaseChange{} // [] in JSON, never null
		for _, c := range rel.Changes {
			if c.Scope == api.ScopeAppliance && c.Appliance == name || shared && c.Scope == api.ScopeShared {
				keep = append(keep, c)
			}
		}
		rel.Changes = keep
		return true
	})
	if !slices.ContainsFunc(out.Releases, func(rel api.Release) bool { return rel.Touches(name, false) }) {
		// None of its own on this page (shared/'s may be): a mistyped name is 404.
		if err := s.applianceUnknown(ctx, name, all); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, rev, out)
}

// handleReleases answers GET /v1/releases: every release to an admin token; to another, with
// ?prefix=P that it may read, the releases that changed keys under P, showing those keys only.
func (s *Server) handleReleases(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "limit", "before", "prefix")
	if err != nil {
		return err
	}
	limit, before, err := pageParams(q)
	if err != nil {
		return err
	}
	p := principalOf(r)
	prefix := ""
	if q.Has("prefix") {
		if prefix, err = api.ValidatePrefix(q.Get("prefix")); err != nil {
			return err
		}
	}
	// The root, ?prefix=/ (or %2F), is a prefix like any other: a token granted "/" reads every
	// key, and so every release. Without a prefix only an admin lists them all.
	if prefix == "" && !p.admin && (q.Get("prefix") == "" || p.mayRead("") != nil) {
		hint := "appliances/NAME"
		if g := grantsShown(append(slices.Clone(p.read), p.write...)); len(g) > 0 {
			hint = g[0]
		}
		return forbidden("token %s may list every release only with an admin token: name a prefix it may read (?prefix=%s)", shorten(p.name), hint)
	}
	if err := p.mayRead(prefix); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	all, rev, err := s.st.Releases(ctx)
	if err != nil {
		return err
	}
	out := page(all, rev, limit, before, func(rel *api.Release) bool {
		if prefix == "" {
			return true
		}
		if app := copyAppliance(rel); app == "" || !api.HasPrefix(api.ApplianceRoot(app), prefix) {
			// The copy is of an appliance's whole tree: its name, its size and why none was
			// kept (which says the tree's size) are shown only with a prefix that covers it.
			rel.Copy, rel.CopyBytes, rel.CopySkipped = "", 0, ""
		}
		keep := []api.ReleaseChange{} // [] in JSON, never null
		for _, c := range rel.Changes {
			c.Created, c.Changed, c.Deleted = under(c.Created, prefix), under(c.Changed, prefix), under(c.Deleted, prefix)
			// Counted from what is shown: the names past api.MaxReleaseNames are not known here.
			c.CreatedCount, c.ChangedCount, c.DeletedCount = len(c.Created), len(c.Changed), len(c.Deleted)
			if len(c.Created)+len(c.Changed)+len(c.Deleted) > 0 {
				keep = append(keep, c)
			}
		}
		rel.Changes = keep
		return len(keep) > 0
	})
	return writeJSON(w, http.StatusOK, rev, out)
}

// copyAppliance is the appliance whose tree release rel kept a copy of, or, for one that kept none
// (CopySkipped), the appliance it applied: "" for a release with neither.
func copyAppliance(rel *api.Release) string {
	if rel.Copy != "" || rel.CopySkipped == "" {
		return rel.Copy
	}
	for _, c := range rel.Changes {
		if c.Scope == api.ScopeAppliance {
			return c.Appliance
		}
	}
	return ""
}

// under keeps the keys under prefix by whole segments, the key prefix names included, as listings
// and grants cover it.
func under(keys []string, prefix string) []string {
	var out []string
	for _, k := range keys {
		if api.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// kickPruner wakes the pruner once a quarter of --release-retention writes asked for a release
// since the last kick, or a quarter of the records the last pass knew if that is more: a write
// stream between two ticks (at the rate limit, tens of thousands of releases) would otherwise
// grow the records, which every history request reads, far past the window and
// --release-max-bytes; and a pass costs in proportion to the records, which many appliances
// make many (64 appliances written at once kept 64,000: passes every 250 writes took 7% of the
// server's CPU, every sixteenth of the records 5%). Either way the records grow by at most a
// quarter between passes. The kick does not wait: pruning stays out of the write path.
func (s *Server) kickPruner() {
	every := max(int64(s.cfg.ReleaseRetention)/4, s.st.KnownReleases()/4, 1)
	if s.sincePrune.Add(1) < every {
		return
	}
	s.sincePrune.Store(0)
	select {
	case s.pruneKick <- struct{}{}:
	default: // a pass is already due
	}
}

// runReleasePruner prunes releases beyond --release-retention and --release-max-age, at start,
// every releasePruneEvery and when kickPruner asks, until ctx ends. Each replica prunes:
// deleting what another already deleted is harmless.
func (s *Server) runReleasePruner(ctx context.Context) {
	t := time.NewTicker(releasePruneEvery)
	defer t.Stop()
	for {
		s.pruneReleases(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.pruneKick:
		}
	}
}

func (s *Server) pruneReleases(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := s.st.PruneReleases(pctx, store.Retention{Count: s.cfg.ReleaseRetention, MaxAge: s.cfg.ReleaseMaxAge, MaxBytes: s.cfg.ReleaseMaxBytes}, time.Now())
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("prune releases", "err", err.Error())
	case n > 0:
		s.log.Info("pruned releases", "count", n, "retention", s.cfg.ReleaseRetention, "max_age", s.cfg.ReleaseMaxAge.String())
	}
}

// maxKeyVersions bounds the versions GET /v1/kv/{key}?history reads back from etcd.
const maxKeyVersions = 100

// maxKeyHistoryBytes bounds the bytes of values of the versions GET /v1/kv/{key}?history reads
// back (the newest is always read): the answer is built whole, up to six times the values' bytes
// in JSON (control characters), before the bound on answers (holdAnswer) looks at it, and 100
// versions of 1 MB made answers of 600 MB.
const maxKeyHistoryBytes = 4 << 20

// handleKeyHistory answers GET /v1/kv/{key}?history (a read grant on the key): its values while
// etcd has them, and the releases that touched it, newest first.
func (s *Server) handleKeyHistory(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "history", "limit")
	if err != nil {
		return err
	}
	if on, err := flag(q, "history"); err != nil || !on {
		return api.Errorf(api.CodeInvalidRequest, "query parameter history must be true when given")
	}
	limit, _, err := pageParams(q)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	if err := api.ValidateKey(key); err != nil {
		return err
	}
	if err := principalOf(r).mayRead(key); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	versions, rev, compacted, cut, err := s.st.KeyVersions(ctx, key, min(limit, maxKeyVersions), maxKeyHistoryBytes)
	if err != nil {
		return err
	}
	all, _, err := s.st.Releases(ctx)
	if err != nil {
		return err
	}
	out := api.KeyHistory{Key: key, Revision: rev, Versions: versions, Compacted: compacted, Cut: cut, Releases: []api.Release{}}
	if out.Versions == nil {
		out.Versions = []api.KV{}
	}
	for _, rel := range all {
		if len(out.Releases) == limit {
			break
		}
		keep := []api.ReleaseChange{} // [] in JSON, never null
		for _, c := range rel.Changes {
			one := api.ReleaseChange{Scope: c.Scope, Appliance: c.Appliance}
			switch {
			case slices.Contains(c.Created, key):
				one.Created, one.CreatedCount = []string{key}, 1
			case slices.Contains(c.Changed, key):
				one.Changed, one.ChangedCount = []string{key}, 1
			case slices.Contains(c.Deleted, key):
				one.Deleted, one.DeletedCount = []string{key}, 1
			default:
				continue
			}
			keep = append(keep, one)
		}
		if len(keep) == 0 {
			continue
		}
		rel.Changes = keep
		rel.Copy, rel.CopyBytes, rel.CopySkipped = "", 0, ""
		out.Releases = append(out.Releases, rel)
	}
	return writeJSON(w, http.StatusOK, rev, out)
}
