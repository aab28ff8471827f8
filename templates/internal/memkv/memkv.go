// Package memkv holds the types of confd's store that confd mode's functions return. They
// live in a package of this name so that a template that prints one with %T or %#v gets the
// bytes confd's does ("memkv.KVPair{Key:\"/db/host\", Value:\"10.0.0.1\"}").
package memkv

// KVPair is confd's memkv.KVPair (what get returns): printing one gives "{/db/host 10.0.0.1}".
type KVPair struct {
	Key   string
	Value string
}

// KVPairs is confd's memkv.KVPairs (what gets returns). It is a named type, as in confd, so that
// reverse leaves it as it is (confd's reverse only knows []string and []KVPair).
type KVPairs []KVPair

func (p KVPairs) Len() int           { return len(p) }
func (p KVPairs) Less(i, j int) bool { return p[i].Key < p[j].Key }
func (p KVPairs) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }
