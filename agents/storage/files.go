package storage

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"mplane/agents/protocol"
)

// serveFile answers GET and HEAD PathFiles + "<relative path>": the file's
// bytes, streamed, with Content-Length, Last-Modified and range requests
// (http.ServeContent). 401 without the secret once there is one, 403 for
// a path that escapes the root, 404 for a missing file, a directory or
// one of the agent's temporary files.
func (a *Agent) serveFile(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, "use GET or HEAD")
		return
	}
	if err := a.checkSecret(r); err != nil {
		writeJSON(w, http.StatusUnauthorized, err.Error())
		return
	}
	rel := strings.TrimPrefix(r.URL.Path, protocol.PathFiles)
	for _, el := range strings.Split(rel, "/") {
		if isTemp(el) {
			writeJSON(w, http.StatusNotFound, "no such file")
			return
		}
	}
	abs, err := a.resolve(rel)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errEscapes) {
			status = http.StatusForbidden
		}
		writeJSON(w, status, err.Error())
		return
	}
	f, err := os.Open(abs)
	if errors.Is(err, fs.ErrNotExist) {
		writeJSON(w, http.StatusNotFound, "file "+rel+" not found")
		return
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		writeJSON(w, http.StatusNotFound, rel+" is not a regular file")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// writeJSON answers status with a failure envelope.
func writeJSON(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(protocol.Response{Success: false, Error: msg})
	w.Header().Set("Content-Type", protocol.JSONContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
