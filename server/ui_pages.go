package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// uiMaxAppliances bounds the appliances the list page summarizes (each costs a few reads).
const uiMaxAppliances = 500

// A page shows at most uiValueShown bytes of each value, and at most uiPageValues bytes of
// values in all (the tree's, or a diff's): values of up to --max-value-bytes each, which HTML
// escapes to up to six times their size, made pages of hundreds of megabytes, rendered whole in
// the server's memory. The edit form holds its one value whole.
const (
	uiValueShown = 4 << 10
	uiPageValues = 512 << 10
)

// uiMaxInstances bounds the instances an appliance page lists (its counts are of all): the
// holder of an agent token reports as many instance names as --max-instances allows, each with
// an error.
const uiMaxInstances = 200

// uiMaxKeys bounds the keys of the view an appliance page shows: an appliance holds as many
// keys as writes give it (10,000 a write), and each is a few hundred bytes of the page.
const uiMaxKeys = 5000

// uiClip returns what a page shows of v, cut at a UTF-8 boundary within uiValueShown and what is
// left of *budget, and how many bytes it leaves out; it takes what it shows from *budget.
func uiClip(v string, budget *int) (string, int) {
	n := min(len(v), uiValueShown, max(*budget, 0))
	for n < len(v) && n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	*budget -= n
	return v[:n], len(v) - n
}

// uiShown is value v as a page shows it: its bidirectional formatting characters (U+202E
// RIGHT-TO-LEFT OVERRIDE and the like) written as [U+202E], never applied: a value with one
// showed as another text (the Trojan Source attacks) and reordered the rest of its line.
func uiShown(v string) string {
	if !strings.ContainsFunc(v, uiBidi) {
		return v
	}
	var b strings.Builder
	for _, c := range v {
		if uiBidi(c) {
			fmt.Fprintf(&b, "[%U]", c)
		} else {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func uiBidi(c rune) bool { return unicode.Is(unicode.Bidi_Control, c) }

// uiSummary is one row of the appliances page.
type uiSummary struct {
	Name    string
	Keys    int
	Fleet   bool // the token may see the instances and the rollout
	VMs     int
	Current int
	Failing int
	Rollout string
	Waits   bool // a manual rollout whose cohort applied the change waits for a promote
}

// latestChanges returns, per appliance, the revision of the last release that changed its view
// (its own keys or shared/), rollouts' starts left out; "" holds the last change of shared/.
func latestChanges(all []api.Release) map[string]int64 {
	out := map[string]int64{}
	for _, rel := range all { // newest first
		if rel.Kind == api.KindRollout {
			continue
		}
		for _, c := range rel.Changes {
			name := ""
			switch {
			case c.Scope == api.ScopeAppliance:
				name = c.Appliance
			case c.Scope != api.ScopeShared:
				continue
			}
			if _, ok := out[name]; !ok {
				out[name] = rel.Revision
			}
		}
		if rel.Copy != "" {
			if _, ok := out[rel.Copy]; !ok {
				out[rel.Copy] = rel.Revision
			}
		}
	}
	return out
}

// below is kvs, a listing of prefix, without the key named as prefix itself, which List gives with
// the keys below it: the key "shared" and appliances/NAME are in no view.
func below(kvs []api.KV, prefix string) []api.KV {
	return slices.DeleteFunc(kvs, func(kv api.KV) bool { return kv.Key == prefix })
}

// maxMod is the highest mod revision among kvs.
func maxMod(kvs []api.KV) int64 {
	var m int64
	for _, kv := range kvs {
		m = max(m, kv.ModRevision)
	}
	return m
}

// fleet counts instances: those seen, those that applied latest or later, those failing.
func fleet(ins []api.Instance, latest int64) (vms, current, failing int) {
	for _, in := range ins {
		vms++
		if in.Applied >= latest && in.Rollout == "" {
			current++
		}
		if in.Error != "" {
			failing++
		}
	}
	return vms, current, failing
}

func (s *Server) uiAppliances(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	ctx, cancel := s.opCtx(r)
	defer cancel()
	names, _, err := s.st.Appliances(ctx)
	if err != nil {
		return err
	}
	names = slices.DeleteFunc(names, func(n string) bool { return !c.p.maySeeAppliance(n) })
	more := 0
	if len(names) > uiMaxAppliances {
		more = len(names) - uiMaxAppliances
		names = names[:uiMaxAppliances]
	}
	var latest map[string]int64
	var sharedKVs []api.KV
	var fleets []string // the appliances whose instances the token may list
	for _, n := range names {
		if c.p.mayRead(api.ApplianceRoot(n)) == nil {
			fleets = append(fleets, n)
		}
	}
	instances, err := s.uiInstances(ctx, fleets)
	if err != nil {
		return err
	}
	var rows []uiSummary
	for _, n := range names {
		row := uiSummary{Name: n}
		own, _, err := s.st.List(ctx, api.ApplianceRoot(n), true)
		if err != nil {
			return err
		}
		own = below(own, api.ApplianceRoot(n))
		row.Keys = len(own)
		if c.p.mayRead(api.ApplianceRoot(n)) == nil {
			row.Fleet = true
			if latest == nil {
				all, _, err := s.st.Releases(ctx)
				if err != nil {
					return err
				}
				latest = latestChanges(all)
				if sharedKVs, _, err = s.st.List(ctx, api.SharedPrefix, true); err != nil {
					return err
				}
				sharedKVs = below(sharedKVs, api.SharedPrefix)
			}
			last := max(latest[n], latest[""], maxMod(own), maxMod(sharedKVs))
			row.VMs, row.Current, row.Failing = fleet(instances[n], last)
			if ro := s.rollouts.get(n); ro != nil {
				row.Rollout = ro.State
				if ro.Running() && ro.Strategy.Manual {
					// As rollout status says it: only the reports say whether its cohort applied.
					st, _, err := s.rolloutStatus(ctx, n, c.p)
					if err != nil {
						return err
					}
					row.Waits = st.ID == ro.ID && st.WaitsForPromote()
				}
			}
		}
		rows = append(rows, row)
	}
	return s.uiOK(w, r, c.page("Appliances", "appliances", struct {
		Appliances []uiSummary
		More       int
	}{rows, more}))
}

// uiAppliancesPerRead is how many appliances' instance records one read of the appliances
// page asks for (two ranges each: an external etcd takes 128 operations a transaction).
const uiAppliancesPerRead = 50

// uiInstances reads the instance records of the appliances names, with their last failures,
// as the instances API lists them (expired records left out): a few appliances per etcd
// request. Each appliance through the API's handler (its JSON written and read back) made the
// page of a fleet of 10,000 VMs over 200 appliances 418 etcd requests and 61 MB.
func (s *Server) uiInstances(ctx context.Context, names []string) (map[string][]api.Instance, error) {
	out := map[string][]api.Instance{}
	now := time.Now()
	for chunk := range slices.Chunk(names, uiAppliancesPerRead) {
		var prefixes []string
		for _, n := range chunk {
			prefixes = append(prefixes, instancePrefix+n+"/", reportErrorPrefix+n+"/")
		}
		m, _, err := s.st.SysList(ctx, prefixes...)
		if err != nil {
			return nil, err
		}
		for app, ins := range instancesOf(m) {
			for _, in := range ins {
				if now.Sub(in.LastSeen) <= instanceExpiry {
					out[app] = append(out[app], in)
				}
			}
		}
	}
	return out, nil
}

// uiOK answers a page with 200.
func (s *Server) uiOK(w http.ResponseWriter, r *http.Request, pg *uiPage) error {
	page := strings.ToLower(pg.Nav)
	if v, ok := pg.Data.(interface{ pageName() string }); ok {
		page = v.pageName()
	}
	s.uiRender(w, r, http.StatusOK, page, pg)
	return nil
}

// uiNode is one segment of an appliance's view as a tree.
type uiNode struct {
	Name      string
	Key       string // the full key, when the node is a key
	HasValue  bool
	Value     string // never a secret's value; its start only, when Cut
	Cut       int    // bytes of the value not shown (see uiClip)
	Secret    bool
	Shared    bool   // from shared/
	Overrides bool   // an own key that overrides a shared one
	EditURL   string // the edit form, when the token may edit it here
	Children  []*uiNode
	byName    map[string]*uiNode // Children by name, while the tree is built
}

// uiTree builds the view's tree: shared keys overlaid by the appliance's own, secrets masked.
// It holds at most uiMaxKeys keys, the first ones; more is how many it leaves out.
func uiTree(p *principal, name string, own, shared []api.KV) (tree []*uiNode, more int) {
	root := &uiNode{}
	put := func(rel string, kv api.KV, isShared, overrides bool) {
		n := root
		for _, seg := range strings.Split(rel, "/") {
			// By name, not by a scan of the children: 60,000 keys of one directory took 14 s.
			next := n.byName[seg]
			if next == nil {
				next = &uiNode{Name: seg}
				n.Children = append(n.Children, next)
				if n.byName == nil {
					n.byName = map[string]*uiNode{}
				}
				n.byName[seg] = next
			}
			n = next
		}
		n.Key, n.HasValue, n.Shared, n.Overrides = kv.Key, true, isShared, overrides
		n.Secret = api.IsSecret(kv.Key)
		n.Value = ""
		if !n.Secret {
			n.Value = uiShown(kv.Value)
		}
		if !n.Secret && p.mayWrite(kv.Key) == nil && uiFormChanges(kv.Value) == "" {
			n.EditURL = "/ui/appliances/" + url.PathEscape(name) + "/edit?key=" + url.QueryEscape(kv.Key)
		}
	}
	ownRoot := api.ApplianceRoot(name) + "/"
	mine := map[string]bool{}
	for _, kv := range own {
		mine[strings.TrimPrefix(kv.Key, ownRoot)] = true
	}
	type entry struct {
		rel, order        string
		kv                api.KV
		shared, overrides bool
	}
	var all []entry
	sharedRel := map[string]bool{}
	for _, kv := range shared {
		rel := strings.TrimPrefix(kv.Key, api.SharedPrefix+"/")
		sharedRel[rel] = true
		if !mine[rel] {
			all = append(all, entry{rel: rel, kv: kv, shared: true})
		}
	}
	for _, kv := range own {
		if rel, ok := strings.CutPrefix(kv.Key, ownRoot); ok {
			all = append(all, entry{rel: rel, kv: kv, overrides: sharedRel[rel]})
		}
	}
	if len(all) > uiMaxKeys {
		// The first keys in the tree's order: segment by segment ('-' and '.' sort before '/').
		for i := range all {
			all[i].order = strings.ReplaceAll(all[i].rel, "/", "\x00")
		}
		slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.order, b.order) })
		more, all = len(all)-uiMaxKeys, all[:uiMaxKeys]
	}
	for _, e := range all {
		put(e.rel, e.kv, e.shared, e.overrides)
	}
	budget := uiPageValues
	var sortTree func(ns []*uiNode)
	sortTree = func(ns []*uiNode) {
		slices.SortFunc(ns, func(a, b *uiNode) int { return strings.Compare(a.Name, b.Name) })
		for _, n := range ns {
			n.Value, n.Cut = uiClip(n.Value, &budget) // in the page's order
			n.byName = nil
			sortTree(n.Children)
		}
	}
	sortTree(root.Children)
	return root.Children, more
}

