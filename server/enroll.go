package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Enrollment: an agent presents its appliance's token (shared by the fleet) once and obtains
// an instance token bound to its instance name. Reports of an enrolled instance are taken only
// from its instance token, so that a rollout's gates count what the instance itself said.
//
// An instance token is a token record like the others, named instanceTokenName(appliance,
// instance): the ':' makes the name one no user token can take (token names are segments).
// It grants what the appliance token grants (read the view, report), for its instance only.

// instanceTokenName is the reserved name of the instance token of appliance's instance.
func instanceTokenName(appliance, instance string) string {
	return "instance:" + appliance + ":" + instance
}

// instanceRecordKey is the system key of an instance's record.
func instanceRecordKey(appliance, instance string) string {
	return instancePrefix + appliance + "/" + instance
}

// instanceErrorKey is the system key of the last failure an enrolled instance reported. It
// goes with the record: forget, expiry and a takeover remove it.
func instanceErrorKey(appliance, instance string) string {
	return reportErrorPrefix + appliance + "/" + instance
}

// enrolled reports whether appliance's instance holds an instance token, as this replica knows
// (the token watch keeps it current).
func (a *authState) enrolled(appliance, instance string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.byName[instanceTokenName(appliance, instance)] != nil
}

// enrolledBy counts the instance tokens that agent token parent enrolled, but the one named
// except. (It walked every token: each enrollment of a fleet of N cost N, N² in all.)
func (a *authState) enrolledBy(parent, except string) int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.enrolledByLocked(parent, except)
}

// enrolledByLocked is enrolledBy with a.mu held.
func (a *authState) enrolledByLocked(parent, except string) int {
	n := a.children[parent]
	if rec := a.byName[except]; rec != nil && rec.Parent == parent {
		n--
	}
	return n
}

// reserveEnrollment takes one of agent token parent's max places for an enrollment of the
// instance token named except, unless the tokens it enrolled but except, with its enrollments
// under way on this replica, fill them: then it reports how many those are and false. A place
// taken is given back by release, once the enrollment wrote its token (and set it here) or
// failed. Checked against the cache alone, enrollments sent together all passed the check before
// any was written (48 at once under --max-instances 5). An enrollment under way counts once per
// name, and not at all for a name parent's tokens hold already: it adds no token (its holder
// asking again, a new machine taking over a stale name), and those at the cap were refused as
// over it when they came together.
func (a *authState) reserveEnrollment(parent, except string, max int) (n int, release func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n = a.enrolledByLocked(parent, except)
	for name := range a.enrolling[parent] {
		if rec := a.byName[name]; name != except && (rec == nil || rec.Parent != parent) {
			n++
		}
	}
	if n >= max {
		return n, nil, false
	}
	if a.enrolling[parent] == nil {
		a.enrolling[parent] = map[string]int{}
	}
	a.enrolling[parent][except]++
	var once sync.Once
	return n, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			m := a.enrolling[parent]
			if m[except]--; m[except] <= 0 {
				delete(m, except)
			}
			if len(m) == 0 {
				delete(a.enrolling, parent)
			}
		})
	}, true
}

// enrollRetryAge is how old a token never used must be for its enrollment key to enroll its
// instance again (see retriedByHolder): agents ask again after enrollEvery, a minute.
const enrollRetryAge = 10 * time.Second

// enrollTries bounds the reads and guarded writes of one enrollment: a report of the instance
// written between the two makes the write fail its guard and the enrollment read again.
const enrollTries = 3

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	p := principalOf(r)
	if !p.admin && (p.appliance != name || p.instance != "") {
		return forbidden("token %s may not enroll instances of appliance %s: that needs the appliance's agent token (shoelace token create --appliance %s)",
			shorten(p.name), shorten(name), name)
	}
	if err := jsonContent(r); err != nil {
		return err
	}
	data, err := readBody(w, r, 4<<10, func() error {
		return api.Errorf(api.CodeBodyTooLarge, "enrollment request is over the limit of 4096 bytes")
	})
	if err != nil {
		return err
	}
	var req api.Enroll
	if err := strictJSON(data, &req); err != nil {
		return err
	}
	if err := validInstanceName("instance name", req.Instance); err != nil {
		return err
	}
	key, err := enrollKey(r)
	if err != nil {
		return err
	}
	tokName := instanceTokenName(name, req.Instance)
	parent, release := "", func() {}
	if !p.admin {
		parent = p.name
		n, rel, ok := s.auth.reserveEnrollment(parent, tokName, s.cfg.MaxInstances)
		if !ok {
			return api.Errorf(api.CodeConflict, "token %s has enrolled %d instances, the limit (--max-instances): free some with shoelace appliance forget %s INSTANCE",
				shorten(p.name), n, name)
		}
		release = rel
		defer release()
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	for try := 1; ; try++ {
		out, rev, err := s.enroll(ctx, r, name, req.Instance, parent, key)
		if errors.Is(err, api.ErrConflict) && !isEnrolledConflict(err) && try < enrollTries {
			continue // the record or the token changed since read: read again
		}
		release() // written (and counted in children by set) or not: the place goes back
		if err != nil {
			return err
		}
		s.audit(r, "instance-enroll", []string{name + "/" + req.Instance}, rev)
		return writeJSON(w, http.StatusCreated, rev, out)
	}
}

