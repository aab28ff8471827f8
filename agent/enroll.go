package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// Enrollment: `run` trades the appliance token (shared by the fleet, baked into images) for an
// instance token bound to its instance name, once, and keeps it in cache_dir. Its reports are
// then its own: the server takes an enrolled instance's reports from its instance token only,
// and rollouts count only enrolled instances. An agent that cannot enroll (an older server, a
// name still held, the server away) renders with the appliance token as before, says why, and
// tries again later. `once` never enrolls, and never reads or writes the instance token.
//
// The token in use is swapped under the client (enroller.wrap), so that neither the poller nor
// anything else that holds the client has to be restarted when it changes.

// enrollEvery is how often an agent that is not enrolled tries again (on a successful
// long-poll answer, so never while the server is away).
var enrollEvery = time.Minute

// enrollTimeout bounds one enrollment request; enrollStartTimeout the one made before the
// first render, which must not hold the render up for long when the server is away.
const (
	enrollTimeout      = 30 * time.Second
	enrollStartTimeout = 10 * time.Second
)

// InstanceTokenPath is the file where `run` keeps the instance token of appliance.
func InstanceTokenPath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".instance-token")
}

// EnrollKeyPath is the file where `run` keeps the enrollment key of appliance: a random
// secret sent with each enrollment (api.HeaderEnrollKey), written before the first, so that an
// enrollment whose answer was lost may be asked again and answered (see Server.enroll).
func EnrollKeyPath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".enroll-key")
}

// instanceToken is the content of the instance token file: the token, and what it is bound
// to, so that a changed appliance or instance name is not sent a token it does not know.
type instanceToken struct {
	Server    string    `json:"server"`
	Appliance string    `json:"appliance"`
	Instance  string    `json:"instance"`
	Token     string    `json:"token"`
	Enrolled  time.Time `json:"enrolled"`
	// Store is the store id of the server that enrolled it (its X-Shoelace-Store): another
	// address is sent the token only once its answer names this store.
	Store string `json:"store,omitempty"`
	// Others are the tokens of the other instance names the agent enrolled under, the last
	// used first: an instance: changed back finds its token, where enrolling again is refused
	// (the name is held, by this same enrollment key) until --instance-stale.
	Others []instanceToken `json:"others,omitempty"`
}

// tokens is every token of the file, it first, none with Others.
func (it instanceToken) tokens() []instanceToken {
	all := append([]instanceToken{it}, it.Others...)
	for i := range all {
		all[i].Others = nil
	}
	return all
}

// enrollRun is what enrollments of one Run share: they end with it.
type enrollRun struct {
	ctx context.Context
	wg  sync.WaitGroup
	// enrolled is called after each enrollment that succeeded (the reporter's resend).
	enrolled func()
	// tokenChanged is called after the token the requests carry changed (an enrollment, or an
	// instance token refused and dropped): the view the server serves may differ with it (an
	// instance forgotten and enrolled again is no longer of a running rollout's cohort).
	tokenChanged func()
}

// startEnrollment makes the agent enroll (Run calls it once, before the first render): the
// client is rebuilt to carry the instance token, read from cache_dir or obtained now. The
// returned function ends the enrollments in flight; call it when Run returns.
func (a *Agent) startEnrollment(ctx context.Context, enrolled, tokenChanged func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	run := &enrollRun{ctx: ctx, enrolled: enrolled, tokenChanged: tokenChanged}
	a.enrolling = run
	stop = func() {
		cancel()
		run.wg.Wait()
		a.enrolling = nil
	}
	c, e, err := a.newClient(a.cfg)
	if err != nil {
		// The config was loaded already; only a token file gone since can fail here.
		a.log.Warn("not enrolling", "error", err.Error())
		return stop
	}
	a.client, a.enroller = c, e
	e.start()
	return stop
}

// enroller holds the token the agent's requests carry, and enrolls.
type enroller struct {
	log    *slog.Logger
	run    *enrollRun
	path   string
	want   instanceToken  // server, appliance and instance the token must be bound to
	enroll *client.Client // with the appliance token, outside wrap

	tok atomic.Pointer[string] // the instance token; nil: the appliance token is sent
	// unbound is set while the token sent has no store id in the file yet (a file of an earlier
	// version): the first answer to it gives it.
	unbound atomic.Bool

	mu      sync.Mutex
	held    []instanceToken // tokens of another address, sent once an answer names their store
	busy    bool
	lastTry time.Time
	due     bool   // a try is armed for when enrollEvery has passed since lastTry
	lastWhy string // the failure last logged at warn
	why     string // the last enrollment's failure, "" once enrolled (status says it)
}

