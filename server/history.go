package server

import (
	"net/http"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ApplianceAt answers GET /v1/appliances/{name}/at/{revision}: the appliance's own keys as they
// were at a past revision; applying them again (PUT /v1/appliances/{name} with {"keys":…}) is
// how `shoelace appliance rollback` works.
type ApplianceAt struct {
	Appliance string            `json:"appliance"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys"`
}

func (s *Server) handleApplianceAt(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	rev, err := strconv.ParseInt(r.PathValue("revision"), 10, 64)
	if err != nil || rev <= 0 {
		return api.Errorf(api.CodeInvalidRequest, "revision %s: a revision is a positive number", shorten(r.PathValue("revision")))
	}
	if err := principalOf(r).mayRead(api.ApplianceRoot(name)); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	keys, cur, err := s.st.ApplianceAt(ctx, name, rev)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, cur, ApplianceAt{Appliance: name, Revision: rev, Keys: keys})
}
