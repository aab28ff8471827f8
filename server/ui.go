package server

// The web console, served at /ui/ by every replica (Config.UI). It is server-rendered: html/template
// pages and static files embedded from ui/, and one small script that follows an appliance's
// changes through the hub's long-poll. It signs in with the API's tokens and acts with their
// scopes: reads and writes go through the same checks and the same handlers as the API (writes
// record a release whose source is "console").
//
// Sessions live in this replica's memory: a session id (random, in an HttpOnly cookie) maps to
// the token's name and the hash it had at sign-in, checked against the token cache on every
// request, so that a revoked or replaced token ends its sessions at once. Another replica does
// not know the session: behind a load balancer without affinity the console asks to sign in
// again there (the token is never stored in the browser).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

//go:embed ui
var uiFiles embed.FS

// Console sessions and their cookies.
const (
	// uiSessionTTL is how long a console session lasts from sign-in.
	uiSessionTTL = 8 * time.Hour
	// uiMaxSessions bounds the sessions a replica keeps; a sign-in over it ends the oldest
	// session of the owner that holds the most (see uiSession.owner).
	uiMaxSessions = 10000
	// uiCookie holds the session id; uiSigninCookie the sign-in form's CSRF token.
	uiCookie       = "shoelace_session"
	uiSigninCookie = "shoelace_signin"
	// uiFreshWindow is how long after its sign-in a session whose token the cache does not know
	// yet asks the store (the token's watch event normally comes within milliseconds).
	uiFreshWindow = 10 * time.Second
	// uiLiveWait is how long the console's long-poll waits for a change.
	uiLiveWait = 25 * time.Second
	// uiSource is the X-Shoelace-Source of the console's writes.
	uiSource = "console"
)

// uiCSP is the Content-Security-Policy of every console answer: nothing but this origin's own
// files, no inline script or style, no framing, forms only to this origin.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// uiSession is one signed-in browser.
type uiSession struct {
	token string // the token's name
	// owner is who holds the token: the agent token that enrolled it for an instance token,
	// else the token itself. Sessions are counted per owner at the cap: an agent token mints
	// instance tokens at will, and each of them signing in once must not count as a stranger.
	owner   string
	hash    string // the token's hash at sign-in: a new secret under the name ends the session
	csrf    string // carried by every form of the session
	created time.Time
	expires time.Time
}

// uiSessions are this replica's console sessions, by the SHA-256 of their id.
type uiSessions struct {
	mu sync.Mutex
	m  map[string]*uiSession
}

func sessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// randomID returns 256 random bits, base64url.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for rec and returns its id.
func (u *uiSessions) create(rec *tokenRecord, now time.Time) (string, *uiSession) {
	id := randomID()
	sess := &uiSession{token: rec.Name, owner: rec.holder(), hash: rec.Hash, csrf: randomID(), created: now, expires: now.Add(uiSessionTTL)}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]*uiSession{}
	}
	if len(u.m) >= uiMaxSessions {
		// Full: the expired go, then the oldest session of the owner that holds the most. Any
		// token may sign in over and over, and an agent token's holder with as many instance
		// tokens as it enrolls; neither must push other tokens' sessions out.
		held := map[string]int{}
		for k, s := range u.m {
			if now.After(s.expires) {
				delete(u.m, k)
			} else {
				held[s.owner]++
			}
		}
		if len(u.m) >= uiMaxSessions {
			most := ""
			for owner, n := range held {
				if n > held[most] || n == held[most] && owner < most {
					most = owner
				}
			}
			var oldest string
			for k, s := range u.m {
				if s.owner == most && (oldest == "" || s.expires.Before(u.m[oldest].expires)) {
					oldest = k
				}
			}
			delete(u.m, oldest)
		}
	}
	u.m[sessionKey(id)] = sess
	return id, sess
}

// get returns the live session of id, or nil.
func (u *uiSessions) get(id string, now time.Time) *uiSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := sessionKey(id)
	s := u.m[k]
	if s != nil && now.After(s.expires) {
		delete(u.m, k)
		return nil
	}
	return s
}

func (u *uiSessions) remove(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, sessionKey(id))
}

// byName returns the cached record of token name, or nil.
func (a *authState) byNameRecord(name string) *tokenRecord {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.byName[name]
}

