package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// listRecords reads the instance records of appliance straight from the store.
func listRecords(t testing.TB, st *store.Store, appliance string) map[string]api.Instance {
	t.Helper()
	m, _, err := st.SysList(context.Background(), instancePrefix+appliance+"/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.Instance{}
	for k, v := range m {
		var in api.Instance
		if err := json.Unmarshal(v, &in); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(k, instancePrefix+appliance+"/")] = in
	}
	return out
}

// A token's instance records are capped: a report of one instance more is not recorded (the
// request is served); other tokens have their own.
func TestInstances_RecordsCappedPerToken(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxInstances = 3 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	rev := f.view("web").Revision
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	other := f.newToken(api.TokenRequest{Name: "agent-web-2", Appliance: "web"})
	report := func(token, instance string, applied int64) {
		t.Helper()
		f.must(f.doToken(token, "GET", "/v1/appliances/web", "", api.HeaderInstance, instance, api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	}
	for i := 1; i <= 6; i++ {
		report(agent, fmt.Sprintf("vm-%d", i), rev)
	}
	report(other, "vm-9", rev)
	// vm-1 reports again with a new revision after the refused ones: once that is recorded,
	// anything queued before it is too.
	next := f.put("appliances/web/a", "2")
	report(agent, "vm-1", next)
	var got map[string]api.Instance
	waitFor(t, "the reports recorded", func() bool {
		got = listRecords(t, f.st, "web")
		return got["vm-1"].Applied == next && got["vm-9"].Applied == rev
	})
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"vm-1", "vm-2", "vm-3", "vm-9"}; !slices.Equal(names, want) {
		t.Fatalf("records %v, want %v: a token's records are capped at 3", names, want)
	}
}

// Records that another replica wrote count toward the cap once a sweep read them.
func TestInstances_CapCountsStoredRecords(t *testing.T) {
	st := testutil.Store(t)
	now := time.Now().UTC()
	for i := range 2 {
		putRecord(t, st, api.Instance{Appliance: "web", Instance: fmt.Sprintf("old-%d", i), Token: "agent-web", LastSeen: now})
	}
	f := newFixtureOn(t, st, func(c *Config) { c.MaxInstances = 2 })
	waitFor(t, "the sweep at start counts the records", func() bool {
		f.s.reports.mu.Lock()
		defer f.s.reports.mu.Unlock()
		return f.s.reports.held["agent-web"] == 2
	})
	if f.s.reports.note(&api.Instance{Appliance: "web", Instance: "new", Token: "agent-web", LastSeen: now}, nil, "") {
		t.Fatal("a report over the cap counted from the store was taken")
	}
	if !f.s.reports.note(&api.Instance{Appliance: "web", Instance: "old-1", Token: "agent-web", LastSeen: now, Applied: 1}, nil, "") {
		t.Fatal("a report of a recorded instance was refused")
	}
}

// putRecord writes an instance record straight to the store, as another replica would.
func putRecord(t testing.TB, st *store.Store, in api.Instance) {
	t.Helper()
	data, _ := json.Marshal(in)
	if _, err := st.SysPut(context.Background(), instancePrefix+in.Appliance+"/"+in.Instance, data, -1); err != nil {
		t.Fatal(err)
	}
}

// Expired instance records are removed in the background, without anyone listing them.
func TestInstances_ExpireInTheBackground(t *testing.T) {
	st := testutil.Store(t)
	now := time.Now().UTC()
	putRecord(t, st, api.Instance{Appliance: "web", Instance: "gone", Token: "agent-web", LastSeen: now.Add(-instanceExpiry - time.Hour)})
	putRecord(t, st, api.Instance{Appliance: "web", Instance: "alive", Token: "agent-web", LastSeen: now})
	newFixtureOn(t, st)
	waitFor(t, "the expired record removed", func() bool {
		_, _, err := st.SysGet(context.Background(), instancePrefix+"web/gone")
		return errors.Is(err, api.ErrNotFound)
	})
	if _, _, err := st.SysGet(context.Background(), instancePrefix+"web/alive"); err != nil {
		t.Fatalf("the live record: %v", err)
	}
}

// A report whose applied revision is above the store's is forged (or from another store): it
// is not recorded, and the request is served. One above only this replica's revision (its
// watch lags) is checked with the store and recorded.
func TestInstances_ReportAboveTheStoreIgnored(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	rev := f.view("web").Revision
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "forged", api.HeaderApplied, fmt.Sprint(rev+1000)), 200, nil)
	f.must(f.doToken(agent, "GET", lp("web", rev, "0"), "", api.HeaderInstance, "forged-2", api.HeaderApplied, fmt.Sprint(rev+1000)), 304, nil)

	// This replica's revision lags behind the store's (as when its watch is slow): the report
	// at the store's revision is real.
	cur, err := f.st.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.s.hub.mu.Lock()
	f.s.hub.rev = rev - 1
	f.s.hub.mu.Unlock()
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "real", api.HeaderApplied, fmt.Sprint(cur)), 200, nil)
	var got map[string]api.Instance
	waitFor(t, "the real report recorded", func() bool {
		got = listRecords(t, f.st, "web")
		return got["real"].Applied == cur
	})
	if len(got) != 1 {
		t.Fatalf("records %v, want only the real one", got)
	}
}

