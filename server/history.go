package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// ApplianceAt answers GET /v1/appliances/{name}/at/{revision}: the appliance's own keys as they
// were at a past revision; applying them again (PUT /v1/appliances/{name} with {"keys":…}) is
// how `shoelace appliance rollback` works.
type ApplianceAt struct {
	Appliance string            `json:"appliance"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys"`
}

func (s *Server) handleApplianceAt(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	rev, err := strconv.ParseInt(r.PathValue("revision"), 10, 64)
	if err != nil || rev <= 0 {
		return api.Errorf(api.CodeInvalidRequest, "revision %s: a revision is a positive number", shorten(r.PathValue("revision")))
	}
	if err := principalOf(r).mayRead(api.ApplianceRoot(name)); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	// The release copy before a revision a restore lost holds the snapshot's tree, not R's.
	if err := s.lostRevision(ctx, rev, "its keys then cannot be read (a rollback to the snapshot's revision restores what the store holds of that time)"); err != nil {
		return err
	}
	// A replica reads and encodes historyReadsAtOnce such trees at a time (each is read for
	// its request alone: a past revision has no flight to share): twenty requests at once for
	// an appliance of 8 MiB held twenty copies of its tree, decoded and encoded, before the
	// bound on answers counted them. The slot is given back once the answer (or its part) is
	// encoded, before it is written, so that a client that reads slowly holds none (the bound
	// counts it then).
	done, err := s.historySlot(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if done != nil {
			done()
		}
	}()
	err = s.writeApplianceAt(ctx, w, r, name, rev, &done)
	if done != nil {
		done()
		done = nil
	}
	if err != nil && !answerBegan(w) {
		if code := api.AsError(err).Code; code == api.CodeNotFound || code == api.CodeCompacted {
			// No keys then, or none kept: of a name the store holds nothing of (a mistyped
			// one), say that instead, as its releases do (a rollback of it said "no keys at
			// revision R", or that R was compacted).
			if uerr := s.applianceUnknown(ctx, name, nil); uerr != nil {
				return uerr
			}
		}
	}
	return err
}

// historyReadsAtOnce is how many appliance trees at a past revision a replica reads at once.
const historyReadsAtOnce = 4

// atPartBytes is the JSON of an appliance's keys at a past revision that a replica gathers
// before it writes it: a tree whose answer is no larger is answered whole, as before; a larger
// one is written in parts of about that size as it is read.
const atPartBytes = 1 << 20

// writeApplianceAt answers the appliance's own keys at rev. Its caller holds a slot of
// historySlot in *done, given back before anything is written (*done is then nil, or the slot
// taken again for the next page); the caller gives back what *done holds when it returns or
// panics.
//
// The keys are read from etcd a page at a time (store.ApplianceAtPaged), each encoded as it
// comes: read whole, a tree was held as etcd's answer, its copy as a map and its JSON, up to
// six times its size again for control characters, and ten requests at once for a tree of
// 9.5 MB of them took the heap up by 323–450 MiB. An answer over atPartBytes is written in parts,
// each counted against the bounds on answers while it is written (as a listing is), the slot
// given back while it is and taken again for the next page; its status and X-Shoelace-Index go
// with its first part, and a failure after them (etcd away, the revision compacted meanwhile)
// cuts the answer off, so that the client knows it is not whole. A revision etcd has compacted
// is answered from the release copies, whole (a copy is decoded whole to be read).
func (s *Server) writeApplianceAt(ctx context.Context, w http.ResponseWriter, r *http.Request, name string, rev int64, done *func()) error {
	var (
		buf     bytes.Buffer
		started bool
		n       int // keys encoded
		written int // bytes
	)
	head := func() error {
		b, err := api.Marshal(name)
		if err != nil {
			return err
		}
		buf.WriteString(`{"appliance":`)
		buf.Write(b)
		buf.WriteString(`,"revision":` + strconv.FormatInt(rev, 10) + `,"keys":{`)
		return nil
	}
	if err := head(); err != nil {
		return err
	}
	// The walk is bounded by the store's timeout for each page, not by ctx's for the whole: a
	// large answer is written while it is read, as fast as its client reads it.
	cur, err := s.st.ApplianceAtPaged(r.Context(), name, rev, func(kvs []api.KV, cur int64, more bool) error {
		for _, kv := range kvs {
			k, err := api.Marshal(kv.Key)
			if err != nil {
				return err
			}
			v, err := api.Marshal(kv.Value)
			if err != nil {
				return err
			}
			if n > 0 {
				buf.WriteByte(',')
			}
			buf.Write(k)
			buf.WriteByte(':')
			buf.Write(v)
			n++
		}
		if !more {
			buf.WriteString("}}\n")
		}
		if !more && !started || more && buf.Len() < atPartBytes {
			return nil // answered whole below, or gathered further
		}
		(*done)()
		*done = nil
		release, err := holdAnswerPart(w, buf.Len(), false)
		if err != nil {
			return err // once started, the bounds cut the answer off (the client asks again)
		}
		if !started {
			w.Header().Set("Content-Type", "application/json")
			setIndex(w, cur)
			w.WriteHeader(http.StatusOK)
			started = true
		}
		written += buf.Len()
		_, err = w.Write(buf.Bytes())
		release()
		buf = bytes.Buffer{} // not Reset: a request waiting for its next slot holds nothing
		if err != nil || !more {
			return err
		}
		wctx, cancel := context.WithTimeout(r.Context(), opTimeout)
		defer cancel()
		next, err := s.historySlot(wctx)
		if err != nil {
			return err
		}
		*done = next
		return nil
	})
	if err != nil && api.AsError(err).Code == api.CodeCompacted && !started {
		var keys map[string]string
		keys, cur, err = s.applianceFromReleases(ctx, name, rev)
		if err != nil {
			return err
		}
		body, err := api.Marshal(ApplianceAt{Appliance: name, Revision: rev, Keys: keys})
		if err != nil {
			return err
		}
		buf.Reset()
		buf.Write(body)
		buf.WriteByte('\n')
	}
	if started {
		// Charged once, whole, as an answer written whole is (writeEncoded).
		s.chargeAnswer(principalOf(r), written)
		if err != nil {
			// Its status is sent: cut it off, so that the client does not take what it got
			// for the whole tree.
			s.log.Warn("appliance at a revision cut off", "request_id", info(r).id, "appliance", name, "revision", rev, "err", err)
			panic(http.ErrAbortHandler)
		}
		return nil
	}
	if err != nil {
		return err
	}
	(*done)()
	*done = nil
	return writeEncoded(w, http.StatusOK, cur, buf.Bytes())
}

