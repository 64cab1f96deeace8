package agentclient_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// The conformance tests drive the client against pyAgent, the reference
// copy of the Python agent framework's wire behaviour.

type connectRsp struct {
	protocol.Response
	LibvirtVersion string `json:"libvirtVersion"`
	QemuVersion    string `json:"qemuVersion"`
	HostUUID       string `json:"hostUuid"`
}

type pingRsp struct {
	protocol.Response
	HostUUID       string `json:"hostUuid"`
	SendCommandURL string `json:"sendCommandUrl"`
	Version        string `json:"version"`
}

type startCmd struct {
	VMUUID string    `json:"vmInstanceUuid"`
	Disks  []*string `json:"disks,omitempty"`
}

type startRsp struct {
	protocol.Response
	VMState string `json:"vmState"`
}

func TestConformanceSyncAnswerParsedByBody(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	var rsp connectRsp
	err := n.client.CallSync(t.Context(), url, "/host/connect",
		map[string]string{"hostUuid": "h1", "sendCommandUrl": n.url + protocol.DefaultEventPath}, &rsp)
	if err != nil {
		t.Fatal(err)
	}
	if !rsp.Success || rsp.Error != "" || rsp.LibvirtVersion != "4.9.0" || rsp.HostUUID != "h1" || rsp.QemuVersion != "" {
		t.Errorf("answer %+v", rsp)
	}
}

func TestConformanceEchoEmptyBody(t *testing.T) {
	a, url := newPyServer(t)
	n := newNode(t, 0)
	if err := n.client.CallSync(t.Context(), url, "/host/echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	if body, _ := a.lastBody.Load().([]byte); len(body) != 0 {
		t.Errorf("echo sent body %q, want empty", body)
	}
}

func TestConformanceAsyncResultWithMissingFields(t *testing.T) {
	a, url := newPyServer(t)
	n := newNode(t, 0)
	var rsp pingRsp
	if err := n.client.Call(t.Context(), url, "/host/ping", map[string]string{"hostUuid": "h1"}, &rsp); err != nil {
		t.Fatal(err)
	}
	if !rsp.Success || rsp.HostUUID != "h1" || rsp.Version != "" || rsp.SendCommandURL != "" {
		t.Errorf("result %+v", rsp)
	}
	if n.client.PendingCount() != 0 {
		t.Errorf("pending %d after the result", n.client.PendingCount())
	}
	// The command told the agent how long the node waits.
	body, _ := a.lastBody.Load().([]byte)
	if !strings.Contains(string(body), `"timeoutMs":`) || !strings.Contains(string(body), `"hostUuid":"h1"`) {
		t.Errorf("command body %s", body)
	}
}

func TestConformanceResultWithoutErrorField(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	var rsp struct {
		CPUNum      int   `json:"cpuNum"`
		TotalMemory int64 `json:"totalMemory"`
	}
	if err := n.client.Call(t.Context(), url, "/host/capacity", struct{}{}, &rsp); err != nil {
		t.Fatal(err)
	}
	if rsp.CPUNum != 8 || rsp.TotalMemory != 16<<30 {
		t.Errorf("result %+v", rsp)
	}
}

func TestConformanceFailureIsAgentError(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	var rsp startRsp
	err := n.client.Call(t.Context(), url, "/vm/start", startCmd{VMUUID: "bad"}, &rsp)
	if !errcode.Has(err, errcode.AgentError) {
		t.Fatalf("err = %v, want AgentError", err)
	}
	var e *errcode.Error
	if !errors.As(err, &e) || e.Details != "unable to start vm[uuid:bad]: no such image" {
		t.Errorf("details of %v: want the agent's error text", err)
	}
	if errcode.IsRetryable(err) {
		t.Error("an agent failure must not be retryable")
	}
	if rsp.VMState != "Shutdown" {
		t.Errorf("result fields not decoded on failure: %+v", rsp)
	}
}

