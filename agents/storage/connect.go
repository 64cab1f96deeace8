package storage

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// echoHandler answers PathStorageEcho like kvmagent's echo: 200 with an
// empty body, 500 for a taskuuid (a sync path).
type echoHandler struct{}

func (echoHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", protocol.HTMLContentType)
	if r.Header.Get(protocol.TaskUUIDHeader) != "" {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"success":false,"error":"found async task uuid in header of sync path ` + protocol.PathStorageEcho + `"}`))
		return
	}
	w.WriteHeader(http.StatusOK)
}

var errSecretChanged = errors.New("storage secret changed during connect; retry with the current secret")

// admit enforces the storage's secret, once it has one, on every request
// but echo.
func (a *Agent) admit(r *http.Request, route agentserver.Route) error {
	if route.Path == protocol.PathStorageEcho {
		return nil
	}
	return a.checkSecret(r)
}

func (a *Agent) checkSecret(r *http.Request) error {
	a.mu.Lock()
	secret := a.secret
	a.mu.Unlock()
	if !secretOK(secret, r.Header.Get(protocol.SecretHeader)) {
		a.log.Warn("request without the storage secret refused", "path", r.URL.Path, "remote_addr", r.RemoteAddr)
		return &agentserver.StatusError{Status: http.StatusUnauthorized,
			Msg: "missing or wrong " + protocol.SecretHeader + " header"}
	}
	return nil
}

// secretOK: with no secret held everything passes (the Python agents'
// behaviour); else the header must match, compared in constant time.
func secretOK(held, got string) bool {
	if held == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(held), []byte(got)) == 1
}

func (a *Agent) connect(_ context.Context, req *agentserver.Request, cmd protocol.StorageConnectCmd) (protocol.StorageConnectRsp, error) {
	if cmd.UUID == "" {
		return protocol.StorageConnectRsp{}, errors.New("uuid is required: the storage's UUID")
	}
	a.mu.Lock()
	if !secretOK(a.secret, req.Header.Get(protocol.SecretHeader)) {
		a.mu.Unlock()
		return protocol.StorageConnectRsp{}, errSecretChanged
	}
	a.uuid = cmd.UUID
	a.sendCommandURL = cmd.SendCommandURL
	if cmd.Secret != "" {
		a.secret = cmd.Secret
	}
	a.mu.Unlock()
	c, err := a.capacity()
	if err != nil {
		return protocol.StorageConnectRsp{}, err
	}
	a.log.Info("connected", "uuid", cmd.UUID, "send_command_url", cmd.SendCommandURL, "secret", cmd.Secret != "")
	formats := []string{protocol.FormatRaw}
	if a.qemu.ok() {
		formats = []string{protocol.FormatQcow2, protocol.FormatRaw}
	}
	return protocol.StorageConnectRsp{
		StorageCapacity: c,
		Version:         a.opts.Version,
		Formats:         formats,
		QemuImgVersion:  a.qemu.version,
	}, nil
}

// SetConnection sets what a PathStorageConnect would: the storage's UUID
// (ping answers it, progress events name it as serverUuid), the URL its
// events go to, and the secret they carry and every later request but echo
// must carry in protocol.SecretHeader. An empty secret keeps the one held,
// as a connect without one does. It is how an agent that is mounted in
// another (the KVM agent's storage, used through Handler) is connected:
// through its host's /host/connect, with the host's UUID and secret.
func (a *Agent) SetConnection(uuid, sendCommandURL, secret string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.uuid = uuid
	a.sendCommandURL = sendCommandURL
	if secret != "" {
		a.secret = secret
	}
}

func (a *Agent) ping(context.Context, *agentserver.Request, protocol.StoragePingCmd) (protocol.StoragePingRsp, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return protocol.StoragePingRsp{UUID: a.uuid, SendCommandURL: a.sendCommandURL, Version: a.opts.Version}, nil
}

func (a *Agent) capacityCmd(context.Context, *agentserver.Request, struct{}) (protocol.StorageRsp, error) {
	c, err := a.capacity()
	return protocol.StorageRsp{StorageCapacity: c}, err
}

// capacity measures the root's file system.
func (a *Agent) capacity() (protocol.StorageCapacity, error) {
	total, avail, err := statfs(a.root)
	if err != nil {
		return protocol.StorageCapacity{}, fmt.Errorf("measure the capacity of the storage root: %w", err)
	}
	return protocol.StorageCapacity{TotalCapacity: total, AvailableCapacity: avail}, nil
}

// capacityNow is the capacity for an answer: failing to measure it does
// not fail a command that has done its work.
func (a *Agent) capacityNow() protocol.StorageCapacity {
	c, err := a.capacity()
	if err != nil {
		a.log.Warn("capacity not measured", "err", err)
	}
	return c
}
