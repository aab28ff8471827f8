package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// Cached is the last-known-good view kept in cache_dir.
type Cached struct {
	Appliance string            `json:"appliance"`
	Store     string            `json:"store"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys"`
	// Rollout names the rollout whose candidate the view was ("" for the live view).
	Rollout string    `json:"rollout,omitempty"`
	Saved   time.Time `json:"saved"`
}

// view is the cached view, to render from.
func (c *Cached) view() *view {
	return &view{Store: c.Store, Revision: c.Revision, Keys: c.Keys, Rollout: c.Rollout, FromCache: true}
}

// ownFile is how the agent writes its own files in cache_dir (the view with its secrets, the
// status, the owed commands): mode 0600, owned by the agent whoever owned the file before, and
// a symbolic link planted at the name replaced, not followed. Whoever could write cache_dir
// must not make the agent write a secret where it can read it, or clobber another file.
func ownFile(noSync bool) atomicfile.Options {
	return atomicfile.Options{Perm: 0o600, UID: os.Getuid(), GID: os.Getgid(), NoFollow: true, NoSync: noSync}
}

// CachePath is the file holding the last-known-good view of appliance.
func CachePath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".json")
}

// StatusPath is the file where `run` records its state for `status`.
func StatusPath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".status.json")
}

// cacheNames are the names of an appliance's files in cache_dir after its own name; the
// first three's stems are names after another appliance's (web.status.json is web's status).
var cacheNames = []string{".status.json", ".candidate.json", ".owed.json", ".json", ".instance-token", ".enroll-key"}

// cacheClash returns why appliance's agent may not keep its files in cacheDir: it holds a file
// of another appliance whose files there share names with appliance's (web.status keeps its view
// as web.status.json, web's status; web.candidate and web.owed alike), and the two agents would
// overwrite each other's. Both names are valid appliance names, so only the files tell.
func cacheClash(cacheDir, appliance string) error {
	if api.ValidateSegment("appliance name", appliance) != nil {
		return nil // said apart
	}
	clash := func(f, other string) error {
		return fmt.Errorf("holds %s, a file of appliance %s, whose files there would share names with this one's (one's view is the other's status, candidate or owed record): the agents of two such appliances need a cache_dir each (or remove %[2]s's files if its agent is gone)", f, other)
	}
	for _, n := range cacheNames[:3] {
		stem := strings.TrimSuffix(n, ".json")
		for _, other := range [2]string{appliance + stem, strings.TrimSuffix(appliance, stem)} {
			if other == appliance {
				continue // appliance does not end in stem
			}
			for _, m := range cacheNames {
				f := other + m
				if own(f, appliance) {
					continue // appliance's own file
				}
				if _, err := os.Lstat(cacheDir + "/" + f); err == nil {
					return clash(f, other)
				}
			}
			// One name is both the view of the longer of the two and the status (candidate,
			// owed) record of the shorter: what it holds tells whose it is, when it is the
			// only file of the other there (once leaves its status alone).
			if f := max(other, appliance) + ".json"; recordOf(cacheDir+"/"+f) == other { // the longer: one is the other and stem
				return clash(f, other)
			}
		}
	}
	return nil
}

// recordOf returns the appliance that the record (view, status, candidate, owed) at path names
// in its first member, as the agent writes them; "" for none. Only a regular file is read, and
// only its beginning: a FIFO planted at the name (which the agent replaces when it saves there)
// would block an open that waits for a writer, and the agent would never start.
func recordOf(path string) string {
	data, _, err := atomicfile.ReadRegular(nil, path, recordHead, nil)
	if err != nil {
		return ""
	}
	var name string
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	if t, err := d.Token(); err != nil || t != "appliance" {
		return ""
	}
	if d.Decode(&name) != nil {
		return ""
	}
	return name
}

// recordHead is how much of a record recordOf reads: its first member, an appliance's name,
// is within it.
const recordHead = 4096

// own says that f is the name of one of appliance's files in cache_dir.
func own(f, appliance string) bool {
	for _, n := range cacheNames {
		if f == appliance+n {
			return true
		}
	}
	return false
}

// SaveCache writes the view atomically, mode 0600 (it may hold secrets).
func SaveCache(cacheDir string, c Cached) error {
	if err := mkdirPrivate(cacheDir); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode cache: %w", err)
	}
	path := CachePath(cacheDir, c.Appliance)
	if _, err := atomicfile.Write(path, data, ownFile(false)); err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	return nil
}

// maxCacheBytes bounds the agent's own files in cache_dir that LoadCache and loadOwed read:
// a view is at most what one answer of the server holds (client.MaxAnswerBytes, 256 MiB), and
// the cache encodes it as the server did; a larger file is not one the agent wrote (a corrupted
// or sparse file), and is refused by its size, unread.
const maxCacheBytes = 2 * client.MaxAnswerBytes

