package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Import batches: one transaction holds at most this many operations and about this many
// bytes, below the server's defaults (10,000 operations; --max-value-bytes + 4 MiB of body).
const (
	importBatchOps   = 5000
	importBatchBytes = 3 << 20
)

// dump is the format of "shoelace export" and "shoelace import": every key by its full path.
type dump struct {
	// Revision is the store revision the export was read at (ignored by import).
	Revision int64             `json:"revision,omitempty"`
	Keys     map[string]string `json:"keys"`
}

func exportCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "print every key as JSON",
		UsageText: "shoelace export [--include-secrets] > all.json",
		Description: `Prints {"revision":R,"keys":{"full/key":"value",…}} with every key read at one revision.
Secret keys (a path segment "secrets") are left out unless --include-secrets is given; stderr
lists what was left out or included. "shoelace import" reads the file back.

EXAMPLES:
   shoelace export > all.json
   shoelace export --include-secrets | gpg -e -r ops > all.json.gpg`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "include-secrets", Usage: "include the values of secret keys"},
		},
		Action: e.export,
	}
}

func (e *cliEnv) export(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	l, _, err := s.client.List(s.ctx, "", false)
	if err != nil {
		return err
	}
	d := dump{Revision: l.Revision, Keys: map[string]string{}}
	var left, included []string
	for _, kv := range l.Entries {
		if api.IsSecret(kv.Key) {
			if !c.Bool("include-secrets") {
				left = append(left, kv.Key)
				continue
			}
			included = append(included, kv.Key)
		}
		d.Keys[kv.Key] = kv.Value
	}
	sort.Strings(left)
	sort.Strings(included)
	if len(left) > 0 {
		fmt.Fprintf(e.stderr, "left out %d secret keys (use --include-secrets): %s\n", len(left), strings.Join(left, ", "))
	}
	if len(included) > 0 {
		fmt.Fprintf(e.stderr, "included %d secret keys: %s\n", len(included), strings.Join(included, ", "))
	}
	enc := jsonEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

func importCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "write every key of an export",
		ArgsUsage: "FILE",
		UsageText: "shoelace import FILE|-",
		Description: `Writes every key of FILE ({"keys":{"full/key":"value",…}}, as "shoelace export" prints it;
"-" reads stdin). Keys that are not in FILE are left alone. Every key is checked before
anything is written. Up to 5,000 keys go in one all-or-nothing transaction; a bigger import
is written in several, and stderr says so. Prints the revision of the last write.

EXAMPLES:
   shoelace import all.json
   shoelace export --addr https://old:7400 | shoelace import - --addr https://new:7400`,
		Action: e.importKeys,
	}
}

// parseDump reads an export; it refuses unknown fields, invalid keys and non-UTF-8 values,
// naming the key.
func parseDump(data []byte) (dump, error) {
	var d dump
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("not an export ({\"keys\":{…}}): %w", err)
	}
	if dec.More() {
		return d, fmt.Errorf("not an export: more than one JSON value")
	}
	if d.Keys == nil {
		return d, fmt.Errorf(`not an export: no "keys" object`)
	}
	for k, v := range d.Keys {
		if err := api.ValidateKey(k); err != nil {
			return d, err
		}
		if err := api.ValidateValue(k, []byte(v), 0); err != nil {
			return d, err
		}
	}
	return d, nil
}

// importBatches splits keys, sorted, into transactions of at most maxOps puts and about maxBytes.
func importBatches(keys map[string]string, maxOps, maxBytes int) []api.Txn {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []api.Txn
	var cur api.Txn
	size := 0
	for _, k := range names {
		opSize := len(k) + len(keys[k]) + 64
		if len(cur.Ops) > 0 && (len(cur.Ops) >= maxOps || size+opSize > maxBytes) {
			out = append(out, cur)
			cur, size = api.Txn{}, 0
		}
		cur.Ops = append(cur.Ops, api.Op{Op: api.OpPut, Key: k, Value: keys[k]})
		size += opSize
	}
	if len(cur.Ops) > 0 {
		out = append(out, cur)
	}
	return out
}

func (e *cliEnv) importKeys(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "FILE|-")
	if err != nil {
		return err
	}
	var data []byte
	if a[0] == "-" {
		data, err = io.ReadAll(e.stdin)
	} else {
		data, err = os.ReadFile(a[0])
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	d, err := parseDump(data)
	if err != nil {
		return fmt.Errorf("import %s: %w", a[0], err)
	}
	if len(d.Keys) == 0 {
		return fmt.Errorf("import %s: no keys", a[0])
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	batches := importBatches(d.Keys, importBatchOps, importBatchBytes)
	var rev int64
	done := 0
	for i, b := range batches {
		if rev, err = s.client.Txn(s.ctx, b); err != nil {
			if done > 0 {
				return fmt.Errorf("import: %d of %d keys written (%d transactions) before: %w", done, len(d.Keys), i, err)
			}
			return err
		}
		done += len(b.Ops)
	}
	if len(batches) > 1 {
		fmt.Fprintf(e.stderr, "imported %d keys in %d transactions\n", done, len(batches))
	} else {
		fmt.Fprintf(e.stderr, "imported %d keys\n", done)
	}
	return printRevision(e.stdout, s.json, rev)
}
