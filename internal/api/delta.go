package api

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
)

// ContentTypeStream is the content type of a streaming long-poll: one JSON Update per line.
const ContentTypeStream = "application/x-ndjson"

// Delta is a view given as its difference from the view the client had at Base (what this
// instance was served at Base: the live view or a rollout's candidate). Set holds the keys
// whose value is new or changed, Unset the keys gone; Sum is ViewSum of the whole resulting
// view, so that the client checks what it built.
type Delta struct {
	Appliance string            `json:"appliance"`
	Revision  int64             `json:"revision"`
	Rollout   string            `json:"rollout,omitempty"`
	Base      int64             `json:"base"`
	Set       map[string]string `json:"set,omitempty"`
	Unset     []string          `json:"unset,omitempty"`
	Sum       string            `json:"sum"`
}

// Update is one answer of a long-poll sent with delta, or one line of a streaming long-poll:
// a full view (Base 0, Keys set), a delta (Base > 0) or a heartbeat (nothing changed up to
// Revision).
type Update struct {
	Appliance string            `json:"appliance,omitempty"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys,omitempty"`
	Rollout   string            `json:"rollout,omitempty"`
	Base      int64             `json:"base,omitempty"`
	Set       map[string]string `json:"set,omitempty"`
	Unset     []string          `json:"unset,omitempty"`
	Sum       string            `json:"sum,omitempty"`
	Heartbeat bool              `json:"heartbeat,omitempty"`
}

// IsDelta says whether u is a delta (else a full view or a heartbeat).
func (u *Update) IsDelta() bool { return u.Base > 0 && !u.Heartbeat }

// Delta returns u as a delta.
func (u *Update) Delta() Delta {
	return Delta{Appliance: u.Appliance, Revision: u.Revision, Rollout: u.Rollout, Base: u.Base, Set: u.Set, Unset: u.Unset, Sum: u.Sum}
}

// View returns u as a full view (Keys never nil).
func (u *Update) View() View {
	keys := u.Keys
	if keys == nil {
		keys = map[string]string{}
	}
	return View{Appliance: u.Appliance, Revision: u.Revision, Keys: keys, Rollout: u.Rollout}
}

// ErrDeltaSum says that a delta applied to the client's view did not give the view the server
// has: the client must read the full view.
var ErrDeltaSum = errors.New("delta does not match the view it applies to")

// ViewSum is the digest of a view's keys that a Delta carries: the sum, modulo 2^256, of the
// sha256 of each key and its value (written as uvarint(len(key)) key uvarint(len(value))
// value; the lengths make it unambiguous whatever bytes they hold), as 64 hex digits. A sum of
// per-key digests does not depend on the keys' order, so a delta updates it in proportion to
// its own size (ApplyDeltaSum), not to the view's: a one-key change to a 10,000-key view costs
// two digests, not 10,000.
func ViewSum(keys map[string]string) string {
	var s viewSum
	for k, v := range keys {
		s.add(k, v)
	}
	return s.String()
}

// viewSum is a ViewSum being computed: four 64-bit words, the most significant first.
type viewSum [4]uint64

func keyDigest(k, v string) viewSum {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
	h.Write([]byte(k))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
	h.Write([]byte(v))
	var b [sha256.Size]byte
	h.Sum(b[:0])
	var d viewSum
	for i := range d {
		d[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return d
}

// add adds the digest of key k with value v.
func (s *viewSum) add(k, v string) {
	d := keyDigest(k, v)
	var c uint64
	for i := len(s) - 1; i >= 0; i-- {
		s[i], c = bits.Add64(s[i], d[i], c)
	}
}

// sub takes the digest of key k with value v away.
func (s *viewSum) sub(k, v string) {
	d := keyDigest(k, v)
	var b uint64
	for i := len(s) - 1; i >= 0; i-- {
		s[i], b = bits.Sub64(s[i], d[i], b)
	}
}

func (s viewSum) String() string {
	var b [32]byte
	for i, w := range s {
		binary.BigEndian.PutUint64(b[8*i:], w)
	}
	return hex.EncodeToString(b[:])
}

// parseSum reads a ViewSum back; ok is false when sum is not one.
func parseSum(sum string) (s viewSum, ok bool) {
	b, err := hex.DecodeString(sum)
	if err != nil || len(b) != 32 {
		return s, false
	}
	for i := range s {
		s[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return s, true
}

// Diff returns the delta that turns base into now (Sum included).
func Diff(base, now View) Delta {
	d := Delta{Appliance: now.Appliance, Revision: now.Revision, Rollout: now.Rollout, Base: base.Revision, Sum: ViewSum(now.Keys)}
	for k, v := range now.Keys {
		if old, ok := base.Keys[k]; !ok || old != v {
			if d.Set == nil {
				d.Set = make(map[string]string)
			}
			d.Set[k] = v
		}
	}
	for k := range base.Keys {
		if _, ok := now.Keys[k]; !ok {
			d.Unset = append(d.Unset, k)
		}
	}
	slices.Sort(d.Unset)
	return d
}

// ApplyDelta returns base with d applied, leaving base as it was. It fails with ErrDeltaSum
// when the result's ViewSum is not d.Sum (base is not the view the server diffed against),
// and when d is for another appliance.
func ApplyDelta(base View, d Delta) (View, error) {
	v, _, err := ApplyDeltaSum(base, "", d)
	return v, err
}

// ApplyDeltaSum is ApplyDelta for a caller that keeps the ViewSum of its view: baseSum is
// base's ("" when not known: it is computed) and the result's is returned, so that following
// a view delta by delta costs in proportion to the deltas, not to the view.
func ApplyDeltaSum(base View, baseSum string, d Delta) (View, string, error) {
	if d.Appliance != base.Appliance {
		return View{}, "", fmt.Errorf("delta of appliance %q applied to a view of %q: %w", d.Appliance, base.Appliance, ErrDeltaSum)
	}
	sum, ok := parseSum(baseSum)
	if !ok {
		sum, _ = parseSum(ViewSum(base.Keys))
	}
	keys := maps.Clone(base.Keys)
	if keys == nil {
		keys = make(map[string]string, len(d.Set))
	}
	for _, k := range d.Unset {
		if v, ok := keys[k]; ok {
			sum.sub(k, v)
			delete(keys, k)
		}
	}
	for k, v := range d.Set {
		// The base's keys were checked when it was taken; a delta's new ones are checked
		// here, so that a view made of deltas never needs checking whole.
		if err := ValidateKey(k); err != nil {
			return View{}, "", fmt.Errorf("delta from revision %d to %d sets %w", d.Base, d.Revision, err)
		}
		if old, ok := keys[k]; ok {
			sum.sub(k, old)
		}
		sum.add(k, v)
		keys[k] = v
	}
	if got := sum.String(); got != d.Sum {
		return View{}, "", fmt.Errorf("delta from revision %d to %d applied to the view at revision %d: sum %.12s, want %.12s: %w",
			d.Base, d.Revision, base.Revision, got, d.Sum, ErrDeltaSum)
	}
	return View{Appliance: base.Appliance, Revision: d.Revision, Keys: keys, Rollout: d.Rollout}, d.Sum, nil
}