// LoadCache reads the cached view of appliance; os.ErrNotExist when there is none.
// A cache that is unreadable, for another appliance or without keys is an error.
func LoadCache(cacheDir, appliance string) (*Cached, error) {
	path := CachePath(cacheDir, appliance)
	data, err := readOwnFile(path)
	if err != nil {
		return nil, err
	}
	var c Cached
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("cache %s: %w", path, err)
	}
	if c.Appliance != appliance {
		return nil, fmt.Errorf("cache %s holds appliance %q, not %q", path, c.Appliance, appliance)
	}
	if len(c.Keys) == 0 {
		return nil, fmt.Errorf("cache %s holds no keys", path)
	}
	for k := range c.Keys {
		if err := api.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("cache %s: %w", path, err)
		}
	}
	if err := checkRollout(c.Rollout); err != nil {
		return nil, fmt.Errorf("cache %s: %w", path, err)
	}
	return &c, nil
}

// Status is what `run` last did, as `status` shows it.
type Status struct {
	Appliance string    `json:"appliance"`
	Instance  string    `json:"instance"`
	Updated   time.Time `json:"updated"`
	Store     string    `json:"store"`
	Revision  int64     `json:"revision"`
	Applied   int64     `json:"applied"`
	Rollout   string    `json:"rollout,omitempty"` // the rollout of the view at Revision
	FromCache bool      `json:"from_cache,omitempty"`
	// NotEnrolled is why run's last enrollment failed (its requests carry the appliance token).
	NotEnrolled string    `json:"not_enrolled,omitempty"`
	LastSync    time.Time `json:"last_sync,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// CacheError is why run could not save the view in cache_dir (its last-known-good view is
	// older, or there is none); "" once it saved one.
	CacheError string           `json:"cache_error,omitempty"`
	Templates  []TemplateStatus `json:"templates"`
}

// TemplateStatus is one template's state.
type TemplateStatus struct {
	Destination string `json:"destination"`
	InPlace     bool   `json:"in_place"`
	Revision    int64  `json:"revision,omitempty"`
	Error       string `json:"error,omitempty"`
}

// maxStatusBytes bounds the status file that LoadStatus reads: a line per template.
const maxStatusBytes = 16 << 20

// LoadStatus reads the status file of appliance.
func LoadStatus(cacheDir, appliance string) (*Status, error) {
	// status reads the config without judging it (it runs nothing): its cache_dir may be
	// anyone's, and a named pipe or a device at the status file's name must not hang it.
	data, err := atomicfile.ReadInput(StatusPath(cacheDir, appliance), maxStatusBytes)
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("status file: %w", err)
	}
	return &s, nil
}

// saveStatus replaces the status file atomically but without fsync: it is rewritten on every
// pass (the first one at start), so a crash may cost its last update, nothing more.
func saveStatus(cacheDir string, s *Status) error {
	if err := mkdirPrivate(cacheDir); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cache dir: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.Write(StatusPath(cacheDir, s.Appliance), data, ownFile(true))
	return err
}

// readOwnFile reads one of the agent's own files in cache_dir: a regular file (a link planted
// at its name is not followed), owned by the agent's user and not writable by group or others.
// Another user's file there is not the agent's: a view planted by whoever could write there
// would be rendered, as root, when the server is away.
func readOwnFile(path string) ([]byte, error) { return readOwnFileMax(path, maxCacheBytes) }

// readOwnFileMax is readOwnFile of a file of at most limit bytes.
func readOwnFileMax(path string, limit int64) ([]byte, error) {
	// Read by atomicfile.ReadRegular, and judged by its handle: a file swapped in at the name
	// after a by-name check would be read instead.
	data, fi, err := atomicfile.ReadRegular(nil, path, limit+1, func(fi fs.FileInfo) error {
		if unixModes && fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s has mode %04o: group or others may write it", path, fi.Mode().Perm())
		}
		if uid, _, ok := atomicfile.Owner(fi); ok && uid != os.Getuid() {
			return fmt.Errorf("%s is owned by uid %d, not by the agent's user (uid %d)", path, uid, os.Getuid())
		}
		if fi.Size() > limit {
			return fmt.Errorf("%s holds %d bytes, over %d MiB: not a file the agent wrote", path, fi.Size(), limit>>20)
		}
		return nil
	})
	if pe := (*fs.PathError)(nil); err != nil && !errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe) && pe.Op == "open" {
		return nil, fmt.Errorf("%s: %w (not the agent's regular file?)", path, err)
	}
	if err == nil && unixModes && fi.Mode().Perm()&0o077 != 0 {
		// Readable by group or others (an older version's file, or one copied or restored by
		// hand): what the agent keeps holds the appliance's secrets. An unchanged view is
		// never written again, so it is set to 0600 now.
		if changed, cerr := atomicfile.Restrict(path, fi, 0o600); cerr != nil {
			slog.Warn("a file in cache_dir is readable by group or others and could not be set to 0600", "file", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "error", cerr.Error())
		} else if changed {
			slog.Warn("a file in cache_dir was readable by group or others: set to 0600", "file", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
	}
	return data, err
}
