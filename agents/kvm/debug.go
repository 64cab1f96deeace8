package kvm

import (
	"encoding/json"
	"io"
	"net/http"

	"mplane/agents/protocol"
)

func getOnly(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeJSON(w, http.StatusMethodNotAllowed, protocol.Response{Error: "use GET"})
			return
		}
		f(w, r)
	})
}

func postOnly(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, protocol.Response{Error: "use POST"})
			return
		}
		f(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := protocol.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(protocol.Response{Error: err.Error()})
	}
	w.Header().Set("Content-Type", protocol.JSONContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (a *Agent) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.Stats())
}

func (a *Agent) serveArrivals(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.Arrivals())
}

// serveCrash makes a running VM crash: state Crashed, events reportvmcrash
// and reportvmstate.
func (a *Agent) serveCrash(w http.ResponseWriter, r *http.Request) {
	a.unsolicited(w, r, protocol.VMStateCrashed, protocol.EventReportVMCrash)
}

// servePowerOff shuts a running VM down from inside the guest: state
// Shutdown, events reportvmshutdown and reportvmstate.
func (a *Agent) servePowerOff(w http.ResponseWriter, r *http.Request) {
	a.unsolicited(w, r, protocol.VMStateShutdown, protocol.EventReportVMShutdown)
}

func (a *Agent) unsolicited(w http.ResponseWriter, r *http.Request, state, path string) {
	var cmd protocol.VMEvent
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, &cmd); err != nil || cmd.VMUUID == "" {
		writeJSON(w, http.StatusBadRequest, protocol.Response{Error: `body must be {"vmUuid": "..."}`})
		return
	}
	a.mu.Lock()
	vm := a.vms[cmd.VMUUID]
	if vm == nil || vm.State != protocol.VMStateRunning {
		a.mu.Unlock()
		writeJSON(w, http.StatusConflict, protocol.Response{Error: "vm " + cmd.VMUUID + " is not running"})
		return
	}
	kind := a.eventLocked(path, protocol.VMEvent{VMUUID: cmd.VMUUID})
	change := a.setStateLocked(vm, state)
	a.mu.Unlock()
	if err := a.committed(kind, change); err != nil {
		writeJSON(w, http.StatusInternalServerError, protocol.Response{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, protocol.Response{Success: true})
}