// A report at a revision the store has, but that this replica's watch has not reached yet while
// the store's revision it read last (less than a second before) is older, is recorded once the
// watch reaches it; it was ignored as above the store, and a rollout waiting for that instance
// never counted it (TestSharedRollout_ForcedWriteRacingThePromotion failed so, now and then).
func TestInstances_ReportAheadOfAStaleStoreRevision(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	cur, err := f.st.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The store was asked just now, before the write at cur; the watch lags behind cur.
	f.s.aboveStore.mu.Lock()
	f.s.aboveStore.rev, f.s.aboveStore.asked = cur-1, time.Now()
	f.s.aboveStore.mu.Unlock()
	f.s.hub.mu.Lock()
	f.s.hub.rev = cur - 1
	f.s.hub.mu.Unlock()
	answered := make(chan int, 1)
	go func() {
		r := f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "real", api.HeaderApplied, fmt.Sprint(cur))
		r.Body.Close()
		answered <- r.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	f.put("appliances/web/b", "2") // the watch moves on, past cur
	if code := <-answered; code != 200 {
		t.Fatalf("status %d", code)
	}
	waitFor(t, "the report recorded", func() bool { return listRecords(t, f.st, "web")["real"].Applied == cur })
}

// Reports applied above the store's revision (forged, or from a lagging replica's point of
// view) cost at most one store read per second and one warning per token and minute, however
// many arrive.
func TestStoreRevCheck_BoundsReadsAndWarnings(t *testing.T) {
	var c storeRevCheck
	reads := 0
	read := func(context.Context) (int64, error) { reads++; return 100, nil }
	ctx := context.Background()
	for i := range 1000 {
		rev, err := c.revision(ctx, read, 1_000_000+int64(i))
		if err != nil || rev != 100 {
			t.Fatalf("revision = %d, %v", rev, err)
		}
	}
	if reads != 1 {
		t.Fatalf("1000 forged reports read the store %d times, want 1", reads)
	}
	if rev, _ := c.revision(ctx, read, 90); rev != 100 || reads != 1 {
		t.Fatalf("a report below the known revision read the store (%d reads)", reads)
	}
	now := time.Now()
	if !c.shouldWarn("web", now) || c.shouldWarn("web", now.Add(30*time.Second)) || !c.shouldWarn("db", now) || !c.shouldWarn("web", now.Add(61*time.Second)) {
		t.Fatal("warnings are not once per token and minute")
	}
}

