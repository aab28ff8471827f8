package server

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Defaults of Config.
const (
	DefaultListen         = "127.0.0.1:7400"
	DefaultRateLimit      = 100
	DefaultMaxWaiters     = 10000
	DefaultWait           = 55 * time.Second
	DefaultMaxWait        = 10 * time.Minute
	DefaultAdminTokenFile = "admin.token"
	// DefaultMaxSchemaBytes is the default of MaxSchemaBytes.
	DefaultMaxSchemaBytes = 64 << 10
	// DefaultMaxBodyExtra is added to MaxValueBytes to bound txn and apply bodies by default.
	DefaultMaxBodyExtra = 4 << 20
	// MaxMaxValueBytes is the most --max-value-bytes may be: a value etcd can store (bbolt holds
	// less than 2 GiB), and the sizes derived from it (a body, the embedded etcd's request
	// limit, twice the value and more) within an int.
	MaxMaxValueBytes = 1 << 30
	// DefaultHeaderTimeout bounds reading a request's headers (slow clients are cut off).
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds reading a request's body.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle that long.
	DefaultIdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's headers; over it the answer is 431.
	MaxHeaderBytes = 64 << 10
	// DefaultMaxConns caps a replica's open connections when the file limit allows it: 10,000
	// long-polling agents plus room for pipelines, probes and reconnects. Below that, the cap is
	// the file limit less a reserve for the store (see Config.MaxConns).
	DefaultMaxConns = 15000
	// DefaultMaxConnsPerAddr caps the connections of one client address that have not yet
	// presented a valid token.
	DefaultMaxConnsPerAddr = 1024
	// DefaultUnauthIdleTimeout closes keep-alive connections that never presented a valid token
	// once idle that long (authenticated ones keep DefaultIdleTimeout).
	DefaultUnauthIdleTimeout = 5 * time.Second
	// DefaultUI serves the web console at /ui/.
	DefaultUI = true
)

// Defaults of Config's limits per token.
const (
	// DefaultTokenRateLimit (0) derives an agent token's ceiling from RateLimit; see tokenRateLimit.
	DefaultTokenRateLimit = 0
	// DefaultMaxInstances fits a fleet of 10,000 VMs on one token, with room for as many
	// replaced VMs whose records have not expired yet.
	DefaultMaxInstances = 20000
	// DefaultInstanceStale is how long an enrolled instance may stay silent before another
	// agent may enroll under its name.
	DefaultInstanceStale = time.Hour
	// DefaultMaxWaitersPerToken (0) caps a token's long-polls only by its fair share when the
	// replica is full.
	DefaultMaxWaitersPerToken = 0
)

