package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/server"
	"github.com/shoelace-dev/shoelace/server/store"
)

func snapshotCommand(e *cliEnv) *cli.Command {
	def := server.DefaultConfig()
	return &cli.Command{
		Name:      "snapshot",
		Usage:     "save an etcd snapshot of the store, or restore one into a new data dir",
		UsageText: "shoelace snapshot save FILE | shoelace snapshot restore FILE --data-dir DIR | shoelace snapshot restored FILE --etcd-endpoints URLS",
		Description: `"snapshot save" asks the server for an etcd snapshot of the whole store (an admin token);
"snapshot restore" makes a new embedded store from one, for a server started on its data dir;
"snapshot restored" records, on an external etcd cluster that etcdutl restored from one, what
"snapshot restore" records on the store it makes.
Run "shoelace snapshot COMMAND --help" for each command's flags.

EXAMPLES:
   shoelace snapshot save /var/backups/shoelace.db
   shoelace snapshot restore /var/backups/shoelace.db --data-dir /var/lib/shoelace-restored
   shoelace snapshot restored /var/backups/shoelace.db --etcd-endpoints https://etcd1:2379 --etcd-cacert ca.pem`,
		Subcommands: []*cli.Command{
			{
				Name:      "save",
				Usage:     "save an etcd snapshot of the whole store to FILE (admin only)",
				ArgsUsage: "FILE",
				UsageText: "shoelace snapshot save FILE",
				Description: `Streams an etcd snapshot from the server (GET /v1/snapshot) into FILE, written with mode
0600 through a temporary file and a rename: the snapshot holds every secret. The snapshot's
integrity is checked before the rename (etcd ends it with the SHA-256 of its content): a
truncated or corrupted stream saves nothing. Prints the file, its size and the revision it was
taken at. --timeout bounds each wait for the server (the answer to start, each pause in it),
not the whole stream, which may take minutes for a large store across a slow link.

EXAMPLES:
   shoelace snapshot save /var/backups/shoelace-$(date +%F).db`,
				Action: e.snapshotSave,
			},
			{
				Name:      "restore",
				Usage:     "create an embedded store in --data-dir from a snapshot FILE",
				ArgsUsage: "FILE",
				UsageText: "shoelace snapshot restore FILE --data-dir DIR [--root PREFIX]",
				Description: `Creates the embedded etcd of a new data dir from FILE, offline (no server runs on DIR).
Revisions are moved forward, to this machine's clock in microseconds since 1970 plus
1,000,000,000 (past every revision that the snapshot's store, or an earlier restore of the same
snapshot, can have reached; 1,000,000,000 past the snapshot's if the clock is behind it, or
ahead of it by less than that), and
marked compacted, and the store gets a new id, so every agent re-reads everything; the records
of the replicas that shared the snapshot's store are dropped (status lists the restored store's
own). Then start "shoelace server --data-dir DIR".
Prints the new store id.

EXAMPLES:
   shoelace snapshot restore backup.db --data-dir /var/lib/shoelace-restored`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", EnvVars: []string{"SHOELACE_DATA_DIR"}, Usage: "new data `DIR` (must hold no etcd yet)"},
					&cli.StringFlag{Name: "root", Value: def.Root, EnvVars: []string{"SHOELACE_ROOT"}, Usage: "etcd key `PREFIX` of Shoelace's keys"},
					&cli.StringFlag{Name: "log-level", Value: "warn", EnvVars: []string{"SHOELACE_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
				},
				Action: e.snapshotRestore,
			},
			{
				Name:      "restored",
				Usage:     "record, on an external etcd cluster restored by etcdutl from FILE, what the restore lost",
				ArgsUsage: "FILE",
				UsageText: "shoelace snapshot restored FILE --etcd-endpoints URLS [--etcd-cacert FILE --etcd-cert FILE --etcd-key FILE] [--root PREFIX] [--bump N]",
				Description: `For an external etcd cluster restored from the snapshot FILE by "etcdutl snapshot restore
FILE ... --bump-revision N --mark-compacted" (the runbook's procedure), run once the cluster is
up again and before any Shoelace server is started on it: every server must be stopped.
etcdutl knows nothing of Shoelace; this does what "shoelace snapshot restore" does for an
embedded store. It records that the revisions after FILE's, up to FILE's plus N, were lost
(appliance wait --revision, rollback --to, diff --from and GET .../at/R of one of them then say
so, rather than count the restored store's agents or restore a state it never had), gives the
store a new id, so every agent re-reads everything, and drops the records of the replicas that
shared the snapshot's store. It refuses (exit 1, nothing written) a cluster whose revision is not
past FILE's plus N (not restored from FILE with that bump), one whose history does not begin at
FILE's plus N (restored from another snapshot than FILE, or compacted since) and one that a
Shoelace server serves since the restore (a leader's key or a fresh replica record); a cluster
that does not answer within 5 s is exit 6, saying why. Run again on a cluster whose restore
from FILE is recorded (by an earlier run, or by "snapshot restore" of an embedded store), with
the servers started again and the cluster compacted since too, it writes nothing and says the
restore is recorded already, naming the record (snapshot revision, restored-at revision and
time; exit 0). Prints the store id.

EXAMPLES:
   shoelace snapshot restored /var/backups/shoelace.db \
       --etcd-endpoints https://etcd1:2379,https://etcd2:2379 --etcd-cacert ca.pem --etcd-cert client.pem --etcd-key client-key.pem`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "etcd-endpoints", EnvVars: []string{"SHOELACE_ETCD_ENDPOINTS"}, Usage: "comma-separated `URLS` of the restored etcd cluster"},
					&cli.StringFlag{Name: "etcd-cacert", EnvVars: []string{"SHOELACE_ETCD_CACERT"}, Usage: "CA `FILE` that verifies the etcd cluster"},
					&cli.StringFlag{Name: "etcd-cert", EnvVars: []string{"SHOELACE_ETCD_CERT"}, Usage: "client certificate `FILE` for etcd"},
					&cli.StringFlag{Name: "etcd-key", EnvVars: []string{"SHOELACE_ETCD_KEY"}, Usage: "client key `FILE` for etcd"},
					&cli.StringFlag{Name: "root", Value: def.Root, EnvVars: []string{"SHOELACE_ROOT"}, Usage: "etcd key `PREFIX` of Shoelace's keys"},
					&cli.Int64Flag{Name: "bump", Value: store.RestoreRevisionBump, Usage: "etcdutl's --bump-revision `N`"},
					&cli.StringFlag{Name: "log-level", Value: "warn", EnvVars: []string{"SHOELACE_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
				},
				Action: e.snapshotRestored,
			},
		},
	}
}

func (e *cliEnv) snapshotSave(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "FILE")
	if err != nil {
		return err
	}
	path := a[0]
	if path == "-" {
		// Elsewhere "-" is stdin or stdout; here it made a file named "-". A snapshot is checked
		// before it is renamed into place, which a pipe cannot be.
		return usagef("snapshot save: FILE is a file, not \"-\" (stdout): the snapshot is checked before it is renamed into place; give a file name (./- for a file named -)")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() || strings.HasSuffix(path, "/") {
		// Checked before the whole store is streamed: the rename at the end failed ("file exists").
		return usagef("snapshot save: %s is a directory: give the name of the file to write, such as %s", path, filepath.Join(path, "shoelace.db"))
	}
	s, idle, err := e.connectStreaming(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot save: %w", err)
	}
	meta, n, err := s.client.Snapshot(s.ctx, tmp)
	if err != nil {
		tmp.Close()
		if idle.fired.Load() {
			return fmt.Errorf("snapshot save: %w; nothing was saved", idle.explain(err))
		}
		return err
	}
	if n == 0 {
		tmp.Close()
		return fmt.Errorf("snapshot save: the server sent an empty snapshot")
	}
	if err := verifySnapshot(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot save: %w; nothing was saved", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot save: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if s.json {
		return printJSON(e.stdout, map[string]any{"file": path, "bytes": n, "revision": meta.Index})
	}
	_, err = fmt.Fprintf(e.stdout, "saved %s (%d bytes, revision %d)\n", path, n, meta.Index)
	return err
}

func (e *cliEnv) snapshotRestore(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "FILE --data-dir DIR")
	if err != nil {
		return err
	}
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	dataDir := c.String("data-dir")
	if dataDir == "" {
		return usagef("snapshot restore: missing --data-dir DIR (a new data dir for the restored store)")
	}
	logger, err := e.restoreLogger(c, "snapshot restore", a[0])
	if err != nil {
		return err
	}
	id, err := store.Restore(c.Context, store.RestoreConfig{SnapshotPath: a[0], DataDir: dataDir, Root: e.flagString(c, "root", "SHOELACE_ROOT", store.DefaultRoot), Logger: logger})
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, map[string]string{"store_id": id, "data_dir": dataDir})
	}
	_, err = fmt.Fprintf(e.stdout, "restored %s into %s: store id %s\n", a[0], dataDir, id)
	return err
}