// uiCtx is what a console handler knows of its request.
type uiCtx struct {
	p    *principal
	sess *uiSession
}

// uiHandler is a console page; its error is answered as an error page.
type uiHandler func(w http.ResponseWriter, r *http.Request, c *uiCtx) error

// uiTemplates are the console's pages, each parsed with the layout.
var uiTemplates = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"ago":  uiAgo,
		"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"join": strings.Join,
		// stepNo is a rollout's step as people count it, and as the CLI prints it: 1 for the first.
		"stepNo":        func(step int) int { return step + 1 },
		"instanceState": api.ShownInstanceState,
		"cohortName":    func(cohort int) string { return api.CohortName(cohort, "—") },
		"pathEscape": func(s string) string {
			return url.PathEscape(s)
		},
	}
	out := map[string]*template.Template{}
	pages, err := fs.Glob(uiFiles, "ui/pages/*.html")
	if err != nil {
		panic(err)
	}
	for _, p := range pages {
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/layout.html", "ui/partials.html", p))
		out[strings.TrimSuffix(path.Base(p), ".html")] = t
	}
	return out
}()

// uiAgo says how long ago t was, roughly.
func uiAgo(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// uiPage is what every page's template gets.
type uiPage struct {
	Title  string
	Token  string // the signed-in token's name; "" on the sign-in page
	CSRF   string
	Admin  bool
	Store  bool   // the token may read the store's page (an agent's may not)
	Nav    string // appliances, store
	Notice string
	Data   any
}

// uiRoutes registers the console's routes on mux (nothing when the console is off: /ui/ is 404).
func (s *Server) uiRoutes(mux *http.ServeMux) {
	if !s.cfg.UI {
		return
	}
	get := func(pattern string, h uiHandler) { mux.Handle("GET "+pattern, s.uiWrap(h, nil)) }
	post := func(pattern string, form uiForm, h uiHandler) { mux.Handle("POST "+pattern, s.uiWrap(h, &form)) }
	// Only the edit form carries a value; the others, a message at most.
	writes, small := uiForm{limit: uiSmallFormLimit, writes: true}, uiForm{limit: uiSmallFormLimit}
	mux.HandleFunc("GET /ui/static/{file}", s.uiStatic)
	mux.HandleFunc("POST /ui/signin", s.uiSignin)
	// The address bar shows /ui/signin after a refused sign-in: reloaded or bookmarked, it is
	// the console's start (the form itself without a session).
	mux.HandleFunc("GET /ui/signin", func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	// The server's address opened in a browser: its console, not the API's JSON 404.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	// /ui asked with any method: ServeMux's own redirect of the other methods to /ui/ (307) went
	// out without the console's headers.
	mux.HandleFunc("/ui", func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			code = http.StatusTemporaryRedirect // as ServeMux answers them: the method is kept
		}
		http.Redirect(w, r, "/ui/", code)
	})
	get("/ui/{$}", s.uiAppliances)
	post("/ui/signout", small, s.uiSignout)
	get("/ui/appliances/{name}", s.uiAppliance)
	get("/ui/appliances/{name}/live", s.uiLive)
	get("/ui/appliances/{name}/history", s.uiHistory)
	get("/ui/appliances/{name}/releases/{revision}", s.uiRelease)
	get("/ui/appliances/{name}/edit", s.uiEditForm)
	post("/ui/appliances/{name}/edit", uiForm{limit: s.uiFormLimit(), writes: true}, s.uiEdit)
	post("/ui/appliances/{name}/rollback", writes, s.uiRollback)
	post("/ui/appliances/{name}/rollout", writes, s.uiRolloutAction)
	get("/ui/store", s.uiStore)
	post("/ui/store/maintenance", writes, s.uiMaintenance)
	// A confirmation page is shown at its form's address: opened again from the address bar
	// (GET), each goes back to the page the form was on, not to a 404.
	back := func(pattern string, to func(r *http.Request) string) {
		mux.HandleFunc("GET "+pattern, func(w http.ResponseWriter, r *http.Request) {
			uiHeaders(w)
			http.Redirect(w, r, to(r), http.StatusSeeOther)
		})
	}
	appliance := func(suffix string) func(r *http.Request) string {
		return func(r *http.Request) string { return "/ui/appliances/" + url.PathEscape(r.PathValue("name")) + suffix }
	}
	back("/ui/appliances/{name}/rollback", appliance("/history"))
	back("/ui/appliances/{name}/rollout", appliance(""))
	back("/ui/store/maintenance", func(*http.Request) string { return "/ui/store" })
	mux.Handle("/ui/", s.uiWrap(func(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
		if to := uiCanonical(mux, r); to != "" {
			http.Redirect(w, r, to, http.StatusMovedPermanently)
			return nil
		}
		return api.Errorf(api.CodeNotFound, "no such page: %s %s", methodText(r.Method), shorten(r.URL.Path))
	}, nil))
}

