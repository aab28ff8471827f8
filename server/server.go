// Package server is Shoelace's HTTP API over the store: keys, transactions, appliance views
// with long-polls fanned out from one store watch per replica, and access control.
//
// Routes (all /v1 routes need "Authorization: Bearer <token>"):
//
//	GET    /health, /health/deps, /metrics          no token; /health is only status and maintenance
//	GET    /v1/kv/{key}  [?recurse [&keys]]         api.KV or api.List
//	PUT    /v1/kv/{key}  [?cas=N]                   raw value → api.WriteResult
//	DELETE /v1/kv/{key}  [?recurse]                 api.DeleteResult
//	POST   /v1/txn                                  api.Txn → api.WriteResult
//	GET    /v1/appliances                           api.Appliances
//	GET    /v1/appliances/{name} [?index=R&wait=D]  api.View, or 304 when nothing changed
//	PUT    /v1/appliances/{name} [?cas=R]           {"keys":{…}} JSON or YAML → api.WriteResult
//	GET    /v1/appliances/{name}/instances          Instances (agents' reports)
//	DELETE /v1/appliances/{name}/instances/{instance}  forget an instance, revoke its token (admin)
//	POST   /v1/appliances/{name}/enroll             api.Enroll → api.Enrolled (the agent token)
//	POST   /v1/tokens, GET /v1/tokens [?all&limit&after], DELETE /v1/tokens/{name}   admin only
//	GET    /v1/maintenance, PUT /v1/maintenance     Maintenance (PUT admin only)
//	GET    /v1/snapshot                             etcd snapshot stream (admin only)
//	GET    /v1/status                               Status (read, write or admin token; not agents)
//
// With Config.UI, /ui/ is the web console (ui.go): its own sign-in and session cookie, pages that act
// with the signed-in token's scopes and write through the handlers above.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// opTimeout bounds one store operation of a request that does not long-poll. A variable for
// tests (longerOpTimeout), set before their server starts.
var opTimeout = 30 * time.Second

// writeMargin is added to the time a handler may take to make the write deadline of its answer.
const writeMargin = 30 * time.Second

// extendWrite moves the write deadline of the answer on w to d (plus writeMargin) from now.
func extendWrite(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + writeMargin))
}

// depsTimeout bounds GET /health/deps, so that a probe gets its 503 quickly while etcd is away.
const depsTimeout = 3 * time.Second

// Server answers the HTTP API for one replica. Create it with New; Close stops it.
type Server struct {
	cfg Config
	st  *store.Store
	log *slog.Logger
	// auditLog writes the audit lines whatever the log level.
	auditLog auditLogger
	// clientLines bounds the lines of clients without a valid token or over a rate limit.
	clientLines *lineBudget
	m           *metrics
	hub         *hub
	mux         *http.ServeMux
	// yamlBudget bounds the YAML apply bodies parsed at once (see yamlBudget); bodyBudget the
	// large txn and apply bodies read and parsed at once.
	yamlBudget *yamlBudget
	bodyBudget *bodyBudget
	h          http.Handler

	auth  *authState
	fresh freshTokens // the store's tokens, read when the cache misses
	// adminMu orders the tries of createAdminToken (bootstrap's at start, and again on a store
	// that replaced the one this replica was on: see bootstrapAgain); adminPending is the first
	// admin token while its creation's outcome is unknown.
	adminMu      sync.Mutex
	adminPending *pendingAdmin
	// leftChecked says that createAdminToken looked for the secrets an earlier run left
	// beside the admin token file (see adoptLeftAdminToken); under adminMu.
	leftChecked bool
	// bootstrapped says that bootstrap ran: this replica keeps the admin token file.
	bootstrapped atomic.Bool
	maintenance  atomic.Bool
	storeID      atomic.Value // the store id last seen, to notice when it changes
	sys          sysState     // orders watch events and reloads of tokens and settings
	reports      *reporter
	// enrollRetryAge is how old a token never used must be for its enrollment key to enroll
	// its instance again (enrollRetryAge; tests lower it).
	enrollRetryAge time.Duration
	rollouts       *rolloutSet
	aboveStore     storeRevCheck             // reports applied above this replica's revision
	depsProbe      depsProbe                 // /health/deps without an operator's token
	historyReads   chan struct{}             // slots of reads of a past revision (historyReadsAtOnce)
	self           Replica                   // this replica, as announced under sys/replicas/
	replicas       atomic.Pointer[[]Replica] // the replicas seen at the last beat
	schemas        schemas                   // compiled appliance schemas (write-time validation)
	sealer         *sealer                   // seals secret values in release copies; nil: left out
	pruneKick      chan struct{}             // wakes the release pruner before its next tick
	sincePrune     atomic.Int64              // releases asked for since the last kick
	ui             uiSessions                // the web console's sessions on this replica
	answers        answerBudget              // answers made for one request, not yet taken (answers.go)
	// storeCheckHook, when set (tests, while the hub runs), is called as the hub looks at the
	// store after a broken watch; its error is that look's.
	storeCheckHook atomic.Pointer[func() error]
	// endHook, when set (tests), is called as a rollout of appliance name ends: before its end
	// is written (written false) and once it is, before its late reports are counted.
	endHook func(name string, written bool)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// grace ends when the shutdown grace is over (see Serve), and with it reqBase (its base),
	// the base of the requests' contexts (http.Server.BaseContext) and of the writes' (opCtx).
	grace   *graceCtx
	reqBase context.Context
}

