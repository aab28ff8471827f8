package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/server/store"
)

// principal is who a request acts for, and what it may touch.
type principal struct {
	name      string
	admin     bool
	appliance string // an agent token: read this appliance's view
	instance  string // an instance token: the one instance of appliance it acts for
	parent    string // an instance token: the agent token that enrolled it ("" when an admin did)
	enrolled  time.Time
	// enrolledRev, for an instance token, is the revision its instance's enrollment was written
	// at (tokenRecord.enrolledRevision); 0 when not known.
	enrolledRev int64
	// record, for an instance token, is its token record as read from the store: what guards the
	// writes of its reports (see pendingReport).
	record []byte
	read   []string // prefixes it may read
	write  []string // prefixes it may write (and read)
}

type principalKey struct{}

// principalOf returns the request's principal (set by authenticate).
func principalOf(r *http.Request) *principal {
	ctx := r.Context()
	if p, ok := ctx.Value(principalKey{}).(*principal); ok {
		return p
	}
	if i := reqInfoOf(r); i != nil && i.p != nil {
		return i.p
	}
	return &principal{}
}

// withPrincipal is r with principal p: in its reqInfo when it has one (no copy of the request,
// which an open long-poll would hold), else in a new context.
func withPrincipal(r *http.Request, p *principal) *http.Request {
	if i := reqInfoOf(r); i != nil {
		i.p = p
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
}

func forbidden(format string, args ...any) error {
	return api.Errorf(api.CodeForbidden, format, args...)
}

func covered(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if api.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// mayRead reports whether p may read key (or every key under the prefix key).
func (p *principal) mayRead(key string) error {
	if p.admin || covered(key, p.read) || covered(key, p.write) {
		return nil
	}
	return forbidden("token %s may not read %s", shorten(p.name), shorten(key))
}

// mayWrite reports whether p may write key (or every key under the prefix key).
func (p *principal) mayWrite(key string) error {
	if p.admin || covered(key, p.write) {
		return nil
	}
	return forbidden("token %s may not write %s", shorten(p.name), shorten(key))
}

// mayWriteAny reports whether p may write any key at all (a txn's keys are in its body).
func (p *principal) mayWriteAny() error {
	if p.admin || len(p.write) > 0 {
		return nil
	}
	return forbidden("token %s may not write", shorten(p.name))
}

// mayReadStatus reports whether p may read the server's status (GET /v1/status, the console's
// store page): a read, write or admin token, not an agent's.
func (p *principal) mayReadStatus() error {
	if !p.admin && len(p.read) == 0 && len(p.write) == 0 {
		return forbidden("token %s may not read the server's status: it needs a read, write or admin token", shorten(p.name))
	}
	return nil
}

// mayReadView reports whether p may read appliance name's view: shared/ and appliances/<name>/.
func (p *principal) mayReadView(name string) error {
	if p.admin || p.appliance == name {
		return nil
	}
	shared, own := p.mayRead(api.SharedPrefix), p.mayRead(api.ApplianceRoot(name))
	if shared == nil && own == nil {
		return nil
	}
	if p.appliance != "" || api.ValidateSegment("appliance name", name) != nil {
		// An agent token reads its own appliance's view only; no grant is to be added to it.
		return forbidden("token %s may not read the view of appliance %s", shorten(p.name), shorten(name))
	}
	// Say which of the two the token lacks: a pipeline token that writes appliances/NAME (and
	// reads its keys one by one) is refused the view for want of shared/.
	var lacks []string
	if shared != nil {
		lacks = append(lacks, api.SharedPrefix)
	}
	if own != nil {
		lacks = append(lacks, api.ApplianceRoot(name))
	}
	return forbidden("token %s may not read the view of appliance %s: a view is %s/ overlaid by %s/, and the token may not read %s/ (give it --read %s as well, or use the appliance's agent token)",
		shorten(p.name), shorten(name), api.SharedPrefix, api.ApplianceRoot(name),
		strings.Join(lacks, "/ nor "), strings.Join(lacks, " "))
}

// maySeeAppliance reports whether p is shown appliance name among the appliances (GET
// /v1/appliances, shoelace appliance ls, the console): when it may read the appliance's view, or
// its own keys (a read or write grant on appliances/<name>), though not shared/. A pipeline token
// made with --write appliances/web alone, which applies and reads web's keys, was not shown web by
// the API, though the console showed it.
func (p *principal) maySeeAppliance(name string) bool {
	return p.mayReadView(name) == nil || p.mayRead(api.ApplianceRoot(name)) == nil
}

// listFilter says which keys under prefix p may see: nil when all of them; 403 when none can be.
func (p *principal) listFilter(prefix string) (func(string) bool, error) {
	if p.mayRead(prefix) == nil {
		return nil, nil
	}
	var grants []string
	for _, g := range append(append([]string(nil), p.read...), p.write...) {
		if api.HasPrefix(g, prefix) {
			grants = append(grants, g)
		}
	}
	if len(grants) == 0 {
		if prefix == "" { // the root: "under \"\"" said nothing
			why := "it has no read or write grant"
			if p.appliance != "" {
				why += fmt.Sprintf("; as an agent token it reads the view of appliance %s (shoelace appliance get %s)", p.appliance, p.appliance)
			}
			return nil, forbidden("token %s may not read any key: %s", shorten(p.name), why)
		}
		return nil, forbidden("token %s may not read under %s", shorten(p.name), shorten(prefix))
	}
	return func(k string) bool { return covered(k, grants) }, nil
}

// mayAdmin reports whether p is an admin.
func (p *principal) mayAdmin() error {
	if p.admin {
		return nil
	}
	return forbidden("token %s is not an admin token", shorten(p.name))
}

// tokenPrefix is where token records live among the system keys: tokens/<name>.
const tokenPrefix = "tokens/"

// adminTokenName is the name of the admin token created on first start.
const adminTokenName = "admin"

// tokenRecord is a token as stored under sys/tokens/<name>: never the secret, only its hash.
type tokenRecord struct {
	Name      string    `json:"name"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	Appliance string    `json:"appliance,omitempty"`
	Read      []string  `json:"read,omitempty"`
	Write     []string  `json:"write,omitempty"`
	Admin     bool      `json:"admin,omitempty"`
	Created   time.Time `json:"created"`
	// Instance, for an instance token (see enroll.go), is the instance of Appliance it is bound
	// to, and Parent the agent token that enrolled it ("" when an admin did).
	Instance string `json:"instance,omitempty"`
	Parent   string `json:"parent,omitempty"`
	// EnrollKey, for an instance token, is the hex SHA-256 of the enrollment key its agent
	// sent (see Server.enroll): that key may enroll the instance again while this token was
	// never used.
	EnrollKey string `json:"enroll_key,omitempty"`
	// Enrolled, for an instance token, is when its instance was enrolled, when that was before
	// Created: the enrollment's holder asked again with its key (its answer lost) and got this
	// token, which keeps the instance's enrollment time (see Server.enroll).
	Enrolled time.Time `json:"enrolled,omitzero"`
	// EnrolledRev is, beside Enrolled, the revision that enrollment was written at.
	EnrolledRev int64 `json:"enrolled_revision,omitempty"`
	// raw, for an instance token, is the record as stored (see principal.record).
	raw []byte
	// rev is the revision the record was written at (its mod_revision), as the watch event, the
	// read or the write that brought it said; 0 when not known.
	rev int64

	// p is principal's answer, made once: every request of the token shares it (an open
	// long-poll holds it), and nothing changes a principal. A changed record is a new record.
	p atomic.Pointer[principal]
}

// holder is who holds t: the agent token that enrolled it, for an instance token, else t itself.
// Limits and shares that one holder must not multiply by enrolling instances count by it.
func (t *tokenRecord) holder() string {
	if t.Parent != "" {
		return t.Parent
	}
	return t.Name
}

func (t *tokenRecord) principal() *principal {
	if p := t.p.Load(); p != nil {
		return p
	}
	p := &principal{name: t.Name, admin: t.Admin, appliance: t.Appliance, read: t.Read, write: t.Write}
	if t.Instance != "" {
		p.instance, p.parent, p.enrolled, p.record = t.Instance, t.Parent, t.enrolledAt(), t.raw
		p.enrolledRev = t.enrolledRevision()
	}
	// One principal per record, even when two requests make it at once: current compares them.
	if !t.p.CompareAndSwap(nil, p) {
		return t.p.Load()
	}
	return p
}

// enrolledAt is when the instance of instance token t was enrolled.
func (t *tokenRecord) enrolledAt() time.Time {
	if !t.Enrolled.IsZero() && t.Enrolled.Before(t.Created) {
		return t.Enrolled
	}
	return t.Created
}

// enrolledRevision is the revision at which the instance of instance token t was enrolled: that
// of t's own write, or, for a token its enrollment's holder got by asking again (Enrolled), the
// first enrollment's, which t keeps; 0 when not known (a record of an older server that asked
// again, or one read without its revision).
func (t *tokenRecord) enrolledRevision() int64 {
	if !t.Enrolled.IsZero() && t.Enrolled.Before(t.Created) {
		return t.EnrolledRev
	}
	return t.rev
}

// sameGrant reports whether records a and b (of one name) grant the same: the same secret and
// the same principal. The cache keeps the record it has for an equal one read again (the watch
// event of a token this replica created, a reload), so that its principal stays the one open
// streams hold (authState.current).
func sameGrant(a, b *tokenRecord) bool {
	return a.Name == b.Name && a.Hash == b.Hash && a.Appliance == b.Appliance && a.Admin == b.Admin &&
		slices.Equal(a.Read, b.Read) && slices.Equal(a.Write, b.Write) &&
		a.Instance == b.Instance && a.Parent == b.Parent && a.Created.Equal(b.Created) &&
		a.Enrolled.Equal(b.Enrolled) && bytes.Equal(a.raw, b.raw)
}

// newSecret returns a new token secret: 256 random bits.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token secret: %w", err)
	}
	return "sl_" + base64.RawURLEncoding.EncodeToString(b), nil
}

func hashSecret(secret string) string {
	h := hashSecretHex(secret)
	return string(h[:])
}

// hashSecretHex is hashSecret in an array: findToken, on every request, looks it up without
// making a string of it.
func hashSecretHex(secret string) (h [2 * sha256.Size]byte) {
	sum := sha256.Sum256([]byte(secret))
	hex.Encode(h[:], sum[:])
	return h
}

// authState holds the tokens known to this replica (a cache kept current by the store watch),
// when each was last used here, and the rate limiters.
type authState struct {
	mu     sync.RWMutex
	byHash map[string]*tokenRecord
	byName map[string]*tokenRecord
	// children counts the records of byName by Parent (instance tokens by the agent token that
	// enrolled them), so that an enrollment's cap is checked without a walk over every token.
	children map[string]int
	// enrolling counts the enrollments of each agent token under way on this replica (checked
	// against the cap, not yet written), by instance token name: with children, what the cap
	// is checked against, so that enrollments arriving together cannot all pass a check made
	// before any was written.
	enrolling map[string]map[string]int
	// revoked holds the revision at which this replica revoked a token: a record read before
	// it (a watch event's reload that raced the revocation) must not bring the token back.
	revoked map[string]int64
	// gone holds the hashes of the secrets of tokens this replica saw go (revoked, replaced),
	// with the token's name: such a secret is answered 401 while the store cannot be asked, and
	// an instance token's holder is told what became of its instance (see goneAnswer).
	gone map[string]string
	// at holds the revision of each record of byName, as set learned it (a reload's: its read's):
	// a record of an older write, set late (an enrollment's own answer, after the watch brought
	// the write that replaced it), must not bring back a secret that no longer stands.
	at       map[string]int64
	lastUsed map[string]time.Time
	limits   *limiterSet // per token, per token and instance (agents), per client address
	ceilings *limiterSet // per agent token, across its instances
	loaded   atomic.Bool // the tokens were read from the store at least once
}

func newAuthState(cfg Config) *authState {
	return &authState{
		byHash:    map[string]*tokenRecord{},
		byName:    map[string]*tokenRecord{},
		children:  map[string]int{},
		enrolling: map[string]map[string]int{},
		revoked:   map[string]int64{},
		gone:      map[string]string{},
		at:        map[string]int64{},
		lastUsed:  map[string]time.Time{},
		limits:    newLimiterSet(cfg.RateLimit, int(math.Ceil(cfg.RateLimit))),
		// A burst of 10 seconds' worth: a change wakes a whole fleet at once.
		ceilings: newLimiterSet(cfg.tokenRateLimit(), int(math.Ceil(10*cfg.tokenRateLimit()))),
	}
}

// lookup finds the token whose secret is presented, comparing hashes in constant time.
func (a *authState) lookup(secret string) *tokenRecord {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return findToken(a.byHash, secret)
}

// findToken finds secret's token among records keyed by their hash, comparing the hash in
// constant time.
func findToken(byHash map[string]*tokenRecord, secret string) *tokenRecord {
	h := hashSecretHex(secret)
	rec := byHash[string(h[:])]
	if rec == nil || subtle.ConstantTimeCompare([]byte(rec.Hash), h[:]) != 1 {
		return nil
	}
	return rec
}

// maxGone bounds authState.gone; past it the set starts again (a secret forgotten there is
// asked of the store, as any unknown one).
const maxGone = 1 << 16

// forgetLocked records that the secret of token rec no longer stands; a.mu is held.
func (a *authState) forgetLocked(rec *tokenRecord) {
	if len(a.gone) >= maxGone {
		clear(a.gone)
	}
	a.gone[rec.Hash] = rec.Name
}

// wasRevoked reports whether secret is one of a token this replica saw go.
func (a *authState) wasRevoked(secret string) bool {
	h := hashSecret(secret)
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.gone[h]
	return ok
}

// goneAnswer is the 401 of secret when it is an instance token's that this replica saw go:
// its holder (an agent whose report was queued before, or a VM suspended meanwhile) learns
// whether its instance was enrolled again by another token or forgotten. nil otherwise.
func (a *authState) goneAnswer(secret string) error {
	h := hashSecret(secret)
	a.mu.RLock()
	name, ok := a.gone[h]
	held := a.byName[name] != nil
	a.mu.RUnlock()
	if !ok || !isInstanceToken(name) {
		return nil
	}
	if held {
		return instanceTokenGone(name, tokenGoneReplaced)
	}
	return instanceTokenGone(name, tokenGoneRevoked)
}

// replacedAnswer is the 401 of a request of instance token p that this replica authenticated
// before it learned that another token holds p's instance now (enrolled again); nil otherwise.
// A token merely gone from the cache (forgotten, or the store changed) is not answered here:
// its next request is, and its writes are guarded (heldGuard).
func (a *authState) replacedAnswer(p *principal) error {
	if p.instance == "" {
		return nil
	}
	a.mu.RLock()
	cur := a.byName[p.name]
	a.mu.RUnlock()
	if cur == nil || bytes.Equal(cur.raw, p.record) {
		return nil
	}
	return instanceTokenGone(p.name, tokenGoneReplaced)
}

// How an instance token went, as instanceTokenGone tells its holder.
const (
	tokenGoneUnknown  = iota // enrolled again or forgotten: this replica does not know yet
	tokenGoneReplaced        // another token holds its instance now
	tokenGoneRevoked         // forgotten or expired
)

// instanceTokenGone is the 401 of instance token name, which no longer stands (how: tokenGone*).
func instanceTokenGone(name string, how int) error {
	app, instance, _ := strings.Cut(strings.TrimPrefix(name, "instance:"), ":")
	switch how {
	case tokenGoneReplaced:
		return unauthorized("the instance token of instance %s of appliance %s was replaced: the instance was enrolled again since "+
			"(by another machine with the same instance name, or after shoelace appliance forget %s %s), and only its new token reports for it; "+
			"enroll again once the name is free (409 while its holder is fresh), or give this machine an instance name of its own",
			shorten(instance), shorten(app), app, instance)
	case tokenGoneRevoked:
		return unauthorized("the instance token of instance %s of appliance %s was revoked: the instance was forgotten (shoelace appliance forget) or expired; enroll again",
			shorten(instance), shorten(app))
	}
	return unauthorized("the instance token of instance %s of appliance %s no longer stands: the instance was enrolled again or forgotten since; enroll again",
		shorten(instance), shorten(app))
}

// set caches rec, written at revision rev (0: unknown); it reports whether a token of that name
// with another secret was replaced. A record written before this replica revoked its name is
// stale and ignored.
func (a *authState) set(rec *tokenRecord, rev int64) (replaced bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gone, ok := a.revoked[rec.Name]; ok {
		if rev > 0 && rev < gone {
			a.forgetLocked(rec) // gone before this replica cached it: its holder is told so
			return false
		}
		delete(a.revoked, rec.Name) // created again since
	}
	if rev > 0 && rev < a.at[rec.Name] {
		// Written before the record held, which replaced it: its secret no longer stands.
		if old := a.byName[rec.Name]; old == nil || old.Hash != rec.Hash {
			a.forgetLocked(rec)
		}
		return false
	}
	if rev > a.at[rec.Name] {
		a.at[rec.Name] = rev
	}
	if old := a.byName[rec.Name]; old != nil {
		if sameGrant(old, rec) {
			return false
		}
		delete(a.byHash, old.Hash)
		a.countChildLocked(old, -1)
		replaced = old.Hash != rec.Hash
		if replaced {
			a.forgetLocked(old)
		}
	}
	delete(a.gone, rec.Hash)
	a.byName[rec.Name] = rec
	a.byHash[rec.Hash] = rec
	a.countChildLocked(rec, 1)
	return replaced
}

// remove forgets token name, revoked at revision rev (0: unknown, as when a reload found it
// gone); it reports whether it was known.
func (a *authState) remove(name string, rev int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rev > a.revoked[name] {
		a.revoked[name] = rev
	}
	delete(a.at, name) // revoked says what comes before
	old := a.byName[name]
	if old == nil {
		return false
	}
	delete(a.byName, name)
	delete(a.byHash, old.Hash)
	a.countChildLocked(old, -1)
	a.forgetLocked(old)
	return true
}

// countChildLocked adds d to the count of rec's parent's instance tokens; a.mu is held.
func (a *authState) countChildLocked(rec *tokenRecord, d int) {
	if rec.Parent == "" {
		return
	}
	if a.children[rec.Parent] += d; a.children[rec.Parent] <= 0 {
		delete(a.children, rec.Parent)
	}
}

// forgetStore forgets every token, revocation and revoked secret this replica knew of a store
// it is no longer on (see Server.adoptStoreID), and returns the tokens it had cached. Until the
// new store's tokens are loaded, every token is asked of that store (lookupFresh): none is
// answered from what the old store held, and none is refused because the old store revoked it
// (503 while the store cannot be asked, as for any token not known yet).
func (a *authState) forgetStore() map[string]*tokenRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.byName
	a.byName, a.byHash = map[string]*tokenRecord{}, map[string]*tokenRecord{}
	clear(a.children)
	clear(a.revoked)
	clear(a.gone)
	return old
}

// goneUnlessHeld reports whether the cache holds token rec's name with rec's secret; when it
// does not, rec's secret is recorded as gone (see wasRevoked).
func (a *authState) goneUnlessHeld(rec *tokenRecord) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.byName[rec.Name]; cur != nil && cur.Hash == rec.Hash {
		return true
	}
	a.forgetLocked(rec)
	return false
}

// forgetRevocationsAbove drops the revocations (and the records' revisions, see at) recorded at
// revisions above rev, which the store's history no longer holds (it went back to rev): they
// must not keep out a token created again under the same name at a revision below them. The
// tokens they revoked stay out of the cache (and their secrets in gone) until the store says
// otherwise.
func (a *authState) forgetRevocationsAbove(rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, r := range a.revoked {
		if r > rev {
			delete(a.revoked, name)
		}
	}
	for name, r := range a.at {
		if r > rev {
			delete(a.at, name) // nor keep out a record written again below it
		}
	}
}

// replace caches exactly recs, read at revision rev, and returns the names that went or changed
// secret. A token this replica revoked after rev stays out.
func (a *authState) replace(recs []*tokenRecord, rev int64) (gone []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := map[string]*tokenRecord{}
	for _, r := range recs {
		if revoked, ok := a.revoked[r.Name]; ok && rev < revoked {
			continue
		}
		if old := a.byName[r.Name]; old != nil && sameGrant(old, r) {
			r = old
		}
		next[r.Name] = r
	}
	for name, revoked := range a.revoked {
		if revoked <= rev {
			delete(a.revoked, name) // the store as read already says so
		}
	}
	for name, old := range a.byName {
		if n := next[name]; n == nil || n.Hash != old.Hash {
			gone = append(gone, name)
			a.forgetLocked(old)
		}
	}
	for _, r := range next {
		delete(a.gone, r.Hash)
	}
	a.byName = next
	a.byHash = map[string]*tokenRecord{}
	clear(a.children)
	clear(a.at)
	for _, r := range next {
		a.byHash[r.Hash] = r
		a.countChildLocked(r, 1)
		a.at[r.Name] = rev
	}
	for _, name := range gone {
		if next[name] == nil {
			a.at[name] = rev // gone as of rev: an older record set late stays out
		}
	}
	return gone
}

// current reports whether p is still what token p.name grants on this replica: false once the
// token is revoked or its record changed (another secret, other scopes), which makes a new
// principal. A request that outlives its authentication (a stream) checks it before it answers
// again: the hub's revocation cannot reach a stream between two of its registrations.
func (a *authState) current(p *principal) bool {
	a.mu.RLock()
	rec := a.byName[p.name]
	a.mu.RUnlock()
	return rec != nil && rec.principal() == p
}

func (a *authState) count() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.byName)
}

func (a *authState) touch(name string) {
	now := time.Now().UTC()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastUsed[name] = now
	if len(a.lastUsed) > len(a.byName) {
		// A token went (revoked) since: forget when it was used. This runs once per token that
		// goes, as the next request of any token comes.
		for n := range a.lastUsed {
			if a.byName[n] == nil {
				delete(a.lastUsed, n)
			}
		}
	}
}

func (a *authState) used(name string) (time.Time, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	t, ok := a.lastUsed[name]
	return t, ok
}

func unauthorized(format string, args ...any) error {
	return api.Errorf(api.CodeUnauthorized, format, args...)
}

// maxTokenBytes bounds a bearer token that is looked up; a longer one is none of ours.
const maxTokenBytes = 512

// bearer returns the token of an "Authorization: Bearer <token>" header. A request with more
// than one Authorization header is an error: which one counts would be a guess (net/http reads
// the first, a proxy in front may have checked another).
func bearer(r *http.Request) (string, bool, error) {
	if n := len(r.Header.Values("Authorization")); n > 1 {
		return "", false, api.Errorf(api.CodeInvalidRequest, "the request has %d Authorization headers: send exactly one, Authorization: Bearer <token>", n)
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false, nil
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != "" && len(tok) <= maxTokenBytes, nil
}

// atMostOne refuses a request with more than one of any of headers (X-Shoelace-Instance, a
// report's X-Shoelace-Applied and X-Shoelace-Rollout): every check and record reads the first,
// and a proxy in front may have gone by another, so which instance the request speaks for, or
// what it says it applied, would be a guess (as with two Authorization headers).
func atMostOne(r *http.Request, headers ...string) error {
	for _, h := range headers {
		if n := len(r.Header.Values(h)); n > 1 {
			return api.Errorf(api.CodeInvalidRequest, "the request has %d %s headers: send at most one", n, h)
		}
	}
	return nil
}

// validInstanceHeader checks an X-Shoelace-Instance header's name: nil, or the 400 naming the
// rule it breaks. Authentication checks it before an agent token's name takes a place, and a
// report before it is recorded.
func validInstanceHeader(h string) error {
	return validInstanceName("instance name ("+api.HeaderInstance+")", h)
}

// validInstanceName checks an instance name (what says which): a segment, and never what may be
// a token's secret pasted where the name goes. An enrolled instance's token is named after it
// (instance:APPLIANCE:NAME), and the log writes token names in the lines of their requests, as
// the instance lists and the console show the names: a user's token named so is refused too.
func validInstanceName(what, name string) error {
	if err := api.ValidateSegment(what, name); err != nil {
		return err
	}
	if api.RedactSecrets(name) != name {
		return api.Errorf(api.CodeInvalidName, "invalid %s %s: it holds what looks like a token's secret (sl_ and 43 base64url characters), which the log never writes; choose a name (the agent's instance, by default its hostname)", what, shorten(name))
	}
	return nil
}

// clientIP is the address a request came from (proxies' headers are not trusted).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// instanceOf is an agent's X-Shoelace-Instance, bounded so that it cannot bloat the limiters.
func instanceOf(r *http.Request) string {
	in := r.Header.Get(api.HeaderInstance)
	if len(in) > 128 {
		in = in[:128]
	}
	return in
}

// authenticate finds the request's token and its principal, and applies the rate limits: per
// token (per token and instance for agent tokens), and per client address without a valid token.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, error) {
	arrived := time.Now()
	info(r).revocation = s.hub.revocation()
	secret, ok, err := bearer(r)
	if err == nil {
		err = atMostOne(r, api.HeaderInstance)
	}
	if err != nil {
		if lerr := s.limitAddr(r); lerr != nil {
			return r, lerr
		}
		return r, err
	}
	var rec *tokenRecord
	asked := false
	if ok {
		rec = s.auth.lookup(secret)
		if rec != nil && s.fresh.reach.stale() {
			// The cache may lack changes of the store's tokens (its watch lost events to a
			// compaction, and the reload that follows is not done): a revocation among them
			// would leave the token in it. The store is asked, as for a token the cache does
			// not hold: a store that fails reads never keeps a revoked token valid.
			var err error
			if rec, err = s.lookupUnknown(r.Context(), secret, arrived); err != nil {
				return r, err
			}
			asked = true
		}
	}
	if rec == nil {
		if err := s.limitAddr(r); err != nil {
			return r, err
		}
		if !asked && (ok || !s.auth.loaded.Load()) {
			// Perhaps created through another replica a moment ago: ask the store. When it
			// cannot be asked, the token is not known to be unknown: 503, never a 401 that
			// makes an agent drop an instance token that may be valid.
			var err error
			if rec, err = s.lookupUnknown(r.Context(), secret, arrived); err != nil {
				return r, err
			}
		}
	}
	if rec == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shoelace"`)
		if !ok {
			if _, tok, _ := strings.Cut(r.Header.Get("Authorization"), " "); len(strings.TrimSpace(tok)) > maxTokenBytes {
				return r, unauthorized("the bearer token is %d bytes, over the %d a token may have: it is not a token of this server (is it the right token file?)", len(strings.TrimSpace(tok)), maxTokenBytes)
			}
			return r, unauthorized("missing token: send Authorization: Bearer <token>")
		}
		if err := s.auth.goneAnswer(secret); err != nil {
			return r, err
		}
		return r, unauthorized("unknown or revoked token")
	}
	info(r).token = rec.Name
	inst := instanceOf(r)
	if rec.Instance != "" {
		inst = rec.Instance
	} else if h := r.Header.Get(api.HeaderInstance); h != "" && rec.Appliance != "" {
		// A name that is no instance name is refused before it takes one of the token's
		// --max-instances places (a name keeps its place 10 minutes), under the token's
		// ceiling only.
		if err := validInstanceHeader(h); err != nil {
			if ok, retry := s.auth.ceilings.allow("token "+rec.holder(), time.Now()); !ok {
				return r, s.tokenOverCeiling(rec.holder(), retry)
			}
			return r, err
		}
	}
	if err := s.limitToken(rec, inst); err != nil {
		return r, err
	}
	if rec.Instance != "" {
		// An instance token speaks for its own instance only; without the header, for it.
		switch h := r.Header.Get(api.HeaderInstance); h {
		case "":
			r.Header.Set(api.HeaderInstance, rec.Instance)
		case rec.Instance:
		default:
			return r, forbidden("token %s is bound to instance %s, not %s (%s)", shorten(rec.Name), shorten(rec.Instance), shorten(h), api.HeaderInstance)
		}
	}
	s.auth.touch(rec.Name)
	return withPrincipal(r, rec.principal()), nil
}

