package server

import (
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// secretMarker stands for a secret value in FuzzApplyBodySecrets.
const secretMarker = "Zq7Secret"

// FuzzApplyBodySecrets puts a fragment holding a secret under a "secrets" map of an apply body
// (JSON or YAML), built so that the fragment cannot leave that map, and checks that no error
// message repeats the secret.
func FuzzApplyBodySecrets(f *testing.F) {
	for _, frag := range []string{
		`{"pw":"Zq7Secret"}`, `{"pw":Zq7Secret}`, `{"Zq7Secret":null`, `{"pw Zq7Secret":"x"`,
		`pw: Zq7Secret`, `{pw Zq7Secret`, `pw: *Zq7Secret`, `pw: !Zq7Secret x`, `pw: "Zq7Secret`,
		`Zq7Secret:`, `[Zq7Secret]`, `pw: Zq7Secret: x`, `? [Zq7Secret]`,
	} {
		f.Add(frag, strings.HasPrefix(frag, "{\""))
	}
	f.Fuzz(func(t *testing.T, frag string, json bool) {
		if !strings.Contains(frag, secretMarker) {
			return
		}
		var body, media string
		if json {
			if strings.ContainsAny(frag, "}]") {
				return // could close the secrets map
			}
			body, media = `{"keys":{"secrets":`+frag+`}}`, "application/json"
		} else {
			for _, r := range frag {
				if r == '\n' || r == '\r' || r > 0x7e {
					return // could end the line (YAML also breaks lines at NEL, LS, PS)
				}
			}
			body, media = "keys:\n  secrets:\n    "+frag+"\n", api.ContentTypeYAML
		}
		_, err := applyBody([]byte(body), media, "web", 1000, 100)
		if err != nil && strings.Contains(err.Error(), secretMarker) {
			t.Fatalf("body %q: error repeats the secret: %v", body, err)
		}
	})
}