// Config is the server's configuration; cmd/shoelace fills it from flags.
type Config struct {
	// Listen is the address to serve HTTP(S) on.
	Listen string
	// EtcdEndpoints of an external cluster; empty means an embedded etcd in DataDir.
	EtcdEndpoints []string
	// DataDir holds the embedded etcd's data.
	DataDir string
	// EtcdListen, when set, is the loopback host:port where the embedded etcd serves its client
	// API (for etcdctl and tools that read etcd); empty: a unix socket only the server's user may
	// reach (see store.EmbedConfig.PrivateSocket).
	EtcdListen string
	// Root is the etcd prefix of all of Shoelace's keys.
	Root string
	// TLSCert and TLSKey, when both set, serve HTTPS.
	TLSCert, TLSKey string
	// EtcdCACert, EtcdCert and EtcdKey configure TLS to an external etcd.
	EtcdCACert, EtcdCert, EtcdKey string
	// RateLimit is requests per second per token and replica, per token and instance for agent
	// tokens (0 = every rate limit off, TokenRateLimit included).
	RateLimit float64
	// TokenRateLimit is the ceiling of an agent token's requests per second on a replica, all its
	// instances together (0 = max(10 × RateLimit, 1,000)); its burst is 10 seconds' worth.
	TokenRateLimit float64
	// MaxInstances caps the instance names of one token: those it uses on a replica at once
	// (names unseen for 10 minutes are forgotten; over it, 429; off with the rate limits) and
	// its instance records in the store (a report of one more is not recorded).
	MaxInstances int
	// InstanceStale is how long an instance may go unseen and still count as part of the fleet:
	// drawn into rollout cohorts, and keeping its enrolled name (another enrollment of the name
	// is refused with 409 until it has been neither seen nor enrolled for that long).
	InstanceStale time.Duration
	// MaxValueBytes is the largest value accepted.
	MaxValueBytes int
	// MaxSchemaBytes is the largest appliance schema accepted: compiling one takes time that
	// grows faster than its size (a 1 MiB schema took 12 s of CPU).
	MaxSchemaBytes int
	// MaxBodyBytes bounds a txn or apply body (0 = MaxValueBytes + 4 MiB).
	MaxBodyBytes int
	// MaxTxnOps is the most operations a txn or apply may hold.
	MaxTxnOps int
	// AdminTokenFile receives the admin token created on first start ("" = <DataDir>/admin.token).
	AdminTokenFile string
	// MaxWaiters caps open long-polls; over it requests get 503 with Retry-After, except a
	// token under its fair share (MaxWaiters ÷ tokens with long-polls), which takes the place
	// of a long-poll of the token that holds the most.
	MaxWaiters int
	// MaxWaitersPerToken caps one token's open long-polls (0 = only the fair share when full).
	MaxWaitersPerToken int
	// DefaultWait and MaxWait bound a long-poll's wait= parameter.
	DefaultWait, MaxWait time.Duration
	// LogLevel is debug, info, warn or error (used by cmd/shoelace to build the logger).
	LogLevel string
	// Version is reported by /v1/status and the build info metric.
	Version string
	// HeaderTimeout and BodyTimeout bound reading a request's headers and its body
	// (0 = DefaultHeaderTimeout, DefaultBodyTimeout).
	HeaderTimeout, BodyTimeout time.Duration
	// clientLines is how many log lines a second clients without a valid token or over a rate
	// limit may make (0 = clientLinesPerSecond; see lineBudget). Tests lower it.
	clientLines float64
	// MaxConns caps open client connections (0 = DefaultMaxConns); it is lowered to fit under
	// the process's file limit (RLIMIT_NOFILE) less a reserve of descriptors for the store, so
	// that a flood of connections is refused instead of starving etcd. Over it, a new
	// connection is closed at once (after a 503 on plain HTTP).
	MaxConns int
	// MaxConnsPerAddr caps the open connections of one client address that have not yet
	// presented a valid token (0 = no per-address cap).
	MaxConnsPerAddr int
	// UnauthIdleTimeout closes an idle keep-alive connection that has not presented a valid
	// token (0 = the same idle timeout as authenticated connections).
	UnauthIdleTimeout time.Duration
	// ProxyProtocolFrom are the load balancers whose connections may start with a PROXY
	// protocol header (v1 or v2) naming the client (see proxyListener): the client's address
	// is then the one rate limits, connection caps and logs use. Empty: no header is read.
	ProxyProtocolFrom []netip.Prefix
	// ReleaseRetention is how many releases are kept (the newest); ReleaseMaxAge how long at
	// most (0 = no age limit). Pruning runs in the background, never in a write.
	ReleaseRetention int
	ReleaseMaxAge    time.Duration
	// ReleaseMaxBytes bounds the bytes of the releases kept, records and copies, newest first
	// (0 = no byte limit).
	ReleaseMaxBytes int64
	// MinFreeDisk is the free space the embedded etcd's file system must keep for writes to
	// be taken (0 = no check): etcd stops the server when a write of its data fails.
	MinFreeDisk int64
	// SecretsKeyFile holds the AES-256 key that seals secret values in release copies ("" =
	// secret values are left out of the copies). Every replica must have the same key.
	SecretsKeyFile string
	// UI serves the web console at /ui/ (false: /ui/ is 404).
	UI bool
	// Reload, when not nil, makes Serve read the TLS certificate and key again each time it
	// receives (a pair that fails to load keeps the old one). Run wires SIGHUP to it when nil.
	Reload <-chan struct{}

	// beatEvery is the time between replica beats (0 = replicaBeat). Tests whose faults must
	// meet only the requests they make keep the beat out of their window with a long one.
	beatEvery time.Duration
}