// limitAddr applies the rate limit of a request without a valid token: per client address
// (an IPv6 address's /64, see addrKey).
func (s *Server) limitAddr(r *http.Request) error {
	return s.limit("addr " + addrKey(clientIP(r)))
}

// limitOpen applies the rate limit of a client address to a route that needs no token and costs
// more than a refusal (/metrics, /v1/openapi.json). Its bucket is not limitAddr's: a scraper
// that shares an address with clients failing to authenticate is not refused for them.
func (s *Server) limitOpen(r *http.Request) error {
	return s.limit("open " + addrKey(clientIP(r)))
}

func (s *Server) limit(key string) error {
	ok, retry := s.auth.limits.allow(key, time.Now())
	if ok {
		return nil
	}
	s.m.rateLimited.Inc()
	e := api.Errorf(api.CodeRateLimited, "rate limit of %s requests/s exceeded (--rate-limit; a large answer counts as a request per 64 KiB); retry later", perSecond(s.cfg.RateLimit))
	e.RetryAfter = retryAfter(retry)
	return e
}

// limitToken applies the rate limits of token rec: per token, or for an agent token per token
// and instance, then under the token's ceiling across all its instances. An instance name that
// would make the token use more than MaxInstances at once on this replica is refused: made-up
// names must not multiply the limit, nor the limiters kept for them.
//
// An instance token has a limiter of its own, outside the agent token's cap and ceiling (see
// below): what the fleet's shared token does cannot starve an enrolled instance.
func (s *Server) limitToken(rec *tokenRecord, instance string) error {
	if rec.Appliance == "" {
		return s.limit("token " + rec.Name)
	}
	if rec.Instance != "" {
		// An enrolled instance, proven by its own token, has a limiter of its own: never the
		// one that requests of the fleet's shared appliance token naming the same instance
		// fill, nor under that token's cap of instance names or its ceiling. A holder of the
		// appliance token (any VM of the fleet, a baked image) could otherwise starve an
		// enrolled instance at the per-instance rate, or all of them at the ceiling or by
		// filling --max-instances with made-up names. Instance tokens are few: enrollment
		// caps them per agent token.
		if err := s.limit("instance-token " + rec.Name); err != nil {
			return err
		}
		// But not outside every ceiling: enrollment lets one agent token mint up to
		// --max-instances instance tokens, and each with a full --rate-limit would multiply the
		// token's ceiling by that many. Its enrolled instances together share a ceiling of
		// their own, apart from the one the shared token's requests fill.
		if rec.Parent != "" {
			if ok, retry := s.auth.ceilings.allow("enrolled "+rec.Parent, time.Now()); !ok {
				return s.tokenOverCeiling(rec.Parent, retry)
			}
		}
		return nil
	}
	name := rec.holder()
	now := time.Now()
	ok, retry, full := s.auth.limits.allowOwned("token "+name+" instance "+instance, name, s.cfg.MaxInstances, now)
	if full || !ok {
		return s.tokenLimited(name, full, retry)
	}
	if ok, retry := s.auth.ceilings.allow("token "+name, now); !ok {
		return s.tokenOverCeiling(name, retry)
	}
	return nil
}

