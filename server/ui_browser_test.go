package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The console in a real browser: headless Chromium (Debian's chromium package, which .ci/run
// installs) driven through the DevTools protocol. Each step leaves a PNG screenshot under
// test-artifacts/console/ at the root of the checkout.

// chromiumPath finds Chromium: $SHOELACE_CHROMIUM, else the usual names on PATH.
func chromiumPath() string {
	if p := os.Getenv("SHOELACE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is console/ under $SHOELACE_TEST_ARTIFACTS when set (.ci/run sets it to a
// directory outside the clone, which it prints), else under test-artifacts/ at the root of the
// module (ignored by git); created.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SHOELACE_TEST_ARTIFACTS"); d != "" {
		out, err := filepath.Abs(filepath.Join(d, "console"))
		if err == nil {
			err = os.MkdirAll(out, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "test-artifacts", "console")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// browserTab is one headless Chromium tab, with the console messages it logged.
type browserTab struct {
	t   *testing.T
	ctx context.Context
	dir string

	mu       sync.Mutex
	messages []string
}

func newBrowserTab(t *testing.T) *browserTab {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no Chromium found (chromium, chromium-browser, google-chrome or $SHOELACE_CHROMIUM): install Debian's chromium package (apt-get install chromium) to run the browser tests")
	}
	// Chromium makes its singleton socket's directory in TMPDIR and leaves it there
	// (org.chromium.Chromium.*, one per browser, in /tmp at every run): it gets a TMPDIR of its
	// own, removed once it is stopped (a short one: the socket's path must fit in 108 bytes).
	tmp, err := os.MkdirTemp("", "chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("TMPDIR=" + tmp),
		chromedp.WindowSize(1200, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, tcancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(tcancel)
	b := &browserTab{t: t, ctx: ctx, dir: artifactDir(t)}
	// Start the browser now, and record what the pages log (a CSP violation is logged there).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m.String())
			b.mu.Unlock()
		}
	}()
	return b
}

// do runs actions, failing the test on an error.
func (b *browserTab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(b.t.Name(), "/", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// until waits up to 20 s for the JavaScript expression js to be true in the page, failing the
// test (what: what did not happen) with a screenshot named shot when it is not.
func (b *browserTab) until(what, js, shot string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		b.shot(shot)
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text returns the text of the element sel.
func (b *browserTab) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browserTab, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shot saves a screenshot of the whole page as name.png and logs its path.
func (b *browserTab) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot: %s", p)
}

// noViolations fails the test when a page logged a Content-Security-Policy violation or threw.
func (b *browserTab) noViolations() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.messages {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(strings.ToLower(m), "uncaught") {
			b.t.Errorf("the page logged: %s", m)
		}
	}
}

// signIn signs in on the console's form, typing the token as a user would.
func (b *browserTab) signIn(base, token string) {
	b.t.Helper()
	b.do("open the sign-in form", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if typ := eval[string](b, `document.getElementById("token").type`); typ != "password" {
		b.t.Fatalf("token field type %q", typ)
	}
	b.shot("01-signin")
	b.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`form.card button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form.signout`)),
	)
	// Nothing of the token in the browser: not in the page, its URL, its storage or a cookie
	// that scripts can read.
	leak := eval[bool](b, fmt.Sprintf(`(function(t){return document.documentElement.outerHTML.includes(t) || location.href.includes(t) ||
		document.cookie.length > 0 || localStorage.length > 0 || sessionStorage.length > 0})(%q)`, token))
	if leak {
		b.t.Fatal("the token, or a script-readable cookie or storage, is in the browser")
	}
}

// The console in Chromium: sign in, open an appliance, watch a change made through the API
// appear without a reload, see a secret masked, roll back from the history page.
func TestUIBrowser_Console(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	uiSeed(f)
	good := f.put("appliances/web-frontend/mode", "blue")
	green := f.put("appliances/web-frontend/mode", "green")
	base := f.srv.URL
	// One VM, whose agent applied the latest revision.
	vm := f.enroll(f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"}), "web-frontend", "vm-1")
	report := func(applied int64) {
		body, _ := json.Marshal(api.Report{Instance: "vm-1", Revision: applied, Applied: applied, Version: "1.0.0"})
		f.must(f.doToken(vm.Token, "POST", "/v1/appliances/web-frontend/report", string(body), "Content-Type", "application/json"), 200, nil)
		waitFor(t, "the report's record", func() bool { in, ok := f.record("web-frontend", "vm-1"); return ok && in.Applied == applied })
	}
	report(green)

	b.signIn(base, f.token)
	if h := b.text("h1"); h != "Appliances" {
		t.Fatalf("after sign in: heading %q", h)
	}
	if !strings.Contains(b.text("table"), "web-frontend") {
		t.Fatalf("appliances: %s", b.text("table"))
	}
	b.shot("02-appliances")

	// Open an appliance with the keyboard alone: Tab from the top of the page (the first stop is
	// the skip link) to the appliance's link, then Enter.
	b.do("press Tab", chromedp.KeyEvent(kb.Tab))
	if got := eval[string](b, `document.activeElement.textContent`); got != "Skip to content" {
		t.Errorf("the first Tab stop is %q, not the skip link", got)
	}
	for i := 0; ; i++ {
		if eval[string](b, `document.activeElement.getAttribute("href") || ""`) == "/ui/appliances/web-frontend" {
			break
		}
		if i == 20 {
			b.shot("failed-keyboard")
			t.Fatal("20 Tabs did not reach the appliance's link")
		}
		b.do("press Tab", chromedp.KeyEvent(kb.Tab))
	}
	b.do("open the appliance", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS("#view")))
	view := b.text("#view")
	if !strings.Contains(view, "8080") || !strings.Contains(view, "shared") {
		t.Fatalf("view: %s", view)
	}
	b.shot("03-appliance")

	// A secret is masked, and its value is nowhere in the page.
	if !strings.Contains(view, "(secret)") {
		t.Fatalf("the secret is not shown masked: %s", view)
	}
	if eval[bool](b, `document.documentElement.outerHTML.includes("hunter2")`) {
		t.Fatal("a secret value is in the page")
	}
	b.do("show the secret", chromedp.ScrollIntoView(chromedp.CSS(".secret")))
	b.shot("04-secret-masked")

	// A change through the API of another replica shows without a reload (the page's long-poll
	// wakes, it refetches).
	// A keyboard user's focus stays where it was (on an edit link) across the update.
	g := newFixtureOn(t, f.st)
	eval[bool](b, `window.__notReloaded = true`)
	b.do("focus an edit link", chromedp.Focus(chromedp.CSS(`a[aria-label="Edit appliances/web-frontend/mode"]`)))
	waitFor(t, "the page's long-poll", func() bool { return f.s.hub.open() >= 1 })
	start := time.Now()
	changed := g.as(f.token).put("appliances/web-frontend/port", "9191")
	b.until("the change did not show", `document.getElementById("view").textContent.includes("9191")`, "failed-live")
	took := time.Since(start)
	t.Logf("the change showed %s after the write", took.Round(time.Millisecond))
	if !eval[bool](b, `window.__notReloaded === true`) {
		t.Fatal("the page reloaded")
	}
	if took > 5*time.Second {
		t.Errorf("the change took %s to show", took)
	}
	if got := eval[string](b, `document.activeElement ? document.activeElement.getAttribute("aria-label") || document.activeElement.tagName : ""`); got != "Edit appliances/web-frontend/mode" {
		t.Errorf("after the update the focus is on %q, not on the edit link it was on", got)
	}
	b.shot("05-live-change")

	// The VM applies the change and reports it: its row follows without a reload too (the
	// page reads itself again shortly after a change).
	if got := b.text("#instances tbody"); !strings.Contains(got, "behind") {
		t.Errorf("before the VM's report its row says %q, not behind", got)
	}
	report(changed)
	reported := time.Now()
	// 20 s: the follow-up reads come 2 and 8 s after the change; the long-poll's own quiet
	// answer, without them, not before 22.5 s.
	b.until("the VM's report did not show", `!document.querySelector("#instances tbody").textContent.includes("behind")`, "failed-instances")
	t.Logf("the VM's report showed %s after it was recorded", time.Since(reported).Round(time.Millisecond))
	b.shot("05b-vm-applied")

	// Roll back from the history page, confirming.
	b.do("open the history",
		chromedp.Navigate(base+"/ui/appliances/web-frontend/history"),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`button[aria-label="Roll back to revision %d"]`, good))),
	)
	b.shot("06-history")
	b.do("ask the rollback",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Roll back to revision %d"]`, good))),
		chromedp.WaitVisible(chromedp.CSS(`button.primary`)),
	)
	if confirm := b.text("main"); !strings.Contains(confirm, "blue") || !strings.Contains(confirm, "green") {
		t.Fatalf("confirmation: %s", confirm)
	}
	b.shot("07-rollback-confirm")
	b.do("confirm the rollback",
		chromedp.SendKeys(chromedp.CSS("#message"), "back to blue"),
		chromedp.Click(chromedp.CSS(`button.primary`)),
		chromedp.WaitVisible(chromedp.CSS("#view")),
	)
	if notice := b.text("#live .notice"); !strings.Contains(notice, "Written at revision") {
		t.Fatalf("after the rollback: %s", notice)
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web-frontend", ""), 200, &v)
	if v.Keys["mode"] != "blue" || v.Keys["secrets/tls-key"] != "hunter2-web-secret" {
		t.Fatalf("after the rollback: %v", v.Keys)
	}
	var rels api.Releases
	f.must(f.do("GET", "/v1/appliances/web-frontend/releases?limit=1", ""), 200, &rels)
	if r := rels.Releases[0]; r.Kind != api.KindRollback || r.Source != "console" || !strings.Contains(r.Message, "back to blue") {
		t.Fatalf("rollback release %+v", r)
	}
	b.shot("08-rolled-back")

	// Readable at phone width, in dark mode.
	b.do("phone, dark",
		chromedp.EmulateViewport(390, 844),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
			return err
		}),
		chromedp.Navigate(base+"/ui/appliances/web-frontend"),
		chromedp.WaitVisible(chromedp.CSS("#view")),
	)
	if w := eval[float64](b, `document.documentElement.scrollWidth`); w > 400 {
		t.Errorf("the page is %v px wide at a phone's 390", w)
	}
	b.shot("09-appliance-phone-dark")

	// Reading works without JavaScript: the pages are whole as served.
	b.do("turn JavaScript off",
		chromedp.EmulateViewport(1200, 900),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return err
		}),
	)
	for _, c := range []struct{ path, sel, want string }{
		{"/ui/", "table", "web-frontend"},
		{"/ui/appliances/web-frontend", "#view", "(secret)"},
		{"/ui/appliances/web-frontend/history", "main", "back to blue"},
		{"/ui/store", "main", "Maintenance"},
	} {
		b.do("open "+c.path+" without JavaScript", chromedp.Navigate(base+c.path), chromedp.WaitVisible(chromedp.CSS(c.sel)))
		if got := b.text(c.sel); !strings.Contains(got, c.want) {
			t.Errorf("%s without JavaScript: %q lacks %q", c.path, got, c.want)
		}
	}
	b.do("the appliance without JavaScript", chromedp.Navigate(base+"/ui/appliances/web-frontend"), chromedp.WaitVisible(chromedp.CSS("#view")))
	b.shot("10-appliance-no-javascript")
	b.checkStorage(f.token, "hunter2")
	b.noViolations()
}