// New returns a server over st and starts its store watch. cfg should have passed Validate.
// Close must be called to stop it.
func New(st *store.Store, cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, st: st, log: log, auditLog: newAuditLogger(log), clientLines: newLineBudget(log, cfg.clientLines), m: newMetrics(cfg.Version), ctx: ctx, cancel: cancel, enrollRetryAge: enrollRetryAge,
		yamlBudget: newYAMLBudget(cfg.maxBodyBytes()), bodyBudget: newBodyBudget(cfg.maxBodyBytes()), grace: newGraceCtx()}
	s.reqBase = s.grace.base
	st.SetObserver(s.m.observeEtcd)
	st.SetTreeCheck(s.checkTree)
	s.hub = newHub(ctx, st, log, s.m, cfg.MaxWaiters)
	s.hub.maxPerToken = cfg.MaxWaitersPerToken
	s.hub.onSys = s.onSysChange
	s.hub.onReset = s.onHubReset
	s.hub.onRewind = s.onStoreRewound
	s.hub.onStoreCheck = s.onStoreCheck
	s.hub.onWatched = s.tokensWatched
	s.storeID.Store(st.ID())
	s.auth = newAuthState(cfg)
	s.reports = newReporter(cfg.MaxInstances, reportRefresh(cfg.instanceStale()))
	s.rollouts = &rolloutSet{}
	s.self = newReplica(cfg)
	s.pruneKick = make(chan struct{}, 1)
	s.historyReads = make(chan struct{}, historyReadsAtOnce)
	if sl, err := loadSealer(cfg.SecretsKeyFile); err != nil {
		// Serve refuses to start on this error; a caller of New alone gets copies without secrets.
		log.Error("load the secrets key: release copies leave secret values out", "err", err.Error())
	} else {
		s.sealer = sl
	}
	// Know the store's revision before serving, so that long-polls right after New are tracked;
	// if the store is away, the hub keeps trying and answers long-polls at once meanwhile.
	// A store that has not answered since it was opened (an external etcd away at start) is
	// not asked on the way: each read waited for its timeout (5 s, 10 s) before the server
	// served even /health; the hub and the reload of tokens and settings keep trying.
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	defer icancel()
	if !st.Answered() {
		log.Warn("etcd has not answered since start: serving; requests that need it are 503 until it does")
		s.reloadSysLater("load tokens and settings", errors.New("etcd has not answered since start"))
	} else {
		if rev, err := st.Revision(ictx); err == nil {
			s.hub.reset(rev)
		} else {
			log.Warn("read store revision at start", "err", err)
		}
		s.loadSys(ictx)
	}
	s.routes()
	s.wg.Add(5)
	go func() {
		defer s.wg.Done()
		s.runRollouts(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.runReleasePruner(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.hub.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.runReplicaBeat(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.runReporter(ctx)
	}()
	return s
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.h }

// ViewReads is the number of appliance views the server has read from the store.
func (s *Server) ViewReads() int64 { return s.hub.viewReads.Load() }

// Drain answers every open long-poll (304, after a little jitter) and makes new ones answer at
// once; call it before shutting the HTTP server down.
func (s *Server) Drain() { s.hub.drain() }

// Close stops the store watch; it does not close the store.
func (s *Server) Close(ctx context.Context) error {
	s.hub.drain()
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handlerFunc is an API handler; its error is answered by writeError, except an
// *answerLater, which is written as the answer, and an *unchangedLater, answered then.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// answerLater is the answer of a woken long-poll, returned by its handler rather than written
// from it: the long-poll waited deep in the handler chain, and written from there, net/http's
// WriteHeader grew the goroutine's stack (from 4 to 8 KiB), copying the whole chain; written
// from apiHandler, the growth comes later, in net/http's own flush, from a shallow stack, as
// for any net/http handler (a copy of 5 frames rather than 15, for each of 10,000 answers).
type answerLater struct {
	rev  int64 // X-Shoelace-Index
	body []byte
	gz   *gzipped
}

func (*answerLater) Error() string { return "answer not written" }

func (s *Server) routes() {
	mux := http.NewServeMux()
	s.mux = mux
	open := func(pattern string, h handlerFunc) { mux.Handle(pattern, s.wrap(h, false)); s.m.addRoute(pattern) }
	v1 := func(pattern string, h handlerFunc) { mux.Handle(pattern, s.wrap(h, true)); s.m.addRoute(pattern) }

	open("GET /health", s.handleHealth)
	open("GET /health/deps", s.handleHealthDeps)
	open("GET /metrics", s.handleMetrics(promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})))
	open("GET /v1/openapi.json", s.handleOpenAPI) // the API's description (docs/openapi.yaml), no token

	v1("GET /v1/kv", s.handleGetKV)
	v1("GET /v1/kv/{key...}", s.handleGetKV)
	v1("PUT /v1/kv", s.handlePutKV)
	v1("PUT /v1/kv/{key...}", s.handlePutKV)
	v1("DELETE /v1/kv", s.handleDeleteKV)
	v1("DELETE /v1/kv/{key...}", s.handleDeleteKV)
	v1("POST /v1/txn", s.handleTxn)
	v1("GET /v1/appliances", s.handleAppliances)
	v1("GET /v1/appliances/{name}", s.handleGetAppliance)
	v1("PUT /v1/appliances/{name}", s.handlePutAppliance)
	v1("GET /v1/appliances/{name}/instances", s.handleInstances)
	v1("POST /v1/appliances/{name}/report", s.handleReport)
	v1("GET /v1/appliances/{name}/rollout", s.handleGetRollout)
	v1("POST /v1/appliances/{name}/rollout", s.handlePostRollout)
	v1("DELETE /v1/appliances/{name}/instances/{instance}", s.handleForgetInstance)
	v1("POST /v1/appliances/{name}/enroll", s.handleEnroll)
	v1("GET /v1/appliances/{name}/at/{revision}", s.handleApplianceAt)
	v1("GET /v1/appliances/{name}/schema", s.handleGetSchema)
	v1("PUT /v1/appliances/{name}/schema", s.handlePutSchema)
	v1("DELETE /v1/appliances/{name}/schema", s.handleDeleteSchema)
	v1("GET /v1/appliances/{name}/releases", s.handleApplianceReleases)
	v1("GET /v1/releases", s.handleReleases)
	v1("POST /v1/tokens", s.handleCreateToken)
	v1("GET /v1/tokens", s.handleListTokens)
	v1("DELETE /v1/tokens/{name}", s.handleDeleteToken)
	v1("GET /v1/maintenance", s.handleGetMaintenance)
	v1("PUT /v1/maintenance", s.handlePutMaintenance)
	v1("GET /v1/snapshot", s.handleSnapshot)
	v1("GET /v1/status", s.handleStatus)
	s.uiRoutes(mux) // the web console, /ui/ (ui.go)

	// Unknown routes: under /v1 only with a token (401 without one, as every /v1 request, and
	// under the unauthenticated rate limit); elsewhere without one, under that limit too.
	v1("/v1/", s.handleNotFound)
	v1("/v1", s.handleNotFound)
	open("/", s.handleUnknownPath)
	s.h = s.outer(mux)
}

// wrap turns a handlerFunc into a handler: /v1 routes go through authentication first.
func (s *Server) wrap(h handlerFunc, v1 bool) http.Handler {
	return &apiHandler{s: s, h: h, v1: v1}
}

// apiHandler is a wrapped handlerFunc (a type, not a closure: one frame less on the stack of
// every open long-poll).
type apiHandler struct {
	s  *Server
	h  handlerFunc
	v1 bool
}

func (a *apiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var err error
	if a.v1 {
		if r, err = a.s.authenticate(w, r); err == nil {
			markAuthenticated(r)
			err = checkReleaseHeaders(r)
		}
	}
	if err == nil {
		err = a.h(w, r)
	}
	if l, ok := err.(*answerLater); ok {
		setIndex(w, l.rev)
		err = writeBody(w, r, l.body, l.gz)
	}
	if u, ok := err.(*unchangedLater); ok {
		err = a.s.answerUnchanged(w, r, u)
	}
	if err != nil {
		a.s.writeError(w, r, err)
	}
}

// reqInfo travels with a request so that the access log learns what the handlers found out,
// and the handlers who the caller is (authenticate sets p).
type reqInfo struct {
	id    string
	token string
	p     *principal
	// revocation is the hub's revocation count before the token was looked up.
	revocation uint64
}

type reqInfoKey struct{}

// revocationOf is r's reqInfo's revocation (not inlined: info's locals would take room in the
// frame of every open long-poll).
//
//go:noinline
func revocationOf(r *http.Request) uint64 { return info(r).revocation }

func info(r *http.Request) *reqInfo {
	if i := reqInfoOf(r); i != nil {
		return i
	}
	return &reqInfo{}
}

// reqInfoOf is r's reqInfo: its connection's request in progress over HTTP/1 (begin keeps it
// there, so that no request is copied for it), else from its context; nil when it has none.
func reqInfoOf(r *http.Request) *reqInfo {
	ctx := r.Context()
	if i, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return i
	}
	if r.ProtoMajor == 1 {
		if c, ok := ctx.Value(connKey{}).(*trackedConn); ok && c.req != nil {
			return c.req
		}
	}
	return nil
}