func (e *cliEnv) snapshotRestored(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "FILE --etcd-endpoints URLS")
	if err != nil {
		return err
	}
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	endpoints := splitList(e.flagString(c, "etcd-endpoints", "SHOELACE_ETCD_ENDPOINTS", ""))
	if len(endpoints) == 0 {
		return usagef("snapshot restored: missing --etcd-endpoints URLS (the restored etcd cluster; for an embedded store, \"shoelace snapshot restore\" records the restore itself)")
	}
	if c.Int64("bump") <= 0 {
		return usagef("snapshot restored: --bump must be etcdutl's --bump-revision, above 0")
	}
	logger, err := e.restoreLogger(c, "snapshot restored", a[0])
	if err != nil {
		return err
	}
	res, err := store.Restored(c.Context, store.RestoredConfig{
		SnapshotPath: a[0], Endpoints: endpoints, Root: e.flagString(c, "root", "SHOELACE_ROOT", store.DefaultRoot), Bump: c.Int64("bump"), Logger: logger,
		CACert: e.flagString(c, "etcd-cacert", "SHOELACE_ETCD_CACERT", ""), Cert: e.flagString(c, "etcd-cert", "SHOELACE_ETCD_CERT", ""), Key: e.flagString(c, "etcd-key", "SHOELACE_ETCD_KEY", ""),
	})
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, map[string]any{"store_id": res.ID, "snapshot_revision": res.Lost.Snapshot, "restored_revision": res.Lost.Restored, "time": res.Lost.Time, "already_recorded": res.Already})
	}
	if res.Already {
		// The record found, not the one this run would have written: after "snapshot
		// restore" its revisions are the clock's, not FILE's plus --bump.
		_, err = fmt.Fprintf(e.stdout, "the restore of %s is recorded already: snapshot revision %d, restored at revision %d on %s (revisions %d to %d lost); nothing was written: store id %s\n",
			a[0], res.Lost.Snapshot, res.Lost.Restored, res.Lost.Time.UTC().Format(time.RFC3339), res.Lost.Snapshot+1, res.Lost.Restored, res.ID)
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "recorded the restore of %s (revisions %d to %d lost): store id %s\n", a[0], res.Lost.Snapshot+1, res.Lost.Restored, res.ID)
	return err
}

