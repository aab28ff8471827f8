package templates

import "testing"

// confd mode's pairs print as confd's do with %T and %#v: memkv's types, not Shoelace's.
func TestConfd_PairsPrintAsConfds(t *testing.T) {
	res, err := mustParse(t, `{{printf "%#v" (get "/app/name")}} {{printf "%T" (gets "/app/*")}} {{printf "%T" (get "/app/name")}} {{get "/app/name"}}`,
		Options{Functions: ModeConfd}).Execute(Data{Keys: map[string]string{"app/name": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Output), `memkv.KVPair{Key:"/app/name", Value:"web"} memkv.KVPairs memkv.KVPair {/app/name web}`; got != want {
		t.Fatalf("%q, want confd's %q", got, want)
	}
}