// statusWriter records the status code of a response, and sets the headers every answer
// carries (request id, store id, index) just before the answer is written: an open long-poll
// then holds no header of its own while it waits. It also holds the request's reqInfo, so that
// one allocation serves both.
type statusWriter struct {
	http.ResponseWriter
	s      *Server
	conn   *trackedConn // the HTTP/1 connection whose request in progress info is; nil: none
	status int
	info   reqInfo
}

// defaults sets the common headers that the handler has not set.
func (w *statusWriter) defaults() {
	h := w.ResponseWriter.Header()
	if h.Get(api.HeaderRequestID) == "" {
		h.Set(api.HeaderRequestID, w.info.id)
	}
	if _, ok := h[api.HeaderStore]; !ok {
		h.Set(api.HeaderStore, w.s.st.ID())
	}
	if _, ok := h[api.HeaderIndex]; !ok {
		h.Set(api.HeaderIndex, strconv.FormatInt(w.s.hub.current(), 10))
	}
	if _, ok := h["X-Content-Type-Options"]; !ok {
		h["X-Content-Type-Options"] = nosniff
	}
}

// nosniff is the value of X-Content-Type-Options on every answer: a browser takes an answer for
// what its Content-Type says, never for a page; values are JSON text with their < and > as they
// are (api.Marshal), and a value of HTML is no page of this server's origin. One slice for all,
// which net/http only reads.
var nosniff = []string{"nosniff"}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.defaults()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.defaults()
		// As net/http would, but from this frame rather than from inside its Write: a woken
		// long-poll writes from deep in the handler chain, and net/http's WriteHeader there
		// would grow the goroutine's stack, a copy in the path of every answer.
		w.ResponseWriter.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends what was written so far (ResponseController.Flush finds it before Unwrap).
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
		w.defaults()
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// answerBegan reports whether the answer on w has its status written.
func answerBegan(w http.ResponseWriter) bool {
	for {
		switch x := w.(type) {
		case *statusWriter:
			return x.status != 0
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return false
		}
	}
}