// tokenLimited is limitToken's refusal of an instance over its rate limit, or of a new instance
// name over the token's cap. Its own function, not inlined, as tokenOverCeiling: their
// messages' arguments took 570 bytes of limitToken's frame, which every agent's long-poll
// passes through before it waits, with the limiters below it; the goroutine stack went past
// its first 4 KiB there, and a parked long-poll then holds 8 KiB instead of 4.
//
//go:noinline
func (s *Server) tokenLimited(name string, full bool, retry time.Duration) error {
	s.m.rateLimited.Inc()
	if full {
		e := api.Errorf(api.CodeRateLimited, "token %s already uses %d instance names on this replica (--max-instances); a name unused for %s is forgotten; retry later",
			shorten(name), s.cfg.MaxInstances, limiterIdle)
		e.RetryAfter = int(limiterSweep.Seconds())
		return e
	}
	e := api.Errorf(api.CodeRateLimited, "rate limit of %s requests/s per instance exceeded (--rate-limit); retry later", perSecond(s.cfg.RateLimit))
	e.RetryAfter = retryAfter(retry)
	return e
}

// tokenOverCeiling is limitToken's refusal of a token over its ceiling (see tokenLimited).
//
//go:noinline
func (s *Server) tokenOverCeiling(name string, retry time.Duration) error {
	s.m.rateLimited.Inc()
	e := api.Errorf(api.CodeRateLimited, "token %s is over its ceiling of %s requests/s, all its instances together (--token-rate-limit); retry later",
		shorten(name), perSecond(s.cfg.tokenRateLimit()))
	e.RetryAfter = retryAfter(retry)
	return e
}

