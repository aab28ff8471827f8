package api

import "time"

// HTTP headers of the protocol.
const (
	HeaderIndex     = "X-Shoelace-Index"      // revision a response was read or written at
	HeaderStore     = "X-Shoelace-Store"      // id of the store; changes when it is replaced or restored
	HeaderInstance  = "X-Shoelace-Instance"   // an agent's instance name (default: hostname)
	HeaderApplied   = "X-Shoelace-Applied"    // last revision at which all of an agent's templates were installed
	HeaderMessage   = "X-Shoelace-Message"    // a write's message, for the release record
	HeaderSource    = "X-Shoelace-Source"     // a write's source, such as a pipeline id
	HeaderRequestID = "X-Shoelace-Request-Id" // request id, echoed and logged
	// HeaderEnrollKey is an agent's enrollment key, sent with its enrollment: the same key may
	// enroll its instance again while the instance token it got was never used (its answer
	// was lost).
	HeaderEnrollKey = "X-Shoelace-Enroll-Key"
)

// ContentTypeYAML is the content type of YAML appliance bodies.
const ContentTypeYAML = "application/yaml"

// KV is one key as GET /v1/kv/{key} answers it.
type KV struct {
	Key            string `json:"key"`
	Value          string `json:"value"`
	ModRevision    int64  `json:"mod_revision"`
	CreateRevision int64  `json:"create_revision"`
	Version        int64  `json:"version"`
}

// List answers GET /v1/kv/{prefix}?recurse. With &keys, Keys holds the names and Entries is empty.
type List struct {
	Revision int64    `json:"revision"`
	Entries  []KV     `json:"entries,omitempty"`
	Keys     []string `json:"keys,omitempty"`
}

// WriteResult answers a write.
type WriteResult struct {
	Revision int64 `json:"revision"`
	// Unchanged: an apply found the appliance holding exactly its keys and wrote nothing;
	// Revision is then the newest mod_revision among the keys of the appliance's view (what
	// its agents report once they have it).
	Unchanged bool `json:"unchanged,omitempty"`
}

// SchemaResult answers PUT /v1/appliances/{name}/schema. Warning, when set, says that the
// appliance's keys as they are break the new schema (its next write must fix them).
type SchemaResult struct {
	Revision int64  `json:"revision"`
	Warning  string `json:"warning,omitempty"`
}

// ApplyPlan answers PUT /v1/appliances/{name}?dry_run: what the apply would do to the store as
// it is at Revision, which it leaves as it is. Keys are full keys, sorted.
type ApplyPlan struct {
	Revision  int64    `json:"revision"`
	DryRun    bool     `json:"dry_run"`
	Put       []string `json:"put"`     // keys the apply would create
	Changed   []string `json:"changed"` // keys whose value it would change
	Deleted   []string `json:"deleted"` // keys it would delete
	Unchanged int      `json:"unchanged"`
	// Old and New are the values of the keys the apply would touch, before and after (secret
	// values as "(secret)"): Old for changed and deleted keys, New for created and changed ones.
	Old map[string]string `json:"old,omitempty"`
	New map[string]string `json:"new,omitempty"`
}

// MaskedSecret stands for a secret's value where it is not shown.
const MaskedSecret = "(secret)"

// DeleteResult answers DELETE /v1/kv/{key}.
type DeleteResult struct {
	Revision int64 `json:"revision"`
	Deleted  int64 `json:"deleted"`
}

// Op is one operation of a transaction: "put" (Key, Value) or "delete" (Key, Recurse).
type Op struct {
	Op      string `json:"op"`
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"`
	Recurse bool   `json:"recurse,omitempty"`
}

// Op kinds.
const (
	OpPut    = "put"
	OpDelete = "delete"
)

// Guard holds a transaction only while Key's mod_revision is ModRevision (0: the key must not exist).
type Guard struct {
	Key         string `json:"key"`
	ModRevision int64  `json:"mod_revision"`
}

