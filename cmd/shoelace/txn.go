package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func txnCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "txn",
		Usage:     "write several keys at once: every put and delete applies, or none does",
		ArgsUsage: " ",
		UsageText: "shoelace txn -f FILE|- [--canary SHARE [--step SHARE] [--bake D] [--deadline D] [--manual]] [--force]",
		Description: `Sends the transaction in FILE (- reads stdin) as the body of POST /v1/txn: JSON of the form
   {"ops": [{"op": "put", "key": "appliances/web/port", "value": "8081"},
            {"op": "delete", "key": "appliances/web/old", "recurse": true}],
    "guards": [{"key": "appliances/web/port", "mod_revision": 42}]}
Every op applies in one etcd transaction, or none does: a guard that does not hold (the key's
mod_revision is not the one given; 0: the key must not exist) writes nothing and exits 4.
Prints the revision of the write. A transaction whose puts all hold their values and whose deletes
find nothing writes nothing (no revision, no release, no agent woken): it prints the newest
mod_revision of the keys it puts (the store's revision when it only deletes absent keys), and
stderr says so; one that changes some keys writes only those.

With --canary (no guards) the transaction is staged instead of changing the live keys: every op
under one appliance starts a rollout of that appliance; every op a single shared/ key starts a
shared rollout group (one rollout per appliance with enrolled instances). See
shoelace appliance rollout --help. A transaction that changes nothing (values held already,
keys deleted that are absent) starts no rollout (nor group) and writes nothing.

EXAMPLES:
   shoelace txn -f release.json -m "web: port 8081, drop old"
   jq -n '{ops: [{op: "put", key: "appliances/web/port", value: "8081"}]}' | shoelace txn -f -
   shoelace txn -f web-change.json --canary 10% --step 50% --bake 5m`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the transaction (JSON) from `FILE`; - for stdin"},
		}, rolloutFlags()...),
		Action: e.txn,
	}
}

func (e *cliEnv) txn(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, "-f FILE|-"); err != nil {
		return err
	}
	if err := checkRolloutFlags(c); err != nil {
		return err
	}
	body, file, err := e.readFileFlag(c, "txn")
	if err != nil {
		return err
	}
	t, err := decodeTxn(body)
	if err != nil {
		return fmt.Errorf("txn: %s: %w", file, err)
	}
	if err := checkTxnKeys(t); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	if c.String("canary") != "" && allShared(t) {
		// A staged shared/ change: one rollout per appliance, answered as their group.
		g, err := s.client.TxnSharedCanary(s.ctx, t)
		if err != nil {
			return err
		}
		return e.printSharedRolloutStarted(s, g)
	}
	res, err := s.client.TxnResult(s.ctx, t)
	if err != nil {
		return err
	}
	if name, ok := txnAppliance(t); ok && c.String("canary") != "" {
		return e.printCanaryWrite(s, c, name, res)
	}
	if res.Unchanged {
		return e.printUnchanged(s, res, "the store already holds what the transaction writes", "")
	}
	return printRevision(e.stdout, s.json, res.Revision)
}

// decodeTxn reads a transaction body strictly: one JSON object with the API's fields only, and at
// least one op (the server checks the keys and values themselves).
func decodeTxn(body []byte) (api.Txn, error) {
	var t api.Txn
	if len(bytes.TrimSpace(body)) == 0 {
		return t, errors.New(`empty: want JSON such as {"ops": [{"op": "put", "key": "appliances/web/port", "value": "8081"}]}`)
	}
	// encoding/json would rewrite invalid UTF-8 and lone surrogate escapes to U+FFFD, and keep
	// the last of a member given twice: refuse them, as the server refuses them in a body it reads.
	if err := api.CheckJSONText(body); err != nil {
		return t, err
	}
	// ... and take a member named in another case ("Key") for the field, as the server refuses.
	if err := api.CheckJSONMembersOf(body, &t); err != nil {
		return t, err
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&t); err != nil {
		return t, fmt.Errorf(`not a transaction ({"ops": [...], "guards": [...]}): %w`, err)
	}
	if d.More() {
		return t, errors.New("more than one JSON value: give one transaction")
	}
	if len(t.Guards) > 0 || bytes.Contains(body, []byte("null")) {
		if err := api.CheckTxnMembers(body); err != nil {
			return t, err
		}
	}
	if len(t.Ops) == 0 {
		return t, errors.New(`no ops: a transaction needs at least one {"op": "put"|"delete", "key": …}`)
	}
	return t, nil
}

// checkTxnKeys refuses an op or guard key written the confd way, with a leading '/', saying how
// to write it here, as kv put does (the server would only say that its first segment is empty).
func checkTxnKeys(t api.Txn) error {
	for i, op := range t.Ops {
		if rest, ok := strings.CutPrefix(op.Key, "/"); ok && rest != "" {
			return fmt.Errorf("op %d: %w", i+1, confdKeyError(op.Key, strings.TrimLeft(rest, "/")))
		}
	}
	for i, g := range t.Guards {
		if rest, ok := strings.CutPrefix(g.Key, "/"); ok && rest != "" {
			return fmt.Errorf("guard %d: %w", i+1, confdKeyError(g.Key, strings.TrimLeft(rest, "/")))
		}
	}
	return nil
}

// txnAppliance is the one appliance every op of t is under, if there is one (the server refuses
// a rollout of anything else, saying why).
func txnAppliance(t api.Txn) (string, bool) {
	name := ""
	for _, op := range t.Ops {
		n, ok := api.ApplianceOf(op.Key)
		if !ok || name != "" && n != name {
			return "", false
		}
		name = n
	}
	return name, name != ""
}

// allShared says whether every op of t is under shared/ (a staged shared change with --canary).
func allShared(t api.Txn) bool {
	for _, op := range t.Ops {
		if !api.Under(op.Key, api.SharedPrefix) {
			return false
		}
	}
	return len(t.Ops) > 0
}