func TestConformanceCallbackRetriedUntilDelivered(t *testing.T) {
	a, url := newPyServer(t)
	n := newNode(t, 3) // the first three deliveries find the node "down"
	if err := n.client.Call(t.Context(), url, "/vm/start", startCmd{VMUUID: "v1"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := n.listener.refused.Load(); got != 3 {
		t.Errorf("%d deliveries refused, want 3", got)
	}
	if got := a.callbackAttempts.Load(); got != 4 {
		t.Errorf("%d delivery attempts, want 4", got)
	}
}

func TestConformanceDuplicateTaskUUIDGivesOneResult(t *testing.T) {
	a, url := newPyServer(t)
	release := a.block("/vm/start")
	n := newNode(t, 0)
	done := make(chan agentclient.Result, 2)
	const id = "0123456789abcdef0123456789abcdef"
	err := n.client.Start(t.Context(), url, "/vm/start", startCmd{VMUUID: "v1"},
		func(r agentclient.Result) { done <- r }, agentclient.WithTaskUUID(id))
	if err != nil {
		t.Fatal(err)
	}
	// The node sends the same task again (e.g. after an ambiguous send
	// error): the agent answers 200 and ignores it.
	req, _ := http.NewRequest(http.MethodPost, url+"/vm/start", strings.NewReader(`{"vmInstanceUuid":"v1"}`))
	req.Header.Set(protocol.TaskUUIDHeader, id)
	req.Header.Set(protocol.CallbackURLHeader, n.url+protocol.DefaultCallbackPath)
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		t.Fatalf("duplicate answered %d, want 200", rsp.StatusCode)
	}
	release()
	if r := <-done; r.Err != nil {
		t.Fatal(r.Err)
	}
	a.wait()
	if got := a.callbacks.Load(); got != 1 {
		t.Errorf("%d results delivered, want 1", got)
	}
	select {
	case r := <-done:
		t.Fatalf("done called twice: %+v", r)
	default:
	}
}

func TestConformanceHeaderMistakes(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	tests := []struct {
		name   string
		call   func() error
		status int
	}{
		{"sync call to an async path (no taskuuid)", func() error {
			return n.client.CallSync(t.Context(), url, "/host/ping", struct{}{}, nil)
		}, http.StatusBadRequest},
		{"async call to a sync path (taskuuid)", func() error {
			return n.client.Call(t.Context(), url, "/host/connect", struct{}{}, nil)
		}, http.StatusInternalServerError},
		{"unknown path", func() error {
			return n.client.Call(t.Context(), url, "/no/such", struct{}{}, nil)
		}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var se *agentclient.StatusError
			if !errcode.Has(err, errcode.AgentError) || !errors.As(err, &se) || se.Status != tt.status {
				t.Fatalf("err = %v, want AgentError with status %d", err, tt.status)
			}
			if errcode.IsRetryable(err) {
				t.Errorf("%v must not be retryable", err)
			}
			if n.client.PendingCount() != 0 {
				t.Errorf("a refused command left a pending record")
			}
		})
	}
}

func TestConformanceNoCallbackTimesOut(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := n.client.Call(ctx, url, "/vm/crash", struct{}{}, nil)
	if !errcode.Has(err, errcode.Timeout) || errcode.CodeOf(err) != "SYS.1001" {
		t.Fatalf("err = %v, want Timeout SYS.1001", err)
	}
	if n.client.PendingCount() != 0 {
		t.Errorf("timed out call still pending")
	}
	if st := n.client.Stats(); st.TimedOut != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestConformanceNeverSendsNullInArrays(t *testing.T) {
	_, url := newPyServer(t)
	n := newNode(t, 0)
	disk := "d1"
	err := n.client.Call(t.Context(), url, "/vm/start", startCmd{VMUUID: "v1", Disks: []*string{&disk, nil}}, nil)
	if !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "$.disks[1]") {
		t.Fatalf("err = %v, want InvalidArgument naming $.disks[1]", err)
	}
	if st := n.client.Stats(); st.Started != 0 {
		t.Errorf("the command was sent: %+v", st)
	}
}

func TestConformanceTracebackResult(t *testing.T) {
	// What the real framework posts when a handler raises outside
	// @replyerror: a traceback body and an "error" header.
	n := newNode(t, 0)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	agent := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, cb := r.Header.Get("taskuuid"), r.Header.Get("callbackurl")
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.WriteHeader(http.StatusOK)
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, cb, strings.NewReader("Traceback (most recent call last): ..."))
			req.Header.Set("taskuuid", id)
			req.Header.Set("error", "Traceback (most recent call last): KeyError: 'vmInstanceUuid'")
			if rsp, err := http.DefaultClient.Do(req); err == nil {
				_ = rsp.Body.Close()
			}
		})
	})
	_, url := newPyServerWith(t, agent)
	err := n.client.Call(t.Context(), url, "/vm/start", struct{}{}, nil)
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "KeyError") {
		t.Fatalf("err = %v, want AgentError with the traceback", err)
	}
}