// DefaultConfig returns the configuration of a server started without flags.
func DefaultConfig() Config {
	// TokenRateLimit and MaxWaitersPerToken default to 0 (derived, and fair share only).
	return Config{
		Listen:         DefaultListen,
		DataDir:        store.DefaultDataDir,
		Root:           store.DefaultRoot,
		RateLimit:      DefaultRateLimit,
		MaxInstances:   DefaultMaxInstances,
		InstanceStale:  DefaultInstanceStale,
		MaxValueBytes:  api.DefaultMaxValueBytes,
		MaxSchemaBytes: DefaultMaxSchemaBytes,
		MaxTxnOps:      store.DefaultMaxTxnOps,
		MaxWaiters:     DefaultMaxWaiters,
		DefaultWait:    DefaultWait,
		MaxWait:        DefaultMaxWait,
		LogLevel:       "info",
		Version:        "dev",

		MaxConnsPerAddr:   DefaultMaxConnsPerAddr,
		UnauthIdleTimeout: DefaultUnauthIdleTimeout,
		ReleaseRetention:  DefaultReleaseRetention,
		ReleaseMaxAge:     DefaultReleaseMaxAge,
		ReleaseMaxBytes:   DefaultReleaseMaxBytes,
		MinFreeDisk:       store.DefaultMinFreeDisk,
		UI:                DefaultUI,
	}
}

