package storage_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/storage"
	"mplane/uid"
)

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

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestBackupEventsAuthenticatedBeforeTheBody: the backup storage event
// endpoint settles who sent an event from its URL and headers alone: with
// "Expect: 100-continue" the client sends the body only once the node
// reads it, and a refused event (no secret or a wrong one: 401, an unknown
// storage: 404, no storage in the URL: 400, a body announced larger than
// 64 KiB: 413) is answered with none of it sent.
func TestBackupEventsAuthenticatedBeforeTheBody(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	var b storage.BackupStorageVO
	if err := st.DB().Take(&b, "uuid = ?", bs.UUID).Error; err != nil || b.Secret == "" {
		t.Fatalf("backup storage %s: %+v, %v", bs.UUID, b, err)
	}
	q := "?backupStorageUuid=" + bs.UUID
	progress := `{"progress":"50","processType":"DownloadImage","resourceUuid":"` + uid.New() + `"}`

	for _, tc := range []struct {
		name, query, secret string
		length              int64 // 0: the progress report
		want                int
		read                bool
	}{
		{"no secret, from the storage's address", q, "", 0, http.StatusUnauthorized, false},
		{"wrong secret", q, "guess", 0, http.StatusUnauthorized, false},
		{"unknown storage", "?backupStorageUuid=" + uid.New(), b.Secret, 0, http.StatusNotFound, false},
		{"no storage in the URL", "", b.Secret, 0, http.StatusBadRequest, false},
		{"larger than 64 KiB", q, b.Secret, 16 << 20, http.StatusRequestEntityTooLarge, false},
		{"the storage's own event", q, b.Secret, 0, http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(progress)
			length := int64(len(progress))
			if tc.length > 0 {
				body, length = io.LimitReader(zeros{}, tc.length), tc.length
			}
			sb := &sentBody{r: body}
			req, err := http.NewRequest(http.MethodPost, st.URL+server.StorageEventPath+tc.query, sb)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = length
			req.Header.Set("Expect", "100-continue")
			req.Header.Set(protocol.CommandPathHeader, protocol.EventProgressReport)
			req.Header.Set("Content-Type", protocol.JSONContentType)
			if tc.secret != "" {
				req.Header.Set(protocol.SecretHeader, tc.secret)
			}
			tr := &http.Transport{ExpectContinueTimeout: time.Minute}
			defer tr.CloseIdleConnections()
			rsp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = rsp.Body.Close()
			if rsp.StatusCode != tc.want {
				t.Errorf("answered %d, want %d", rsp.StatusCode, tc.want)
			}
			if read := sb.sent.Load() > 0; read != tc.read {
				t.Errorf("the node read %d bytes of the body; want it read: %v", sb.sent.Load(), tc.read)
			}
		})
	}
}