// checkStorage reads the browser's own storage after the pages were visited: its only cookie is
// the session's, HttpOnly, SameSite=Strict, expiring, holding none of secrets; no local or session
// storage; none of secrets in the URL.
func (b *browserTab) checkStorage(secrets ...string) {
	b.t.Helper()
	var cookies []*network.Cookie
	b.do("read the browser's cookies", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
		if err == nil {
			cookies = res.Cookies
		}
		return err
	}))
	for _, c := range cookies {
		b.t.Logf("cookie %s: httpOnly %v, sameSite %s, secure %v, expires %v, path %s", c.Name, c.HTTPOnly, c.SameSite, c.Secure, c.Expires, c.Path)
		if c.Name != uiCookie && c.Name != uiSigninCookie {
			b.t.Errorf("the browser holds cookie %s", c.Name)
		}
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Session || c.Expires <= 0 || c.Path != "/ui/" {
			b.t.Errorf("cookie %s: httpOnly %v, sameSite %s, session %v, path %s", c.Name, c.HTTPOnly, c.SameSite, c.Session, c.Path)
		}
		for _, s := range secrets {
			if strings.Contains(c.Value, s) {
				b.t.Errorf("cookie %s holds a secret", c.Name)
			}
		}
	}
	var session bool
	for _, c := range cookies {
		session = session || c.Name == uiCookie
	}
	if !session {
		b.t.Error("no session cookie in the browser")
	}
	b.do("turn JavaScript on", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false})
		return err
	}), chromedp.Reload())
	for _, s := range secrets {
		if eval[bool](b, fmt.Sprintf(`(function(s){return location.href.includes(s) || document.documentElement.outerHTML.includes(s) ||
			document.cookie.length > 0 || localStorage.length > 0 || sessionStorage.length > 0})(%q)`, s)) {
			b.t.Errorf("the browser's page, URL, script-readable cookies or storage hold %q or something", s)
		}
	}
}