// uiCanonical is where a GET of a console page's address with a slash too many (typed, or an
// address cut back to its directory) goes, as net/http sends a directory's address without its
// slash to it: /ui/appliances/ and /ui/appliances to the appliances page (/ui/), a page's
// address followed by "/" to the page. "" for another address (404).
func uiCanonical(mux *http.ServeMux, r *http.Request) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return ""
	}
	p := r.URL.EscapedPath()
	to := strings.TrimRight(p, "/")
	if to == "/ui/appliances" {
		to = "/ui/"
	} else if to == p || !strings.HasPrefix(to, "/ui/") {
		return ""
	} else {
		u := *r.URL
		u.Path, u.RawPath = strings.TrimRight(r.URL.Path, "/"), ""
		if _, pattern := mux.Handler(&http.Request{Method: http.MethodGet, URL: &u, Host: r.Host}); !strings.HasPrefix(pattern, "GET /ui/") ||
			strings.Contains(pattern, "/ui/static/") {
			return ""
		}
	}
	if r.URL.RawQuery != "" {
		to += "?" + r.URL.RawQuery
	}
	return to
}

// uiPath says whether p is the console's: /ui or below /ui/.
func uiPath(p string) bool { return p == "/ui" || strings.HasPrefix(p, "/ui/") }

// uiHeaders sets the security headers of every console answer.
func uiHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// uiStatic serves the embedded CSS and script.
func (s *Server) uiStatic(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	name := r.PathValue("file")
	data, err := uiFiles.ReadFile("ui/static/" + name)
	missing := err != nil || strings.Contains(name, "/")
	// Under the client address's limits, as other requests without a token: a miss as an
	// unknown path, a file as /metrics (both were answered without a limit).
	limit := s.limitOpen
	if missing {
		limit = s.limitAddr
	}
	if err := limit(r); err != nil {
		s.uiError(w, r, nil, err)
		return
	}
	if missing {
		http.NotFound(w, r)
		return
	}
	switch path.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	_, _ = w.Write(data)
}

// sameOrigin refuses a POST that a browser did not send from a page of this origin: the fetch
// metadata (Sec-Fetch-Site) when the browser sends it, else the Origin header. (The console's
// Referrer-Policy is no-referrer, under which browsers send "Origin: null" with form posts; the
// ones that do not send Sec-Fetch-Site are refused.)
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		if site != "same-origin" {
			return forbidden("the form was sent from another site (Sec-Fetch-Site: %s): the console takes forms from its own pages only", shorten(site))
		}
		return nil
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return forbidden("the form came without its origin (no Origin nor Sec-Fetch-Site header): the console takes forms from its own pages only")
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host != r.Host {
		return forbidden("the form was sent from another origin (%s): the console takes forms from its own pages only", shorten(o))
	}
	return nil
}

// uiFormLimit bounds the edit form: a key's value, URL-encoded, and the rest.
func (s *Server) uiFormLimit() int64 { return 3*int64(s.cfg.MaxValueBytes) + 64<<10 }

// uiSmallFormLimit bounds the console's other forms: a release message (4096 bytes,
// URL-encoded) and a few fields.
const uiSmallFormLimit = 64 << 10

// uiForm is what a console POST route reads: its form's limit, and whether it writes (a
// session whose token may write nothing is refused it before its body is read).
type uiForm struct {
	limit  int64
	writes bool
}