// uiApplianceData is the appliance page's data.
type uiApplianceData struct {
	Name       string
	Index      int64 // the hub's revision when read: the live script waits for changes after it
	Revision   int64
	Latest     int64
	Tree       []*uiNode
	SharedNote string
	Keys       int
	KeysMore   int // keys of the view not in Tree (see uiMaxKeys)
	Fleet      bool
	Instances  []uiInstance
	More       int // instances not listed (see uiMaxInstances)
	// MoreRollout is the rollout's instances not listed.
	MoreRollout int
	VMs         int
	Current     int
	Failing     int
	Rollout     *api.RolloutStatus
	// Group says, for a rollout of a shared rollout group, what the group is and does.
	Group string
	// RolloutFacts is what the page says of the rollout besides its state, as rollout status
	// prints it.
	RolloutFacts uiRolloutFacts
	Releases     []uiRelease
	CanWrite     bool
	Done         string
}

func (uiApplianceData) pageName() string { return "appliance" }

// uiRolloutFacts is what the appliance page says of a rollout besides its state and step.
type uiRolloutFacts struct {
	Progress string // running: how many instances get the change, and how many of those applied it
	Baking   string // running: since when its cohort bakes, "" when it does not
	Waits    bool   // a manual rollout whose cohort applied the change waits for a promote
	Strategy string // its shares, bake and deadline, and whether it is manual
	Started  string // by which token, with which write, and the write's message
}

// uiFacts is what the appliance page says of rollout ro besides its state and step.
func uiFacts(ro *api.RolloutStatus) uiRolloutFacts {
	f := uiRolloutFacts{Waits: ro.WaitsForPromote(),
		Strategy: ro.Strategy.Shares() + fmt.Sprintf(", bake %s, deadline %s", time.Duration(ro.Strategy.Bake), time.Duration(ro.Strategy.Deadline))}
	if ro.Strategy.Manual {
		f.Strategy += ", manual (each step waits for a promote)"
	}
	if ro.State == api.RolloutRunning {
		f.Progress = ro.Progress()
		if ro.BakedSince != nil {
			f.Baking = ro.BakedSince.UTC().Format("2006-01-02 15:04:05Z")
		}
	}
	f.Started = "by " + cmp.Or(ro.Token, "—") + " (" + cmp.Or(ro.Kind, "—") + ")"
	if ro.Message != "" {
		f.Started += ": " + ro.Message
	}
	return f
}

// uiInstance is one row of an appliance's instances.
type uiInstance struct {
	api.Instance
	Current bool
}

// uiRelease is a release as the console lists it.
type uiRelease struct {
	api.Release
	App                       string // the appliance whose page lists it
	Created, Changed, Deleted []string
	More                      int // names left out of the lists
	Restorable                bool
}

// uiReleaseNames bounds the keys a list of releases (the history, the appliance page) names per
// release: a release record names up to 1000 keys of each kind of change, of up to 512 bytes
// each. A release's own page names all of them.
const uiReleaseNames = 20

