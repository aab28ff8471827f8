package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/shoelace-dev/shoelace/internal/api"
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
	// A replica reads and encodes historyReadsAtOnce such trees at a time (each is read for
	// its request alone: a past revision has no flight to share): twenty requests at once for
	// an appliance of 8 MiB held twenty copies of its tree, decoded and encoded, before the
	// bound on answers counted them. The slot is given back once the answer is encoded, before
	// it is written, so that a client that reads slowly holds none (the bound counts it then).
	done, err := s.historySlot(ctx)
	if err != nil {
		return err
	}
	body, cur, err := s.applianceAtBody(ctx, name, rev)
	done()
	if err != nil {
		if code := api.AsError(err).Code; code == api.CodeNotFound || code == api.CodeCompacted {
			// No keys then, or none kept: of a name the store holds nothing of (a mistyped
			// one), say that instead, as its releases do (a rollback of it said "no keys at
			// revision R", or that R was compacted).
			if uerr := s.applianceUnknown(ctx, name, nil); uerr != nil {
				return uerr
			}
		}
		return err
	}
	return writeEncoded(w, http.StatusOK, cur, body)
}

// historyReadsAtOnce is how many appliance trees at a past revision a replica reads at once.
const historyReadsAtOnce = 4

// applianceAtBody is the JSON of the appliance's own keys at rev, with the store's revision.
func (s *Server) applianceAtBody(ctx context.Context, name string, rev int64) ([]byte, int64, error) {
	keys, cur, err := s.applianceAtKeys(ctx, name, rev)
	if err != nil {
		return nil, cur, err
	}
	body, err := api.Marshal(ApplianceAt{Appliance: name, Revision: rev, Keys: keys})
	return append(body, '\n'), cur, err
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
	if compacted > rev && (oldest == 0 || compacted < oldest) {
		oldest = compacted
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