// Validate checks cfg and says which setting is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen must not be empty"))
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q is not host:port: %w", c.Listen, err))
	}
	if len(c.EtcdEndpoints) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must be set when --etcd-endpoints is empty (embedded etcd)"))
	}
	if c.EtcdListen != "" {
		if err := checkEtcdListen(c.EtcdListen); err != nil {
			errs = append(errs, err)
		} else if len(c.EtcdEndpoints) > 0 {
			errs = append(errs, errors.New("--etcd-listen serves the embedded etcd: it cannot be used with --etcd-endpoints"))
		}
	}
	if slices.ContainsFunc(c.EtcdEndpoints, func(e string) bool { return strings.TrimSpace(e) == "" }) {
		// Once, however many (--etcd-endpoints , said it twice).
		errs = append(errs, errors.New("--etcd-endpoints has an empty entry"))
	}
	for _, e := range c.EtcdEndpoints {
		if strings.TrimSpace(e) != "" {
			if err := checkEtcdEndpoint(e); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.Root == "" || !strings.HasPrefix(c.Root, "/") || !strings.HasSuffix(c.Root, "/") {
		errs = append(errs, fmt.Errorf("root prefix %q must start and end with '/'", c.Root))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key must be given together"))
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		errs = append(errs, errors.New("--etcd-cert and --etcd-key must be given together"))
	}
	if len(c.EtcdEndpoints) == 0 && (c.EtcdCACert != "" || c.EtcdCert != "") {
		errs = append(errs, errors.New("--etcd-cacert/--etcd-cert/--etcd-key need --etcd-endpoints"))
	}
	// Written so that NaN fails too (every comparison with it is false: it passed "< 0" and
	// turned every rate limit off), and an infinity, which is no rate.
	if !(c.RateLimit >= 0) || math.IsInf(c.RateLimit, 1) {
		errs = append(errs, fmt.Errorf("--rate-limit %v must be a number >= 0 (0 = off)", c.RateLimit))
	}
	if !(c.TokenRateLimit >= 0) || math.IsInf(c.TokenRateLimit, 1) {
		errs = append(errs, fmt.Errorf("--token-rate-limit %v must be a number >= 0 (0 = max(10 × --rate-limit, 1000))", c.TokenRateLimit))
	}
	if c.MaxInstances <= 0 {
		errs = append(errs, fmt.Errorf("--max-instances %d must be > 0", c.MaxInstances))
	}
	if c.InstanceStale <= 0 {
		errs = append(errs, fmt.Errorf("--instance-stale %s must be > 0", c.InstanceStale))
	}
	if c.MaxSchemaBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-schema-bytes %d must be > 0", c.MaxSchemaBytes))
	}
	if c.MaxValueBytes <= 0 || c.MaxValueBytes > MaxMaxValueBytes {
		errs = append(errs, fmt.Errorf("--max-value-bytes %d must be > 0 and at most %d (1 GiB)", c.MaxValueBytes, MaxMaxValueBytes))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes %d must be >= 0", c.MaxBodyBytes))
	}
	if c.MaxTxnOps <= 0 {
		errs = append(errs, fmt.Errorf("max txn ops %d must be > 0", c.MaxTxnOps))
	}
	if c.MaxWaiters <= 0 {
		errs = append(errs, fmt.Errorf("--max-long-polls %d must be > 0", c.MaxWaiters))
	}
	if c.MaxWaitersPerToken < 0 {
		errs = append(errs, fmt.Errorf("--max-long-polls-per-token %d must be >= 0 (0 = fair share only)", c.MaxWaitersPerToken))
	}
	if c.DefaultWait <= 0 || c.MaxWait <= 0 || c.DefaultWait > c.MaxWait {
		errs = append(errs, fmt.Errorf("long-poll waits must satisfy 0 < default (%s) <= max (%s)", c.DefaultWait, c.MaxWait))
	}
	if c.HeaderTimeout < 0 || c.BodyTimeout < 0 {
		errs = append(errs, fmt.Errorf("header timeout %s and body timeout %s must be >= 0 (0 = default)", c.HeaderTimeout, c.BodyTimeout))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("--max-conns %d must be >= 0 (0 = %d, lowered to fit the file limit)", c.MaxConns, DefaultMaxConns))
	}
	if c.MaxConnsPerAddr < 0 {
		errs = append(errs, fmt.Errorf("--max-conns-per-addr %d must be >= 0 (0 = no per-address cap)", c.MaxConnsPerAddr))
	}
	if c.UnauthIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--unauth-idle-timeout %s must be >= 0 (0 = the idle timeout of authenticated connections)", c.UnauthIdleTimeout))
	}
	if c.ReleaseRetention <= 0 {
		errs = append(errs, fmt.Errorf("--release-retention %d must be > 0", c.ReleaseRetention))
	}
	if c.ReleaseMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("--release-max-bytes %d must be >= 0 (0 = no byte limit)", c.ReleaseMaxBytes))
	}
	if c.MinFreeDisk < 0 {
		errs = append(errs, fmt.Errorf("--min-free-disk %d must be >= 0 (0 = no check)", c.MinFreeDisk))
	}
	if c.ReleaseMaxAge < 0 {
		errs = append(errs, fmt.Errorf("--release-max-age %s must be >= 0 (0 = no age limit)", c.ReleaseMaxAge))
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ParseLogLevel parses --log-level: debug, info, warn or error ("" = info).
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q must be debug, info, warn or error", s)
}

func (c Config) adminTokenFile() string {
	if c.AdminTokenFile != "" {
		return c.AdminTokenFile
	}
	return filepath.Join(c.DataDir, DefaultAdminTokenFile)
}

// tokenRateLimit is the ceiling of an agent token's requests per second (0: rate limits off).
// Derived, it is 10 × RateLimit and at least 1,000: a fleet of 10,000 agents long-polling every
// 55 s makes about 180 requests/s on one replica, and the burst (10 s worth) lets a change that
// wakes all of them at once through.
func (c Config) tokenRateLimit() float64 {
	switch {
	case c.RateLimit <= 0:
		return 0
	case c.TokenRateLimit > 0:
		return c.TokenRateLimit
	}
	return max(10*c.RateLimit, 1000)
}

func (c Config) headerTimeout() time.Duration {
	if c.HeaderTimeout > 0 {
		return c.HeaderTimeout
	}
	return DefaultHeaderTimeout
}

