package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A view of big values (each up to --max-value-bytes, of characters that HTML escapes to five
// bytes) makes pages of bounded size: the appliance page, a release's diff and a rollback's
// confirmation show the start of each value and how many bytes they leave out, within a budget
// per page, where they showed every value in full (12 values of 1 MiB were a page of 60 MiB,
// held in the server's memory whole, and fetched again by the live script after every change).
// The edit form still holds the whole value, and a small value is still shown whole.
func TestUI_BigValuesMakeBoundedPages(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat(`"`, 1<<20-64)
	apply := func(v string) int64 {
		f.put("appliances/huge/small", "small-value-shown")
		var rev int64
		for i := range 12 {
			rev = f.put("appliances/huge/big/"+strconv.Itoa(i), v+strconv.Itoa(i))
		}
		return rev
	}
	first := apply(big)
	second := apply(strings.Repeat("<", 1<<20-64))
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	const bound = 8 << 20
	check := func(what string, r resp) {
		t.Helper()
		mustStatus(t, r, 200)
		if len(r.body) > bound {
			t.Errorf("%s: %d bytes, want at most %d", what, len(r.body), bound)
		}
		if !strings.Contains(string(r.body), "bytes not shown") {
			t.Errorf("%s does not say that values were cut", what)
		}
	}
	page := b.get("/ui/appliances/huge")
	check("appliance page", page)
	if !strings.Contains(string(page.body), "small-value-shown") || !strings.Contains(string(page.body), "&lt;&lt;&lt;&lt;") {
		t.Errorf("the appliance page does not show the values' starts")
	}
	check("release page", b.get("/ui/appliances/huge/releases/"+strconv.FormatInt(second, 10)))
	check("rollback confirmation", b.post("/ui/appliances/huge/rollback", map[string][]string{"csrf": {tok}, "to": {strconv.FormatInt(first, 10)}}))
	form := b.get("/ui/appliances/huge/edit?key=appliances/huge/big/3")
	mustStatus(t, form, 200)
	if n := strings.Count(string(form.body), "&lt;"); n < 1<<20-64 {
		t.Errorf("the edit form holds %d of the value's characters, want all %d", n, 1<<20-64)
	}
}

// An appliance page lists at most uiMaxInstances instances, failing ones first, and says how
// many it leaves out: it listed every instance, with its error, and the holder of an agent token
// reports as many instance names as --max-instances allows (20,000 by default, each with an error
// of 2 KiB that HTML escapes to up to 12 KiB: a page of hundreds of megabytes).
func TestUI_ManyInstancesMakeBoundedPage(t *testing.T) {
	f := newFixture(t)
	rev := f.put("appliances/web/port", "8080")
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web"})
	n := uiMaxInstances + 30
	for i := range n {
		rep := api.Report{Instance: fmt.Sprintf("vm-%04d", i), Revision: rev, Applied: rev, Version: "1.0"}
		tok := agent
		if i == n-1 { // failures are kept for enrolled instances
			rep.Applied, rep.Error, rep.Stage = 0, "the-last-one-failed "+strings.Repeat(`"`, 1500), api.StageRender
			tok = f.enroll(agent, "web", rep.Instance).Token
		}
		body, _ := json.Marshal(rep)
		f.must(f.doToken(tok, "POST", "/v1/appliances/web/report", string(body), "Content-Type", "application/json"), 200, nil)
	}
	waitFor(t, "the reports' records", func() bool {
		var ins api.Instances
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
		return len(ins.Instances) == n && ins.Instances[n-1].Error != ""
	})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	body := string(page.body)
	if rows := strings.Count(body, `<th scope="row">vm-`); rows != uiMaxInstances {
		t.Errorf("the page lists %d instances, want %d", rows, uiMaxInstances)
	}
	if !strings.Contains(body, "the-last-one-failed") {
		t.Errorf("the failing instance is not among those listed")
	}
	if !strings.Contains(body, fmt.Sprintf("%d more instances", 30)) {
		t.Errorf("the page does not say how many instances it leaves out")
	}
	if !strings.Contains(body, fmt.Sprintf("(%d VMs, %d on the latest revision, 1 failing)", n, n-1)) {
		t.Errorf("the page's counts are not of every instance")
	}
}

// The history and the appliance page name at most uiReleaseNames keys of each release (a
// release's page names them all): they named the first 1000 of each of its created, changed and
// deleted keys, each up to 512 bytes, and 50 releases of 2000 long names made a history page of
// 45 MB.
func TestUI_ReleaseListsNameFewKeys(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("s", 60) + "/" + strings.Repeat("t", 60)
	var last int64
	for i := range 3 {
		keys := map[string]string{}
		for k := range 100 {
			keys[fmt.Sprintf("r%d-%03d/%s", i, k, long)] = "v"
		}
		body, _ := json.Marshal(api.Apply{Keys: keys})
		var out struct{ Revision int64 }
		f.must(f.do("PUT", "/v1/appliances/web", string(body), "Content-Type", "application/json"), 200, &out)
		last = out.Revision
	}
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	for _, p := range []string{"/ui/appliances/web/history", "/ui/appliances/web"} {
		page := b.get(p)
		mustStatus(t, page, 200)
		body := string(page.body)
		if i := strings.Index(body, `id="releases"`); i >= 0 {
			body = body[i:] // the appliance page's tree names every key
		}
		if n := strings.Count(body, "r2-"); n > uiReleaseNames {
			t.Errorf("%s names %d keys of the last release, want at most %d", p, n, uiReleaseNames)
		}
		if want := fmt.Sprintf("and %d more", 200-uiReleaseNames); !strings.Contains(body, want) {
			t.Errorf("%s does not say %q", p, want)
		}
	}
	// The release's own page lists every key it changed.
	page := b.get("/ui/appliances/web/releases/" + strconv.FormatInt(last, 10))
	mustStatus(t, page, 200)
	if n := strings.Count(string(page.body), "r2-"); n < 100 {
		t.Errorf("the release page names %d of its 100 new keys", n)
	}
}

// An appliance page shows at most uiMaxKeys keys of the view, the first ones in the tree's order,
// and says how many it leaves out: it showed every key (an appliance holds as many as writes give
// it, 10,000 a write), each a few hundred bytes of the page, and found each key's place in the
// tree by a scan of its directory (60,000 keys of one directory took 14 s to show).
func TestUI_ManyKeysMakeBoundedPage(t *testing.T) {
	f := newFixture(t)
	n := uiMaxKeys + 1500
	for start := 0; start < n; start += 5000 {
		var txn api.Txn
		for i := start; i < min(n, start+5000); i++ {
			txn.Ops = append(txn.Ops, api.Op{Op: "put", Key: fmt.Sprintf("appliances/wide/k/%05d", i), Value: "v"})
		}
		body, _ := json.Marshal(txn)
		f.must(f.do("POST", "/v1/txn", string(body), "Content-Type", "application/json"), 200, nil)
	}
	f.put("shared/a-first", "from-shared") // sorts before "k/" segment by segment
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/wide")
	mustStatus(t, page, 200)
	body := string(page.body)
	if got := strings.Count(body, `<span class="seg">`); got > uiMaxKeys+2 { // and the k/ directory
		t.Errorf("the page shows %d tree entries, want at most %d", got, uiMaxKeys+2)
	}
	if !strings.Contains(body, "from-shared") || !strings.Contains(body, fmt.Sprintf(">%05d<", uiMaxKeys-2)) || strings.Contains(body, fmt.Sprintf(">%05d<", uiMaxKeys)) {
		t.Errorf("the page does not show the first keys of the view, in order")
	}
	if want := fmt.Sprintf("and %d more keys", n+1-uiMaxKeys); !strings.Contains(body, want) {
		t.Errorf("the page does not say %q", want)
	}
	if !strings.Contains(body, fmt.Sprintf("(%d keys of its own", n)) {
		t.Errorf("the page's count of keys is not of all")
	}
}

// Release pages (and rollback confirmations) asked for together read the appliance's trees at
// past revisions within the replica's bound on such reads (historyReadsAtOnce), as the API's
// GET …/at/{revision} does: each called that handler twice and decoded its JSON answers after the
// handler gave its slot back, so that any number of them held two decoded trees, and their JSON,
// at once: 24 release pages of an appliance of 8 values of 1 MiB took the heap up by 300 MiB
// (now 85 MiB).
func TestUI_ReleasePagesShareHistoryReads(t *testing.T) {
	// 24 pages of 16 MiB of history each wait for a few slots: on a loaded machine the last
	// waited more than 30 s.
	longerOpTimeout(t, 2*time.Minute)
	f := newFixture(t)
	var rev int64
	for _, v := range []string{`"`, `\`} {
		for i := range 8 {
			rev = f.put("appliances/big/k"+strconv.Itoa(i), strings.Repeat(v, 1<<20-64))
		}
	}
	b := newUIBrowser(t, f.srv.URL, nil)
	b.c.Timeout = 3 * time.Minute // the client waits longer than the server's operations may
	b.signIn(f.token)
	page := "/ui/appliances/big/releases/" + strconv.FormatInt(rev, 10)
	mustStatus(t, b.get(page), 200)
	stop := peakHeap()
	var wg sync.WaitGroup
	statuses := make(chan int, 24)
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.c.Get(f.srv.URL + page)
			if err != nil {
				t.Errorf("GET %s: %v", page, err)
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	wg.Wait()
	peak, base := stop()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Fatalf("GET %s: %d", page, st)
		}
	}
	t.Logf("24 release pages: heap up by %d MiB at most (from %d MiB)", peak>>20, base>>20)
	// 85–121 MiB alone; 174 with the package's other tests' 191 MiB live and five processes
	// on two cores, where the collector lags behind the pages' allocations. Without the bound
	// it was 300 MiB alone.
	if peak > 220<<20 {
		t.Errorf("24 release pages took the heap up by %d MiB, want at most 220 MiB", peak>>20)
	}
}

// The appliances page reads a fleet's instance records a few appliances per etcd request, not
// each appliance's through the instances API (its JSON written and read back): a fleet of
// 10,000 VMs over 200 appliances took 418 etcd requests and 61 MB a page. What it shows is
// what the API says: VMs, on the latest revision, failing, expired records left out.
func TestUI_AppliancesPageReadsInstancesTogether(t *testing.T) {
	f := newFixtureOn(t, testutil.OpenStore(t, testutil.StoreConfig(t)))
	const apps = 120
	var last int64
	for i := range apps {
		last = f.put(fmt.Sprintf("appliances/app-%03d/port", i), "80")
	}
	now := time.Now().UTC()
	for i := range apps {
		app := fmt.Sprintf("app-%03d", i)
		f.s.reports.note(&api.Instance{Appliance: app, Instance: "vm-1", Applied: last, LastSeen: now}, nil, "")
		f.s.reports.note(&api.Instance{Appliance: app, Instance: "vm-2", Applied: 1, LastSeen: now}, nil, "")
		f.s.reports.note(&api.Instance{Appliance: app, Instance: "vm-old", Applied: last, LastSeen: now.Add(-instanceExpiry - time.Hour)}, nil, "")
	}
	waitFor(t, "the reports recorded", func() bool {
		var got api.Instances
		f.must(f.do("GET", "/v1/appliances/app-119/instances", ""), 200, &got)
		return len(got.Instances) == 2
	})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	mustStatus(t, b.get("/ui/"), 200) // the release records read once
	requests := func(m map[string]float64) float64 {
		return m[`shoelace_etcd_request_duration_seconds_count{method="KV/Range"}`] + m[`shoelace_etcd_request_duration_seconds_count{method="KV/Txn"}`]
	}
	before := requests(f.scrape())
	page := b.get("/ui/")
	used := requests(f.scrape()) - before
	mustStatus(t, page, 200)
	t.Logf("the appliances page of %d appliances: %.0f etcd requests", apps, used)
	if used > apps+apps/uiAppliancesPerRead+10 {
		t.Errorf("the appliances page of %d appliances took %.0f etcd requests, want at most %d", apps, used, apps+apps/uiAppliancesPerRead+10)
	}
	row := regexp.MustCompile(`(?s)href="/ui/appliances/app-042">app-042</a></th>\s*<td class="num">1</td>\s*<td class="num">2</td>\s*<td class="num">1</td>\s*<td class="num">0</td>`)
	if !row.Match(page.body) {
		t.Errorf("app-042's row does not show 1 key, 2 VMs (the expired one left out), 1 on the latest revision, 0 failing:\n%s", page.body)
	}
}

// The confirmation of a key's edit shows the start of the old and new values, as the other
// pages do, and carries the new value whole to the write: it showed both whole besides the
// hidden field (a 1 MiB value of characters that HTML escapes to five bytes made a page of
// 15 MiB, rendered whole in the server's memory).
func TestUI_EditConfirmationOfBigValueIsBounded(t *testing.T) {
	f := newFixture(t)
	old := strings.Repeat(`"`, 1<<20-64)
	rev := f.put("appliances/huge/big", old)
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	value := strings.Repeat(`<`, 1<<20-64)
	confirm := b.post("/ui/appliances/huge/edit", map[string][]string{"csrf": {tok}, "key": {"appliances/huge/big"}, "value": {value}, "cas": {strconv.FormatInt(rev, 10)}})
	mustStatus(t, confirm, 200)
	const bound = 8 << 20
	if len(confirm.body) > bound {
		t.Errorf("the edit confirmation is %d bytes, want at most %d", len(confirm.body), bound)
	}
	if !strings.Contains(string(confirm.body), "bytes not shown") {
		t.Errorf("the edit confirmation does not say that values were cut")
	}
	mustStatus(t, b.post("/ui/appliances/huge/edit", hiddenFields(confirm.body)), 303)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/huge/big", ""), 200, &kv)
	if kv.Value != value {
		t.Errorf("written: %d bytes, want the %d typed", len(kv.Value), len(value))
	}
}

// A new value over --max-value-bytes is refused at the edit's confirmation, as its write would
// be (413), before a page is made of it: the form takes three times the limit (for a value's URL
// encoding), and the confirmation carried the value whole in a hidden field, escaped (a value of
// 3 MiB of quotes made a page of 16 MB, for a write refused whatever was confirmed).
func TestUI_EditConfirmationRefusesValueOverTheLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxValueBytes = 64 << 10 })
	rev := f.put("appliances/huge/big", "small")
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	value := strings.Repeat("a", 2*(64<<10)) // within the form's limit (three times the value's)
	confirm := b.post("/ui/appliances/huge/edit", url.Values{"csrf": {tok}, "key": {"appliances/huge/big"}, "value": {value}, "cas": {strconv.FormatInt(rev, 10)}})
	mustStatus(t, confirm, http.StatusRequestEntityTooLarge)
	if len(confirm.body) > 16<<10 {
		t.Errorf("the refusal is %d bytes", len(confirm.body))
	}
	if !strings.Contains(string(confirm.body), "--max-value-bytes") {
		t.Errorf("the refusal does not name the limit: %s", confirm.body)
	}
	// The value at the limit is confirmed, and written.
	value = value[:64<<10]
	confirm = b.post("/ui/appliances/huge/edit", url.Values{"csrf": {tok}, "key": {"appliances/huge/big"}, "value": {value}, "cas": {strconv.FormatInt(rev, 10)}})
	mustStatus(t, confirm, 200)
	mustStatus(t, b.post("/ui/appliances/huge/edit", hiddenFields(confirm.body)), 303)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/huge/big", ""), 200, &kv)
	if kv.Value != value {
		t.Errorf("written: %d bytes, want %d", len(kv.Value), len(value))
	}
}

