package server

import (
	"encoding/json"
	"net/http"

	"mplane/errcode"
)

// writeError answers with the catalogue's status and {"error": {...}}.
func writeError(w http.ResponseWriter, err error) {
	e := errcode.From(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.HTTPStatus())
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}