// parseForm reads a POST's form (its body only, not the query) within limit; one that says it
// is over the limit is refused before it is read.
func parseForm(w http.ResponseWriter, r *http.Request, limit int64) error {
	if err := checkBodyEncoding(r, "the form"); err != nil {
		return err
	}
	if r.ContentLength > limit {
		return api.Errorf(api.CodeBodyTooLarge, "the form is over the limit of %d bytes", limit)
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.CodeBodyTooLarge, "the form is over the limit of %d bytes", limit)
		}
		return api.Errorf(api.CodeInvalidBody, "the form does not parse: %v", err)
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	return nil
}

// uiSessionOf returns the request's live session and its token's record, or nils.
func (s *Server) uiSessionOf(r *http.Request) (*uiSession, *tokenRecord) {
	c, err := r.Cookie(uiCookie)
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		return nil, nil
	}
	arrived := time.Now()
	sess := s.ui.get(c.Value, arrived)
	if sess == nil {
		return nil, nil
	}
	info(r).revocation = s.hub.revocation()
	rec := s.auth.byNameRecord(sess.token)
	if rec == nil && arrived.Sub(sess.created) < uiFreshWindow && s.auth.loaded.Load() {
		// Signed in with a token found in the store, not in the cache (created a moment ago
		// through another replica, its watch event still on the way): the store, read after
		// this request arrived, says whether it still is, as it does for the API.
		rec = s.lookupFreshHash(r.Context(), sess.token, sess.hash, arrived)
	}
	if rec == nil || subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(sess.hash)) != 1 {
		// Revoked, or given another secret, since the sign-in.
		s.ui.remove(c.Value)
		return nil, nil
	}
	return sess, rec
}

// uiWrap authenticates a console request by its session (or answers the sign-in form), applies
// the rate limits, and for a POST checks its origin and CSRF token.
func (s *Server) uiWrap(h uiHandler, form *uiForm) http.Handler {
	post := form != nil
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		sess, rec := s.uiSessionOf(r)
		if sess == nil {
			if err := s.limitAddr(r); err != nil {
				s.uiError(w, r, nil, err)
				return
			}
			status := http.StatusUnauthorized
			if r.URL.Path == "/ui/" && !post {
				status = http.StatusOK
			}
			notice := ""
			if post || r.URL.Path != "/ui/" {
				notice = "Sign in to continue: the session ended (signed out, expired, its token revoked) or this replica does not know it."
			}
			next := ""
			if !post && r.URL.Path != "/ui/" {
				next = r.URL.Path
			}
			s.uiSigninPage(w, r, status, notice, next)
			return
		}
		inst := ""
		if rec.Instance != "" {
			inst = rec.Instance
		}
		if err := s.limitToken(rec, inst); err != nil {
			s.uiError(w, r, nil, err)
			return
		}
		info(r).token = rec.Name
		markAuthenticated(r)
		s.auth.touch(rec.Name)
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, rec.principal()))
		c := &uiCtx{p: principalOf(r), sess: sess}
		if post {
			if err := sameOrigin(r); err != nil {
				s.uiError(w, r, c, err)
				return
			}
			if form.writes {
				if err := c.p.mayWriteAny(); err != nil {
					// Before the body is read, as for a txn: any valid token's session could
					// have the replica read and parse forms of three times --max-value-bytes.
					s.uiError(w, r, c, err)
					return
				}
			}
			// A large form is read within the replica's budget of large bodies, as the API's
			// are, and its share covers the write it makes (see bodyBudget.take).
			sh, err := s.bodyBudget.take(r, form.limit)
			if err != nil {
				s.uiError(w, r, c, err)
				return
			}
			defer sh.release()
			r = r.WithContext(context.WithValue(r.Context(), bodyShareKey{}, sh))
			if err := parseForm(w, r, form.limit); err != nil {
				s.uiError(w, r, c, err)
				return
			}
			if got := r.PostForm.Get("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				s.uiError(w, r, c, forbidden("the form's CSRF token does not match this session: reload the page and try again"))
				return
			}
		}
		if err := h(w, r, c); err != nil {
			s.uiError(w, r, c, err)
		}
	})
}