// Reports are an agent's: a token that may read the view without being the appliance's agent
// token (a read grant, admin) is refused on POST …/report, and what its view requests say of
// an instance is not recorded — else it listed made-up VMs as applied.
func TestInstances_OnlyAgentsReport(t *testing.T) {
	f := newFixture(t)
	rev := f.put("appliances/web/a", "1")
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"shared", "appliances/web"}})
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	body := fmt.Sprintf(`{"instance":"forged","revision":%d,"applied":%d}`, rev, rev)
	for _, tok := range []string{reader, f.token} {
		f.mustErr(f.doToken(tok, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"), 403, api.CodeForbidden, "agent token")
		f.must(f.doToken(tok, "GET", "/v1/appliances/web", "", api.HeaderInstance, "forged-by-view", api.HeaderApplied, fmt.Sprint(rev)), 200, nil)
	}
	f.must(f.doToken(agent, "POST", "/v1/appliances/web/report", fmt.Sprintf(`{"instance":"vm-1","revision":%d,"applied":%d}`, rev, rev), "Content-Type", "application/json"), 200, nil)
	var got map[string]api.Instance
	waitFor(t, "the agent's report recorded", func() bool {
		got = listRecords(t, f.st, "web")
		return got["vm-1"].Applied == rev
	})
	if len(got) != 1 {
		t.Fatalf("instance records %v, want the agent's vm-1 only", got)
	}
}

// An agent's version, from a report or from its User-Agent, is kept on one line and without
// what may be a token's secret: it is shown to every read token and in the console, and a
// newline and a secret pasted as a version were kept as sent.
func TestInstances_VersionOneLineWithoutSecrets(t *testing.T) {
	f := newFixture(t)
	rev := f.put("appliances/web/a", "1")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	secret := "sl_" + strings.Repeat("A", 43)
	body := fmt.Sprintf(`{"instance":"vm-1","revision":%d,"applied":%d,"version":"1.0\u001b[31m\r\nfake line\t%s"}`, rev, rev, secret)
	f.must(f.doToken(agent, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"), 200, nil)
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-2", api.HeaderApplied, fmt.Sprint(rev),
		"User-Agent", "shoelace-agent/"+secret), 200, nil)
	var got map[string]api.Instance
	waitFor(t, "both records", func() bool {
		got = listRecords(t, f.st, "web")
		return got["vm-1"].Applied == rev && got["vm-2"].Applied == rev
	})
	for _, inst := range []string{"vm-1", "vm-2"} {
		v := got[inst].Version
		if strings.ContainsAny(v, "\n\r\t\x1b") || strings.Contains(v, secret) || !strings.Contains(v, "sl_…") {
			t.Errorf("%s's version %q: want one line, the secret written sl_…", inst, v)
		}
	}
}

// Reports queued when the server stops are written before it does: each was answered 200, and
// an agent is not asked again until its next change or long-poll, so the record stayed at what
// it applied before (a rollout's gate waited on it). Before, the reporter returned at once.
func TestReports_QueuedAtCloseAreWritten(t *testing.T) {
	st := testutil.OpenStore(t, testutil.StoreConfig(t))
	f := newFixtureOn(t, st)
	f.s.reports.window = time.Minute // still queued when Close comes, whatever the machine
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	now := time.Now().UTC()
	for i := range 300 { // more than one batch (reportBatch)
		f.s.reports.note(&api.Instance{Appliance: "web", Instance: fmt.Sprintf("vm-%03d", i), Applied: 7, LastSeen: now}, nil, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := st.SysList(ctx, instancePrefix+"web/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 300 {
		t.Fatalf("%d of 300 queued reports recorded after Close, want all", len(kvs))
	}
}

// An unchanged report is written again every reportRefresh (a twelfth of --instance-stale, from
// one minute to five), not every minute: each write stays in etcd's history until compaction.
// A report that says something new is written at once.
func TestReporter_UnchangedReportWrittenAgainAfterRefresh(t *testing.T) {
	for stale, want := range map[time.Duration]time.Duration{time.Hour: 5 * time.Minute, 30 * time.Minute: 150 * time.Second,
		10 * time.Minute: time.Minute, time.Minute: time.Minute, 24 * time.Hour: 5 * time.Minute} {
		if got := reportRefresh(stale); got != want {
			t.Errorf("reportRefresh(%v) = %v, want %v", stale, got, want)
		}
	}
	r := newReporter(100, reportRefresh(DefaultInstanceStale))
	r.every = 0 // the reports' times are made up: TestReports_AlternatingAppliedIsPaced paces them
	t0 := time.Now().UTC().Truncate(time.Second)
	var b reportBatcher
	written := func(at time.Duration, applied int64) int {
		r.note(&api.Instance{Appliance: "web", Instance: "vm-1", Token: "agent-web", Applied: applied, LastSeen: t0.Add(at)}, nil, "")
		return r.take(&b)
	}
	for _, c := range []struct {
		at      time.Duration
		applied int64
		want    int
	}{
		{0, 5, 1},
		{time.Minute, 5, 0},
		{4*time.Minute + 59*time.Second, 5, 0},
		{5 * time.Minute, 5, 1},
		{5*time.Minute + time.Second, 6, 1}, // applied another revision
		{6 * time.Minute, 6, 0},
	} {
		if got := written(c.at, c.applied); got != c.want {
			t.Errorf("report of revision %d at +%v: %d written, want %d", c.applied, c.at, got, c.want)
		}
	}
}