// newEnroller returns the enroller of cfg, holding the instance token of prev (the enroller
// of the config before a reload) or of the file when bound to the same appliance and instance.
func (a *Agent) newEnroller(cfg *Config, opts client.Options, prev *enroller) *enroller {
	e := &enroller{log: a.log, run: a.enrolling, path: InstanceTokenPath(cfg.cacheDir(), cfg.Appliance),
		want: instanceToken{Server: sameServer(cfg.Server), Appliance: cfg.Appliance, Instance: cfg.InstanceName()}}
	c, err := client.New(cfg.Server, opts)
	if err == nil {
		e.enroll = c
	}
	if prev != nil && prev.want.Server == e.want.Server && prev.want.Appliance == e.want.Appliance && prev.want.Instance == e.want.Instance {
		if tok := prev.tok.Load(); tok != nil {
			e.tok.Store(tok)
			return e
		}
	}
	e.load()
	return e
}

// load takes the instance token from the file when it is bound to the same server, appliance
// and instance. The token of the appliance and instance at another address is held until the
// first answer there (to the appliance token) names the store it was enrolled in (see adopt): a
// server of another store is never sent it.
func (e *enroller) load() {
	it, err := loadInstanceToken(e.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			e.log.Warn("instance token file not used", "error", err.Error())
		}
		return
	}
	for _, t := range it.tokens() {
		switch {
		case t.Appliance != e.want.Appliance || t.Instance != e.want.Instance || sendableToken(t.Token) != nil:
		case sameServer(t.Server) == e.want.Server:
			e.tok.Store(&t.Token)
			e.unbound.Store(t.Store == "")
			e.log.Info("using the instance token", "file", e.path, "instance", t.Instance, "enrolled", t.Enrolled)
			return
		case t.Store != "":
			e.held = append(e.held, t)
		}
	}
	if len(e.held) > 0 {
		e.log.Info("the instance token file names another server address: the token goes there once its answer names the token's store",
			"file", e.path, "server", e.held[0].Server, "store", e.held[0].Store, "instance", e.want.Instance)
		return
	}
	e.log.Info("the instance token file is for another server or instance: enrolling again", "file", e.path,
		"server", it.Server, "instance", it.Instance)
}

// adopt takes, after the first answer to the appliance token at this address, the held token
// whose store the answer names (store: its X-Shoelace-Store), and binds the file to this
// address. False when none is of that store: the agent enrolls here.
func (e *enroller) adopt(store string) bool {
	e.mu.Lock()
	held := e.held
	e.held = nil
	e.mu.Unlock()
	for _, t := range held {
		if store == "" || t.Store != store {
			continue
		}
		e.log.Info("the server's answer names the store of the instance token: using the token at this address",
			"file", e.path, "server", e.want.Server, "was", t.Server, "store", store, "instance", t.Instance)
		t.Server = e.want.Server
		if err := e.saveFirst(t); err != nil {
			e.log.Warn("instance token file not rewritten", "error", err.Error())
		}
		e.tok.Store(&t.Token)
		if e.run.enrolled != nil {
			e.run.enrolled()
		}
		if e.run.tokenChanged != nil {
			e.run.tokenChanged()
		}
		return true
	}
	return false
}

// bind writes store, the store id of the first answer to tok, into the file's entry of tok.
func (e *enroller) bind(tok, store string) {
	it, err := loadInstanceToken(e.path)
	if err != nil || store == "" {
		return
	}
	all := it.tokens()
	for i := range all {
		if all[i].Token == tok && all[i].Store == "" {
			all[i].Store = store
			if err := saveInstanceTokens(e.path, all); err != nil {
				e.log.Warn("instance token file not rewritten", "error", err.Error())
			}
			return
		}
	}
}

// start enrolls now, unless the token is known already (bounded by enrollStartTimeout).
func (e *enroller) start() {
	e.mu.Lock()
	if e.tok.Load() != nil || len(e.held) > 0 {
		e.mu.Unlock()
		return
	}
	e.busy, e.lastTry = true, time.Now()
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.run.ctx, enrollStartTimeout)
	defer cancel()
	e.try(ctx)
}