// clientGone reports whether err is a write to a client that went away (its connection reset
// or closed) or that stopped reading (the write deadline passed).
func clientGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// gone records on w's statusWriter, when nothing was written yet, that the client went away
// before its answer: 499, as nginx logs it.
func gone(w http.ResponseWriter) {
	for {
		switch x := w.(type) {
		case *statusWriter:
			if x.status == 0 {
				x.status = 499
			}
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// outer runs around every request: request id, the protocol headers, path hygiene, metrics and
// the access log. Its own frame is kept small (begin and end are not inlined): a long-poll
// waits with it on its goroutine's stack, and a deeper stack costs every open long-poll.
func (s *Server) outer(next http.Handler) http.Handler {
	return &outerHandler{s: s, next: next}
}

type outerHandler struct {
	s    *Server
	next http.Handler
}

func (o *outerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw, r, clean := o.s.begin(w, r, start)
	if clean {
		o.next.ServeHTTP(sw, r)
	} else if r.URL.Path == kvRootPath {
		r = kvSlashKey(r) // its Pattern, set by ServeMux, names the route in end
		o.next.ServeHTTP(sw, r)
	} else {
		// ServeMux would redirect to the cleaned path; a key must never be rewritten. The
		// refusal comes before any token is read: it counts against the client address's rate
		// limit, as a request without a token does (a flood of them was answered unlimited).
		err := o.s.limitAddr(r)
		if err == nil {
			err = uncleanPathError(r.URL.Path, kvPrefixRequest(r))
		}
		if o.s.cfg.UI && uiPath(r.URL.Path) {
			uiHeaders(sw) // a console answer, error or not, has the console's headers
			o.s.uiError(sw, r, nil, err)
		} else {
			o.s.writeError(sw, r, err)
		}
	}
	o.s.end(sw, r, start)
}

// begin readies a request: its id and reqInfo, its deadlines, and whether its path is clean.
//
//go:noinline
func (s *Server) begin(w http.ResponseWriter, r *http.Request, start time.Time) (*statusWriter, *http.Request, bool) {
	sw := &statusWriter{ResponseWriter: w, s: s, info: reqInfo{id: requestID(r.Header.Get(api.HeaderRequestID))}}
	// Over HTTP/1 a connection carries one request at a time, handled on its own goroutine:
	// the request's info goes into the connection (no copy of the request, which an open
	// long-poll would hold). HTTP/2 multiplexes: a context of its own.
	if c, ok := r.Context().Value(connKey{}).(*trackedConn); ok && r.ProtoMajor == 1 {
		c.req = &sw.info
		sw.conn = c
	} else {
		r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, &sw.info))
	}
	// Deadlines against slow clients: the body must arrive within BodyTimeout, and the
	// answer be taken within the time a handler may take (long-polls and snapshots extend it).
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 {
		_ = rc.SetReadDeadline(start.Add(s.cfg.bodyTimeout()))
	}
	_ = rc.SetWriteDeadline(start.Add(opTimeout + writeMargin))
	if r.ProtoMajor == 1 && r.ContentLength != 0 && r.Method != http.MethodPut && r.Method != http.MethodPost {
		// No route reads this body: close rather than drain it after the answer, which a
		// client sending it slowly would keep busy for the body timeout.
		w.Header().Set("Connection", "close")
	}
	if r.URL.Path == "" && r.URL.Host != "" {
		// An absolute form without a path ("GET http://host HTTP/1.1", as a proxy sends): its
		// path is "/" (RFC 9112, 3.2.2), not one to refuse.
		r.URL.Path = "/"
	}
	p := r.URL.Path
	return sw, r, p == cleanPath(p) && !trailingSlash(p)
}

// trailingSlash reports whether p is an API path, not a KV one, that ends in '/': an empty last
// segment, which no route has. ServeMux keeps it, so that /v1/appliances/ was an unknown
// route (401 without a token, 404 with one) where /v1/appliances//x was 400 before any token
// is read. A KV path's is a prefix's ("/v1/kv/shared/?recurse"), for its handler to judge.
func trailingSlash(p string) bool {
	return len(p) > 1 && p[len(p)-1] == '/' && strings.HasPrefix(p, "/v1/") && !strings.HasPrefix(p, "/v1/kv/")
}

// end finishes a request: the body not read, the metrics and the access log.
//
//go:noinline
func (s *Server) end(sw *statusWriter, r *http.Request, start time.Time) {
	if c := sw.conn; c != nil && c.req == &sw.info {
		defer func() { c.req = nil }()
	}
	if sw.status == 0 {
		// Nothing was written: net/http answers 200 with an empty body, with these headers.
		sw.defaults()
	}
	h := sw.ResponseWriter.Header()
	if r.ProtoMajor == 1 && r.ContentLength != 0 && h.Get("Connection") == "close" {
		// Answered without the whole body: net/http would still read up to 256 KiB of it
		// before closing, for as long as the body timeout. End that read now. (HTTP/2
		// drains nothing: it resets the stream.)
		_ = http.NewResponseController(sw.ResponseWriter).SetReadDeadline(time.Now())
	}

	route := r.Pattern
	if route == "" || route == "/" {
		route = "unmatched"
	}
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	d := time.Since(start)
	s.m.observe(route, status, d)
	if !s.log.Enabled(r.Context(), slog.LevelInfo) || !s.mayLog(sw.info.token, status) {
		return
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("request_id", sw.info.id),
		slog.String("method", methodText(r.Method)),
		slog.String("route", route),
		slog.String("path", cut(api.RedactSecrets(r.URL.Path), 512)),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("token", sw.info.token),
		slog.String("remote", r.RemoteAddr),
	)
}

// mayLog reports whether a request of token (none: "") answered with status may have its log
// lines written: always with a valid token, within the replica's budget (clientLines) without
// one or over a rate limit, which cost their client no more than a refusal.
func (s *Server) mayLog(token string, status int) bool {
	return token != "" && status != http.StatusTooManyRequests || s.clientLines.take()
}

// kvRootPath is the KV path of the key "/" ("/v1/kv/%2F" or "/v1/kv//" as sent): with ?recurse,
// the prefix "/", which is the root as a grant's "/" is.
const kvRootPath = "/v1/kv//"

// kvSlashKey returns r with its path escaped as "/v1/kv/%2F", which ServeMux takes as clean and
// routes with the key "/" for the KV handler to judge (ServeMux would redirect "/v1/kv//").
func kvSlashKey(r *http.Request) *http.Request {
	r2 := *r
	u := *r.URL
	u.RawPath = "/v1/kv/%2F"
	r2.URL = &u
	return &r2
}

// kvPrefixRequest reports whether r, a KV request, names a prefix rather than a key: a GET
// (without ?history) or DELETE with ?recurse true, as its handler reads it.
func kvPrefixRequest(r *http.Request) bool {
	q := r.URL.Query()
	if q.Has("history") || r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodDelete {
		return false
	}
	on, err := flag(q, "recurse")
	return err == nil && on
}

// uncleanPathError is the answer to a path ServeMux would rewrite: for a KV path, the rule its
// key (or with recurse, its prefix) breaks.
func uncleanPathError(p string, recurse bool) error {
	if key, ok := strings.CutPrefix(p, "/v1/kv/"); ok {
		if recurse {
			if _, err := api.ValidatePrefix(key); err != nil {
				return err
			}
		} else if err := api.ValidateKey(key); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(p, "/") {
		// "OPTIONS *", or an absolute form's path: no route of the API is asked so.
		return api.Errorf(api.CodeInvalidRequest, "request path %s does not start with '/': the API's routes are paths such as /v1/kv/KEY", shorten(p))
	}
	if trailingSlash(p) && p == cleanPath(p) {
		return api.Errorf(api.CodeInvalidRequest, "request path %s ends in '/' (an empty segment), as no route of the API does", shorten(p))
	}
	return api.Errorf(api.CodeInvalidRequest, "request path %s has an empty, '.' or '..' segment", shorten(p))
}

// cleanPath is the path ServeMux would redirect to.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// requestID returns the client's id when it is short and printable (and holds nothing of the
// form of a token's secret, which the log would show), else a new one.
func requestID(in string) string {
	if in != "" && len(in) <= 128 && api.RedactSecrets(in) == in {
		ok := true
		for i := 0; i < len(in); i++ {
			if c := in[i]; c <= ' ' || c >= 0x7f || c == '"' {
				ok = false
				break
			}
		}
		if ok {
			return in
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cut shortens s to at most n bytes.
func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// methodText is a request's method as logs and messages show it: net/http takes any token of
// up to the header limit (64 KiB) as a method, and each request made of one wrote that much
// into the access log and the answer; the longest method in use is 16 bytes.
func methodText(m string) string { return cut(m, 20) }

// shorten quotes s for a message, cut so that a huge input cannot flood a log line.
func shorten(s string) string {
	const max = 80
	s = api.RedactSecrets(s) // before the cut, which could leave a secret's first 40 characters
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}

// writeJSON answers v with status; rev > 0 sets X-Shoelace-Index. A large answer is charged to
// its token's budget of answers not yet taken (holdAnswer) while it is written.
func writeJSON(w http.ResponseWriter, status int, rev int64, v any) error {
	body, err := api.Marshal(v)
	if err != nil {
		return err
	}
	body = append(body, '\n') // as json.Encoder writes it
	return writeEncoded(w, status, rev, body)
}

// writeRevision answers api.WriteResult{Revision: rev} as writeJSON would, without its
// reflection (the answer of every plain write).
func writeRevision(w http.ResponseWriter, rev int64) error {
	var buf [48]byte
	body := strconv.AppendInt(append(buf[:0], `{"revision":`...), rev, 10)
	return writeEncoded(w, http.StatusOK, rev, append(body, "}\n"...))
}

// writeEncoded is writeJSON of a body encoded already, with its newline.
func writeEncoded(w http.ResponseWriter, status int, rev int64, body []byte) error {
	release, err := holdAnswer(w, len(body))
	if err != nil {
		return err
	}
	defer release()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if rev > 0 {
		h.Set(api.HeaderIndex, strconv.FormatInt(rev, 10))
	}
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// setIndex sets X-Shoelace-Index when rev is known.
func setIndex(w http.ResponseWriter, rev int64) {
	if rev > 0 {
		w.Header().Set(api.HeaderIndex, strconv.FormatInt(rev, 10))
	}
}

// apiError is err as the API answers it: an *api.Error as it is, a deadline as unavailable (retry
// in a second), anything else as internal.
func apiError(err error) *api.Error {
	var e *api.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return &api.Error{Code: api.CodeUnavailable, Message: "the store did not answer in time", RetryAfter: 1}
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error()}
}

// writeError answers err as {"error":{"code","message"}} with its status, and logs it once.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if answerBegan(w) {
		// Its header is out, and maybe part of its body: no error answer can follow (net/http
		// would only log a superfluous WriteHeader, and the client reads a cut answer). Mostly
		// the client went away mid-answer, which is no error of the server's.
		level := slog.LevelError
		if r.Context().Err() != nil || clientGone(err) {
			level = slog.LevelDebug
		}
		s.logRequestError(r, level, err, slog.Bool("answer_began", true))
		return
	}
	var e *api.Error
	if !errors.As(err, &e) && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		e = &api.Error{Code: api.CodeUnavailable, Message: "request canceled by the client", Status: 499}
	} else {
		e = apiError(err)
	}
	status := e.HTTPStatus()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	if s.log.Enabled(r.Context(), level) && s.mayLog(info(r).token, status) {
		s.logRequestError(r, level, err, slog.String("code", e.Code), slog.Int("status", status))
	}
	if status == 499 {
		// Nothing is written, but the metrics and the access log say what happened: net/http's
		// empty 200 to a connection already gone was counted as a success (every read a client
		// gave up on while etcd was frozen).
		gone(w)
		return
	}
	msg, retry := publicError(r, e, status)
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// The body may be unread (refused before it was needed): close the connection rather
		// than drain it, which a client sending it slowly would keep busy for the body timeout.
		// (On HTTP/2 this header would close the whole connection, and nothing is drained.)
		w.Header().Set("Connection", "close")
	}
	_ = writeJSON(w, status, 0, api.ErrorBody{Error: &api.Error{Code: e.Code, Message: msg}})
}

// logRequestError writes r's error line at level: its request id, attrs, and err's text with
// what may be a token's secret masked.
func (s *Server) logRequestError(r *http.Request, level slog.Level, err error, attrs ...slog.Attr) {
	if !s.log.Enabled(r.Context(), level) {
		return // a client gone mid-answer, at debug: nothing built for a line not written
	}
	attrs = append(append([]slog.Attr{slog.String("request_id", info(r).id)}, attrs...), slog.String("err", api.RedactSecrets(err.Error())))
	s.log.LogAttrs(r.Context(), level, "request error", attrs...)
}

// publicError is the message and Retry-After of e as the request's principal may see them.
// The errors of a failed store read or write (unavailable, outcome unknown, internal) carry
// etcd's endpoints and its own error: an operator's to see (as on /health/deps and
// /v1/status), never an agent's or an unknown client's, who get a fixed text by code instead —
// whatever the message says, so that no wording of an error can leak past it. (An internal
// error's text names the request id the server logged it under.) The other 5xx (maintenance,
// shutting down, too many waiters) are the server's own words and stay. A store that is
// unavailable is worth retrying soon: Retry-After 1 when e gives none. The API and the
// console answer errors through it.
func publicError(r *http.Request, e *api.Error, status int) (string, int) {
	// A secret pasted where a name goes (shoelace token revoke sl_…) is not written back
	// whole into the CI log that prints the answer.
	msg, retry := api.RedactSecrets(e.Message), e.RetryAfter
	if e.Code == api.CodeUnavailable && retry == 0 {
		retry = 1
	}
	if status < 500 {
		return msg, retry
	}
	if p := principalOf(r); p.admin || len(p.read) > 0 || len(p.write) > 0 {
		return msg, retry
	}
	switch e.Code {
	case api.CodeUnavailable:
		msg = "the store is unavailable; retry later"
	case api.CodeOutcomeUnknown:
		msg = "the store did not confirm the write; its outcome is unknown"
	case api.CodeInternal:
		msg = "internal error; the server logged it as request " + info(r).id
	}
	return msg, retry
}

// notFoundPatterns are the mux's patterns that handleNotFound answers ("": none matched).
var notFoundPatterns = map[string]bool{"": true, "/": true, "/v1/": true, "/v1": true}

// handleUnknownPath is handleNotFound for paths outside /v1, which no token is asked for: under
// the client address's rate limit, as a request without a token (a flood of them was answered
// without a limit).
func (s *Server) handleUnknownPath(w http.ResponseWriter, r *http.Request) error {
	if err := s.limitAddr(r); err != nil {
		return err
	}
	return s.handleNotFound(w, r)
}

// handleNotFound answers unknown routes with 404, and known paths with a wrong method with 405.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) error {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.mux.Handler(r2); !notFoundPatterns[p] {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return api.Errorf(api.CodeMethod, "method %s is not allowed on %s; allowed: %s", methodText(r.Method), shorten(r.URL.EscapedPath()), strings.Join(allowed, ", "))
	}
	// The path as sent: decoded, /v1%2Fkv/x would name /v1/kv/x, a route that is.
	return api.Errorf(api.CodeNotFound, "no such route: %s %s", methodText(r.Method), shorten(r.URL.EscapedPath()))
}