// perSecond writes a rate as the flag took it: 1000000, where %g writes 1e+06.
func perSecond(rate float64) string { return strconv.FormatFloat(rate, 'f', -1, 64) }

// retryAfter is a Retry-After in whole seconds, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// limiterSet keeps one token-bucket limiter per key, forgetting idle ones. Keys may have an
// owner (an agent token, for its instances' keys), whose number of keys can be capped.
type limiterSet struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	m     map[string]*limiterEntry
	owned map[string]int // keys held per owner
	swept time.Time
	// clock, set by tests only, gives the time of every call instead of the one passed in.
	clock func() time.Time
}

type limiterEntry struct {
	lim   *rate.Limiter
	seen  time.Time
	owner string
}

// limiterIdle is how long an unused limiter is kept; limiterSweep how often they are swept.
const (
	limiterIdle  = 10 * time.Minute
	limiterSweep = time.Minute
)

// newLimiterSet returns limiters of perSecond with a burst of burst (at least 1); perSecond 0
// allows everything.
func newLimiterSet(perSecond float64, burst int) *limiterSet {
	return &limiterSet{limit: rate.Limit(perSecond), burst: max(1, burst), m: map[string]*limiterEntry{}, owned: map[string]int{}}
}

// allow takes one request for key; when over the limit it says how long until one is allowed.
func (l *limiterSet) allow(key string, now time.Time) (bool, time.Duration) {
	ok, retry, _ := l.allowOwned(key, "", 0, now)
	return ok, retry
}