// uiSigninPage answers the sign-in form, with its CSRF token in a cookie and the form: the one
// the browser holds, else a fresh one. Every page asked without a session answers the form (a
// second tab, the appliance page's script after the session ended): a fresh token each time
// made the form open in another tab answer "expired" when sent.
func (s *Server) uiSigninPage(w http.ResponseWriter, r *http.Request, status int, notice, next string) {
	tok := randomID()
	if c, err := r.Cookie(uiSigninCookie); err == nil && len(c.Value) == len(tok) {
		if _, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			tok = c.Value
		}
	}
	http.SetCookie(w, &http.Cookie{Name: uiSigninCookie, Value: tok, Path: "/ui/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	s.uiRender(w, r, status, "signin", &uiPage{Title: "Sign in", CSRF: tok, Notice: notice, Data: struct{ Next string }{next}})
}

// uiNext is where a sign-in goes on to: a clean console path of printable ASCII, else the
// appliances. (Browsers drop tabs and newlines from a Location, read a backslash as a slash
// and "%2e" as a dot: "/ui/\t/evil", "/ui/\\evil" or "/ui/%2e%2e/v1" must not become another
// path than the one checked. No console path holds a '%'.)
func uiNext(next string) string {
	if next == "" || next == "/ui/signin" || next == "/ui/signout" || len(next) > 1024 || !strings.HasPrefix(next, "/ui/") || strings.ContainsAny(next, "\\?#%") || strings.Contains(next, "//") || next != cleanPath(next) {
		return "/ui/"
	}
	for i := 0; i < len(next); i++ {
		if next[i] <= ' ' || next[i] >= 0x7f {
			return "/ui/"
		}
	}
	return next
}

// uiSignin exchanges a token for a session. Attempts are rate limited per client address, as
// API requests without a valid token are.
func (s *Server) uiSignin(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	arrived := time.Now()
	if err := s.limitAddr(r); err != nil {
		s.uiError(w, r, nil, err)
		return
	}
	if err := sameOrigin(r); err != nil {
		s.uiError(w, r, nil, err)
		return
	}
	if err := parseForm(w, r, 8<<10); err != nil {
		s.uiError(w, r, nil, err)
		return
	}
	c, err := r.Cookie(uiSigninCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		s.uiSigninPage(w, r, http.StatusForbidden, "The sign-in form expired or was not sent from this console: try again.", r.PostForm.Get("next"))
		return
	}
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	var rec *tokenRecord
	if secret != "" && len(secret) <= 512 {
		if rec = s.auth.lookup(secret); rec == nil {
			// As the API: 503 while the store cannot tell, never "revoked" to the holder of
			// a valid token.
			var err error
			if rec, err = s.lookupUnknown(r.Context(), secret, arrived); err != nil {
				if r.Context().Err() != nil {
					return // the browser went away
				}
				w.Header().Set("Retry-After", "2")
				s.uiSigninPage(w, r, http.StatusServiceUnavailable, "The token could not be checked: the store cannot be reached from this replica. Try again in a moment.", r.PostForm.Get("next"))
				return
			}
		}
	}
	if rec == nil {
		s.uiSigninPage(w, r, http.StatusUnauthorized, "Unknown or revoked token.", r.PostForm.Get("next"))
		return
	}
	if old, err := r.Cookie(uiCookie); err == nil {
		// A session this browser held (or was given by someone else) ends: a sign-in always
		// starts a fresh one, under a new id.
		s.ui.remove(old.Value)
	}
	id, _ := s.ui.create(rec, time.Now())
	info(r).token = rec.Name
	markAuthenticated(r)
	s.log.Info("console sign-in", "token", rec.Name, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: id, Path: "/ui/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(uiSessionTTL.Seconds())})
	http.SetCookie(w, &http.Cookie{Name: uiSigninCookie, Value: "", Path: "/ui/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, uiNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (s *Server) uiSignout(w http.ResponseWriter, r *http.Request, c *uiCtx) error {
	if ck, err := r.Cookie(uiCookie); err == nil {
		s.ui.remove(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: "", Path: "/ui/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	return nil
}

// uiRender answers page with data, rendered in full before anything is written.
func (s *Server) uiRender(w http.ResponseWriter, r *http.Request, status int, page string, data *uiPage) {
	t := uiTemplates[page]
	var buf bytes.Buffer
	if t == nil {
		s.log.Error("console page missing", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		s.log.Error("render console page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	// A page counts against its token's share of the answers their clients have not taken, as
	// the API's answers do: an edit page carries its value escaped, up to five times its bytes.
	// (An error page, a few KiB, is not: it answers this one's refusal.)
	release := func() {}
	if page != "error" {
		var err error
		if release, err = holdAnswer(w, buf.Len()); err != nil {
			s.uiRefusePage(w, r, data, err)
			return
		}
	}
	defer release()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// uiRefusePage answers the error page of err, which refused the page data was for.
func (s *Server) uiRefusePage(w http.ResponseWriter, r *http.Request, data *uiPage, err error) {
	e := apiError(err)
	code := e.HTTPStatus()
	msg, retry := publicError(r, e, code)
	if retry > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retry))
	}
	s.uiRender(w, r, code, "error", &uiPage{Title: "Error", Token: data.Token, CSRF: data.CSRF, Admin: data.Admin, Store: data.Store,
		Data: uiErrorData{Status: code, Code: e.Code, Message: msg}})
}

// page fills a uiPage for the signed-in request.
func (c *uiCtx) page(title, nav string, data any) *uiPage {
	pg := &uiPage{Title: title, Nav: nav, Data: data}
	if c != nil {
		pg.Token, pg.CSRF, pg.Admin, pg.Store = c.p.name, c.sess.csrf, c.p.admin, c.p.mayReadStatus() == nil
	}
	return pg
}

// uiErrorData is the error page's data.
type uiErrorData struct {
	Status  int
	Code    string
	Message string
}

// uiError answers err as an error page with its status, logging it as writeError does.
func (s *Server) uiError(w http.ResponseWriter, r *http.Request, c *uiCtx, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the browser went away
	}
	e := apiError(err)
	status := e.HTTPStatus()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	// A token's secret pasted where a name goes (a console address, a key to edit) is written
	// sl_…, as the API's error lines write it (logRequestError).
	s.log.LogAttrs(r.Context(), level, "console error", slog.String("request_id", info(r).id), slog.String("code", e.Code),
		slog.Int("status", status), slog.String("err", api.RedactSecrets(err.Error())))
	msg, retry := publicError(r, e, status)
	if retry > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retry))
	}
	if r.URL.Path != "" && strings.HasSuffix(r.URL.Path, "/live") {
		// The script's long-poll: it only needs the status.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		return
	}
	s.uiRender(w, r, status, "error", c.page("Error", "", uiErrorData{Status: status, Code: e.Code, Message: msg}))
}

// uiRecorder takes the answer of an API handler that the console calls.
type uiRecorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *uiRecorder) Header() http.Header { return w.h }
func (w *uiRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *uiRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// uiCall runs API handler h for the console's request r, acting with its principal: the same
// checks, store calls, releases and audit lines as the API. query and hdr are the API request's;
// a write is marked with source "console" and message msg. The handler's error is returned as is.
func (s *Server) uiCall(r *http.Request, h handlerFunc, method string, pathValues map[string]string, query url.Values, body []byte, hdr http.Header, msg string) (*uiRecorder, error) {
	target := "/v1/console"
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	ir, err := http.NewRequestWithContext(r.Context(), method, target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("console request: %w", err)
	}
	ir.RemoteAddr, ir.Host = r.RemoteAddr, r.Host
	if hdr != nil {
		ir.Header = hdr
	}
	for k, v := range pathValues {
		ir.SetPathValue(k, v)
	}
	if method != http.MethodGet {
		ir.Header.Set(api.HeaderSource, uiSource)
		if msg != "" {
			ir.Header.Set(api.HeaderMessage, msg)
		}
		if err := checkReleaseHeaders(ir); err != nil {
			// The message was typed in a form: its refusal names the form's field, not the
			// header the console sends it in.
			e := api.AsError(err)
			if rest, ok := strings.CutPrefix(e.Message, "header "+api.HeaderMessage); ok {
				return nil, api.Errorf(e.Code, "the release message%s", rest)
			}
			return nil, err
		}
	}
	rec := &uiRecorder{h: http.Header{}}
	err = h(rec, ir)
	if u, ok := err.(*unchangedLater); ok {
		ir.Body, ir.GetBody = http.NoBody, nil // the body is not held through the wait
		err = s.answerUnchanged(rec, ir, u)
	}
	if err != nil {
		return rec, err
	}
	return rec, nil
}