// A value that a browser's form cannot send back byte for byte (a NUL, which the HTML parser
// turns into U+FFFD; a lone CR, or LF and CRLF line ends mixed, which the form sends as CRLF
// throughout) is not offered for editing: written back through the form unchanged, it changed.
// The appliance page has no edit link for it, and its edit page says why and what to use instead.
func TestUIBrowser_EditRefusesValuesAFormWouldChange(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	f.put("appliances/web/plain", "line one\nline two\n")
	values := map[string]string{"lone-cr": "a\rb", "mixed": "a\r\nb\nc", "nul": "a\x00b"}
	for k, v := range values {
		f.put("appliances/web/"+k, v)
	}
	b.signIn(f.srv.URL, f.token)
	b.do("open the appliance", chromedp.Navigate(f.srv.URL+"/ui/appliances/web"), chromedp.WaitVisible(chromedp.CSS("#view")))
	b.shot("edit-carry-01-appliance")
	if !eval[bool](b, `!!document.querySelector('a[aria-label="Edit appliances/web/plain"]')`) {
		t.Fatal("no edit link for a plain value")
	}
	for k, v := range values {
		key := "appliances/web/" + k
		if eval[bool](b, fmt.Sprintf(`!!document.querySelector('a[aria-label="Edit %s"]')`, key)) {
			t.Errorf("the appliance page offers to edit %s (%q)", key, v)
		}
	}
	for k, v := range values {
		key := "appliances/web/" + k
		// The edit page's address typed or bookmarked: written back unchanged, as a user who
		// only looked would, the value must stay as it was.
		b.do("open the edit page of "+key, chromedp.Navigate(f.srv.URL+"/ui/appliances/web/edit?key="+url.QueryEscape(key)), chromedp.WaitVisible(chromedp.CSS("main h1")))
		if eval[bool](b, `!!document.getElementById("value")`) {
			b.do("review and write "+key,
				chromedp.Click(chromedp.CSS("button.primary")),
				chromedp.WaitReady(chromedp.CSS(`input[name="step"]`)),
				chromedp.Click(chromedp.CSS("button.primary")),
				chromedp.WaitVisible(chromedp.CSS("#view")),
			)
		} else {
			b.shot("edit-carry-02-" + k)
			if msg := b.text("main"); !strings.Contains(msg, "shoelace kv put") {
				t.Errorf("the edit page of %s does not say what to use instead: %s", key, msg)
			}
		}
		var kv api.KV
		f.must(f.do("GET", "/v1/kv/"+key, ""), 200, &kv)
		if kv.Value != v {
			t.Errorf("%s written back through the form unchanged: %q, was %q", key, kv.Value, v)
		}
	}
	b.noViolations()
}