// toUIRelease is rel as the console shows it, naming at most names keys (0: all the record names).
func toUIRelease(app string, rel api.Release, names int) uiRelease {
	out := uiRelease{Release: rel, App: app}
	for _, c := range rel.Changes {
		out.Created = append(out.Created, c.Created...)
		out.Changed = append(out.Changed, c.Changed...)
		out.Deleted = append(out.Deleted, c.Deleted...)
		out.More += c.CreatedCount + c.ChangedCount + c.DeletedCount - len(c.Created) - len(c.Changed) - len(c.Deleted)
	}
	if names > 0 {
		for _, l := range []*[]string{&out.Created, &out.Changed, &out.Deleted} {
			n := min(len(*l), names)
			out.More += len(*l) - n
			*l, names = (*l)[:n], names-n
		}
	}
	return out
}

// uiReleases reads a page of the appliance's releases through the API's handler.
func (s *Server) uiReleases(r *http.Request, name string, limit int, before int64) (api.Releases, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	var out api.Releases
	rec, err := s.uiCall(r, s.handleApplianceReleases, http.MethodGet, map[string]string{"name": name}, q, nil, nil, "")
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(rec.body.Bytes(), &out); err != nil {
		return out, fmt.Errorf("releases of %s: %w", name, err)
	}
	return out, nil
}

// uiName reads and checks the appliance name of the path, and that p may see it.
func uiName(r *http.Request, p *principal) (string, error) {
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return "", err
	}
	if !p.maySeeAppliance(name) {
		return "", forbidden("token %s may not read appliance %s", shorten(p.name), shorten(name))
	}
	return name, nil
}

func (s *Server) uiAppliance(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	d, err := s.uiApplianceRead(r, c, name)
	if err != nil {
		return err
	}
	// After a write (see uiWritten): at which revision, or that nothing was written; after a
	// rollout's promote or abort (see uiRolloutAction), what it did. The revision comes from the
	// query, which anyone can write in a link: a notice is shown only for what the store holds
	// (it said "Written at revision 999." for any number, of a promote of no rollout too).
	q := r.URL.Query()
	for _, param := range [...]string{"done", "unchanged", "promoted", "aborted"} {
		rev, err := strconv.ParseInt(q.Get(param), 10, 64)
		if err != nil || rev <= 0 || rev > d.Revision {
			continue
		}
		switch param {
		case "done":
			if s.uiReleaseAt(r, c.p, name, rev) {
				d.Done = fmt.Sprintf("Written at revision %d.", rev)
			}
		case "unchanged":
			d.Done = fmt.Sprintf("Nothing written: the store held this already (since revision %d).", rev)
		default:
			d.Done = uiRolloutDone(param, rev, q, d.Rollout)
		}
	}
	return s.uiOK(w, r, c.page(name, "appliances", d))
}

// uiReleaseAt reports whether a release of appliance name's view (its own keys, or shared/'s
// when p may read them) was written at revision rev: the write that ?done= names.
func (s *Server) uiReleaseAt(r *http.Request, p *principal, name string, rev int64) bool {
	q := url.Values{"limit": {"1"}, "before": {strconv.FormatInt(rev+1, 10)}}
	if p.mayRead(api.SharedPrefix) == nil {
		q.Set("include_shared", "true")
	}
	rec, err := s.uiCall(r, s.handleApplianceReleases, http.MethodGet, map[string]string{"name": name}, q, nil, nil, "")
	if err != nil {
		return false
	}
	var rels api.Releases
	return json.Unmarshal(rec.body.Bytes(), &rels) == nil && len(rels.Releases) == 1 && rels.Releases[0].Revision == rev
}

// uiRolloutDone says what the promote or abort (done: promoted or aborted) written at revision
// rev did to the rollout that q names (rollout: its id; at: the step a promote was of), as ro,
// the appliance's rollout now, shows it (the page reads itself again as the rollout moves on);
// "" when ro is not that rollout.
func uiRolloutDone(done string, rev int64, q url.Values, ro *api.RolloutStatus) string {
	if ro == nil || ro.ID != q.Get("rollout") {
		return ""
	}
	if done == "aborted" {
		if ro.State != api.RolloutAborted {
			return ""
		}
		if ro.Group != "" {
			return fmt.Sprintf("Aborted rollout %s at revision %d, and with it every rollout of shared rollout group %s: the instances of their cohorts go back to the live keys.", ro.ID, rev, ro.Group)
		}
		return fmt.Sprintf("Aborted rollout %s at revision %d: the instances of its cohorts go back to the live keys.", ro.ID, rev)
	}
	at, err := strconv.Atoi(q.Get("at"))
	if err != nil || at < 0 || at >= len(ro.Steps) {
		return ""
	}
	switch {
	case ro.State == api.RolloutPromoted:
		return fmt.Sprintf("Promoted rollout %s: it passed its last step, and its change is the live keys since revision %d.", ro.ID, ro.Release)
	case ro.State != api.RolloutRunning:
		return fmt.Sprintf("Promote of rollout %s written at revision %d; the rollout has %s since.", ro.ID, rev, ro.State)
	case ro.Step > at:
		return fmt.Sprintf("Promoted rollout %s to step %d of %d (promote written at revision %d).", ro.ID, at+2, len(ro.Steps), rev)
	case ro.GroupReady:
		return fmt.Sprintf("Promote of rollout %s written at revision %d: it passed its last step and waits for the other appliances of shared rollout group %s.", ro.ID, rev, ro.Group)
	case at+1 < len(ro.Steps):
		return fmt.Sprintf("Promote of rollout %s written at revision %d: it moves to step %d of %d once every instance of its cohort has applied the candidate.", ro.ID, rev, at+2, len(ro.Steps))
	case ro.Group != "":
		return fmt.Sprintf("Promote of rollout %s written at revision %d: it passes its last step once every instance of its cohort has applied the candidate, then waits for the other appliances of shared rollout group %s.", ro.ID, rev, ro.Group)
	}
	return fmt.Sprintf("Promote of rollout %s written at revision %d: once every instance of its cohort has applied the candidate, it passes its last step and its change becomes the live keys.", ro.ID, rev)
}