// enrolledConflict refuses to enroll a name whose holder is still fresh.
type enrolledConflict struct{ err *api.Error }

func (e enrolledConflict) Error() string { return e.err.Error() }
func (e enrolledConflict) Unwrap() error { return e.err }

func isEnrolledConflict(err error) bool {
	var e enrolledConflict
	return errors.As(err, &e)
}

// enrollKey is the enrollment key of r (api.HeaderEnrollKey), "" when it has none: 32 to 256
// characters of letters, digits, '-' and '_' (the agent sends 64 hex digits of a random key).
func enrollKey(r *http.Request) (string, error) {
	vs := r.Header.Values(api.HeaderEnrollKey)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", api.Errorf(api.CodeInvalidRequest, "more than one %s header", api.HeaderEnrollKey)
	}
	k := vs[0]
	ok := len(k) >= 32 && len(k) <= 256
	for i := 0; ok && i < len(k); i++ {
		c := k[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return "", api.Errorf(api.CodeInvalidRequest, "%s must be 32 to 256 letters, digits, '-' or '_' (%d characters given)", api.HeaderEnrollKey, len(k))
	}
	return k, nil
}

// retriedByHolder reports whether an enrollment with key is the holder of token old asking
// again because the answer that carried old never reached it: old was made for the same key,
// and the instance's record was not written since the enrollment wrote it with old (at
// revision tokRev; recRev is the record's): only reports made with old write it, and a token
// that reported got its answer. Another machine with a copy of the key (a clone of the VM)
// cannot take over an instance that has reported.
func retriedByHolder(old *tokenRecord, key string, recRev, tokRev int64) bool {
	return sameEnrollKey(old, key) && recRev == tokRev
}

// sameEnrollKey reports whether token old was enrolled with enrollment key key.
func sameEnrollKey(old *tokenRecord, key string) bool {
	return key != "" && old != nil && old.EnrollKey != "" &&
		subtle.ConstantTimeCompare([]byte(old.EnrollKey), []byte(hashSecret(key))) == 1
}

// cloneConflict refuses an enrollment made with the enrollment key of instance's holder, token
// old, that is not its holder asking again (see retriedByHolder): another machine with a copy
// of the key file (a clone of the VM, or an image made after the agent's first start) and the
// same instance name. It says so, and what to do, rather than that the name may be taken over
// once stale: forgetting it would only hand the name from one clone to the other. used: old has
// reported; else it is younger than enrollRetryAge (until then its holder is not answered).
func (s *Server) cloneConflict(appliance, instance string, old *tokenRecord, used bool, now time.Time) error {
	s.log.Warn("enrollment refused: another machine has the enrollment key of the instance's holder (a clone?)",
		"appliance", appliance, "instance", shorten(instance), "enrolled", old.Created)
	fix := fmt.Sprintf("give this machine an instance name of its own (instance in the agent's config; the default is its hostname) "+
		"and remove its enrollment key file (%s.enroll-key in the agent's cache_dir)", appliance)
	if !used {
		return enrolledConflict{api.Errorf(api.CodeConflict,
			"instance %s of appliance %s is enrolled already, %s ago with this same enrollment key, and its token has not been used yet: "+
				"if this is that agent asking again (its answer lost), it is answered from %s; if it is another machine with a copy of the key "+
				"(a clone of the VM, or of an image made after the agent's first start), %s",
			shorten(instance), shorten(appliance), now.Sub(old.Created).Round(time.Second), old.Created.Add(s.enrollRetryAge).Format(time.RFC3339), fix)}
	}
	// An agent whose instance token file was deleted or damaged asks with its key as a clone
	// does: its own enrollment holds the name, which the message says first.
	return enrolledConflict{api.Errorf(api.CodeConflict,
		"instance %s of appliance %s is enrolled already (at %s) with this same enrollment key: its name is held by another enrollment. "+
			"If this machine's agent lost its instance token file (deleted or damaged), that enrollment is its own: free the name with shoelace appliance forget %s %s. "+
			"Else it is another machine with this same enrollment key, one of the two a clone of the other "+
			"(a copy of the VM, or of an image made after the agent's first start): %s; if the other machine is gone, free the name with shoelace appliance forget %[4]s %[5]s",
		shorten(instance), shorten(appliance), old.Created.Format(time.RFC3339), appliance, instance, fix)}
}