// Appliance pages open in tabs of one window: only the tab in front follows its appliance. Each
// page's script held a long-poll of up to 25 s, hidden or not, and a browser opens at most six
// HTTP/1.1 connections to one server: with six appliance tabs open, the seventh page (or a form
// sent from any tab) waited up to 25 s for a connection. A tab brought to the front reads its
// page again at once and follows its appliance again.
func TestUIBrowser_HiddenTabsHoldNoLongPoll(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	uiSeed(f)
	b.signIn(f.srv.URL, f.token)
	b.do("open the appliance", chromedp.Navigate(f.srv.URL+"/ui/appliances/web-frontend"), chromedp.WaitVisible(chromedp.CSS("#view")))
	waitFor(t, "the first tab's long-poll", func() bool { return f.s.hub.open() == 1 })
	for i := range 7 {
		ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewWindow(false))
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/appliances/billing-db"), chromedp.WaitReady(chromedp.CSS("#view"))); err != nil {
			t.Fatalf("open tab %d: %v", i+2, err)
		}
		// Only the tab in front waits for changes: the hidden ones give their connections back.
		waitFor(t, fmt.Sprintf("one long-poll with %d tabs open", i+2), func() bool { return f.s.hub.open() == 1 })
	}
	if got := eval[string](b, `document.visibilityState`); got != "hidden" {
		t.Fatalf("the first tab is %s behind the others", got)
	}
	// A change while the first tab is hidden shows once it is in front again.
	f.put("appliances/web-frontend/port", "9191")
	b.do("bring the first tab to the front", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdppage.BringToFront, cdp.Empty{})
		return err
	}))
	b.until("the change made while the tab was hidden did not show", `document.getElementById("view").textContent.includes("9191")`, "failed-hidden-tab")
	if got := b.text("#live-status"); got != "Live." {
		t.Errorf("the tab back in front says %q, not Live.", got)
	}
	b.shot("11-tab-back-in-front")
	waitFor(t, "the long-poll of the tab in front", func() bool { return f.s.hub.open() == 1 })
	f.put("appliances/web-frontend/port", "9292")
	b.until("the tab back in front does not follow its appliance", `document.getElementById("view").textContent.includes("9292")`, "failed-hidden-tab-live")
	b.noViolations()
}

