package store

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// jsonLen counts what encoding/json writes of a string, byte for byte: the bound on a key's
// history is in answer bytes.
func TestJSONLen_AsEncodingJSONWrites(t *testing.T) {
	cases := [][]byte{nil, []byte("plain"), []byte("\x01\n\t\"\\<>&\u2028\u2029é€😀"), {0xff, 0xfe, 'a', 0xc3}}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		out, err := json.Marshal(string(b))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := jsonLen(b), len(out)-2; got != want {
			t.Fatalf("jsonLen(%q) = %d, encoding/json writes %d bytes (%s)", b, got, want, out)
		}
	}
}