// allowOwned is allow for a key of owner, which may hold at most maxKeys keys (0: any number);
// full says that key is new and owner holds maxKeys already.
func (l *limiterSet) allowOwned(key, owner string, maxKeys int, now time.Time) (ok bool, retry time.Duration, full bool) {
	if l.limit <= 0 {
		return true, 0, false
	}
	now = l.lock(now)
	defer l.mu.Unlock()
	e := l.entryLocked(key, owner, maxKeys, now)
	if e == nil {
		return false, 0, true
	}
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d, false
	}
	return true, 0, false
}

// lock takes l.mu, sweeping the idle limiters when a sweep is due, and returns the time of
// the call (the test clock's, when one is set); the caller unlocks.
func (l *limiterSet) lock(now time.Time) time.Time {
	l.mu.Lock()
	if l.clock != nil {
		now = l.clock()
	}
	if now.Sub(l.swept) > limiterSweep {
		l.sweepLocked(now)
	}
	return now
}

// entryLocked returns key's limiter, seen now, making one for owner when there is none; nil
// when key is new and owner holds maxKeys keys already (maxKeys 0: any number). l.mu must be
// held.
func (l *limiterSet) entryLocked(key, owner string, maxKeys int, now time.Time) *limiterEntry {
	e := l.m[key]
	if e == nil {
		if owner != "" && maxKeys > 0 && l.owned[owner] >= maxKeys {
			return nil
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.limit, l.burst), owner: owner}
		l.m[key] = e
		if owner != "" {
			l.owned[owner]++
		}
	}
	e.seen = now
	return e
}