// An appliance whose keys are all deleted while its page is open: the page says that it has no
// keys, as opening it again would, rather than showing the deleted keys with "Live updates
// paused; retrying…" for as long as it stays open.
func TestUIBrowser_DeletedApplianceLeavesNoStalePage(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	uiSeed(f)
	b.signIn(f.srv.URL, f.token)
	b.do("open the appliance", chromedp.Navigate(f.srv.URL+"/ui/appliances/billing-db"), chromedp.WaitVisible(chromedp.CSS("#view")))
	waitFor(t, "the page's long-poll", func() bool { return f.s.hub.open() >= 1 })
	f.must(f.do("DELETE", "/v1/kv/appliances/billing-db?recurse", ""), 200, nil)
	// Evaluated again and again, not polled in the page: the page may be replaced meanwhile.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		said, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.querySelector("main").textContent.includes("has no keys")`))
		if err == nil && said {
			break
		}
		if time.Now().After(deadline) {
			b.shot("failed-deleted-appliance")
			t.Fatalf("the page of the deleted appliance does not say so: it shows %q", b.text("main"))
		}
	}
	b.do("wait for the page loaded again", chromedp.WaitVisible(chromedp.CSS("main h1")))
	b.shot("12-deleted-appliance")
	if eval[bool](b, `!!document.getElementById("view")`) {
		t.Errorf("the deleted keys are still shown: %s", b.text("main"))
	}
	b.noViolations()
}