// restoreLogger checks the snapshot file at path that cmd (snapshot restore or restored) is to
// restore, and returns the logger of the store it opens: JSON on stderr, at --log-level
// (SHOELACE_LOG_LEVEL, default warn). The check is the one save made, before anything is
// created: etcd's own words for a file cut short, damaged or not a snapshot at all name a flag
// of etcdutl's, a seek, or two byte arrays.
func (e *cliEnv) restoreLogger(c *cli.Context, cmd, path string) (*slog.Logger, error) {
	level, err := server.ParseLogLevel(e.flagString(c, "log-level", "SHOELACE_LOG_LEVEL", "warn"))
	if err != nil {
		return nil, usagef("%s: %v", cmd, err)
	}
	if err := checkSnapshotFile(path); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level})), nil
}

// checkSnapshotFile runs verifySnapshot on the file at path, before a restore.
func checkSnapshotFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return err
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if err := verifySnapshot(f); err != nil {
		return fmt.Errorf("%s: %w; nothing was restored (restore a file that \"shoelace snapshot save\" or \"etcdctl snapshot save\" wrote: a database followed by its SHA-256)", path, err)
	}
	return nil
}

// verifySnapshot checks the SHA-256 that etcd appends to a snapshot against the content before
// it (etcdutl's restore makes the same check), so a snapshot cut short or damaged on the way is
// caught when it is saved rather than when it is needed.
func verifySnapshot(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size < sha256.Size || (size-sha256.Size)%512 != 0 {
		return fmt.Errorf("the snapshot is %d bytes, not a database followed by its SHA-256: it was cut short (or is no etcd snapshot)", size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-sha256.Size)); err != nil {
		return fmt.Errorf("read the snapshot back: %w", err)
	}
	sum := make([]byte, sha256.Size)
	if _, err := f.ReadAt(sum, size-sha256.Size); err != nil {
		return fmt.Errorf("read the snapshot back: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		return errors.New("the snapshot's SHA-256 does not match its content: it was damaged on the way (or is no etcd snapshot)")
	}
	return nil
}