// enroll reads the instance's record and token, and writes a new token and the record in one
// transaction guarded by what it read, so that two replicas never enroll one name twice. An
// enrollment with the enrollment key of a token never used replaces it (see retriedByHolder).
func (s *Server) enroll(ctx context.Context, r *http.Request, appliance, instance, parent, key string) (api.Enrolled, int64, error) {
	tokName := instanceTokenName(appliance, instance)
	recKey, tokKey := instanceRecordKey(appliance, instance), tokenPrefix+tokName
	// Not kept to the second, as other times of records are: the enrollment time tells an
	// instance a rollout drew from one enrolled after its start (forgotten or taken over, and
	// enrolled again), and a rollout's start is kept whole. Within the start's second, a time
	// cut to it passed for one before the start, and the new holder was served the candidate.
	now := time.Now().UTC()
	var in api.Instance
	// One read of both: an enrollment through another replica writes them together, and a
	// record read before it beside a token read after it looked like a token already used.
	both, err := s.st.SysGets(ctx, recKey, tokKey, store.IDKey)
	if err != nil {
		return api.Enrolled{}, 0, err
	}
	recData, recRev, tokData, tokRev := both[0].Data, both[0].Rev, both[1].Data, both[1].Rev
	// Neither the record nor the token written since the store got its id: the store was
	// restored from a snapshot (or its revision went back) since the holder last reported.
	// The holder may have enrolled again after the snapshot; its newer token is lost with the
	// history after it, and it asks again with its key: it is not a clone of itself.
	restored := both[2].Rev > max(recRev, tokRev)
	if recRev > 0 {
		if err := json.Unmarshal(recData, &in); err != nil {
			in = api.Instance{}
		}
	}
	// The holder is fresh while seen, or enrolled, within InstanceStale.
	var last time.Time
	retried := false
	enrolled := now       // when the instance was enrolled: now, unless its holder asks again
	var enrolledRev int64 // and at which revision, when its holder asks again: 0 is this write's
	if tokRev > 0 {
		old, err := decodeToken(tokKey, tokData)
		if err == nil {
			last = old.Created
		}
		if in.Enrolled && in.LastSeen.After(last) {
			last = in.LastSeen
		}
		if in.EnrolledAt != nil && in.EnrolledAt.After(last) {
			last = *in.EnrolledAt
		}
		// Not sooner than enrollRetryAge after the token it replaces (an agent asks again
		// a minute later): a holder of the key enrolling again and again would cost a write,
		// a revocation and an audit line each time, and a clone booted with a copy of the key
		// gets 409 once the other has reported.
		retried = err == nil && (retriedByHolder(old, key, recRev, tokRev) && !now.Before(old.Created.Add(s.enrollRetryAge)) ||
			restored && sameEnrollKey(old, key))
		if retried {
			// The same holder, enrolled when its lost answer was made: a rollout that drew the
			// instance since still counts it.
			old.rev = tokRev
			enrolled, enrolledRev = old.enrolledAt(), old.enrolledRevision()
		}
		if free := last.Add(s.cfg.InstanceStale); now.Before(free) && !retried {
			if err == nil && sameEnrollKey(old, key) {
				return api.Enrolled{}, 0, s.cloneConflict(appliance, instance, old, recRev != tokRev, now)
			}
			return api.Enrolled{}, 0, enrolledConflict{api.Errorf(api.CodeConflict,
				"instance %s of appliance %s is enrolled already (last seen %s): its name is held by another enrollment (this machine's own, if its agent lost its instance token file); it may be taken over from %s (--instance-stale %s), or freed now with shoelace appliance forget %s %s",
				shorten(instance), shorten(appliance), last.Format(time.RFC3339), free.Format(time.RFC3339), s.cfg.InstanceStale, appliance, instance)}
		}
	}
	secret, err := newSecret()
	if err != nil {
		return api.Enrolled{}, 0, err
	}
	tok := &tokenRecord{Name: tokName, Hash: hashSecret(secret), Appliance: appliance, Instance: instance, Parent: parent, Created: now}
	if enrolled.Before(now) {
		tok.Enrolled, tok.EnrolledRev = enrolled, enrolledRev
	}
	if key != "" {
		tok.EnrollKey = hashSecret(key)
	}
	// What the instance last reported stays; the record is now the enrolled holder's.
	in.Appliance, in.Instance, in.LastSeen, in.Remote, in.Token = appliance, instance, now, clientIP(r), tokName
	in.Enrolled, in.EnrolledAt = true, &enrolled
	tokBody, err := json.Marshal(tok)
	if err != nil {
		return api.Enrolled{}, 0, err
	}
	tok.raw = tokBody
	recBody, err := json.Marshal(in)
	if err != nil {
		return api.Enrolled{}, 0, err
	}
	// A failure the previous holder reported is not the new holder's.
	rev, err := s.st.SysApply(ctx, []store.SysGuard{{Key: recKey, Rev: recRev}, {Key: tokKey, Rev: tokRev}},
		map[string][]byte{recKey: recBody, tokKey: tokBody}, []string{instanceErrorKey(appliance, instance)})
	if err != nil {
		return api.Enrolled{}, 0, err
	}
	tok.rev = rev
	if s.auth.set(tok, rev) {
		s.hub.revoke(tokName) // taken over: the old holder's long-polls end
		if retried && restored {
			s.log.Info("instance enrolled again by its holder (the store was restored since its last report)", "appliance", appliance, "instance", instance)
		} else if retried {
			s.log.Info("instance enrolled again by its holder (the answer with its token, never used, was lost)", "appliance", appliance, "instance", instance)
		} else {
			s.log.Info("instance taken over", "appliance", appliance, "instance", instance, "last_seen", last)
		}
	}
	s.reports.forget(appliance, instance)
	return api.Enrolled{Appliance: appliance, Instance: instance, Token: secret, Enrolled: enrolled}, rev, nil
}