// audit logs one line per write: who, from where, what, at which revision — never values. The
// lines are written at level INFO even when --log-level is higher: an audit trail does not
// depend on how chatty the rest of the log is. What may be a token's secret pasted into a key,
// the message or the source is written "sl_…", as in the request's line.
func (s *Server) audit(r *http.Request, op string, keys []string, rev int64, more ...slog.Attr) {
	i := info(r)
	s.auditLine(r.Context(), auditWho{i.id, i.token, r.RemoteAddr, r.Header.Get(api.HeaderMessage), r.Header.Get(api.HeaderSource)}, op, keys, rev, more...)
}

// auditWho is who made a write, for its audit line: the request's id, token name and remote
// address, and the message and source it sent. A write the server makes by itself (a rollout
// promoted at the end of its bake) has no request: the token, message and source of the
// request that started it, and no id or address.
type auditWho struct{ id, token, remote, message, source string }

// auditLine logs a write's audit line (see audit).
func (s *Server) auditLine(ctx context.Context, who auditWho, op string, keys []string, rev int64, more ...slog.Attr) {
	if keys == nil {
		keys = []string{}
	}
	attrs := [...]slog.Attr{
		slog.Bool("audit", true),
		slog.String("request_id", who.id),
		slog.String("token", who.token),
		slog.String("remote", who.remote),
		slog.String("op", op),
		slog.Any("keys", redactKeys(keys)),
		slog.Int64("revision", rev),
		slog.String("message", api.RedactSecrets(who.message)),
		slog.String("source", api.RedactSecrets(who.source)),
	}
	s.auditLog.LogAttrs(ctx, "write", append(attrs[:], more...)...) // no copy without more
}

