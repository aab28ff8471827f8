package api

import "time"

// Release kinds: which kind of write made a release.
const (
	KindPut      = "put"
	KindDelete   = "delete"
	KindTxn      = "txn"
	KindApply    = "apply"
	KindRollback = "rollback"
	KindImport   = "import"
	// KindRollout is the start of a staged rollout: its changes are those the candidate would
	// make to the live tree, which it leaves as it is (the promotion is a release of its own).
	KindRollout = "rollout"
)

// HeaderRollback marks an apply as the rollback of its appliance to the revision it names (the
// CLI's `appliance rollback` sets it): its release has kind rollback and says what it undid.
const HeaderRollback = "X-Shoelace-Rollback"

// RollbackBodyBytes is the largest apply body a rollback sends, the CLI's and the console's:
// the tree of one whose body would be larger goes without a body, and the server restores the
// tree at the revision as it reads it (servers before that refuse such a rollback, 400, nothing
// written). Below it, a rollback is the same apply for servers of every version.
const RollbackBodyBytes = 1 << 20

// HeaderImport marks a txn as an import (`shoelace import` sets it): its release has kind import.
const HeaderImport = "X-Shoelace-Import"

// Release is the record every successful write leaves under the server's system keys, written
// in the write's own transaction. Revision is the record's mod_revision: the write's revision.
// Values are never in it, only key names.
type Release struct {
	Revision int64     `json:"revision"`
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Token    string    `json:"token"`
	Remote   string    `json:"remote,omitempty"`
	Message  string    `json:"message,omitempty"`
	Source   string    `json:"source,omitempty"`
	Kind     string    `json:"kind"`
	// RollbackTo is, for a rollback, the revision whose state it restored.
	RollbackTo int64 `json:"rollback_to,omitempty"`
	// Rollout is, for a rollout's start, its id.
	Rollout string `json:"rollout,omitempty"`
	// Changes has one entry per appliance touched, one for shared/, one for other keys.
	Changes []ReleaseChange `json:"changes"`
	// Copy is the appliance whose whole tree, as applied, the release keeps (apply, rollback).
	Copy string `json:"copy,omitempty"`
	// CopyBytes is the size of the copy, counted against the retention's byte limit.
	CopyBytes int64 `json:"copy_bytes,omitempty"`
	// CopySkipped says why an apply or rollback kept no copy (a tree too large to keep).
	CopySkipped string `json:"copy_skipped,omitempty"`
}

// Release change scopes.
const (
	ScopeAppliance = "appliance"
	ScopeShared    = "shared"
	ScopeOther     = "other"
)

// ReleaseChange is what a release did to one scope: key names (full paths) created, changed
// (another value) and deleted, and how many of each. A put of a key's own value is in none.
// A list holds at most MaxReleaseNames names (the first, sorted); the counts are whole.
type ReleaseChange struct {
	Scope        string   `json:"scope"`
	Appliance    string   `json:"appliance,omitempty"`
	Created      []string `json:"created,omitempty"`
	Changed      []string `json:"changed,omitempty"`
	Deleted      []string `json:"deleted,omitempty"`
	CreatedCount int      `json:"created_count"`
	ChangedCount int      `json:"changed_count"`
	DeletedCount int      `json:"deleted_count"`
}

// MaxReleaseNames bounds each list of key names in a release record.
const MaxReleaseNames = 1000

// Touches reports whether the release changed appliance name's own keys (or, with shared,
// those of shared/).
func (r Release) Touches(name string, shared bool) bool {
	for _, c := range r.Changes {
		if c.Scope == ScopeAppliance && c.Appliance == name || shared && c.Scope == ScopeShared {
			return true
		}
	}
	return r.Copy == name
}

// Counts returns how many keys the release created, changed and deleted in all.
func (r Release) Counts() (created, changed, deleted int) {
	for _, c := range r.Changes {
		created += c.CreatedCount
		changed += c.ChangedCount
		deleted += c.DeletedCount
	}
	return created, changed, deleted
}

// Releases is the body of GET /v1/releases and GET /v1/appliances/{name}/releases: newest
// first; Next, when set, is the before= of the next page.
type Releases struct {
	Revision int64     `json:"revision"`
	Releases []Release `json:"releases"`
	Next     int64     `json:"next,omitempty"`
}

// ReleaseCopy is the tree of an appliance as an apply or rollback left it, kept with its
// release. Secret values are never in Keys: they are in Sealed, encrypted (AES-GCM, base64 of
// nonce and ciphertext) with the server's key KeyID, or, without a key, named in Omitted.
type ReleaseCopy struct {
	Appliance string            `json:"appliance"`
	Keys      map[string]string `json:"keys"`
	Sealed    map[string]string `json:"sealed,omitempty"`
	KeyID     string            `json:"key_id,omitempty"`
	Omitted   []string          `json:"omitted,omitempty"`
}

// KeyHistory is the body of GET /v1/kv/{key}?history: the key's values while etcd's history has
// them, then the releases that touched it (showing that key only), both newest first.
type KeyHistory struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"`
	Versions []KV   `json:"versions"`
	// Compacted says etcd's history ends before the oldest version shown.
	Compacted bool `json:"compacted"`
	// Cut says older versions were left out: those shown hold the server's bound of values
	// (4 MiB; the newest version is always shown).
	Cut      bool      `json:"cut,omitempty"`
	Releases []Release `json:"releases"`
}