// applianceAtKeys is the appliance's own keys at rev (from the release copies once etcd compacted
// it), with the store's revision.
func (s *Server) applianceAtKeys(ctx context.Context, name string, rev int64) (map[string]string, int64, error) {
	keys, cur, err := s.st.ApplianceAt(ctx, name, rev)
	if err != nil && api.AsError(err).Code == api.CodeCompacted {
		keys, cur, err = s.applianceFromReleases(ctx, name, rev)
	}
	return keys, cur, err
}

// historySlot takes one of the replica's slots of reads of a past revision (historyReadsAtOnce),
// and returns the function that gives it back.
func (s *Server) historySlot(ctx context.Context) (func(), error) {
	select {
	case s.historyReads <- struct{}{}:
		return func() { <-s.historyReads }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a read of a past revision: %w", ctx.Err())
	}
}

// applianceFromReleases answers the appliance's own keys at a revision etcd has compacted from
// the release copies: the tree kept by the last release at or before rev that changed the
// appliance, when that release kept one. Sealed secret values are opened with the server's key.
// A revision no retained copy gives is refused with the oldest revision that can be restored.
func (s *Server) applianceFromReleases(ctx context.Context, name string, rev int64) (map[string]string, int64, error) {
	all, cur, err := s.st.Releases(ctx)
	if err != nil {
		return nil, 0, err
	}
	var found *api.Release
	var copies []*api.Release // newest first
	for i := range all {      // newest first
		r := &all[i]
		if !r.Touches(name, false) || r.Kind == api.KindRollout { // a rollout's start leaves the live tree
			continue
		}
		if found == nil && r.Revision <= rev {
			found = r
		}
		if r.Copy == name {
			copies = append(copies, r)
		}
	}
	oldest, err := s.oldestRestorable(ctx, copies)
	if err != nil {
		return nil, 0, err
	}
	// etcd's own history restores every revision from its compaction on.
	compacted, err := s.st.CompactRevision(ctx)
	if err != nil {
		return nil, 0, err
	}
	restores, err := s.st.Restores(ctx)
	if err != nil {
		return nil, 0, err
	}
	for _, l := range restores {
		if l.Snapshot < compacted && compacted <= l.Restored {
			// A restore compacted etcd where it moved revisions, a revision it records as lost:
			// the snapshot's own is read there (atRestore).
			compacted = l.Snapshot
		}
	}
	if compacted > rev && (oldest == 0 || compacted < oldest) {
		oldest = compacted
	}
	if found == nil || found.Copy != name {
		if keys, cur, ok, err := s.atRestore(ctx, name, rev, all, found, restores); ok || err != nil {
			return keys, cur, err
		}
	}
	restorable := "no retained release can restore it: restore an older state from a backup"
	if oldest != 0 {
		restorable = fmt.Sprintf("the oldest revision that can be restored is %d", oldest)
	}
	if found == nil || found.Copy != name {
		why := "no retained release of it is that old"
		if found != nil {
			why = fmt.Sprintf("its last release at or before it (revision %d, kind %s) kept no copy of its tree", found.Revision, found.Kind)
			if found.CopySkipped != "" {
				why += " (" + found.CopySkipped + ")"
			}
		}
		sep := ": "
		if oldest == 0 {
			sep = "; "
		}
		return nil, 0, api.Errorf(api.CodeCompacted, "revision %d of appliance %q is compacted and %s%s%s", rev, name, why, sep, restorable)
	}
	cp, err := s.st.ReleaseCopy(ctx, found.ID)
	if err != nil {
		return nil, 0, err
	}
	if len(cp.Omitted) > 0 {
		return nil, 0, api.Errorf(api.CodeCompacted, "revision %d of appliance %q is compacted, and its release (revision %d) left out the values of %d secret %s, %s: it was written without --secrets-key-file; %s",
			rev, name, found.Revision, len(cp.Omitted), plural(len(cp.Omitted), "key", "keys"), api.KeyText(api.ApplianceRoot(name)+"/"+cp.Omitted[0]), restorable)
	}
	keys := make(map[string]string, len(cp.Keys)+len(cp.Sealed))
	for k, v := range cp.Keys {
		keys[k] = v
	}
	sealed := make([]string, 0, len(cp.Sealed))
	for k := range cp.Sealed {
		sealed = append(sealed, k)
	}
	slices.Sort(sealed)
	for _, k := range sealed {
		plain, err := s.sealer.open(cp.KeyID, cp.Sealed[k])
		if err != nil {
			return nil, 0, api.Errorf(api.CodeCompacted, "revision %d of appliance %q is compacted, and the secret %s in its release (revision %d) cannot be opened: %s; %s",
				rev, name, api.KeyText(api.ApplianceRoot(name)+"/"+k), found.Revision, strings.TrimSpace(err.Error()), restorable)
		}
		keys[k] = string(plain)
	}
	if len(keys) == 0 {
		return nil, cur, api.Errorf(api.CodeNotFound, "appliance %q had no keys at revision %d", name, rev)
	}
	return keys, cur, nil
}