// A value's bidirectional formatting characters (U+202E RIGHT-TO-LEFT OVERRIDE and the like,
// as the Trojan Source attacks use them) are shown as what they are: written by anyone who may
// write a key, "safe \u202eftp.evil.example" showed as "safe elpmaxe.live.ptf", and reversed the
// rest of its line (the edit link read "tide"), on the appliance page and in diffs alike.
func TestUIBrowser_ValuesShowBidiControls(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	f.put("appliances/web/mirror", "ftp.example")
	rev := f.put("appliances/web/mirror", "safe \u202eftp.evil.example")
	f.put("appliances/web/greeting", "שלום") // right-to-left text without controls is left alone
	b.signIn(f.srv.URL, f.token)
	for _, c := range []struct{ path, sel, shot string }{
		{"/ui/appliances/web", "#view", "13-bidi-appliance"},
		{fmt.Sprintf("/ui/appliances/web/releases/%d", rev), "table.diff", "14-bidi-release"},
	} {
		b.do("open "+c.path, chromedp.Navigate(f.srv.URL+c.path), chromedp.WaitVisible(chromedp.CSS(c.sel)))
		b.shot(c.shot)
		text := b.text(c.sel)
		if strings.ContainsRune(text, '\u202e') || !strings.Contains(text, "safe [U+202E]ftp.evil.example") {
			t.Errorf("%s shows the override as a control, not as [U+202E]: %q", c.path, text)
		}
		if c.sel == "#view" && !strings.Contains(text, "שלום") {
			t.Errorf("%s does not show right-to-left text as it is: %q", c.path, text)
		}
	}
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/mirror", ""), 200, &kv)
	if kv.Value != "safe \u202eftp.evil.example" {
		t.Fatalf("the value changed: %q", kv.Value)
	}
	b.noViolations()
}

// A value of several lines is shown with its line breaks (and its spaces), its later lines
// under its first, on the appliance page and in a release's diff: before, the page ran them
// together on one line ("line one line two"), and a value's own indentation was lost.
func TestUIBrowser_MultiLineValueKeepsItsLines(t *testing.T) {
	b := newBrowserTab(t)
	f := newFixture(t)
	f.put("appliances/web/motd", "first")
	rev := f.put("appliances/web/motd", "line one\n  line two <b>x</b>")
	b.signIn(f.srv.URL, f.token)
	for _, c := range []struct{ path, sel, shot string }{
		{"/ui/appliances/web", "#view code.val", "15-multiline-appliance"},
		{fmt.Sprintf("/ui/appliances/web/releases/%d", rev), "table.diff tr td:last-child code.val", "16-multiline-release"},
	} {
		b.do("open "+c.path, chromedp.Navigate(f.srv.URL+c.path), chromedp.WaitVisible(chromedp.CSS(c.sel)))
		b.shot(c.shot)
		got := eval[string](b, fmt.Sprintf(`document.querySelector(%q).innerText`, c.sel))
		if got != "line one\n  line two <b>x</b>" {
			t.Errorf("%s shows the value as %q, want its two lines as they are", c.path, got)
		}
		// Its second line starts where its first does, right of the key.
		if left := eval[bool](b, fmt.Sprintf(`(function(e){var r=e.getClientRects(); return r.length == 1 && e.getBoundingClientRect().left > e.parentElement.getBoundingClientRect().left})(document.querySelector(%q))`, c.sel)); !left && c.sel == "#view code.val" {
			t.Errorf("%s: the value's lines are not in one box right of its key", c.path)
		}
	}
	b.noViolations()
}