// redactKeys is keys with what may be a token's secret written "sl_…" (api.RedactSecrets): keys
// itself when none holds one, as nearly always.
func redactKeys(keys []string) []string {
	for i, k := range keys {
		if api.RedactSecrets(k) != k {
			out := slices.Clone(keys)
			for j := i; j < len(out); j++ {
				out[j] = api.RedactSecrets(out[j])
			}
			return out
		}
	}
	return keys
}

// alwaysEnabled passes every record to its handler, whatever the handler's level.
type alwaysEnabled struct{ slog.Handler }

func (alwaysEnabled) Enabled(context.Context, slog.Level) bool { return true }

func (h alwaysEnabled) WithAttrs(as []slog.Attr) slog.Handler {
	return alwaysEnabled{h.Handler.WithAttrs(as)}
}

func (h alwaysEnabled) WithGroup(name string) slog.Handler {
	return alwaysEnabled{h.Handler.WithGroup(name)}
}

// Health is the body of GET /health: what a liveness probe or a load balancer needs, and
// nothing about the deployment (that is Status, behind a token).
type Health struct {
	Status      string `json:"status"`
	Maintenance bool   `json:"maintenance"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, 0, Health{Status: "ok", Maintenance: s.maintenance.Load()})
}

// handleMetrics answers Prometheus's scrape with metrics, held to the rate limit of the client's
// address as requests without a valid token are: an answer costs milliseconds of CPU and tens
// of KiB, and a client asking without pause took a core from the agents (a scrape every few
// seconds is far under the limit). /health stays unlimited: its answer costs what a refusal does.
func (s *Server) handleMetrics(metrics http.Handler) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.limitOpen(r); err != nil {
			return err
		}
		metrics.ServeHTTP(w, r)
		return nil
	}
}

// Status is the body of GET /v1/status, what `shoelace status` shows.
type Status struct {
	Status      string `json:"status"`
	Version     string `json:"version"`
	StoreID     string `json:"store_id"`
	Embedded    bool   `json:"embedded"`
	Maintenance bool   `json:"maintenance"`
	Revision    int64  `json:"revision"`
	LongPolls   int    `json:"long_polls"`
	// Replica is this replica's id; Replicas are those seen sharing the store (refreshed every 15 s).
	Replica  string    `json:"replica"`
	Replicas []Replica `json:"replicas"`
	// Etcd is what /health/deps says, with the endpoints and the whole error.
	Etcd DepsHealth `json:"etcd"`
	// Releases are the limits of the release records.
	Releases ReleaseLimits `json:"releases"`
	// Rollouts are the appliances whose staged rollout runs, and whether this replica is the
	// one that moves them.
	Rollouts RolloutsStatus `json:"rollouts"`
	// Limits are this replica's bounds of a write, which an import checks before it sends one.
	Limits WriteLimits `json:"limits"`
}

// WriteLimits are the bounds of a write that GET /v1/status shows.
type WriteLimits struct {
	MaxValueBytes int `json:"max_value_bytes"`
	// MaxTxnOps is the most operations (and the most guards) one transaction, apply or import
	// may hold; MaxBodyBytes the largest body of one, in bytes.
	MaxTxnOps    int   `json:"max_txn_ops"`
	MaxBodyBytes int64 `json:"max_body_bytes"`
}

// RolloutsStatus is what GET /v1/status says of the staged rollouts.
type RolloutsStatus struct {
	Running []string `json:"running"`
	Leading bool     `json:"leading"`
}

// ReleaseLimits are the release limits that GET /v1/status shows.
type ReleaseLimits struct {
	Retention int    `json:"retention"`
	MaxAge    string `json:"max_age"`
	MaxBytes  int64  `json:"max_bytes"`
	// SecretsSealed says whether secret values are kept, sealed, in release copies.
	SecretsSealed bool `json:"secrets_sealed"`
}

// handleStatus answers the replica's status to operators' tokens: it names hosts, addresses
// and versions, which agents do not need.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayReadStatus(); err != nil {
		return err
	}
	// The appliances with a rollout running, as far as the token may read them: a token
	// scoped to one appliance learns no other's name here, as nowhere else.
	running := []string{}
	for _, name := range s.rollouts.running() {
		if p.mayRead(api.ApplianceRoot(name)) == nil {
			running = append(running, name)
		}
	}
	etcd, _ := s.deps(r.Context())
	return writeJSON(w, http.StatusOK, 0, Status{
		Status:      "ok",
		Version:     s.cfg.Version,
		StoreID:     s.st.ID(),
		Embedded:    s.st.Embedded(),
		Maintenance: s.maintenance.Load(),
		Revision:    s.hub.current(),
		LongPolls:   s.hub.open(),
		Replica:     s.self.ID,
		Replicas:    s.liveReplicas(),
		Etcd:        etcd,
		Releases: ReleaseLimits{
			Retention:     s.cfg.ReleaseRetention,
			MaxAge:        s.cfg.ReleaseMaxAge.String(),
			MaxBytes:      s.cfg.ReleaseMaxBytes,
			SecretsSealed: s.sealer != nil,
		},
		Rollouts: RolloutsStatus{Running: running, Leading: s.rollouts.leading.Load()},
		Limits:   WriteLimits{MaxValueBytes: s.cfg.MaxValueBytes, MaxTxnOps: s.cfg.MaxTxnOps, MaxBodyBytes: s.cfg.maxBodyBytes()},
	})
}

// operatorToken returns the valid read, write or admin token r presents (as the token cache
// knows it), on a route that needs none; nil when it presents none.
func (s *Server) operatorToken(r *http.Request) *tokenRecord {
	secret, ok, err := bearer(r)
	if err != nil || !ok {
		return nil
	}
	if rec := s.auth.lookup(secret); rec != nil && (rec.Admin || len(rec.Read) > 0 || len(rec.Write) > 0) {
		return rec
	}
	return nil
}

// DepsHealth is the body of GET /health/deps, and the etcd part of GET /v1/status. Endpoints and
// the whole error are for operators' tokens; others get one of a few fixed reasons.
type DepsHealth struct {
	Reachable bool     `json:"reachable"`
	Leader    bool     `json:"leader"`
	LatencyMS float64  `json:"latency_ms"`
	Endpoints []string `json:"endpoints,omitempty"`
	// Degraded says that etcd serves but has raised Alarms (NOSPACE: every write is refused),
	// which Error describes: the replica answers reads (200), and an operator must act.
	Degraded bool     `json:"degraded,omitempty"`
	Alarms   []string `json:"alarms,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// depsShareFor is how long a probe of etcd answers /health/deps for clients without an
// operator's token.
const depsShareFor = time.Second

// depsProbe is the last probe of etcd made for /health/deps without an operator's token, and
// the one under way.
type depsProbe struct {
	mu     sync.Mutex
	at     time.Time // when the last one ended
	out    DepsHealth
	ok     bool
	flight chan struct{} // closed when the one under way ends; nil: none
}

// depsShared is deps as a probe made within depsShareFor, or the next one, shared.
func (s *Server) depsShared(ctx context.Context) (DepsHealth, bool, error) {
	p := &s.depsProbe
	for {
		p.mu.Lock()
		if !p.at.IsZero() && time.Since(p.at) < depsShareFor {
			out, ok := p.out, p.ok
			p.mu.Unlock()
			return out, ok, nil
		}
		if f := p.flight; f != nil {
			p.mu.Unlock()
			select {
			case <-f:
				continue
			case <-ctx.Done():
				return DepsHealth{}, false, ctx.Err()
			}
		}
		f := make(chan struct{})
		p.flight = f
		p.mu.Unlock()
		// The probe is everyone's who waits for it: not this client's context.
		out, ok := s.deps(context.WithoutCancel(ctx))
		p.mu.Lock()
		p.at, p.out, p.ok, p.flight = time.Now(), out, ok, nil
		p.mu.Unlock()
		close(f)
		return out, ok, nil
	}
}

// deps asks the store how it is, within depsTimeout; ok says whether it can serve.
func (s *Server) deps(ctx context.Context) (out DepsHealth, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, depsTimeout)
	defer cancel()
	h, err := s.st.Health(ctx)
	out = DepsHealth{
		Reachable: h.Reachable,
		Leader:    h.Leader,
		LatencyMS: float64(h.Latency.Microseconds()) / 1000,
		Endpoints: h.Endpoints,
		Degraded:  err == nil && len(h.Alarms) > 0,
		Alarms:    h.Alarms,
		Error:     h.Error,
	}
	if err != nil && out.Error == "" {
		out.Error = err.Error()
	}
	return out, err == nil && h.Reachable && h.Leader
}