func (s *Server) handleForgetInstance(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	name, instance := r.PathValue("name"), r.PathValue("instance")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	if err := api.ValidateSegment("instance name", instance); err != nil {
		return err
	}
	tokName := instanceTokenName(name, instance)
	recKey, tokKey := instanceRecordKey(name, instance), tokenPrefix+tokName
	ctx, cancel := s.opCtx(r)
	defer cancel()
	m, _, err := s.st.SysList(ctx, recKey, tokKey)
	if err != nil {
		return err
	}
	_, hasRec := m[recKey]
	_, hasTok := m[tokKey]
	if !hasRec && !hasTok {
		return api.Errorf(api.CodeNotFound, "instance %s of appliance %s not found: no record and no instance token", shorten(instance), shorten(name))
	}
	rev, err := s.st.SysApply(ctx, nil, nil, []string{recKey, tokKey, instanceErrorKey(name, instance)})
	if err != nil {
		return err
	}
	s.auth.remove(tokName, rev)
	s.hub.revoke(tokName)
	s.reports.forget(name, instance)
	s.audit(r, "instance-forget", []string{name + "/" + instance}, rev)
	return writeJSON(w, http.StatusOK, rev, api.WriteResult{Revision: rev})
}

// heldGuard holds while the store holds the token record of instance token p as p was read
// from it: not once the instance was enrolled again (another secret under the same name) or
// forgotten.
func heldGuard(p *principal) store.SysGuard {
	return store.SysGuard{Key: tokenPrefix + p.name, Value: heldRecord(p)}
}

// heldRecord is the token record that instance token p was read from, which its writes are
// guarded on. Another principal (or none) has none, and gets an empty value, which is no
// token record: its guard never holds.
func heldRecord(p *principal) []byte {
	if p == nil || p.record == nil {
		return []byte{}
	}
	return p.record
}

// heldRefusal is the answer to instance token p whose write failed with err: 401 when
// heldGuard failed (its token is no longer the instance's), else err.
func (s *Server) heldRefusal(p *principal, err error) error {
	if !errors.Is(err, api.ErrConflict) {
		return err
	}
	switch cur := s.auth.byNameRecord(p.name); {
	case cur == nil:
		return instanceTokenGone(p.name, tokenGoneRevoked)
	case !bytes.Equal(cur.raw, p.record):
		return instanceTokenGone(p.name, tokenGoneReplaced)
	}
	return instanceTokenGone(p.name, tokenGoneUnknown) // this replica has not seen it go yet
}

// reportAs makes in a report made by p: its token, and for an instance token its enrollment,
// which a report carries over so that it never erases it from the record.
func (p *principal) reportAs(in *api.Instance) {
	in.Token = p.name
	if p.instance != "" {
		t := p.enrolled
		in.Enrolled, in.EnrolledAt, in.EnrolledRevision = true, &t, p.enrolledRev
	}
}

// isInstanceToken reports whether name is an instance token's (reserved) name.
func isInstanceToken(name string) bool {
	return strings.HasPrefix(name, "instance:")
}

// forget drops what the reporter knows of appliance's instance, so that the next report of its
// new holder is written at once.
func (r *reporter) forget(appliance, instance string) {
	key := appliance + "/" + instance
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.written, key)
	delete(r.took, key)
	delete(r.urgent, key)
	if prev, ok := r.owner[key]; ok {
		if r.held[prev]--; r.held[prev] <= 0 {
			delete(r.held, prev)
		}
		delete(r.owner, key)
	}
}