// reserve takes n (at most one burst) from key's limiter, making one for key when there is
// none, and returns how long until they are there: the caller acts then, and the key's later
// reservations wait behind it.
func (l *limiterSet) reserve(key string, n int, now time.Time) time.Duration {
	if l.limit <= 0 {
		return 0
	}
	now = l.lock(now)
	defer l.mu.Unlock()
	return l.entryLocked(key, "", 0, now).lim.ReserveN(now, min(max(n, 1), l.burst)).DelayFrom(now)
}

// charge takes n more requests from key's limiter, at most one burst, whether or not they are
// there: the key's next requests wait until the limiter has refilled. A key without a
// limiter (none made, or swept) is not charged.
func (l *limiterSet) charge(key string, n int, now time.Time) {
	if l.limit <= 0 || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clock != nil {
		now = l.clock()
	}
	if e := l.m[key]; e != nil {
		e.lim.ReserveN(now, min(n, l.burst))
	}
}

// sweepLocked forgets the limiters unused for limiterIdle; l.mu must be held.
func (l *limiterSet) sweepLocked(now time.Time) {
	for k, e := range l.m {
		if now.Sub(e.seen) > limiterIdle {
			delete(l.m, k)
			if e.owner != "" {
				if l.owned[e.owner]--; l.owned[e.owner] <= 0 {
					delete(l.owned, e.owner)
				}
			}
		}
	}
	l.swept = now
}

// loadTokens makes the token records among m (system keys, their values and mod_revisions,
// read at revision rev) the tokens this replica knows, ending the long-polls of tokens that went
// or changed secret.
func (s *Server) loadTokens(m map[string]store.SysValue, rev int64) {
	recs := make([]*tokenRecord, 0, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, tokenPrefix) {
			continue
		}
		rec, err := decodeToken(k, v.Data)
		if err != nil {
			s.log.Error("skipping a malformed token record", "key", k, "err", err)
			continue
		}
		rec.rev = v.Rev
		recs = append(recs, rec)
	}
	for _, name := range s.auth.replace(recs, rev) {
		s.hub.revoke(name)
	}
	s.auth.loaded.Store(true)
}

func decodeToken(key string, data []byte) (*tokenRecord, error) {
	var rec tokenRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode token %s: %w", key, err)
	}
	if rec.Name != strings.TrimPrefix(key, tokenPrefix) || len(rec.Hash) != sha256.Size*2 {
		return nil, fmt.Errorf("decode token %s: name or hash does not fit", key)
	}
	if rec.Instance != "" {
		rec.raw = data
	}
	return &rec, nil
}

// tokenChanged applies a watch event of token name's record, at revision rev: a delete is a
// revocation; a put is the record itself, taken from the event (never read back, so that a
// store that fails reads cannot keep a revoked token valid). A record that does not decode is
// refused like a revoked one.
func (s *Server) tokenChanged(name string, c store.SysChange, rev int64) {
	var rec *tokenRecord
	if !c.Deleted {
		var err error
		if rec, err = decodeToken(tokenPrefix+name, c.Value); err != nil {
			s.log.Error("refusing a malformed token record", "token", name, "err", err)
		} else {
			rec.rev = rev
		}
	}
	// An instance's token changed (enrolled, taken over, forgotten, expired), perhaps through
	// another replica: what this one wrote of the previous token's reports is not the new
	// holder's, whose first report must be written (it also tells an enrollment key that the
	// token was used; see retriedByHolder). The reports share the token's name, not its secret:
	// the record as it was or as it is now names the instance (the name is made of it).
	inst := rec
	if inst == nil {
		inst = s.auth.byNameRecord(name)
	}
	if inst != nil && inst.Instance != "" {
		s.reports.forget(inst.Appliance, inst.Instance)
	}
	if rec != nil {
		if s.auth.set(rec, rev) {
			s.hub.revoke(name)
		}
		return
	}
	if s.auth.remove(name, rev) {
		s.log.Info("token revoked", "token", name)
	}
	s.hub.revoke(name)
}

// bootstrap prepares a fresh store at start: on a store with no tokens it creates the admin
// token (by compare-and-swap, so that replicas starting together make one) and writes it to
// AdminTokenFile, mode 0600. When the store is away, it keeps trying in the background.
func (s *Server) bootstrap(ctx context.Context) error {
	s.bootstrapped.Store(true)
	var err error
	if s.st.Answered() {
		err = s.createAdminToken(ctx)
		if err == nil {
			return nil
		}
		var e *api.Error
		if !errors.As(err, &e) || (e.Code != api.CodeUnavailable && e.Code != api.CodeOutcomeUnknown) {
			return err
		}
	} else {
		// Not asked on the way (see New): the first try took the store's request timeout.
		err = errors.New("etcd has not answered since start")
	}
	s.log.Warn("store unavailable; will create the admin token when it is back", "err", err)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		backoff := 500 * time.Millisecond
		for {
			sleep(s.ctx, jitter(backoff))
			if s.ctx.Err() != nil {
				return
			}
			if err := s.createAdminToken(s.ctx); err == nil {
				return
			} else {
				s.log.Warn("create the admin token", "err", err)
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}()
	return nil
}

// bootstrapAgain does bootstrap's work, in the background, on the store this replica found
// itself on instead of the one it knew (see afterStoreChange), when it keeps the admin token
// file: on a store with no token at all (etcd wiped and started afresh) it creates the admin
// token as at a first start, where every request would otherwise be refused (401) until the
// replica restarted. A store that holds tokens (another cluster, a restore) is left as it is.
func (s *Server) bootstrapAgain() {
	if !s.bootstrapped.Load() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.bootstrap(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Error("create the admin token on the store this replica is on now", "err", err.Error())
		}
	}()
}