// later enrolls in the background unless enrolled, enrolling, or tried within enrollEvery (now
// skips that wait). A view answered within enrollEvery of the last try arms one for when it
// has passed: a stream, or a long-poll that waits, answers once for a minute or more, and the
// next answer would come later than enrollEvery says.
func (e *enroller) later(now bool) {
	if e.tok.Load() != nil || e.enroll == nil || e.run.ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	if e.busy || (!now && time.Since(e.lastTry) < enrollEvery) {
		if !e.busy && !e.due {
			e.due = true
			time.AfterFunc(enrollEvery-time.Since(e.lastTry), func() {
				e.mu.Lock()
				e.due = false
				e.mu.Unlock()
				e.later(false)
			})
		}
		e.mu.Unlock()
		return
	}
	e.busy, e.lastTry = true, time.Now()
	e.mu.Unlock()
	e.run.wg.Add(1)
	go func() {
		defer e.run.wg.Done()
		ctx, cancel := context.WithTimeout(e.run.ctx, enrollTimeout)
		defer cancel()
		e.try(ctx)
	}()
}

// try enrolls once; e.busy must be set, and is cleared.
func (e *enroller) try(ctx context.Context) {
	defer func() {
		e.mu.Lock()
		e.busy = false
		e.mu.Unlock()
	}()
	if e.enroll == nil {
		return
	}
	got, err := e.enroll.Enroll(ctx, e.want.Appliance, e.want.Instance, e.enrollKey())
	if err == nil {
		// Sent as it came, a token with a line break or a control character failed every
		// request in Go's client (read as a network failure), and the file kept it.
		err = sendableToken(got.Token)
	}
	// Enrolling is rare (at the first start, and when the token is lost): its connection would
	// otherwise stay open beside the agent's own until it idles out, one more per agent on the
	// server while a fleet starts.
	e.enroll.CloseIdleConnections()
	if err != nil {
		if e.run.ctx.Err() != nil {
			return
		}
		e.failed(err)
		return
	}
	it := e.want
	it.Token, it.Enrolled, it.Store = got.Token, got.Enrolled, got.Store
	if err := e.saveFirst(it); err != nil {
		// Used all the same; after a restart the name stays held until --instance-stale.
		e.log.Error("instance token not saved: a restart will not find it", "error", err.Error())
	}
	e.tok.Store(&it.Token)
	e.mu.Lock()
	e.lastWhy, e.why = "", ""
	e.mu.Unlock()
	e.log.Info("enrolled", "appliance", it.Appliance, "instance", it.Instance, "file", e.path)
	if e.run.enrolled != nil {
		e.run.enrolled()
	}
	if e.run.tokenChanged != nil {
		e.run.tokenChanged()
	}
}

// enrollKey is the agent's enrollment key, read from its file, or made and saved there before
// it is first sent. "" (no key: a lost answer leaves the name held until --instance-stale) when
// it cannot be saved.
func (e *enroller) enrollKey() string {
	path := EnrollKeyPath(filepath.Dir(e.path), e.want.Appliance)
	data, err := readPrivateFile(path, "enrollment key file")
	if key := strings.TrimSpace(string(data)); err == nil && len(key) == 64 && strings.Trim(key, "0123456789abcdef") == "" {
		return key
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.log.Warn("enrollment key file not used: making a new key", "error", err.Error())
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return ""
	}
	key := hex.EncodeToString(b[:])
	// Every enrollment would go without a key otherwise.
	removeSpecialFile(path)
	err = mkdirPrivate(filepath.Dir(path))
	if err == nil {
		_, err = atomicfile.Write(path, []byte(key+"\n"), ownFile(false))
	}
	if err != nil {
		e.log.Warn("enrollment key not saved: enrolling without one", "file", path, "error", err.Error())
		return ""
	}
	return key
}

// failed says why enrolling failed: at warn the first time and when the reason changes.
func (e *enroller) failed(err error) {
	why := err.Error()
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.HTTPStatus() {
		case http.StatusNotFound:
			why = "the server does not enroll instances (an older version)"
		case http.StatusConflict:
			why = "the server refused to enroll: " + ae.Message
		}
	}
	e.mu.Lock()
	e.why = why
	level := slog.LevelDebug
	if kind := reasonKind(why); kind != e.lastWhy {
		level, e.lastWhy = slog.LevelWarn, kind
	}
	e.mu.Unlock()
	e.log.Log(context.Background(), level, "not enrolled: rendering with the appliance token; will try again", "reason", why,
		"instance", e.want.Instance, "retry_every", enrollEvery.String())
}

