package storage

import (
	"context"
	"net"
	"net/http"
	"path"
	"strings"

	"mplane/api/route"
	"mplane/errcode"
	"mplane/services/cluster"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

// AddPrimaryStorageParams are the params of POST
// /v1/primary-storage/local-storage and /v1/primary-storage/smp: url is
// the directory on the hosts (an absolute path).
type AddPrimaryStorageParams struct {
	resource.Params
	URL      string `json:"url"`
	ZoneUUID string `json:"zoneUuid"`
	// Type is ZStack's; when given it must be the path's type.
	Type string `json:"type,omitempty"`
}

// Validate checks the url and the zone.
func (p *AddPrimaryStorageParams) Validate() error {
	problems := p.Problems()
	if !absCleanPath(p.URL) {
		problems = append(problems, "url must be an absolute directory path on the hosts, such as /var/lib/mplane/local, got \""+p.URL+"\"")
	}
	if p.ZoneUUID == "" {
		problems = append(problems, "zoneUuid is required")
	}
	return resource.Invalid(problems)
}

func absCleanPath(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && p != "/" && len(p) <= 1024
}

// AddImageStoreParams are the params of POST /v1/backup-storage/image-store:
// hostname (and agentPort, default 7080) is the storage agent, url the
// directory it serves. username, password and sshPort are ZStack's (it
// deploys the agent over SSH); the agent runs already, so they are
// accepted and unused.
type AddImageStoreParams struct {
	resource.Params
	URL          string `json:"url"`
	Hostname     string `json:"hostname"`
	AgentPort    int    `json:"agentPort,omitempty"`
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	SSHPort      int    `json:"sshPort,omitempty"`
	Type         string `json:"type,omitempty"`
	ImportImages bool   `json:"importImages,omitempty"`
}

// Validate checks the address and fills the default port.
func (p *AddImageStoreParams) Validate() error {
	problems := p.Problems()
	if !absCleanPath(p.URL) {
		problems = append(problems, "url must be the absolute path of the directory the agent serves, such as /var/lib/mplane/images, got \""+p.URL+"\"")
	}
	if p.Hostname == "" || len(p.Hostname) > 255 || strings.ContainsAny(p.Hostname, "/ :") && net.ParseIP(p.Hostname) == nil {
		problems = append(problems, "hostname is required: the address of the storage agent (an IP address or a DNS name)")
	}
	if p.AgentPort == 0 {
		p.AgentPort = DefaultBackupAgentPort
	}
	if p.AgentPort < 1 || p.AgentPort > 65535 {
		problems = append(problems, "agentPort must be between 1 and 65535")
	}
	if p.SSHPort < 0 || p.SSHPort > 65535 {
		problems = append(problems, "sshPort must be between 1 and 65535")
	}
	if p.Type != "" && p.Type != TypeImageStore {
		problems = append(problems, "type must be "+TypeImageStore+" on this path, got \""+p.Type+"\"")
	}
	return resource.Invalid(problems)
}

// ChangeStateParams are the params of change...State: stateEvent enable or
// disable.
type ChangeStateParams struct {
	StateEvent string `json:"stateEvent"`
}

// Validate checks the event.
func (p *ChangeStateParams) Validate() error {
	if p.StateEvent != "enable" && p.StateEvent != "disable" {
		return errcode.New(errcode.InvalidArgument, "stateEvent must be enable or disable, got %q", p.StateEvent)
	}
	return nil
}

// ClusterParams are the params of the attach and detach calls.
type ClusterParams struct {
	ClusterUUID        string `json:"clusterUuid"`
	PrimaryStorageUUID string `json:"primaryStorageUuid"`
}

// ZoneParams are the params of the backup storage attach and detach calls.
type ZoneParams struct {
	ZoneUUID          string `json:"zoneUuid"`
	BackupStorageUUID string `json:"backupStorageUuid"`
}

func addPrimary(typ string) route.Build[AddPrimaryStorageParams, AddPrimaryStorageReq] {
	return func(ctx context.Context, in route.In[AddPrimaryStorageParams]) (AddPrimaryStorageReq, error) {
		p := in.Params
		if p.Type != "" && p.Type != typ {
			return AddPrimaryStorageReq{}, errcode.New(errcode.InvalidArgument, "type must be %s on this path, got %q", typ, p.Type)
		}
		if err := resource.MustExist(ctx, in.DB, &zone.ZoneVO{}, "zoneUuid", p.ZoneUUID); err != nil {
			return AddPrimaryStorageReq{}, err
		}
		return AddPrimaryStorageReq{UUID: uid.New(), Type: typ, Name: p.Name, Description: p.Description, URL: p.URL, ZoneUUID: p.ZoneUUID}, nil
	}
}

func ref(_ context.Context, in route.In[struct{}]) (Ref, error) { return Ref{UUID: in.UUID}, nil }

func update(_ context.Context, in route.In[resource.UpdateParams]) (ChangeReq, error) {
	return ChangeReq{UUID: in.UUID, Name: in.Params.Name, Description: in.Params.Description}, nil
}

func changeState(_ context.Context, in route.In[ChangeStateParams]) (ChangeReq, error) {
	return ChangeReq{UUID: in.UUID, StateEvent: in.Params.StateEvent}, nil
}

func clusterRef(ctx context.Context, in route.In[ClusterParams]) (ClusterRefReq, error) {
	if err := resource.MustExist(ctx, in.DB, &PrimaryStorageVO{}, "primaryStorageUuid", in.Params.PrimaryStorageUUID); err != nil {
		return ClusterRefReq{}, err
	}
	if err := resource.MustExist(ctx, in.DB, &cluster.ClusterVO{}, "clusterUuid", in.Params.ClusterUUID); err != nil {
		return ClusterRefReq{}, err
	}
	return ClusterRefReq{PrimaryStorageUUID: in.Params.PrimaryStorageUUID, ClusterUUID: in.Params.ClusterUUID}, nil
}

func zoneRef(ctx context.Context, in route.In[ZoneParams]) (ZoneRefReq, error) {
	if err := resource.MustExist(ctx, in.DB, &BackupStorageVO{}, "backupStorageUuid", in.Params.BackupStorageUUID); err != nil {
		return ZoneRefReq{}, err
	}
	if err := resource.MustExist(ctx, in.DB, &zone.ZoneVO{}, "zoneUuid", in.Params.ZoneUUID); err != nil {
		return ZoneRefReq{}, err
	}
	return ZoneRefReq{BackupStorageUUID: in.Params.BackupStorageUUID, ZoneUUID: in.Params.ZoneUUID}, nil
}

// API is the REST surface of primary and backup storage, in ZStack's names.
func (s *Service) API() []route.Resource {
	const psAttach = "clusters/{clusterUuid}/primary-storage/{primaryStorageUuid}"
	const bsAttach = "zones/{zoneUuid}/backup-storage/{backupStorageUuid}"
	return []route.Resource{{
		Path:  "primary-storage",
		Name:  "primary storage",
		Query: route.QueryOf[PrimaryStorageVO](route.Preload("ClusterRefs")),
		Actions: []route.Op{
			route.Action("updatePrimaryStorage", MsgChangePrimaryStorage, update),
			route.Action("changePrimaryStorageState", MsgChangePrimaryStorage, changeState),
			route.Action("reconnectPrimaryStorage", MsgReconnectPrimaryStorage, ref),
			route.Action("syncPrimaryStorageCapacity", MsgReconnectPrimaryStorage, ref),
		},
		Delete: route.Ptr(route.Delete(MsgDeletePrimaryStorage, func(_ context.Context, in route.In[route.DeleteParams]) (Ref, error) {
			return Ref{UUID: in.UUID}, nil
		})),
		Calls: []route.Op{
			route.Call(http.MethodPost, "primary-storage/local-storage", MsgAddPrimaryStorage, addPrimary(TypeLocalStorage)).Creating(),
			route.Call(http.MethodPost, "primary-storage/smp", MsgAddPrimaryStorage, addPrimary(TypeSharedMountPoint)).Creating(),
			route.Call(http.MethodPost, psAttach, MsgAttachPrimaryStorage, clusterRef),
			route.Call(http.MethodDelete, psAttach, MsgDetachPrimaryStorage, clusterRef),
		},
	}, {
		Path:  "backup-storage",
		Name:  "backup storage",
		Query: route.QueryOf[BackupStorageVO](route.Preload("ZoneRefs")),
		Actions: []route.Op{
			route.Action("updateBackupStorage", MsgChangeBackupStorage, update),
			route.Action("changeBackupStorageState", MsgChangeBackupStorage, changeState),
			route.Action("reconnectBackupStorage", MsgReconnectBackupStorage, ref),
		},
		Delete: route.Ptr(route.Delete(MsgDeleteBackupStorage, func(_ context.Context, in route.In[route.DeleteParams]) (Ref, error) {
			return Ref{UUID: in.UUID}, nil
		})),
		Calls: []route.Op{
			route.Call(http.MethodPost, "backup-storage/image-store", MsgAddBackupStorage,
				func(_ context.Context, in route.In[AddImageStoreParams]) (AddBackupStorageReq, error) {
					p := in.Params
					return AddBackupStorageReq{UUID: uid.New(), Name: p.Name, Description: p.Description, URL: p.URL, Hostname: p.Hostname,
						AgentPort: p.AgentPort, Username: p.Username, SSHPort: p.SSHPort}, nil
				}).Creating(),
			route.Call(http.MethodPost, bsAttach, MsgAttachBackupStorage, zoneRef),
			route.Call(http.MethodDelete, bsAttach, MsgDetachBackupStorage, zoneRef),
		},
	}}
}
