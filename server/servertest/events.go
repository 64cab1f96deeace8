package servertest

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/protocol"
)

// PostEventExpecting posts an agent's event (commandpath path, with secret
// in protocol.SecretHeader unless empty) to url with "Expect: 100-continue":
// the client sends the body only once the server starts reading it, so the
// bytes sent tell whether the server read the body before it answered.
func PostEventExpecting(t testing.TB, url, path, secret string, body io.Reader, length int64) (status int, sent int64) {
	t.Helper()
	tr := &http.Transport{ExpectContinueTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	sb := &sentBody{r: body}
	req, err := http.NewRequest(http.MethodPost, url, sb)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Expect", "100-continue")
	req.Header.Set(protocol.CommandPathHeader, path)
	req.Header.Set("Content-Type", protocol.JSONContentType)
	if secret != "" {
		req.Header.Set(protocol.SecretHeader, secret)
	}
	rsp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("post event %s: %v", path, err)
	}
	_ = rsp.Body.Close()
	return rsp.StatusCode, sb.sent.Load()
}

// sentBody is a request body that counts what the client sent of it.
type sentBody struct {
	r    io.Reader
	sent atomic.Int64
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.sent.Add(int64(n))
	return n, err
}

// Zeros reads as an endless run of zero bytes.
type Zeros struct{}

func (Zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
