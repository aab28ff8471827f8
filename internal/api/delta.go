package api

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
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

// ViewSum is the digest of a view's keys that a Delta carries: sha256, in hex, over the keys in
// byte order, each written as uvarint(len(key)) key uvarint(len(value)) value. The lengths
// make it unambiguous whatever bytes keys and values hold.
func ViewSum(keys map[string]string) string {
	names := slices.Sorted(maps.Keys(keys))
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, k := range names {
		v := keys[k]
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
		h.Write([]byte(k))
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil))
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
	if d.Appliance != base.Appliance {
		return View{}, fmt.Errorf("delta of appliance %q applied to a view of %q: %w", d.Appliance, base.Appliance, ErrDeltaSum)
	}
	keys := make(map[string]string, len(base.Keys)+len(d.Set))
	maps.Copy(keys, base.Keys)
	for _, k := range d.Unset {
		delete(keys, k)
	}
	maps.Copy(keys, d.Set)
	if got := ViewSum(keys); got != d.Sum {
		return View{}, fmt.Errorf("delta from revision %d to %d applied to the view at revision %d: sum %.12s, want %.12s: %w",
			d.Base, d.Revision, base.Revision, got, d.Sum, ErrDeltaSum)
	}
	return View{Appliance: base.Appliance, Revision: d.Revision, Keys: keys, Rollout: d.Rollout}, nil
}