// Eight console rollbacks at once of an appliance to a tree of 9.5 MB made of single puts, over
// the limit of an apply body (--max-value-bytes plus 4 MiB), confirmed against the same state:
// the console encoded the whole tree first, six times its values for control characters (57 MB
// of JSON), and eight at once took the heap up by 337–506 MiB before the API's handler refused
// them (413). Then it refused them as soon as the body passed the limit (39 MiB), where the
// CLI's rollback restores such a tree. Now the console sends a tree over 1 MiB as the CLI does,
// an apply without a body that the server reads the tree for: one rollback writes it, the
// others are refused by the cas they were confirmed with (409), the heap taken up by what the
// API's own rollbacks without a body take.
func TestUI_RollbacksOfATreeOverTheBodyLimitAtOnce(t *testing.T) {
	longerOpTimeout(t, 2*time.Minute)
	cfg := testutil.StoreConfig(t)
	cfg.RequestTimeout = opTimeout
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var to int64
	for i := range 10 {
		res, err := cli.Put(t.Context(), fmt.Sprintf("%skv/appliances/big/part%d", cfg.Root, i), strings.Repeat("\x01", 950_000))
		if err != nil {
			t.Fatal(err)
		}
		to = res.Header.Revision
	}
	cur := f.put("appliances/big/part0", "changed since")
	const posts = 8
	browsers := make([]*uiBrowser, posts)
	csrfs := make([]string, posts)
	for i := range browsers {
		browsers[i] = newUIBrowser(t, f.srv.URL, nil)
		browsers[i].c.Timeout = 3 * time.Minute
		csrfs[i] = browsers[i].signIn(f.newToken(api.TokenRequest{Name: fmt.Sprintf("rollback-%d", i), Write: []string{"appliances/big"}}))
	}
	stop := peakHeap()
	var wg sync.WaitGroup
	statuses := make(chan string, posts)
	for i, b := range browsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			form := url.Values{"csrf": {csrfs[i]}, "to": {strconv.FormatInt(to, 10)}, "cas": {strconv.FormatInt(cur, 10)}, "step": {"apply"}}
			req, _ := http.NewRequest(http.MethodPost, b.base+"/ui/appliances/big/rollback", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", "null")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			res, err := b.c.Do(req)
			if err != nil {
				statuses <- err.Error()
				return
			}
			body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
			res.Body.Close()
			switch {
			case res.StatusCode == http.StatusSeeOther:
				statuses <- "written"
			case res.StatusCode == http.StatusConflict && strings.Contains(string(body), "changed after the rollback was confirmed"):
				statuses <- "conflict"
			case res.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "reading other large bodies or trees"):
				// Its tree's share of the replica's body budget not given within the wait (on a
				// loaded host, under -race): refused to retry, nothing written.
				statuses <- "busy"
			default:
				statuses <- fmt.Sprintf("%d %.300s", res.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	peak, base := stop()
	close(statuses)
	written := 0
	for st := range statuses {
		switch st {
		case "written":
			written++
		case "conflict", "busy":
		default:
			t.Errorf("rollback: %s, want 303 (written), 409 (the cas) or 503 (the body budget)", st)
		}
	}
	if written != 1 {
		t.Errorf("%d of %d rollbacks confirmed against the same state were written, want 1", written, posts)
	}
	t.Logf("%d console rollbacks of a 9.5 MB tree: heap up by %d MiB at most (from %d MiB)", posts, peak>>20, base>>20)
	// 323–420 MiB: what the API's own rollbacks without a body take (eight of them sent to
	// PUT /v1/appliances/big at once, 350 MiB: each holds the tree read at R, then the live tree
	// the apply reads, in this process's etcd too), the console adding no copy of its own; since
	// an apply reads the live tree's names first (its cas checked on them, so that the seven
	// refused read no value) and the values of its keys a page at a time, 256–349 MiB. Its
	// apply body of the whole tree added 337–506 MiB on top. On the CI host, under -race and
	// after the package's other tests (a heap of 170 MiB before), 504 MiB: the bound is 768,
	// which eight whole trees held twice over each (the tree at R and the live tree, as before
	// the body budget held the trees read) would pass.
	if peak > 768<<20 {
		t.Errorf("%d console rollbacks took the heap up by %d MiB, want at most 768 MiB", posts, peak>>20)
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/big", ""), 200, &v)
	if v.Keys["part0"] != strings.Repeat("\x01", 950_000) {
		t.Errorf("after the rollback part0 is %.40q, not as it was at revision %d", v.Keys["part0"], to)
	}
}