// pendingAdmin is an admin token whose creation may have been applied without the server
// learning it (outcome_unknown): its secret waits in a temp file until the store says.
type pendingAdmin struct {
	rec     *tokenRecord
	tmp     string
	kept    string // what the admin token file held, kept beside it
	storeID []byte // the id of the store it was sent to
}

// afterAdminTokenList, when set (by tests), runs after createAdminToken found no token and before
// it writes one.
var afterAdminTokenList func()

func (s *Server) createAdminToken(ctx context.Context) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// The store id is read with the tokens, and the admin token written only while it is still
	// that: the endpoints may lead to another store between the two (etcd's endpoints flapping
	// between two clusters), one that holds tokens.
	existing, _, err := s.st.SysList(ctx, tokenPrefix, storeIDKey)
	if err != nil {
		return fmt.Errorf("read tokens: %w", err)
	}
	storeID := existing[storeIDKey]
	delete(existing, storeIDKey)
	if p := s.adminPending; p != nil {
		if !bytes.Equal(p.storeID, storeID) && len(existing) > 0 {
			// Read from another store, one that holds tokens: the last try's outcome is learnt
			// once the endpoints lead back to the store it was sent to (see bootstrapAgain).
			return nil
		}
		// The last try's outcome is learnt now: its record is there (ours), or it never was.
		s.adminPending = nil
		if data, ok := existing[tokenPrefix+adminTokenName]; ok {
			if rec, err := decodeToken(tokenPrefix+adminTokenName, data); err == nil && rec.Hash == p.rec.Hash {
				return s.installAdminToken(p.rec, p.tmp, p.kept)
			}
		}
		os.Remove(p.tmp)
		dropKept(s.cfg.adminTokenFile(), p.kept)
	}
	if !s.leftChecked {
		s.leftChecked = true
		s.adoptLeftAdminToken(existing[tokenPrefix+adminTokenName], storeID)
	}
	if len(existing) > 0 {
		return nil
	}
	if afterAdminTokenList != nil {
		afterAdminTokenList()
	}
	path := s.cfg.adminTokenFile()
	secret, err := newSecret()
	if err != nil {
		return err
	}
	tmp, err := writeSecretFile(path, secret, storeID)
	if err != nil {
		return err
	}
	// Before the record is stored: a token file that cannot be kept stops here, with no admin
	// token in the store whose secret would then be thrown away (a lockout for good).
	kept, err := keepOldAdminToken(path)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create admin token: %w", err)
	}
	rec := &tokenRecord{Name: adminTokenName, Hash: hashSecret(secret), Admin: true, Created: time.Now().UTC().Truncate(time.Second)}
	data, _ := json.Marshal(rec)
	guards := []store.SysGuard{{Key: tokenPrefix + adminTokenName}}
	if storeID != nil {
		guards = append(guards, store.SysGuard{Key: storeIDKey, Value: storeID})
	}
	if _, err := s.st.SysApply(ctx, guards, map[string][]byte{tokenPrefix + adminTokenName: data}, nil); err != nil {
		var e *api.Error
		if errors.As(err, &e) && e.Code == api.CodeOutcomeUnknown {
			// Perhaps applied: keep the secret until the next try can tell.
			s.adminPending = &pendingAdmin{rec: rec, tmp: tmp, kept: kept, storeID: storeID}
			return fmt.Errorf("create admin token: %w", err)
		}
		os.Remove(tmp)
		// The file stays as it is: what was kept of it is not needed (another replica made the
		// token, and this one's file is not replaced).
		dropKept(path, kept)
		if errors.Is(err, api.ErrConflict) {
			if _, _, gerr := s.st.SysGet(ctx, tokenPrefix+adminTokenName); !errors.Is(gerr, api.ErrNotFound) {
				return nil // another replica made it
			}
			// The endpoints led to another store meanwhile (its id failed the guard): the next
			// try reads the tokens of the store they lead to now.
			return api.Errorf(api.CodeUnavailable, "create admin token: the store changed while it was written")
		}
		return fmt.Errorf("create admin token: %w", err)
	}
	return s.installAdminToken(rec, tmp, kept)
}

// afterLeftSecretsList, when set (by tests), runs after adoptLeftAdminToken listed the directory
// of the admin token file and before it looks at what it found.
var afterLeftSecretsList func()

// leftSecretAge is how old a temp file of the admin token's secret must be before a replica
// that starts removes it as an earlier run's: younger, it may be another replica's, given the
// same file, on its way to the store.
const leftSecretAge = 2 * time.Minute