// Txn is the body of POST /v1/txn.
type Txn struct {
	Ops    []Op    `json:"ops"`
	Guards []Guard `json:"guards,omitempty"`
}

// Appliances answers GET /v1/appliances.
type Appliances struct {
	Appliances []string `json:"appliances"`
}

// View is an appliance's view: shared/ overlaid by appliances/<name>/, read at one revision,
// keyed by paths relative to those roots.
type View struct {
	Appliance string            `json:"appliance"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys"`
	// Rollout, when set, says that this is the candidate view of that rollout (the instance is
	// in its cohort); agents send it back with what they applied.
	Rollout string `json:"rollout,omitempty"`
}

// Apply is the body of PUT /v1/appliances/{name} and the output of appliance export.
type Apply struct {
	Keys map[string]string `json:"keys"`
}

// TokenRequest is the body of POST /v1/tokens: a name and exactly one kind of grant — an
// appliance (what its agents need: read its view, report their status), read and/or write key
// prefixes (whole segments), or admin (everything, token management included).
type TokenRequest struct {
	Name      string   `json:"name"`
	Appliance string   `json:"appliance,omitempty"`
	Read      []string `json:"read,omitempty"`
	Write     []string `json:"write,omitempty"`
	Admin     bool     `json:"admin,omitempty"`
}

// TokenInfo describes a token without its secret (GET /v1/tokens).
type TokenInfo struct {
	TokenRequest
	Created  time.Time  `json:"created"`
	LastUsed *time.Time `json:"last_used,omitempty"` // on the replica that answered
	// Instance, for an instance token (listed with ?all), is the instance of Appliance it is
	// bound to.
	Instance string `json:"instance,omitempty"`
}

// TokenCreated answers POST /v1/tokens; Token is the secret, shown only this once.
type TokenCreated struct {
	TokenInfo
	Token    string `json:"token"`
	Revision int64  `json:"revision"`
}

// TokenList answers GET /v1/tokens: a page of the tokens by name. Next, when set, is the
// after= of the next page (the name the page ended at).
type TokenList struct {
	Revision int64       `json:"revision,omitempty"`
	Tokens   []TokenInfo `json:"tokens"`
	Next     string      `json:"next,omitempty"`
}

// Instance is what an agent last reported (X-Shoelace-Instance and X-Shoelace-Applied on its
// view requests), as GET /v1/appliances/{name}/instances lists it.
type Instance struct {
	Appliance string    `json:"appliance"`
	Instance  string    `json:"instance"`
	Applied   int64     `json:"applied"` // last revision at which all its templates were installed
	LastSeen  time.Time `json:"last_seen"`
	Remote    string    `json:"remote"`
	Token     string    `json:"token"`
	// Rollout names the rollout whose candidate Applied was of ("" for the live view).
	Rollout string `json:"rollout,omitempty"`
	// Error is the last failure reported (POST .../report), at ErrorRevision, in ErrorStage;
	// cleared by a report of a pass without one.
	Error         string `json:"error,omitempty"`
	ErrorRevision int64  `json:"error_revision,omitempty"`
	ErrorStage    string `json:"error_stage,omitempty"`
	ErrorRollout  string `json:"error_rollout,omitempty"`
	Version       string `json:"version,omitempty"` // the agent's version, as it reported it
	// Enrolled is set for an instance that holds an instance token (shoelace-agent run enrolls):
	// only enrolled instances are drawn into rollout cohorts and counted by their gates.
	Enrolled   bool       `json:"enrolled,omitempty"`
	EnrolledAt *time.Time `json:"enrolled_at,omitempty"`
	// EnrolledRevision is the revision at which its instance token was written by the
	// enrollment (the server's own: never stored in the record nor listed, which the token's
	// record says); 0 when not known. A rollout's gates judge by it.
	EnrolledRevision int64 `json:"-"`
}

// Instances answers GET /v1/appliances/{name}/instances.
type Instances struct {
	Appliance string     `json:"appliance"`
	Instances []Instance `json:"instances"`
}