// atRestore answers the appliance's own keys at rev, which etcd compacted and no release copy
// gives, from the revision where a restore of a snapshot taken at rev or after it moved
// revisions (LostRange.Restored): a restore keeps the snapshot's keys there and compacts etcd at
// it, so the snapshot's revision, and rev when no release changed the appliance after rev up to
// the snapshot's, read there what they held. all are the retained releases, newest first, and
// found the last of them at or before rev that changed the appliance: retention keeps the
// newest releases of each appliance, so that with found none after it is left out. ok is false
// when no restore gives rev, or etcd compacted that revision too.
func (s *Server) atRestore(ctx context.Context, name string, rev int64, all []api.Release, found *api.Release, restores []store.LostRange) (keys map[string]string, cur int64, ok bool, err error) {
	for _, l := range restores {
		if rev > l.Snapshot || rev < l.Snapshot && found == nil {
			continue
		}
		changed := false
		for i := range all {
			r := &all[i]
			if r.Revision > rev && r.Revision <= l.Snapshot && r.Touches(name, false) && r.Kind != api.KindRollout {
				changed = true
				break
			}
		}
		if changed {
			continue
		}
		keys, cur, err := s.st.ApplianceAt(ctx, name, l.Restored)
		switch {
		case err == nil && len(keys) == 0:
			return nil, cur, true, api.Errorf(api.CodeNotFound, "appliance %q had no keys at revision %d", name, rev)
		case err == nil:
			return keys, cur, true, nil
		case api.AsError(err).Code != api.CodeCompacted:
			return nil, 0, false, err
		}
	}
	return nil, 0, false, nil
}

// oldestRestorable is the revision of the oldest of copies (the appliance's releases that kept
// one, newest first) that this server can restore whole: none of its secret values left out,
// each sealed one under a key this server has; 0 when none can. It reads at most
// oldestRestorableReads copies, oldest first, then the newest one, so that a refusal costs a few
// reads of the thousands of copies a store may keep; the revision it names always restores.
func (s *Server) oldestRestorable(ctx context.Context, copies []*api.Release) (int64, error) {
	for n, i := 0, len(copies)-1; i >= 0; n, i = n+1, i-1 {
		if n == oldestRestorableReads {
			i = 0 // the newest
		}
		cp, err := s.st.ReleaseCopy(ctx, copies[i].ID)
		if errors.Is(err, api.ErrNotFound) {
			continue // pruned since the records were listed
		}
		if err != nil {
			return 0, err
		}
		if s.copyRestorable(cp) {
			return copies[i].Revision, nil
		}
	}
	return 0, nil
}

// oldestRestorableReads bounds the copies a refusal reads to name the oldest restorable revision.
const oldestRestorableReads = 64

// copyRestorable reports whether cp gives every value of the tree it kept with this server's keys.
func (s *Server) copyRestorable(cp api.ReleaseCopy) bool {
	if len(cp.Omitted) > 0 {
		return false
	}
	return len(cp.Sealed) == 0 || (s.sealer != nil && s.sealer.old[cp.KeyID] != nil)
}

// plural picks the word that fits n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