func (c Config) bodyTimeout() time.Duration {
	if c.BodyTimeout > 0 {
		return c.BodyTimeout
	}
	return DefaultBodyTimeout
}

func (c Config) maxBodyBytes() int64 {
	if c.MaxBodyBytes > 0 {
		return int64(c.MaxBodyBytes)
	}
	return int64(c.MaxValueBytes) + DefaultMaxBodyExtra
}

// bodyLimit names the limit of txn and apply bodies for error messages.
func (c Config) bodyLimit() string {
	if c.MaxBodyBytes > 0 {
		return fmt.Sprintf("%d bytes", c.MaxBodyBytes)
	}
	return fmt.Sprintf("%d bytes (--max-value-bytes plus 4 MiB)", c.maxBodyBytes())
}

func (c Config) storeConfig(log *slog.Logger) store.Config {
	minFree := c.MinFreeDisk
	if minFree == 0 {
		minFree = -1 // no check; the store's 0 is its default
	}
	return store.Config{
		Endpoints:     c.EtcdEndpoints,
		DataDir:       c.DataDir,
		EtcdListen:    etcdListenAddr(c.EtcdListen),
		Root:          c.Root,
		CACert:        c.EtcdCACert,
		Cert:          c.EtcdCert,
		Key:           c.EtcdKey,
		MaxValueBytes: c.MaxValueBytes,
		MaxTxnOps:     c.MaxTxnOps,
		MinFreeDisk:   minFree,
		Logger:        log,
	}
}

// checkEtcdListen checks --etcd-listen: host:port on a loopback address. The embedded etcd has
// no access control of its own: on any other address it would hand the whole store, tokens and
// secrets included, to whoever reaches the port.
func checkEtcdListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--etcd-listen %q is not host:port: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--etcd-listen %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && !strings.EqualFold(host, "localhost") {
		return fmt.Errorf("--etcd-listen %q must be a loopback address such as 127.0.0.1:2379: the embedded etcd has no access control of its own", addr)
	}
	return nil
}

// etcdListenAddr is the address --etcd-listen addr (checked) has etcd listen on: localhost's is
// 127.0.0.1, not whatever the name resolves to.
func etcdListenAddr(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && strings.EqualFold(host, "localhost") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// checkEtcdEndpoint refuses an --etcd-endpoints entry that etcd's client can never dial: the
// server would start, retry it for ever and answer 503 to every request that needs the store,
// a typo seen only in its logs. Taken: http(s)://host[:port], host:port, unix(s)://path.
func checkEtcdEndpoint(e string) error {
	bad := func(why string) error {
		return fmt.Errorf("--etcd-endpoints entry %q %s: give URLs such as https://etcd-1.internal:2379, comma-separated", e, why)
	}
	if strings.ContainsFunc(e, unicode.IsSpace) {
		return bad("has white space")
	}
	badPort := func(port string) error {
		if !api.ValidPort(port) {
			return bad("has the port " + strconv.Quote(port) + ", not a number from 1 to 65535")
		}
		return nil
	}
	scheme, rest, ok := strings.Cut(e, "://")
	if !ok {
		host, port, err := net.SplitHostPort(e)
		if err != nil || host == "" || port == "" {
			return bad("is neither a URL nor host:port")
		}
		return badPort(port)
	}
	switch scheme {
	case "unix", "unixs":
		if rest == "" {
			return bad("names no socket")
		}
		return nil
	case "http", "https":
	default:
		return bad("has the scheme " + strconv.Quote(scheme) + ", not http or https")
	}
	u, err := url.Parse(e)
	if err == nil && u.User != nil {
		// Not e itself: the error is printed, and the password must not be.
		return fmt.Errorf("--etcd-endpoints entry %q has a user or password, which etcd's client does not send (it authenticates with --etcd-cert/--etcd-key) and the server would log: leave them out", u.Redacted())
	}
	if err != nil || u.Hostname() == "" {
		return bad("names no host")
	}
	if u.Port() != "" || strings.HasSuffix(u.Host, ":") {
		return badPort(u.Port())
	}
	return nil
}
