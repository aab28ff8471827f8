// Package agent renders an appliance's view into local files: it loads and validates the
// agent's config, fetches the view over HTTP (internal/client), renders each template
// (templates), installs the output (internal/atomicfile), runs checks and commands, and in
// `run` long-polls for changes, keeping a last-known-good copy of the view in cache_dir.
// It never imports etcd or gRPC.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	"github.com/shoelace-dev/shoelace/templates"
)

// Options are the agent's run-time settings that are not in its config file.
type Options struct {
	// Logger receives the agent's logs; nil means slog.Default().
	Logger *slog.Logger
	// ConfigPath is reloaded on Reload and on edits of templates_dir; empty disables reloads.
	ConfigPath string
	// ConfdDir, when set, overrides the config's confd_dir at every reload (--confdir).
	ConfdDir string
	// Reload, when not nil, asks Run to reload its config (wire SIGHUP to it).
	Reload <-chan struct{}
	// UserAgent is sent with every request.
	UserAgent string
	// Notify reports service state (systemd's sd_notify); nil functions are skipped.
	Notify Notifier
	// Version is the agent's version, sent with its reports.
	Version string
}

// Notifier reports service state, such as to systemd.
type Notifier struct {
	Ready, Reloading, Stopping func() error
	Status                     func(string) error
}

// Agent renders one appliance's templates.
type Agent struct {
	cfg      *Config
	opts     Options
	log      *slog.Logger
	client   *client.Client
	instance string
	tmpls    []*tmpl

	applied atomic.Int64 // last revision at which every template was in place
	// appliedRollout is the rollout of the view at applied ("" for the live view); Run's only.
	appliedRollout string
	// reportsTaken is set once the server took a report (report.go), cleared when it refuses
	// one: until then the long-polls carry what is applied (poll.go).
	reportsTaken atomic.Bool
	metrics      metrics
	persist      *persister // set while Run runs
	// dirSyncs, while Run runs, holds the directories of installed files whose fsync waits
	// (run.go: pass); nil: each install fsyncs its directory.
	dirSyncs *atomicfile.DirSyncs
	// spares is set while Run runs: each file installed keeps a spare beside it for the next
	// change (atomicfile.Options.Spare). once has no next change, and leaves none (a template's
	// image baked with once stays as its files).
	spares bool
	// recordOwed is set while Run runs: commands owed for installed files are recorded in
	// cache_dir (owed.go), which owed mirrors.
	recordOwed bool
	// candidatesUnsaved says that a template's cand changed since the candidate record was
	// last written (setCandidate): the pass writes it once (flushCandidates).
	candidatesUnsaved bool
	// failures counts the failures recorded by passes (tmpl.failedAt).
	failures uint64
	owed     []owedCommand
	// enrolling is set while Run runs (enroll.go): it bounds the enrollments, which enroller,
	// made by configure, tries.
	enrolling *enrollRun
	enroller  *enroller
	// release gives memory back to the system after a burst of render passes (group.go).
	releaseMu sync.Mutex
	release   *time.Timer
}