// notEnrolled is why the last enrollment failed; "" when enrolled or never tried (e nil).
func (e *enroller) notEnrolled() string {
	if e == nil {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.why
}

// reasonKind is why without its digits: a reason that differs only in its times or counts
// (the holder's "last seen", "enrolled 3m0s ago") is the same reason, warned about once.
func reasonKind(why string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, why)
}

// refused drops the instance token tok, refused by the server (revoked, forgotten, taken
// over) for why (the server's word, "" when it gave none): back to the appliance token, and
// enroll again at once. It logs once per token: the requests in flight with it (a long-poll,
// a report) are refused too.
func (e *enroller) refused(tok *string, why string) {
	if !e.tok.CompareAndSwap(tok, nil) {
		return
	}
	if it, err := loadInstanceToken(e.path); err == nil {
		all := it.tokens()
		rest := slices.DeleteFunc(slices.Clone(all), func(t instanceToken) bool { return t.Token == *tok })
		if len(rest) < len(all) {
			err = saveInstanceTokens(e.path, rest)
		}
		if err != nil {
			e.log.Warn("instance token file not rewritten", "error", err.Error())
		}
	}
	if why == "" {
		why = "forgotten, revoked or taken over"
	}
	e.log.Warn("instance token refused: back to the appliance token; enrolling again", "reason", why, "instance", e.want.Instance)
	if e.run.tokenChanged != nil {
		e.run.tokenChanged()
	}
	e.later(true)
}

// wrap is the client's transport: it sends the instance token once there is one, drops it
// when refused, and after a successful view request without one tries to enroll.
func (e *enroller) wrap(base http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		tok := e.tok.Load()
		if tok != nil {
			req = req.Clone(req.Context())
			req.Header.Set("Authorization", "Bearer "+*tok)
		}
		res, err := base.RoundTrip(req)
		if err != nil {
			return res, err
		}
		switch {
		case tok != nil && res.StatusCode == http.StatusUnauthorized:
			e.refused(tok, refusal(res))
		case tok != nil && res.StatusCode == http.StatusOK && e.unbound.CompareAndSwap(true, false):
			e.bind(*tok, res.Header.Get(api.HeaderStore))
		case tok == nil && req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/v1/appliances/") &&
			(res.StatusCode == http.StatusOK || res.StatusCode == http.StatusNotModified):
			if !e.adopt(res.Header.Get(api.HeaderStore)) {
				e.later(false)
			}
		}
		return res, nil
	})
}

// refusal is the message of the error answer res (at most maxRefusalBytes of it are read), ""
// when it has none; res's body still reads whole after it.
func refusal(res *http.Response) string {
	if res.Body == nil {
		return ""
	}
	head, err := io.ReadAll(io.LimitReader(res.Body, maxRefusalBytes))
	res.Body = readCloser{io.MultiReader(bytes.NewReader(head), res.Body), res.Body}
	var eb api.ErrorBody
	if err != nil || json.Unmarshal(head, &eb) != nil || eb.Error == nil {
		return ""
	}
	return eb.Error.Message
}

// maxRefusalBytes bounds what refusal reads of an answer: the server's errors are short.
const maxRefusalBytes = 4 << 10