// uiApplianceRead reads what the appliance page shows.
func (s *Server) uiApplianceRead(r *http.Request, c *uiCtx, name string) (*uiApplianceData, error) {
	ctx, cancel := s.opCtx(r)
	defer cancel()
	d := &uiApplianceData{Name: name, Index: s.hub.current(), CanWrite: c.p.mayWrite(api.ApplianceRoot(name)) == nil}
	own, rev, err := s.st.List(ctx, api.ApplianceRoot(name), false)
	if err != nil {
		return nil, err
	}
	own = below(own, api.ApplianceRoot(name))
	if len(own) == 0 {
		return nil, api.Errorf(api.CodeNotFound, "appliance %q has no keys (an appliance exists while it has at least one key of its own)", name)
	}
	d.Revision, d.Keys = rev, len(own)
	var shared []api.KV
	if c.p.mayReadView(name) == nil {
		if shared, _, err = s.st.List(ctx, api.SharedPrefix, false); err != nil {
			return nil, err
		}
		shared = below(shared, api.SharedPrefix)
	} else {
		d.SharedNote = "This token may not read shared/: the view below is the appliance's own keys only."
	}
	d.Tree, d.KeysMore = uiTree(c.p, name, own, shared)
	if c.p.mayRead(api.ApplianceRoot(name)) != nil {
		return d, nil
	}
	d.Fleet = true
	all, _, err := s.st.Releases(ctx)
	if err != nil {
		return nil, err
	}
	latest := latestChanges(all)
	sharedKVs := shared
	if sharedKVs == nil {
		// The VMs' views hold shared/ whether or not this token may read it: a VM that has not
		// applied its last change is behind (the appliances page counts it so). Its keys'
		// revisions only, never their values.
		if sharedKVs, _, err = s.st.List(ctx, api.SharedPrefix, true); err != nil {
			return nil, err
		}
		sharedKVs = below(sharedKVs, api.SharedPrefix)
	}
	d.Latest = max(latest[name], maxMod(own), latest[""], maxMod(sharedKVs))
	rec, err := s.uiCall(r, s.handleInstances, http.MethodGet, map[string]string{"name": name}, nil, nil, nil, "")
	if err != nil {
		return nil, err
	}
	var ins api.Instances
	if err := json.Unmarshal(rec.body.Bytes(), &ins); err != nil {
		return nil, fmt.Errorf("instances of %s: %w", name, err)
	}
	d.VMs, d.Current, d.Failing = fleet(ins.Instances, d.Latest)
	ins.Instances, d.More = uiFirstInstances(ins.Instances, func(in api.Instance) bool { return in.Error != "" })
	for _, in := range ins.Instances {
		d.Instances = append(d.Instances, uiInstance{Instance: in, Current: in.Applied >= d.Latest && in.Rollout == ""})
	}
	if d.Rollout, err = s.uiRollout(r, name); err != nil {
		return nil, err
	}
	if ro := d.Rollout; ro != nil {
		d.Group, d.RolloutFacts = s.uiGroupNote(c.p, ro), uiFacts(ro)
		ro.Instances, d.MoreRollout = uiFirstInstances(ro.Instances, func(in api.RolloutInstance) bool { return in.State == "failed" || in.Error != "" })
	}
	rels, err := s.uiReleases(r, name, 5, 0)
	if err != nil {
		return nil, err
	}
	for _, rel := range rels.Releases {
		d.Releases = append(d.Releases, toUIRelease(name, rel, uiReleaseNames))
	}
	return d, nil
}

// uiFirstInstances keeps the first uiMaxInstances of a list of instances, the failing ones first
// and the rest in the list's order, and says how many it leaves out.
func uiFirstInstances[T any](list []T, failing func(T) bool) ([]T, int) {
	if len(list) <= uiMaxInstances {
		return list, 0
	}
	slices.SortStableFunc(list, func(a, b T) int {
		switch fa, fb := failing(a), failing(b); {
		case fa == fb:
			return 0
		case fa:
			return -1
		}
		return 1
	})
	return list[:uiMaxInstances], len(list) - uiMaxInstances
}