// New parses every template of cfg (which must be validated) and returns an agent.
// Every template error is reported, one per line.
func New(cfg *Config, opts Options) (*Agent, error) {
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	if err := a.configure(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// configure builds the client and parses the templates of cfg.
func (a *Agent) configure(cfg *Config) error {
	tmpls, err := parseAll(cfg)
	if err != nil {
		return err
	}
	c, e, err := a.newClient(cfg)
	if err != nil {
		return err
	}
	a.cfg, a.client, a.tmpls, a.instance, a.enroller = cfg, c, tmpls, cfg.InstanceName(), e
	return nil
}

// newClient builds the client of cfg's server, with its token; while Run runs, with an
// enroller that swaps in the instance token once enrolled (enroll.go).
func (a *Agent) newClient(cfg *Config) (*client.Client, *enroller, error) {
	tok, err := cfg.LoadToken()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	ua := a.opts.UserAgent
	if ua == "" {
		ua = "shoelace-agent"
	}
	opts := client.Options{Token: tok, CAFile: cfg.CAFile, UserAgent: ua}
	var e *enroller
	if a.enrolling != nil {
		e = a.newEnroller(cfg, opts, a.enroller)
		opts.Wrap = e.wrap
	}
	c, err := client.New(cfg.Server, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	return c, e, nil
}

func parseAll(cfg *Config) ([]*tmpl, error) {
	var errs []string
	out := make([]*tmpl, 0, len(cfg.Templates))
	for i := range cfg.Templates {
		tc := &cfg.Templates[i]
		t, err := parseTemplate(tc)
		if err != nil && tc.confdDir != "" {
			// A confd resource whose template cannot be read or parsed fails alone, as in confd
			// (Config.Unparsed): at every render, with err.
			t = templates.Unparsed(templates.Options{Name: tc.Source, Functions: tc.Functions}, err)
		} else if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out = append(out, &tmpl{cfg: tc, t: t, allowed: cfg.checkInstall})
	}
	if len(errs) > 0 {
		return nil, &ConfigError{Problems: errs}
	}
	return out, nil
}

// UnparsedMessage is the log line of a confd resource whose template could not be read or
// parsed (Config.Unparsed), at start and at each reload.
const UnparsedMessage = "confd resource's template cannot be read or parsed: it fails at every render, and the other templates render, as in confd"

// Unparsed lists the problems of confd resources whose template could not be read or parsed
// (Config.Unparsed): `validate` fails on them; once and run render the other templates.
func (a *Agent) Unparsed() []string { return slices.Clone(a.cfg.Unparsed) }

// Warnings lists what `validate` should point out without failing: an inline token others can
// read, no template at all, files of templates_dir that are not read, templates whose output
// changes on every render.
func (a *Agent) Warnings() []string {
	var w []string
	if tw := a.cfg.TokenWarning(); tw != "" {
		w = append(w, tw)
	}
	if d, why := unwritableWay(a.cfg.cacheDir()); why != "" {
		// run saves nothing there: "cache not saved" at every pass, no last-known-good view to
		// render when the server is away, no undo of a rollout's candidate after a restart.
		where, who, other := "is on a read-only file system", "the agent", ""
		if why == "denied" {
			uid := os.Geteuid()
			where = fmt.Sprintf("is not writable by uid %d, who runs validate", uid)
			who = fmt.Sprintf("an agent run as uid %d", uid)
			other = " (if the agent runs as another user, run validate as that user)"
		}
		w = append(w, fmt.Sprintf("%s: cache_dir %s: %s %s: %s saves there neither its last-known-good view (it logs \"cache not saved\" at every pass, and has none to render when the server is away) nor its status and undo records%s",
			a.cfg.Path, a.cfg.CacheDir, d, where, who, other))
	}
	if len(a.tmpls) == 0 {
		w = append(w, fmt.Sprintf("%s: no templates configured (in templates:, in *.yaml files of templates_dir or in confd_dir's conf.d): once, run and render refuse to start", a.cfg.Path))
	}
	w = append(w, a.cfg.TemplatesDirWarnings()...)
	w = append(w, a.cfg.Notes...)
	// A confd resource that finds no key in the last view the agent cached renders from nothing,
	// as confd does with nothing under its prefix: a prefix not imported yet, or mistyped.
	cached, _ := LoadCache(a.cfg.cacheDir(), a.cfg.Appliance)
	for _, t := range a.tmpls {
		if cached != nil && t.cfg.Prefix != "" {
			if empty, relative := t.t.ConfdEmpty(templates.Data{Keys: cached.Keys}); empty && relative {
				w = append(w, fmt.Sprintf("%s: prefix %s: the resource finds none of its keys in the view cached at revision %d, read as one imported with --prefix %s (paths relative to it): it renders from nothing, as confd does with nothing under its prefix",
					t.cfg.where(), t.cfg.Prefix, cached.Revision, t.cfg.Prefix))
			} else if empty {
				w = append(w, fmt.Sprintf("%s: prefix %s holds none of the resource's keys in the view cached at revision %d, imported with --prefix / (other prefixes hold keys there): it renders from nothing, as confd does with nothing under its prefix",
					t.cfg.where(), t.cfg.Prefix, cached.Revision))
			}
		}
		if fns := t.t.Nondeterministic(); len(fns) > 0 {
			w = append(w, fmt.Sprintf("%s: uses %s, whose output changes on every render: the file is rewritten and its command runs on every change of the view",
				t.cfg.where(), strings.Join(fns, ", ")))
		}
		for _, tw := range t.t.Warnings() {
			w = append(w, fmt.Sprintf("%s: %s", t.cfg.where(), tw))
		}
		if fi, err := os.Stat(t.cfg.Destination); err == nil && !fi.Mode().IsRegular() {
			// once and run fail on it at every pass (render --dry says so too).
			w = append(w, fmt.Sprintf("%s: destination %s is %s, not a regular file: every render of it will fail until it is moved away",
				t.cfg.where(), t.cfg.Destination, atomicfile.TypeName(fi.Mode())))
		} else if p, fi := notADirOnTheWay(t.cfg.Destination); fi != nil {
			// The install cannot make its directory there (a typo: /etc/app.conf/x).
			w = append(w, fmt.Sprintf("%s: destination %s: %s is %s, not a directory: every render of it will fail until it is moved away",
				t.cfg.where(), t.cfg.Destination, p, atomicfile.TypeName(fi.Mode())))
		} else if t.cfg.confdDirMissing() {
			// A confd resource's directory is not made, as confd made none.
			w = append(w, fmt.Sprintf("%s: the directory of dest %s does not exist, and confd makes none: every render of it will fail until it is created",
				t.cfg.where(), t.cfg.Destination))
		} else if err := linkOnTheWay(t.cfg.Destination); err != nil {
			// A link another user owns, at the destination or on its way, or another user's
			// directory on its way where others may write: the install refuses it at every pass.
			w = append(w, fmt.Sprintf("%s: destination %s: %v: every render of it will fail until then",
				t.cfg.where(), t.cfg.Destination, err))
		} else if d := readOnlyWay(t.cfg.Destination); d != "" {
			// Every install that changes the file fails there (one that writes nothing does not).
			w = append(w, fmt.Sprintf("%s: destination %s: %s is on a read-only file system: every change of it will fail to install until it is writable",
				t.cfg.where(), t.cfg.Destination, d))
		}
		if fi, err := os.Stat(t.cfg.Destination); err == nil && fi.Mode().IsRegular() && fi.Mode()&specialBits != 0 {
			// An install gives the permission bits alone (perms, or the file's own): the next one
			// drops these, silently; consul-template kept them.
			w = append(w, fmt.Sprintf("%s: destination %s has mode %s: an install never gives setuid, setgid or sticky bits, and the next one leaves it %04o",
				t.cfg.where(), t.cfg.Destination, unixMode(fi.Mode()), cmp.Or(t.cfg.Mode().Perm(), fi.Mode().Perm())))
		}
		if fi, err := os.Lstat(t.cfg.Destination + ".bak"); t.cfg.Backup && err == nil && fi.IsDir() {
			// The backup is renamed to that name: over a directory, every install fails.
			w = append(w, fmt.Sprintf("%s: backup keeps the previous content as %s.bak, which is a directory: every install of it will fail until it is moved away",
				t.cfg.where(), t.cfg.Destination))
		}
		for _, c := range []struct{ name, command string }{{"check", t.cfg.Check}, {"command", t.cfg.Command}, {"health", t.cfg.Health}} {
			if p := shellVarProblem(cmp.Or(t.cfg.Shell, shells[0]), c.command); p != "" {
				w = append(w, fmt.Sprintf("%s: %s: %s", t.cfg.where(), c.name, p))
			}
			if p := unsetVarProblem(c.name, c.command); p != "" {
				w = append(w, fmt.Sprintf("%s: %s: %s", t.cfg.where(), c.name, p))
			}
		}
		for _, fn := range t.t.Functions() {
			if fn == "revision" {
				w = append(w, fmt.Sprintf("%s: uses revision: the file is rewritten and its command runs whenever any key of the view changes, not only the keys it reads",
					t.cfg.where()))
			}
		}
	}
	return w
}

// notADirOnTheWay returns the nearest existing directory of p's way (links followed) when it is
// not a directory, with what it is; nil when it is one (or nothing on the way exists).
func notADirOnTheWay(p string) (string, os.FileInfo) {
	for q := filepath.Dir(p); ; q = filepath.Dir(q) {
		if fi, err := os.Stat(q); err == nil {
			if fi.IsDir() {
				return "", nil
			}
			return q, fi
		}
		if filepath.Dir(q) == q {
			return "", nil
		}
	}
}

// linkOnTheWay is the error of following the symbolic links of p, or of the longest part of it
// that exists, as an install of p follows them (atomicfile.EvalLinksToCreate: on Unix, only links
// owned by root or the agent's user; a link at p that leads to no file yet is followed to it),
// or of a directory on that way that the install refuses (on Unix, another user's in one others
// may write: *atomicfile.ForeignDirError), or nil.
func linkOnTheWay(p string) error {
	for q := p; ; q = filepath.Dir(q) {
		if _, err := os.Lstat(q); err == nil {
			_, err := atomicfile.EvalLinksToCreate(q)
			return err
		}
		if filepath.Dir(q) == q {
			return nil
		}
	}
}

// Templates returns the number of parsed templates.
func (a *Agent) Templates() int { return len(a.tmpls) }

func (a *Agent) selectStage(stage string) ([]*tmpl, error) {
	if stage != "" && stage != StageSystem && stage != StageApplication {
		return nil, fmt.Errorf("stage %q must be %q or %q", stage, StageSystem, StageApplication)
	}
	var sel []*tmpl
	for _, t := range a.tmpls {
		if stage == "" || t.cfg.Stage == stage {
			sel = append(sel, t)
		}
	}
	if len(sel) == 0 {
		if stage == "" {
			return nil, a.noTemplates()
		}
		return nil, fmt.Errorf("%s: no templates with stage %q (of %d configured)", a.cfg.Path, stage, len(a.tmpls))
	}
	return sel, nil
}

// fetch reads the view now.
func (a *Agent) fetch(ctx context.Context) (*view, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, meta, err := a.client.View(ctx, a.cfg.Appliance)
	if err != nil {
		if hint := configHint(err); hint != "" {
			return nil, fmt.Errorf("fetch view of %s from %s: %w: %s", a.cfg.Appliance, a.client.Addr(), err, hint)
		}
		return nil, fmt.Errorf("fetch view of %s from %s: %w", a.cfg.Appliance, a.client.Addr(), err)
	}
	if len(v.Keys) == 0 {
		return nil, fmt.Errorf("fetch view of %s from %s: the view has no keys", a.cfg.Appliance, a.client.Addr())
	}
	if v.Appliance != "" && v.Appliance != a.cfg.Appliance {
		return nil, fmt.Errorf("fetch view of %s from %s: the server answered with the view of %q", a.cfg.Appliance, a.client.Addr(), v.Appliance)
	}
	if err := checkKeys(v.Keys); err != nil {
		return nil, fmt.Errorf("fetch view of %s from %s: the server answered a view holding a key that breaks the key rules: %w", a.cfg.Appliance, a.client.Addr(), err)
	}
	if err := checkSize(&v); err != nil {
		return nil, fmt.Errorf("fetch view of %s from %s: the server answered a view of %w", a.cfg.Appliance, a.client.Addr(), err)
	}
	if err := checkRollout(v.Rollout); err != nil {
		return nil, fmt.Errorf("fetch view of %s from %s: the server answered a view whose %w", a.cfg.Appliance, a.client.Addr(), err)
	}
	rev := v.Revision
	if rev == 0 {
		rev = meta.Index
	}
	return &view{Store: meta.Store, Revision: rev, Keys: v.Keys, Rollout: v.Rollout}, nil
}

// Once fetches a fresh view (never the cache, and writes none), renders the templates of
// stage ("" for all) and returns nil only when every one of them is in place. Selecting no
// template is an error. A failed reload whose files were restored is an error; one whose new
// files were kept (on_command_failure: keep, or a first install) is logged, not returned:
// its files are in place.
func (a *Agent) Once(ctx context.Context, stage string, noCommands bool) error {
	sel, err := a.selectStage(stage)
	if err != nil {
		return err
	}
	v, err := a.fetch(ctx)
	if err != nil {
		a.putStatus(a.fetchFailedStatus(err))
		return err
	}
	if st, err := LoadStatus(a.cfg.cacheDir(), a.cfg.Appliance); err == nil && st.Rollout != "" && v.Rollout == "" {
		// once sends no instance token: it gets the live view, not the candidate that run
		// installed, and puts the live view's files over the candidate's.
		a.log.Warn("this instance runs the candidate of a rollout (shoelace-agent status): once installs the live view over its files; the rollout still counts this instance as running the candidate, and run installs the candidate again at its next view",
			"rollout", st.Rollout, "revision", v.Revision)
	}
	start := time.Now()
	// Said when it comes, since the reloads it lets finish may take their whole timeouts.
	said := context.AfterFunc(ctx, func() {
		msg := "interrupted: no more templates are rendered; the files already installed still get their reload commands, each within its timeout"
		if noCommands {
			msg = "interrupted: no more templates are rendered"
		}
		a.log.Warn(msg)
	})
	res := a.renderPass(ctx, v, sel, true, noCommands)
	said()
	a.logPass(v, res, time.Since(start))
	if stage != "" {
		a.confirmOthers(v, sel)
	}
	// What `status` shows; the view itself is never cached by once. Its applied revision is the
	// view's when every template of the config (not only those of stage) is in place and the pass
	// failed nothing with its commands run, as run's is: status said "applied 0" after a once
	// that installed everything (a VM image baked with once showed it as never applied).
	applied := a.applied.Load()
	if !noCommands && a.failing() == 0 {
		applied = v.Revision
	}
	a.putStatus(a.status(v, res, applied))
	var missing []string
	for _, f := range res.failures {
		if !f.inPlace {
			missing = append(missing, f.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d templates not in place at revision %d: %s", len(missing), len(sel), v.Revision, strings.Join(missing, "; "))
	}
	if !res.ok() {
		a.log.Warn("all templates in place, but a reload failed", "templates", len(sel), "revision", v.Revision, "error", res.failures[0].String())
		return nil
	}
	a.log.Info("all templates in place", "templates", len(sel), "rendered", len(res.rendered), "revision", v.Revision, "stage", stage)
	return nil
}

// fetchFailedStatus is what status shows after a once that could not fetch the view, or a run
// whose first sync failed with no cached view to render: the last record (its files were left
// as they were) with err as its last error, so that a failed bake step does not show as the
// success before it, nor a running agent as one that has not run.
func (a *Agent) fetchFailedStatus(err error) *Status {
	s, lerr := LoadStatus(a.cfg.cacheDir(), a.cfg.Appliance)
	if lerr != nil || s.Appliance != a.cfg.Appliance {
		s = &Status{Appliance: a.cfg.Appliance}
		for _, t := range a.tmpls {
			s.Templates = append(s.Templates, TemplateStatus{Destination: t.name(), Error: "no view to render it from yet"})
		}
	}
	// Not the last run's refusal of enrollment: this run's, if any.
	s.Instance, s.Updated, s.LastError, s.NotEnrolled = a.instance, time.Now().UTC(), err.Error(), a.enroller.notEnrolled()
	return s
}

// confirmOthers records as in place at v the templates that once did not select (another
// stage's) whose files already hold what they render from v, with the mode and owner they ask
// for: installed by an earlier once of their stage (another process, which knew nothing of
// them here), they are in place, and a bake of system then application applies the view.
func (a *Agent) confirmOthers(v *view, sel []*tmpl) {
	data := v.data(a)
	for _, t := range a.tmpls {
		if slices.Contains(sel, t) || t.inPlace {
			continue
		}
		r, err := t.t.Execute(data)
		if err != nil {
			continue
		}
		if same, err := atomicfile.Unchanged(t.cfg.Destination, r.Output, t.installOptions()); err == nil && same {
			t.inPlace, t.revision = true, v.Revision
		}
	}
}

// describeFetchError says what a failed request means for the log, and the Retry-After it carried.
func describeFetchError(err error) (msg string, retryAfter time.Duration) {
	if hint := configHint(err); hint != "" {
		return hint + "; keeping files", 0
	}
	var ae *api.Error
	switch {
	case errors.Is(err, client.ErrAnswerTooLarge):
		return "server sent an answer over the client's bound (256 MiB); keeping files", 0
	case errors.Is(err, client.ErrAnswerNotUTF8):
		return "server sent an answer that is not UTF-8, which no Shoelace server sends; keeping files", 0
	case errors.Is(err, client.ErrAnswerTooManyEntries):
		return "server sent an answer over the client's bound (1,000,000 JSON entries); keeping files", 0
	case errors.Is(err, client.ErrViewTooLarge):
		return "server sent a delta that would grow the view past the client's bound (1,000,000 keys); keeping files", 0
	case errors.As(err, new(*client.AnswerError)):
		return "server answered what is not a Shoelace answer (another service at the address?); keeping files", 0
	case client.IsTransport(err):
		return "server unreachable; keeping files", 0
	case errors.As(err, &ae):
		ra := time.Duration(ae.RetryAfter) * time.Second
		switch {
		case ae.Status == http.StatusNotFound:
			return "appliance not found on the server (no keys of its own); keeping files", ra
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return "server refused the token; keeping files", ra
		case ae.Status >= 500 || ae.Status == http.StatusTooManyRequests:
			return "server unavailable; keeping files", ra
		}
		return "server refused the request; keeping files", ra
	}
	return "view request failed; keeping files", 0
}

// configHint says what to change in the config when err cannot go away by itself, however
// long the agent retries: the server's certificate does not verify, or server: says https to a
// plain HTTP server or http to an HTTPS one. "" when it may (a refused connection, a timeout).
func configHint(err error) string {
	switch client.Misconfigured(err) {
	case client.CertHostname:
		return "the server's certificate does not name the host in server: use a name it does"
	case client.CertUntrusted:
		return "the server's certificate does not verify: set ca_file in the agent's config to the CA that signed it"
	case client.PlainHTTPServer:
		return "the server speaks plain HTTP: write server: http://…"
	case client.HTTPSServer:
		return "the server speaks HTTPS: write server: https://…"
	case client.Redirected:
		return "the server redirects to another address, which the agent does not follow (its token would go there): if the server moved, write its new address in server:"
	case client.WriteRedirected:
		return "the server redirects the agent's reports or enrollment, which a Shoelace server never does: write in server: the address that serves its API, not a proxy's that redirects"
	}
	return ""
}

// noTemplates is the error of once, run and render without a template: it says where the
// agent looked, templates_dir and confd_dir included, set or not.
func (a *Agent) noTemplates() error {
	where := []string{"templates: is empty"}
	for _, d := range []struct{ name, dir, holds string }{
		{"templates_dir", a.cfg.TemplatesDir, "*.yaml file"},
		{"confd_dir", a.cfg.ConfdDir, "conf.d/*.toml resource"},
	} {
		if d.dir == "" {
			where = append(where, d.name+" is not set")
		} else {
			where = append(where, fmt.Sprintf("%s %q holds no %s", d.name, d.dir, d.holds))
		}
	}
	return fmt.Errorf("%s: no templates configured: %s", a.cfg.Path, strings.Join(where, ", "))
}

// specialBits are the mode bits that an install never gives.
const specialBits = os.ModeSetuid | os.ModeSetgid | os.ModeSticky

// unixMode is m's permission and special bits in octal, as chmod takes them (2755).
func unixMode(m os.FileMode) string {
	u := uint32(m.Perm())
	for _, b := range []struct {
		mode os.FileMode
		bit  uint32
	}{{os.ModeSetuid, 0o4000}, {os.ModeSetgid, 0o2000}, {os.ModeSticky, 0o1000}} {
		if m&b.mode != 0 {
			u |= b.bit
		}
	}
	return fmt.Sprintf("%04o", u)
}