// adoptLeftAdminToken deals with the temp files (.NAME.tmp*) an earlier run left beside the
// admin token file, at the first look at the store's tokens since this run started; stored is
// the store's admin token record (nil if none). A run that stopped while its admin token's write
// had an unknown outcome left the token's secret there: the one whose secret is the store's admin
// token is installed as the file, as that run would have once it learnt that the write applied,
// or the store's only admin token would be one whose secret nobody has. The others written for
// this store (storeID, see secretTempPattern) hold secrets it does not hold (their writes never
// applied), and are removed once they are leftSecretAge old; those written for another store
// (another --root, cluster or data dir given the same file) are left be: that store may hold
// the secret, and its next start installs it.
func (s *Server) adoptLeftAdminToken(stored, storeID []byte) {
	path := s.cfg.adminTokenFile()
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	if afterLeftSecretsList != nil {
		afterLeftSecretsList()
	}
	var rec *tokenRecord
	if stored != nil {
		rec, _ = decodeToken(tokenPrefix+adminTokenName, stored)
	}
	ours := storeTag(storeID)
	for _, e := range entries {
		tag, ok := leftSecretTag(path, e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		tmp := filepath.Join(dir, e.Name())
		// Read without following a symbolic link at its name: whoever may write the directory
		// may have swapped one in since it was listed, and a link that leads to the secret
		// would be renamed over the file.
		secret, _, err := atomicfile.ReadRegular(nil, tmp, 64<<10, nil)
		if err != nil {
			continue // unread, it may hold a secret: left as it is
		}
		if rec != nil && isSecretOf(secret, rec) {
			if holdsSecretOf(path, rec) {
				// A copy of what the file holds: another replica given the same file installed it.
				os.Remove(tmp)
				rec = nil
				continue
			}
			s.log.Warn("found the admin token's secret where an earlier run left it, stopped before it learnt that the token was stored; installing it",
				"file", path, "found", tmp)
			kept, err := keepOldAdminToken(path)
			if err == nil {
				err = s.installAdminToken(rec, tmp, kept)
			}
			if err != nil {
				s.log.Error("install the admin token an earlier run left", "file", path, "found", tmp, "err", err.Error())
			}
			rec = nil // one is the store's
			continue
		}
		if tag == ours && tag != "" {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > leftSecretAge {
				os.Remove(tmp)
			}
		}
	}
}

// secretTempPattern is the pattern (os.CreateTemp's) of the name of a temp file beside the admin
// token file path that holds the secret of an admin token on its way to the store whose id is
// storeID: .NAME.tmpTAG-*, TAG naming the store (see storeTag), or .NAME.tmp* when its id is not
// known. A server of another store given the same file leaves it be (see adoptLeftAdminToken).
func secretTempPattern(path string, storeID []byte) string {
	if tag := storeTag(storeID); tag != "" {
		return "." + filepath.Base(path) + ".tmp" + tag + "-*"
	}
	return "." + filepath.Base(path) + ".tmp*"
}

// leftSecretTag says whether name is one secretTempPattern(path, ...) makes, and the tag of the
// store it names ("" for none). Names of other files that begin the same (the temp files of an
// admin token file named NAME.tmp2 in the same directory) are not.
func leftSecretTag(path, name string) (tag string, ok bool) {
	rest, ok := strings.CutPrefix(name, "."+filepath.Base(path)+".tmp")
	if !ok {
		return "", false
	}
	if t, r, found := strings.Cut(rest, "-"); found {
		if len(t) != storeTagLen || strings.Trim(t, "0123456789abcdef") != "" {
			return "", false
		}
		tag, rest = t, r
	}
	return tag, rest != "" && strings.Trim(rest, "0123456789") == ""
}

// storeTagLen is the length of storeTag's tags: short, so that a temp file's name (NAME and 20
// bytes) fits wherever the name the file is kept as does (NAME.replaced-TIME, NAME and 26 bytes;
// see TestServe_AdminTokenFileNotKeptStoresNoToken). Two stores share a tag once in 65536: their
// servers remove each other's old temp files, as all did before the tag.
const storeTagLen = 4

// storeTag names the store whose id is storeID in the names of temp files ("" when its id is
// not known): a hash, of a fixed length and safe in a name whatever the id holds.
func storeTag(storeID []byte) string {
	if len(storeID) == 0 {
		return ""
	}
	h := sha256.Sum256(storeID)
	return hex.EncodeToString(h[:storeTagLen/2])
}

// installAdminToken moves the secret of rec, stored in the store, from tmp to the admin token
// file; kept is where the token the file held was kept ("" if none).
func (s *Server) installAdminToken(rec *tokenRecord, tmp, kept string) error {
	path := s.cfg.adminTokenFile()
	if err := os.Rename(tmp, path); err != nil {
		if !errors.Is(err, fs.ErrNotExist) || !holdsSecretOf(path, rec) {
			return fmt.Errorf("create admin token: %w", err)
		}
		// Gone, with the file holding it: another replica given the same file installed it, as
		// an earlier run's (see adoptLeftAdminToken). What this one kept of the file once that
		// one had is the secret itself, not a token of another store.
		if kept != "" && holdsSecretOf(kept, rec) {
			os.Remove(kept)
			kept = ""
		}
	}
	syncDir(filepath.Dir(path))
	s.auth.set(rec, 0)
	if kept != "" {
		s.log.Warn("the admin token file held a token this store does not know (another --root, etcd cluster or data dir?): kept it next to the new one",
			"file", path, "kept", kept)
	}
	s.log.Info("created the admin token", "file", path)
	return nil
}

// holdsSecretOf says whether the file path holds the secret of rec.
func holdsSecretOf(path string, rec *tokenRecord) bool {
	data, _, err := atomicfile.ReadRegularFollow(path, 64<<10, nil)
	return err == nil && isSecretOf(data, rec)
}

// isSecretOf says whether data, a secret file's content, is the secret of rec.
func isSecretOf(data []byte, rec *tokenRecord) bool {
	return hashSecret(string(bytes.TrimSpace(data))) == rec.Hash
}

// keepOldAdminToken keeps what an admin token file holds beside it, as path.replaced-TIME (the
// name it returns; "" when there is nothing to keep, or it was kept already), before a new admin
// token takes its place: the store has no token, so the file belongs to another store (another
// --root, etcd cluster or data dir given the same file), and its secret, stored nowhere else,
// would be lost for good.
func keepOldAdminToken(path string) (string, error) {
	// Read without blocking on a FIFO at the name (it would wait for a writer for good) and
	// within a bound: what is not a regular file holds no token to keep.
	old, _, err := atomicfile.ReadRegularFollow(path, 64<<10, nil)
	if err != nil || len(bytes.TrimSpace(old)) == 0 {
		return "", nil // nothing to keep (a missing file is the usual first start)
	}
	if keptAlready(path, old) {
		return "", nil // by an earlier try, whose write of the new token is not known to have failed
	}
	base := path + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
	kept := base
	for i := 2; ; i++ {
		err = linkFile(path, kept)
		if err != nil && !errors.Is(err, os.ErrExist) {
			// A file system without hard links: a copy, as private as the file.
			err = createPrivate(kept, old)
		}
		if !errors.Is(err, os.ErrExist) {
			break
		}
		kept = fmt.Sprintf("%s-%d", base, i)
	}
	if err != nil {
		return "", fmt.Errorf("keep the token already in %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return kept, nil
}

// dropKept removes kept, what keepOldAdminToken kept of path for a new admin token that did not
// take its place after all, while path still holds the same.
func dropKept(path, kept string) {
	if kept == "" {
		return
	}
	data, _, err := atomicfile.ReadRegularFollow(path, 64<<10, nil)
	if err == nil && holds(kept, path, data) {
		os.Remove(kept)
	}
}

// holds says whether kept, a regular file, is path (a hard link) or holds data, what path holds.
func holds(kept, path string, data []byte) bool {
	ki, err := os.Lstat(kept)
	if err != nil || !ki.Mode().IsRegular() {
		return false
	}
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, ki) {
		return true
	}
	b, _, err := atomicfile.ReadRegularFollow(kept, 64<<10, nil)
	return err == nil && bytes.Equal(b, data)
}

// keptAlready says whether a file path.replaced-* is path itself (a hard link) or holds data,
// what path holds. The directory is listed rather than globbed: path may hold characters a
// pattern reads as wildcards, and on Windows a pattern cannot escape them.
func keptAlready(path string, data []byte) bool {
	entries, _ := os.ReadDir(filepath.Dir(path))
	prefix := filepath.Base(path) + ".replaced-"
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && holds(filepath.Join(filepath.Dir(path), e.Name()), path, data) {
			return true
		}
	}
	return false
}

// linkFile is os.Link, replaced in tests by one that fails as a file system without hard
// links does.
var linkFile = os.Link

// createPrivate creates the file name (never one that exists) holding data, mode 0600, synced.
func createPrivate(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return writeSynced(f, data)
}

// writeSynced writes data to f, a file it has just created, syncs and closes it; on any failure
// the file is removed, so no partial secret is left behind.
func writeSynced(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// writeSecretFile writes secret, that of an admin token on its way to the store whose id is
// storeID, to a new temp file next to path (see secretTempPattern), mode 0600, and returns its name.
func writeSecretFile(path, secret string, storeID []byte) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, secretTempPattern(path, storeID))
	if err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	name := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		err = writeSynced(f, []byte(secret+"\n"))
	} else {
		f.Close()
		os.Remove(name)
	}
	if err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	return name, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
