package storage_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"mplane/agents/protocol"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/storage"
	"mplane/uid"
)

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
				body, length = io.LimitReader(servertest.Zeros{}, tc.length), tc.length
			}
			status, sent := servertest.PostEventExpecting(t, st.URL+server.StorageEventPath+tc.query, protocol.EventProgressReport, tc.secret, body, length)
			if status != tc.want {
				t.Errorf("answered %d, want %d", status, tc.want)
			}
			if read := sent > 0; read != tc.read {
				t.Errorf("the node read %d bytes of the body; want it read: %v", sent, tc.read)
			}
		})
	}
}
