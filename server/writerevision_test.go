package server

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A plain write's answer, written without reflection, is writeJSON's of api.WriteResult:
// status, headers and body.
func TestWriteRevision_AsWriteJSON(t *testing.T) {
	for _, rev := range []int64{0, 1, 9, 10, 12345, 1<<62 + 7} {
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		if err := writeJSON(want, http.StatusOK, rev, api.WriteResult{Revision: rev}); err != nil {
			t.Fatal(err)
		}
		if err := writeRevision(got, rev); err != nil {
			t.Fatal(err)
		}
		if got.Code != want.Code || got.Body.String() != want.Body.String() || !reflect.DeepEqual(got.Header(), want.Header()) {
			t.Errorf("rev %d: got %d %v %q, want %d %v %q", rev, got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	}
}