// uiRollout reads the appliance's current or last rollout through the API's handler; nil when
// it never had one.
func (s *Server) uiRollout(r *http.Request, name string) (*api.RolloutStatus, error) {
	rec, err := s.uiCall(r, s.handleGetRollout, http.MethodGet, map[string]string{"name": name}, nil, nil, nil, "")
	if errors.Is(err, api.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st api.RolloutStatus
	if err := json.Unmarshal(rec.body.Bytes(), &st); err != nil {
		return nil, fmt.Errorf("rollout of %s: %w", name, err)
	}
	return &st, nil
}

// uiGroupOthers names the appliances other than ro's whose running rollouts are of ro's shared
// rollout group, as this replica knows them: those p may see, and "other appliances" for the
// rest (neither their names nor their number: a token scoped to one appliance learns nothing of
// the others but that they are).
func (s *Server) uiGroupOthers(p *principal, ro *api.RolloutStatus) string {
	var names []string
	hidden := 0
	s.rollouts.mu.RLock()
	for name, rec := range s.rollouts.m {
		if rec.Group != ro.Group || !rec.Running() || name == ro.Appliance {
			continue
		}
		if p.maySeeAppliance(name) {
			names = append(names, name)
		} else {
			hidden++
		}
	}
	s.rollouts.mu.RUnlock()
	slices.Sort(names)
	switch {
	case len(names) == 0 && hidden == 0:
		return ""
	case hidden == 0:
		return strings.Join(names, ", ")
	case len(names) == 0:
		return "other appliances"
	}
	return strings.Join(names, ", ") + " and other appliances"
}

// uiGroupKeys names the shared/ keys of ro's group, as rollout status prints them.
func uiGroupKeys(ro *api.RolloutStatus) string {
	if len(ro.Shared) == 0 {
		return "that this token may not read"
	}
	return strings.Join(ro.Shared, ", ")
}

// uiGroupNote is what the appliance page says of ro when it is a rollout of a shared rollout
// group ("" otherwise), as rollout status says it: its promotion does not write the live keys by
// itself, and its abort (or halt) ends the rollouts of the other appliances of the group too.
func (s *Server) uiGroupNote(p *principal, ro *api.RolloutStatus) string {
	if ro.Group == "" {
		return ""
	}
	note := fmt.Sprintf("Part of shared rollout group %s, of shared/ keys %s", ro.Group, uiGroupKeys(ro))
	if ro.State != api.RolloutRunning {
		return note + "."
	}
	if others := s.uiGroupOthers(p, ro); others != "" {
		note += fmt.Sprintf(", with the rollouts of %s", others)
	}
	note += ": shared/ changes once every rollout of the group has passed its last step, and an abort or a halt of any of them ends them all."
	if ro.GroupReady {
		note += " Every step passed: it waits for the other appliances of the group."
	}
	return note
}

// uiLiveAnswer is the live script's long-poll answer.
type uiLiveAnswer struct {
	Changed bool  `json:"changed"`
	Index   int64 `json:"index"`
}

// uiLive is the appliance page's long-poll: it waits in the hub, as agents do, for a change of
// the appliance's view after index, and answers whether one came and the revision now.
func (s *Server) uiLive(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	q, err := query(r, "index")
	if err != nil {
		return err
	}
	index, err := revParam(q, "index")
	if err != nil {
		return err
	}
	if index < 0 {
		return api.Errorf(api.CodeInvalidRequest, "query parameter index is required")
	}
	extendWrite(w, uiLiveWait+opTimeout)
	wk, err := s.hub.wait(r.Context(), name, index, c.p.name, "", info(r).revocation, jitter(uiLiveWait))
	if err != nil {
		return err
	}
	switch wk.kind {
	case wakeRevoked:
		return unauthorized("token revoked")
	case wakeDrain:
		// Not "nothing changed": the script would fetch the page and wait again at once, in a
		// loop until the replica is gone. 503 sends it to its backoff.
		e := api.Errorf(api.CodeUnavailable, "this replica is shutting down")
		e.RetryAfter = 2
		return e
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(uiLiveAnswer{Changed: wk.kind == wakeChanged, Index: max(wk.rev, index)})
}

// uiHistoryData is the history page's data.
type uiHistoryData struct {
	Name     string
	Releases []uiRelease
	Next     int64
	CanWrite bool
	// Paged is a page of older releases (before=), which links back to the newest.
	Paged bool
}

func (uiHistoryData) pageName() string { return "history" }

func (s *Server) uiHistory(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	q, err := query(r, "before")
	if err != nil {
		return err
	}
	before, err := revParam(q, "before")
	if err != nil {
		return err
	}
	rels, err := s.uiReleases(r, name, 50, max(before, 0))
	if err != nil {
		return err
	}
	d := uiHistoryData{Name: name, Next: rels.Next, CanWrite: c.p.mayWrite(api.ApplianceRoot(name)) == nil, Paged: before > 0}
	newest := true
	for _, rel := range rels.Releases {
		ur := toUIRelease(name, rel, uiReleaseNames)
		if rel.Kind != api.KindRollout {
			// Rolling back to the newest live release would change nothing.
			ur.Restorable = !(newest && before <= 0)
			newest = false
		}
		d.Releases = append(d.Releases, ur)
	}
	return s.uiOK(w, r, c.page(name+" history", "appliances", d))
}

// uiDiffLine is one key of a diff; a secret's values are never in it.
type uiDiffLine struct {
	Key      string
	Op       string // added, changed, removed
	Old, New string
	// OldCut and NewCut are the bytes of Old and New not shown (see uiClip).
	OldCut, NewCut int
	Secret         bool
}

// uiDiff compares appliance name's own keys before and after (relative keys), masking secrets:
// whether a key is one is decided on its full key, as everywhere else (an appliance named
// "secrets" holds nothing but secrets).
func uiDiff(name string, before, after map[string]string) []uiDiffLine {
	var out []uiDiffLine
	for k, v := range after {
		old, ok := before[k]
		switch {
		case !ok:
			out = append(out, uiDiffLine{Key: k, Op: "added", New: v})
		case old != v:
			out = append(out, uiDiffLine{Key: k, Op: "changed", Old: old, New: v})
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			out = append(out, uiDiffLine{Key: k, Op: "removed", Old: v})
		}
	}
	for i := range out {
		if api.IsSecret(api.ApplianceRoot(name) + "/" + out[i].Key) {
			out[i].Secret, out[i].Old, out[i].New = true, "", ""
		}
	}
	slices.SortFunc(out, func(a, b uiDiffLine) int { return strings.Compare(a.Key, b.Key) })
	uiShowDiff(out)
	return out
}

// uiShowDiff makes lines' values as a page shows them (uiShown), their starts within the
// page's budget of values (uiClip), in order.
func uiShowDiff(lines []uiDiffLine) {
	budget := uiPageValues
	for i := range lines {
		l := &lines[i]
		l.Old, l.OldCut = uiClip(uiShown(l.Old), &budget)
		l.New, l.NewCut = uiClip(uiShown(l.New), &budget)
	}
}

// uiAt reads the appliance's own keys at rev as GET /v1/appliances/{name}/at/{revision} does,
// with the revision of the store when read; no keys then is an empty tree. Its caller holds a slot
// of historySlot until it no longer holds the keys: they are read whole, and are not the page.
func (s *Server) uiAt(ctx context.Context, p *principal, name string, rev int64) (map[string]string, int64, error) {
	if rev <= 0 {
		return nil, 0, api.Errorf(api.CodeInvalidRequest, "revision %d: a revision is a positive number", rev)
	}
	if err := p.mayRead(api.ApplianceRoot(name)); err != nil {
		return nil, 0, err
	}
	keys, cur, err := s.applianceAtKeys(ctx, name, rev)
	if errors.Is(err, api.ErrNotFound) {
		return map[string]string{}, cur, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return keys, cur, nil
}

// uiReleaseData is the release page's data.
type uiReleaseData struct {
	Name    string
	Release uiRelease
	Diff    []uiDiffLine
	NoDiff  string
}

func (uiReleaseData) pageName() string { return "release" }

func (s *Server) uiRelease(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	rev, err := strconv.ParseInt(r.PathValue("revision"), 10, 64)
	if err != nil || rev <= 0 {
		return api.Errorf(api.CodeInvalidRequest, "revision %s: a revision is a positive number", shorten(r.PathValue("revision")))
	}
	rels, err := s.uiReleases(r, name, 1, rev+1)
	if err != nil {
		return err
	}
	if len(rels.Releases) == 0 || rels.Releases[0].Revision != rev {
		return api.Errorf(api.CodeNotFound, "appliance %q has no release at revision %d (pruned, or of another appliance)", name, rev)
	}
	d := uiReleaseData{Name: name, Release: toUIRelease(name, rels.Releases[0], 0)}
	if d.Release.Kind == api.KindRollout {
		d.NoDiff = "The start of a rollout leaves the live keys as they are: its promotion is a release of its own."
	} else {
		ctx, cancel := s.opCtx(r)
		defer cancel()
		done, err := s.historySlot(ctx)
		if err != nil {
			return err
		}
		before, _, err := s.uiAt(ctx, c.p, name, rev-1)
		if err == nil {
			var after map[string]string
			if after, _, err = s.uiAt(ctx, c.p, name, rev); err == nil {
				d.Diff = uiDiff(name, before, after)
			}
		}
		done()
		if err != nil {
			d.NoDiff = "The values are no longer known: " + api.AsError(err).Message
		}
	}
	return s.uiOK(w, r, c.page(fmt.Sprintf("%s release %d", name, rev), "appliances", d))
}

// uiConfirmData is the confirmation step of a write: what it will do, and the form that does it.
type uiConfirmData struct {
	Name    string // appliance ("" for the store)
	Action  string // the form's target
	Heading string
	What    string
	Warning string
	Diff    []uiDiffLine
	Fields  [][2]string // hidden fields carried to the write
	Button  string
	Back    string
	Message bool // ask for a release message
}

func (uiConfirmData) pageName() string { return "confirm" }

// uiEditData is the edit form's data.
type uiEditData struct {
	Name   string
	Key    string
	Value  string
	Cas    int64
	Shared bool
	EOL    string // lf, or crlf when the value has CRLF line ends (see uiFormValue)
}

// uiEOL is the line ends of value as the edit form carries them.
func uiEOL(value string) string {
	if strings.Contains(value, "\r") {
		return "crlf"
	}
	return "lf"
}

// uiFormValue is a value as the form sent it, with the line ends it had: browsers send every line
// end of a textarea (and of a hidden field) as CRLF, which must not turn a value's LF into CRLF.
func uiFormValue(value, eol string) string {
	if eol == "crlf" {
		return value
	}
	return strings.ReplaceAll(value, "\r\n", "\n")
}

func (uiEditData) pageName() string { return "edit" }

// uiFormChanges says why a browser's form would not send value back byte for byte ("" when it
// would): the HTML parser turns a NUL into U+FFFD and a lone CR into LF, and the form sends every
// line end as CRLF, which uiFormValue undoes only for a value whose line ends are all LF or all CRLF.
func uiFormChanges(value string) string {
	switch {
	case strings.IndexByte(value, 0) >= 0:
		return "holds a NUL character"
	case strings.Count(value, "\r") != strings.Count(value, "\r\n"):
		return "holds a CR that ends no line (CR without LF)"
	case strings.Contains(value, "\r") && strings.Count(value, "\n") != strings.Count(value, "\r\n"):
		return "mixes LF and CRLF line ends"
	}
	return ""
}

// uiEditKey reads and checks the key a console edit is about: one of the appliance's view, never
// a secret (the console neither shows nor takes secret values).
func uiEditKey(p *principal, name, key string) error {
	if err := api.ValidateKey(key); err != nil {
		return err
	}
	if !api.Under(key, api.ApplianceRoot(name)) && !api.Under(key, api.SharedPrefix) {
		return api.Errorf(api.CodeInvalidRequest, "key %s is not in the view of appliance %s (its own keys or shared/)", shorten(key), shorten(name))
	}
	if api.IsSecret(key) {
		return api.Errorf(api.CodeInvalidRequest, "key %s is a secret: the console neither shows nor edits secret values (use shoelace kv put)", shorten(key))
	}
	return p.mayWrite(key)
}

// uiEditValue refuses to edit key's value when a browser's form would change it (uiFormChanges).
func uiEditValue(key, value string) error {
	if why := uiFormChanges(value); why != "" {
		return api.Errorf(api.CodeInvalidRequest, "the value of key %s %s, which a browser's form would change when sent back: edit it with shoelace kv put", shorten(key), why)
	}
	return nil
}

func (s *Server) uiEditForm(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	q, err := query(r, "key")
	if err != nil {
		return err
	}
	if !q.Has("key") {
		// The edit page's address without its key: what a sign-in leaves of a link to it (the
		// form's next keeps no query). The appliance's page lists the keys to edit.
		http.Redirect(w, r, "/ui/appliances/"+url.PathEscape(name), http.StatusSeeOther)
		return nil
	}
	key := q.Get("key")
	if err := uiEditKey(c.p, name, key); err != nil {
		return err
	}
	rec, err := s.uiCall(r, s.handleGetKV, http.MethodGet, map[string]string{"key": key}, nil, nil, nil, "")
	if err != nil {
		return err
	}
	var kv api.KV
	if err := json.Unmarshal(rec.body.Bytes(), &kv); err != nil {
		return fmt.Errorf("key %s: %w", key, err)
	}
	if err := uiEditValue(key, kv.Value); err != nil {
		return err
	}
	return s.uiOK(w, r, c.page("Edit "+key, "appliances", uiEditData{Name: name, Key: key, Value: kv.Value, Cas: kv.ModRevision,
		Shared: api.Under(key, api.SharedPrefix), EOL: uiEOL(kv.Value)}))
}

// uiEdit confirms, then writes, one key's new value: PUT /v1/kv/{key}?cas=<the revision the form
// showed>, so that a change made meanwhile is a conflict rather than overwritten.
func (s *Server) uiEdit(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	f := r.PostForm
	key, cas, eol := f.Get("key"), f.Get("cas"), "lf"
	if f.Get("eol") == "crlf" {
		eol = "crlf"
	}
	value := uiFormValue(f.Get("value"), eol)
	if err := uiEditKey(c.p, name, key); err != nil {
		return err
	}
	// The write would refuse it (413): its confirmation, which carries it whole in a hidden
	// field, escaped to up to five times its size, is not made. (The form's limit is three times
	// --max-value-bytes, for a value's URL encoding: a page of 16 MB for a value of 3 MiB.)
	if err := api.ValidateValue(key, []byte(value), s.cfg.MaxValueBytes); err != nil {
		return err
	}
	if _, err := strconv.ParseInt(cas, 10, 64); err != nil {
		return api.Errorf(api.CodeInvalidRequest, "form field cas must be a revision, not %s", shorten(cas))
	}
	back := "/ui/appliances/" + url.PathEscape(name)
	if f.Get("step") != "apply" {
		rec, err := s.uiCall(r, s.handleGetKV, http.MethodGet, map[string]string{"key": key}, nil, nil, nil, "")
		if err != nil {
			return err
		}
		var kv api.KV
		if err := json.Unmarshal(rec.body.Bytes(), &kv); err != nil {
			return fmt.Errorf("key %s: %w", key, err)
		}
		if err := uiEditValue(key, kv.Value); err != nil {
			return err
		}
		d := uiConfirmData{Name: name, Action: back + "/edit", Heading: "Change " + key + "?", Button: "Write the new value", Back: back, Message: true,
			What:   "This writes one key, as a release with source console.",
			Diff:   []uiDiffLine{{Key: key, Op: "changed", Old: kv.Value, New: value}},
			Fields: [][2]string{{"key", key}, {"value", value}, {"cas", cas}, {"eol", eol}}}
		if kv.Value == value {
			d.Diff[0].Op = "unchanged"
		}
		// The diff shows the values' starts, as the other pages do; the hidden field carries
		// the new value whole.
		uiShowDiff(d.Diff)
		if fmt.Sprint(kv.ModRevision) != cas {
			d.Warning = fmt.Sprintf("The key changed since the form was shown (revision %d, the form had %s): writing will be refused; go back and edit again.", kv.ModRevision, cas)
		}
		if api.Under(key, api.SharedPrefix) {
			d.Warning = strings.TrimSpace(d.Warning + " This is a shared key: it changes the view of every appliance. " + s.uiSharedWarning(key))
		} else {
			d.Warning = strings.TrimSpace(d.Warning + " " + s.uiRolloutWarning(name))
		}
		d.Warning = strings.TrimSpace(d.Warning + " " + s.uiMaintenanceWarning())
		return s.uiOK(w, r, c.page("Confirm", "appliances", d))
	}
	rec, err := s.uiCall(r, s.handlePutKV, http.MethodPut, map[string]string{"key": key}, url.Values{"cas": {cas}}, []byte(value), nil, f.Get("message"))
	if errors.Is(err, api.ErrConflict) {
		// The store's words name a mod_revision and a cas; say what happened to the form.
		return api.Errorf(api.CodeConflict, "key %q changed after its edit form was shown (at revision %s); nothing was written: edit it again from the appliance's page", key, cas)
	}
	if err != nil {
		return err
	}
	uiWritten(w, r, back, rec)
	return nil
}

// uiWritten sends the browser back to the appliance's page after a write, which says at which
// revision it was written, or that nothing was (the store held it already, at that revision).
func uiWritten(w http.ResponseWriter, r *http.Request, back string, rec *uiRecorder) {
	var res api.WriteResult
	done := "?done="
	if json.Unmarshal(rec.body.Bytes(), &res) == nil && res.Unchanged {
		done = "?unchanged="
	}
	http.Redirect(w, r, back+done+rec.h.Get(api.HeaderIndex), http.StatusSeeOther)
}

// uiRolloutWarning is what the confirmation of a write to appliance name's own keys says while a
// rollout of it runs ("" when none does, as this replica knows): the API refuses the write (409
// rollout_in_progress), whose message names the CLI's ways around it, not the console's.
func (s *Server) uiRolloutWarning(name string) string {
	if ro := s.rollouts.get(name); ro.Running() {
		if ro.Group != "" {
			return fmt.Sprintf("Rollout %s of %s, of shared rollout group %s, is running: writes to its keys are refused until the group is promoted, halted or aborted (aborting it on the appliance's page ends every rollout of the group).", ro.ID, name, ro.Group)
		}
		return fmt.Sprintf("Rollout %s of %s is running: writes to its keys are refused until it is promoted, halted or aborted (abort it on the appliance's page to write now).", ro.ID, name)
	}
	return ""
}

// uiSharedWarning is what the confirmation of a write to shared/ key says while a shared rollout
// group that changes it runs ("" when none does, as this replica knows): the API refuses the
// write (409 rollout_in_progress) unless it aborts the group.
func (s *Server) uiSharedWarning(key string) string {
	rel := strings.TrimPrefix(key, api.SharedPrefix+"/")
	s.rollouts.mu.RLock()
	defer s.rollouts.mu.RUnlock()
	for _, ro := range s.rollouts.m {
		if ro.Running() && ro.Group != "" && slices.Contains(ro.Shared.Keys(), rel) {
			return fmt.Sprintf("Shared rollout group %s changes this key: the write will be refused until the group is promoted, halted or aborted (aborting the rollout of any appliance of the group, on its page, ends the group).", ro.Group)
		}
	}
	return ""
}

// uiMaintenanceWarning is what a write's confirmation says while maintenance is on, which refuses it.
func (s *Server) uiMaintenanceWarning() string {
	if s.maintenance.Load() {
		return "Maintenance is on: the store is read-only and the write will be refused (503) until maintenance is turned off on the store's page."
	}
	return ""
}

// uiRollback confirms, then writes, the rollback of an appliance to the state of a revision, as
// `shoelace appliance rollback --to` does: its own keys as they were at that revision, applied
// with the rollback header and cas at the revision the confirmation read. A tree whose apply
// body would be over api.RollbackBodyBytes is applied as the CLI applies it, without a body: the
// API's handler reads the tree at the revision itself (a tree made of single puts may be larger
// than an apply body may be, and sent as one it was refused, 413, where the CLI restored it).
func (s *Server) uiRollback(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	f := r.PostForm
	to, err := strconv.ParseInt(f.Get("to"), 10, 64)
	if err != nil || to <= 0 {
		return api.Errorf(api.CodeInvalidRequest, "form field to must be a revision, not %s", shorten(f.Get("to")))
	}
	if err := c.p.mayWrite(api.ApplianceRoot(name)); err != nil {
		return err
	}
	back := "/ui/appliances/" + url.PathEscape(name)
	ctx, cancel := s.opCtx(r)
	defer cancel()
	// A revision a restore lost is refused as GET …/at/R refuses it, the confirmation too: the
	// tree read for it is the snapshot's (the release copy before it), and a tree sent as a body
	// (one within api.RollbackBodyBytes) is not looked at again, so its apply recorded a rollback
	// to a state the revision never had.
	if err := c.p.mayRead(api.ApplianceRoot(name)); err != nil {
		return err
	}
	if err := s.lostRevision(ctx, to, "its keys then cannot be restored (a rollback to the snapshot's revision restores what the store holds of that time)"); err != nil {
		return err
	}
	done, err := s.historySlot(ctx)
	if err != nil {
		return err
	}
	// Given back before the apply, which reads a tree without a body in a slot of its own: two
	// held at once by each of as many rollbacks as there are slots would wait for each other.
	done = sync.OnceFunc(done)
	defer done()
	keys, cur, err := s.uiAt(ctx, c.p, name, to)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return api.Errorf(api.CodeInvalidRequest, "appliance %q had no keys at revision %d: there is nothing to roll back to (delete it with the CLI)", name, to)
	}
	if f.Get("step") != "apply" {
		now, err := s.ownTree(ctx, name)
		if err != nil {
			return err
		}
		d := uiConfirmData{Name: name, Action: back + "/rollback", Heading: fmt.Sprintf("Roll %s back to revision %d?", name, to),
			What:   "This applies the appliance's own keys as they were at that revision, as a release of kind rollback with source console. Secret values are restored too; they are not shown.",
			Diff:   uiDiff(name, now, keys),
			Fields: [][2]string{{"to", strconv.FormatInt(to, 10)}, {"cas", strconv.FormatInt(cur, 10)}},
			Button: "Roll back", Back: back + "/history", Message: true}
		if len(d.Diff) == 0 {
			d.Warning = "The appliance's keys are already as they were then: the rollback changes nothing."
		}
		d.Warning = strings.TrimSpace(d.Warning + " " + s.uiRolloutWarning(name) + " " + s.uiMaintenanceWarning())
		return s.uiOK(w, r, c.page("Confirm", "appliances", d))
	}
	cas := f.Get("cas")
	if _, err := strconv.ParseInt(cas, 10, 64); err != nil {
		return api.Errorf(api.CodeInvalidRequest, "form field cas must be a revision, not %s", shorten(cas))
	}
	body, err := uiRollbackBody(keys)
	if err != nil {
		return err
	}
	keys = nil // not held while the apply reads the tree again (body nil) or decodes the body
	done()
	if len(body) >= largeBody {
		// The API's handler reads the body within the form's share of the body budget
		// (bodyShareKey), which the small rollback form does not have: the body (up to
		// api.RollbackBodyBytes) and its parse went uncounted, for any number of rollbacks
		// at once. Its share joins the form's here, as the same body sent to the API takes
		// one, once the slot is given back (a tree without a body holds its share in a slot
		// of its own); the API's handler gives the form's share back when it returns, before
		// the wait of a rollback that changes nothing (see unchangedLater).
		sh := s.bodyBudget.shareOf(r)
		defer sh.release()
		if err := s.bodyBudget.hold(ctx, &sh.held, int64(len(body)), func() string {
			return fmt.Sprintf("rollback of appliance %q: its tree at revision %d is larger than the %d bytes a replica holds of apply bodies at once; nothing was written", name, to, s.bodyBudget.size())
		}); err != nil {
			return err
		}
	}
	hdr := http.Header{"Content-Type": {"application/json"}, api.HeaderRollback: {strconv.FormatInt(to, 10)}}
	rec, err := s.uiCall(r, s.handlePutAppliance, http.MethodPut, map[string]string{"name": name}, url.Values{"cas": {cas}}, body, hdr, f.Get("message"))
	if errors.Is(err, api.ErrConflict) {
		return api.Errorf(api.CodeConflict, "appliance %q changed after the rollback was confirmed; nothing was written: review it again from the history", name)
	}
	if err != nil {
		return err
	}
	uiWritten(w, r, back, rec)
	return nil
}

// uiRollbackBody is the apply body of keys, as json.Marshal(api.Apply{Keys: keys}) makes it, or
// nil when it would be over api.RollbackBodyBytes, as soon as it passes it: a tree made of single
// puts may be far larger than an apply carries, and encoded whole first it was held as up to six
// times its values of JSON (control characters) before the API's handler refused it at its limit
// (eight rollbacks at once of a 9.5 MB tree: 337–506 MiB of heap).
func uiRollbackBody(keys map[string]string) ([]byte, error) {
	raw := 0
	for k, v := range keys {
		raw += len(k) + len(v) // a string's JSON is never shorter than the string
	}
	if raw > api.RollbackBodyBytes {
		return nil, nil
	}
	var buf bytes.Buffer
	buf.WriteString(`{"keys":{`)
	for i, k := range slices.Sorted(maps.Keys(keys)) {
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("rollback body: %w", err)
		}
		vb, err := json.Marshal(keys[k])
		if err != nil {
			return nil, fmt.Errorf("rollback body: %w", err)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
		if buf.Len() > api.RollbackBodyBytes {
			return nil, nil
		}
	}
	buf.WriteString("}}")
	if buf.Len() > api.RollbackBodyBytes {
		return nil, nil
	}
	return buf.Bytes(), nil
}

// uiRolloutAction confirms, then asks, a rollout's promotion or abort (POST .../rollout). The
// forms name the rollout (field rollout) and, for a promotion, its step (field at) as the page
// showed them: a rollout that ended and another that started since, or a step passed meanwhile,
// is a conflict, as a key's cas is, rather than the abort of a rollout nobody saw or a promotion
// that skips a step's bake (a confirmation left open, a button pressed twice).
func (s *Server) uiRolloutAction(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	name, err := uiName(r, c.p)
	if err != nil {
		return err
	}
	f := r.PostForm
	action := f.Get("action")
	if action != "promote" && action != "abort" {
		return api.Errorf(api.CodeInvalidRequest, "form field action must be promote or abort, not %s", shorten(action))
	}
	if err := c.p.mayWrite(api.ApplianceRoot(name)); err != nil {
		return err
	}
	apply := f.Get("step") == "apply"
	id, at := f.Get("rollout"), f.Get("at")
	if apply && (id == "" || action == "promote" && at == "") {
		return api.Errorf(api.CodeInvalidRequest, "the form does not say which rollout (and step) it confirms: %s it from the appliance's page", action)
	}
	cur, err := s.uiRollout(r, name)
	if err != nil {
		return err
	}
	if cur == nil || cur.State != api.RolloutRunning {
		return api.Errorf(api.CodeConflict, "appliance %q has no rollout running: nothing to %s", name, action)
	}
	stale := func(cur *api.RolloutStatus) error {
		shown := shorten(at)
		if n, err := strconv.ParseUint(at, 10, 63); err == nil {
			shown = strconv.FormatUint(n+1, 10) // as the page and the CLI count steps
		}
		return api.Errorf(api.CodeConflict, "the rollout of appliance %q changed since the page was shown (now rollout %s at step %d of %d; the page showed %s at step %s): nothing was done; review it on the appliance's page",
			name, cur.ID, cur.Step+1, len(cur.Steps), shorten(id), shown)
	}
	if id != "" && cur.ID != id || action == "promote" && at != "" && at != strconv.Itoa(cur.Step) {
		return stale(cur)
	}
	if action == "promote" && cur.GroupReady {
		return api.Errorf(api.CodeConflict, "rollout %s of appliance %q has passed its last step and waits for the other appliances of shared rollout group %s: nothing to promote", cur.ID, name, cur.Group)
	}
	back := "/ui/appliances/" + url.PathEscape(name)
	if !apply {
		d := uiConfirmData{Name: name, Action: back + "/rollout", Heading: fmt.Sprintf("%s the rollout of %s?", strings.ToUpper(action[:1])+action[1:], name),
			Fields: [][2]string{{"action", action}, {"rollout", cur.ID}, {"at", strconv.Itoa(cur.Step)}}, Back: back}
		others := ""
		if cur.Group != "" {
			if others = s.uiGroupOthers(c.p, cur); others != "" {
				others = " (" + others + ")"
			}
		}
		switch {
		case action == "promote" && cur.Group != "":
			d.What, d.Button = fmt.Sprintf("Rollout %s is at step %d of %d. It moves to its next step as soon as every instance of the current cohort has applied the candidate (the appliance's page shows which have), without waiting for the bake; after its last step it waits for the other appliances of shared rollout group %s%s: the change to shared/ keys %s goes live once every one of them has passed its last step.", cur.ID, cur.Step+1, len(cur.Steps), cur.Group, others, uiGroupKeys(cur)), "Promote"
		case action == "promote":
			d.What, d.Button = fmt.Sprintf("Rollout %s is at step %d of %d. It moves to its next step as soon as every instance of the current cohort has applied the candidate (the appliance's page shows which have), without waiting for the bake; after the last step the candidate becomes the live keys.", cur.ID, cur.Step+1, len(cur.Steps)), "Promote"
		case cur.Group != "":
			d.What, d.Button = fmt.Sprintf("Rollout %s ends, and with it every rollout of its shared rollout group %s%s: the instances of all their cohorts go back to the live keys, and shared/ keys %s are not changed.", cur.ID, cur.Group, others, uiGroupKeys(cur)), "Abort the rollout"
			if others != "" {
				d.Button = "Abort the rollouts of the group"
			}
		default:
			d.What, d.Button = fmt.Sprintf("Rollout %s ends; the instances of its cohorts go back to the live keys.", cur.ID), "Abort the rollout"
		}
		d.Warning = s.uiMaintenanceWarning()
		return s.uiOK(w, r, c.page("Confirm", "appliances", d))
	}
	// The rollout and step confirmed go with the request: the rollout may move on between the
	// check above and the promote, which then applied to the next step and skipped its bake.
	act := api.RolloutAction{Action: action, Rollout: id}
	if action == "promote" {
		step, err := strconv.Atoi(at)
		if err != nil {
			return api.Errorf(api.CodeInvalidRequest, "form field at must be a step, not %s", shorten(at))
		}
		act.Step = &step
	}
	body, _ := json.Marshal(act)
	rec, err := s.uiCall(r, s.handlePostRollout, http.MethodPost, map[string]string{"name": name}, nil, body, http.Header{"Content-Type": {"application/json"}}, "")
	if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeConflict {
		if now, rerr := s.uiRollout(r, name); rerr == nil && now != nil && now.State == api.RolloutRunning &&
			(now.ID != id || action == "promote" && strconv.Itoa(now.Step) != at) {
			return stale(now)
		}
	}
	if err != nil {
		return err
	}
	done := url.Values{"aborted": {rec.h.Get(api.HeaderIndex)}, "rollout": {id}}
	if action == "promote" {
		done = url.Values{"promoted": done["aborted"], "rollout": {id}, "at": {at}}
	}
	http.Redirect(w, r, back+"?"+done.Encode(), http.StatusSeeOther)
	return nil
}

// uiStoreData is the store page's data.
type uiStoreData struct {
	Status
	Running []string
}

func (uiStoreData) pageName() string { return "store" }

func (s *Server) uiStore(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	rec, err := s.uiCall(r, s.handleStatus, http.MethodGet, nil, nil, nil, nil, "")
	if err != nil {
		return err
	}
	var d uiStoreData
	if err := json.Unmarshal(rec.body.Bytes(), &d.Status); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	// The running rollouts name appliances: only those the token may see.
	for _, n := range d.Rollouts.Running {
		if c.p.maySeeAppliance(n) {
			d.Running = append(d.Running, n)
		}
	}
	d.Rollouts.Running = nil
	if !c.p.admin {
		d.Etcd.Endpoints = nil
	}
	return s.uiOK(w, r, c.page("Store", "store", d))
}

// uiMaintenance confirms, then turns maintenance mode on or off (admin).
func (s *Server) uiMaintenance(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	if err := c.p.mayAdmin(); err != nil {
		return err
	}
	on := r.PostForm.Get("on")
	if on != "true" && on != "false" {
		return api.Errorf(api.CodeInvalidRequest, "form field on must be true or false, not %s", shorten(on))
	}
	if r.PostForm.Get("step") != "apply" {
		d := uiConfirmData{Action: "/ui/store/maintenance", Fields: [][2]string{{"on", on}}, Back: "/ui/store"}
		if on == "true" {
			d.Heading, d.Button = "Turn maintenance on?", "Turn maintenance on"
			d.What = "The store becomes read-only: every write is refused (503) until maintenance is turned off. Agents keep reading their views."
		} else {
			d.Heading, d.Button = "Turn maintenance off?", "Turn maintenance off"
			d.What = "Writes are accepted again."
		}
		return s.uiOK(w, r, c.page("Confirm", "store", d))
	}
	body := []byte(`{"on":` + on + `}`)
	if _, err := s.uiCall(r, s.handlePutMaintenance, http.MethodPut, nil, nil, body, nil, ""); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/store", http.StatusSeeOther)
	return nil
}
