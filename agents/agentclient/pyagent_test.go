package agentclient_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// pyAgent is the reference for the conformance tests: a Go copy of what
// ZStack's Python agent framework (zstacklib/utils/http.py under CherryPy,
// handlers wrapped in kvmagent's @replyerror) does on the wire, as
// docs/agent-protocol.md describes it. It deliberately shares no code with
// agents/server.
//
//   - Every answer is Content-Type "text/html;charset=utf-8", JSON or not.
//   - Sync path with a taskuuid header: 500 with an HTML error page.
//   - Async path without taskuuid: 400 with an HTML error page.
//   - Async path: 200 with an empty body, then in a "thread": ignore the
//     task if its taskuuid is running, else run the handler and POST the
//     result to callbackurl (Content-Type application/json, taskuuid,
//     Connection: close), retrying every retryInterval for retryLimit on
//     connection errors; any HTTP answer counts as delivered.
//   - Results: {"success": true, "error": ""} plus fields, fields that are
//     None missing altogether.
type pyAgent struct {
	sync  map[string]func(body []byte) string
	async map[string]func(body []byte) (result string, reply bool)

	retryInterval time.Duration
	retryLimit    time.Duration
	httpc         *http.Client

	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup

	// What the tests look at.
	callbacks        atomic.Int32 // results delivered
	callbackAttempts atomic.Int32
	lastBody         atomic.Value // []byte of the last command
}

func newPyAgent() *pyAgent {
	a := &pyAgent{
		retryInterval: 5 * time.Millisecond,
		retryLimit:    10 * time.Second,
		httpc:         &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		running:       map[string]bool{},
	}
	a.sync = map[string]func([]byte) string{
		// kvmagent's echo returns '' (an empty body).
		"/host/echo": func([]byte) string { return "" },
		"/host/connect": func(body []byte) string {
			var cmd struct {
				HostUUID       string `json:"hostUuid"`
				SendCommandURL string `json:"sendCommandUrl"`
			}
			if err := json.Unmarshal(body, &cmd); err != nil {
				return replyError(err.Error())
			}
			// qemuVersion is None here, hence missing.
			return fmt.Sprintf(`{"success": true, "error": "", "libvirtVersion": "4.9.0", "hostUuid": %q}`, cmd.HostUUID)
		},
	}
	a.async = map[string]func([]byte) (string, bool){
		"/host/ping": func(body []byte) (string, bool) {
			var cmd struct {
				HostUUID string `json:"hostUuid"`
			}
			_ = json.Unmarshal(body, &cmd)
			// version and sendCommandUrl are None: missing.
			return fmt.Sprintf(`{"success": true, "error": "", "hostUuid": %q}`, cmd.HostUUID), true
		},
		"/vm/start": func(body []byte) (string, bool) {
			var cmd struct {
				VMUUID string `json:"vmInstanceUuid"`
			}
			if err := json.Unmarshal(body, &cmd); err != nil {
				return replyError(err.Error()), true
			}
			if strings.Contains(string(body), "null]") || strings.Contains(string(body), "[null") || strings.Contains(string(body), "null,") {
				return replyError("cannot parse null in a list"), true
			}
			if cmd.VMUUID == "bad" {
				return `{"success": false, "error": "unable to start vm[uuid:bad]: no such image", "vmState": "Shutdown"}`, true
			}
			return `{"success": true, "error": ""}`, true
		},
		// A handler that returns without the error field at all.
		"/host/capacity": func([]byte) (string, bool) {
			return `{"success": true, "cpuNum": 8, "totalMemory": 17179869184}`, true
		},
		// A handler that dies without replying.
		"/vm/crash": func([]byte) (string, bool) { return "", false },
	}
	return a
}

func replyError(msg string) string {
	b, _ := json.Marshal(map[string]any{"success": false, "error": msg})
	return string(b)
}

// cherrypyError is the shape of CherryPy's error page.
func cherrypyError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!DOCTYPE html><html><head><title>%d</title></head><body><h2>%d</h2><p>%s</p></body></html>",
		status, status, html.EscapeString(msg))
}

func (a *pyAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimRight(r.URL.Path, "/")
	body, _ := io.ReadAll(r.Body)
	a.lastBody.Store(body)
	if h, ok := a.sync[path]; ok {
		if id := r.Header.Get("taskuuid"); id != "" {
			cherrypyError(w, 500, fmt.Sprintf("[ERROR]: find async task uuid[%s] in header, did you wrongly register sync uri for async call???", id))
			return
		}
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		_, _ = io.WriteString(w, h(body))
		return
	}
	h, ok := a.async[path]
	if !ok {
		cherrypyError(w, 404, "The path '"+r.URL.Path+"' was not found.")
		return
	}
	id := r.Header.Get("taskuuid")
	if id == "" {
		cherrypyError(w, 400, "taskUuid missing in request header")
		return
	}
	callback := r.Header.Get("callbackurl")
	// The framework checks for a running task with this uuid before it
	// answers, so a duplicate that arrives while the first runs is
	// ignored whatever the goroutines' order.
	a.mu.Lock()
	if a.running[id] {
		a.mu.Unlock()
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.WriteHeader(http.StatusOK) // "ignored duplicated task"
		return
	}
	a.running[id] = true
	a.mu.Unlock()
	a.wg.Add(1)
	go a.run(id, callback, h, body)
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(http.StatusOK)
}

func (a *pyAgent) run(id, callback string, h func([]byte) (string, bool), body []byte) {
	defer a.wg.Done()
	defer func() {
		a.mu.Lock()
		delete(a.running, id)
		a.mu.Unlock()
	}()
	result, reply := h(body)
	if !reply {
		return
	}
	start := time.Now()
	for time.Since(start) < a.retryLimit {
		a.callbackAttempts.Add(1)
		req, _ := http.NewRequest(http.MethodPost, callback, bytes.NewReader([]byte(result)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connection", "close")
		req.Header.Set("taskuuid", id)
		rsp, err := a.httpc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, rsp.Body)
			_ = rsp.Body.Close()
			a.callbacks.Add(1)
			return
		}
		time.Sleep(a.retryInterval)
	}
}

// block makes path's handler wait until the returned function is called.
func (a *pyAgent) block(path string) (release func()) {
	ch := make(chan struct{})
	inner := a.async[path]
	a.async[path] = func(body []byte) (string, bool) {
		<-ch
		return inner(body)
	}
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (a *pyAgent) wait() { a.wg.Wait() }