// handleHealthDeps answers etcd's health. Each answer costs a read through etcd's leader, so
// a client without an operator's token is held to the rate limit of its address, and is not
// told etcd's endpoints nor its errors (they name the cluster's addresses), only a fixed
// reason: shoelace status sends its token and gets them. etcd's alarms (NOSPACE) leave it 200,
// degraded: the replica serves reads, and a load balancer that took every replica out for
// them would stop the agents' reads too; the answer names them and what they do.
//
// Without an operator's token it answers the replica's last probe of etcd when that is under
// depsShareFor old (the callers that come meanwhile share the next one), and is held to no
// rate limit: its cost is then a refusal's, as /health's. It was held to the rate limit of the
// client's address, the bucket that requests with a bad token fill: behind the shipped TCP
// load balancer every client has the balancer's address, and one client sending bad tokens
// (or asking /health/deps) at the rate limit made the balancer's own checks 429, so that it
// took every replica out.
func (s *Server) handleHealthDeps(w http.ResponseWriter, r *http.Request) error {
	rec := s.operatorToken(r)
	operator := rec != nil
	if operator {
		// Its own probe of etcd, a read through the leader, for each request: under the
		// token's --rate-limit, as its other requests are (they were not, and one reader's
		// token made as many reads of etcd as it sent requests).
		info(r).token = rec.Name
		if err := s.limitToken(rec, ""); err != nil {
			return err
		}
	}
	var out DepsHealth
	var ok bool
	if operator {
		out, ok = s.deps(r.Context())
	} else {
		var err error
		if out, ok, err = s.depsShared(r.Context()); err != nil {
			return err
		}
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	if operator {
		return writeJSON(w, status, 0, out)
	}
	out.Endpoints = nil
	switch {
	case ok:
		out.Error = store.AlarmsError(out.Alarms) // fixed texts, no address
	case !out.Reachable:
		out.Error = "etcd is unreachable"
	case !out.Leader:
		out.Error = "etcd has no leader"
	default:
		out.Error = "etcd did not answer in time"
	}
	return writeJSON(w, status, 0, out)
}