type readCloser struct {
	io.Reader
	io.Closer
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sameServer is server as the instance token is bound to it: written another way (a trailing
// slash, the scheme or host in capitals, the scheme's own port) it is the same server.
func sameServer(server string) string {
	u, err := url.Parse(server)
	if err != nil {
		return server
	}
	host := strings.ToLower(u.Host)
	if p := u.Port(); u.Scheme == "http" && p == "80" || u.Scheme == "https" && p == "443" {
		host = strings.TrimSuffix(host, ":"+p)
	}
	return u.Scheme + "://" + host + strings.TrimRight(u.Path, "/")
}

// sendableToken refuses an instance token the server answered that cannot be sent, or saved
// and read back: none, one over 1 KiB, one with a byte outside printable ASCII.
func sendableToken(tok string) error {
	if tok == "" || len(tok) > maxInstanceTokenBytes/4 {
		return fmt.Errorf("the server answered an instance token of %d bytes", len(tok))
	}
	if err := checkTokenChars(tok); err != nil {
		return fmt.Errorf("the instance token the server answered %v", err)
	}
	return nil
}

// maxInstanceTokenBytes bounds the instance token file.
const maxInstanceTokenBytes = 4 << 10

// loadInstanceToken reads the instance token file: a regular file of the agent's user, mode
// 0600 or stricter (a token others could read, or plant, is not used); os.ErrNotExist when
// there is none.
func loadInstanceToken(path string) (*instanceToken, error) {
	data, err := readPrivateFile(path, "instance token file")
	if err != nil {
		return nil, err
	}
	var it instanceToken
	if err := json.Unmarshal(data, &it); err != nil || it.Token == "" {
		return nil, fmt.Errorf("instance token file %s is not an instance token (%v)", path, err)
	}
	if err := sendableToken(it.Token); err != nil {
		return nil, fmt.Errorf("instance token file %s: %w", path, err)
	}
	return &it, nil
}

// readPrivateFile reads one of the agent's own small files in cache_dir (what names it in
// errors): a regular file of at most maxInstanceTokenBytes, owned by the agent's user, that
// group and others have no access to.
func readPrivateFile(path, what string) ([]byte, error) {
	// A link is not the agent's file (Windows opens through one: look first), and then the file
	// opened is judged (without following a link, nor blocking on a named pipe), not only the
	// look at the name: something else renamed over it in between was read, a pipe blocked.
	if fi, err := os.Lstat(path); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	data, _, err := atomicfile.ReadRegular(nil, path, maxInstanceTokenBytes+1, func(fi fs.FileInfo) error {
		if unixModes && fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s %s has mode %04o: group and others must not have access (0600)", what, path, fi.Mode().Perm())
		}
		if uid, _, ok := atomicfile.Owner(fi); ok && uid != os.Getuid() {
			return fmt.Errorf("%s %s is owned by uid %d, not by the agent's user (uid %d)", what, path, uid, os.Getuid())
		}
		return nil
	})
	var nr *atomicfile.NotRegularError
	switch {
	case errors.As(err, &nr):
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	case errors.Is(err, fs.ErrNotExist):
		return nil, err
	case err != nil && errors.As(err, new(*fs.PathError)):
		// A link at the name is not followed (ELOOP), as a link to another file is not taken.
		return nil, fmt.Errorf("%s %s: %w (not the agent's regular file?)", what, path, err)
	case err != nil:
		return nil, err
	}
	if len(data) > maxInstanceTokenBytes {
		return nil, fmt.Errorf("%s %s is over %d bytes", what, path, maxInstanceTokenBytes)
	}
	return data, nil
}

// removeSpecialFile removes a named pipe, socket or device at path, the name of one of the
// agent's own files in cache_dir: it is not the agent's file, and atomicfile does not rename
// over one, so that the file could never be saved.
func removeSpecialFile(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type()&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice) != 0 {
		_ = os.Remove(path)
	}
}

// saveFirst writes it as the instance token file's token, the tokens the file holds kept after
// it (saveInstanceToken drops those it replaces).
func (e *enroller) saveFirst(it instanceToken) error {
	if old, err := loadInstanceToken(e.path); err == nil {
		it.Others = old.tokens()
	}
	return saveInstanceToken(e.path, it)
}

// saveInstanceTokens writes all as the instance token file, the first its token and the rest
// its Others; none removes the file.
func saveInstanceTokens(path string, all []instanceToken) error {
	if len(all) == 0 {
		return os.Remove(path)
	}
	all[0].Others = all[1:]
	return saveInstanceToken(path, all[0])
}

// saveInstanceToken writes the instance token file atomically, mode 0600, with the tokens of
// it.Others of its appliance's other instance names, less the oldest of them while the file
// would pass maxInstanceTokenBytes.
func saveInstanceToken(path string, it instanceToken) error {
	it.Others = slices.DeleteFunc(it.Others, func(o instanceToken) bool {
		// A name's token of another store (its server elsewhere too) is kept: back there, it is
		// sent again.
		return o.Appliance != it.Appliance || o.Token == "" || o.Token == it.Token ||
			o.Instance == it.Instance && (o.Store == it.Store || sameServer(o.Server) == sameServer(it.Server))
	})
	// A restart would not find the token otherwise, and the name stays held until
	// --instance-stale.
	removeSpecialFile(path)
	if err := mkdirPrivate(filepath.Dir(path)); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	data, err := json.Marshal(it)
	for err == nil && len(data) > maxInstanceTokenBytes && len(it.Others) > 0 {
		it.Others = it.Others[:len(it.Others)-1]
		data, err = json.Marshal(it)
	}
	if err != nil {
		return err
	}
	if _, err := atomicfile.Write(path, data, ownFile(false)); err != nil {
		return fmt.Errorf("write instance token: %w", err)
	}
	return nil
}
