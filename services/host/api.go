package host

import (
	"context"

	"gorm.io/gorm"

	"mplane/api/route"
	"mplane/errcode"
	"mplane/services/cluster"
	"mplane/services/resource"
)

// API is the host's REST surface: POST /v1/hosts/kvm adds a KVM host,
// GET /v1/hosts queries, reconnectHost reconnects, DELETE removes a host
// that runs no VM.
func (s *Service) API() []route.Resource {
	return []route.Resource{{
		Path:  "hosts",
		Name:  "host",
		Query: route.QueryOf[HostVO](),
		Create: route.Ptr(route.Create(MsgAddKVMHost, func(ctx context.Context, in route.In[AddKVMHostParams]) (AddKVMHostReq, error) {
			p := in.Params
			if err := s.opts.AddressPolicy.CheckHost(p.ManagementIP); err != nil {
				return AddKVMHostReq{}, errcode.New(errcode.InvalidArgument, "managementIp: %v; agent_networks names the networks agents may be on", err)
			}
			c, err := resource.Load[cluster.ClusterVO](ctx, in.DB, "cluster", p.ClusterUUID)
			if err != nil {
				if errcode.Has(err, errcode.ResourceNotFound) {
					return AddKVMHostReq{}, errcode.New(errcode.InvalidArgument, "clusterUuid %s does not exist", p.ClusterUUID)
				}
				return AddKVMHostReq{}, err
			}
			return AddKVMHostReq{UUID: in.UUID, Name: p.Name, Description: p.Description, ManagementIP: p.ManagementIP,
				AgentPort: p.AgentPort, ZoneUUID: c.ZoneUUID, ClusterUUID: c.UUID}, nil
		}).At("hosts/kvm")),
		Actions: []route.Op{
			route.Action("reconnectHost", MsgReconnectHost, func(_ context.Context, in route.In[struct{}]) (HostRef, error) {
				return HostRef{UUID: in.UUID}, nil
			}),
		},
		Delete: route.Ptr(route.Delete(MsgDeleteHost, func(ctx context.Context, in route.In[route.DeleteParams]) (HostRef, error) {
			if err := refuseIfRunsVMs(ctx, in.DB, in.UUID); err != nil {
				return HostRef{}, err
			}
			return HostRef{UUID: in.UUID}, nil
		})),
	}}
}

// refuseIfRunsVMs refuses to delete a host that VMs are on.
func refuseIfRunsVMs(ctx context.Context, db *gorm.DB, hostUUID string) error {
	var n int64
	if err := db.WithContext(ctx).Table("vm_instances").Where("host_uuid = ?", hostUUID).Count(&n).Error; err != nil {
		if !db.Migrator().HasTable("vm_instances") {
			return nil
		}
		return errcode.Wrap(errcode.Internal, err, "count VMs on host %s", hostUUID)
	}
	if n > 0 {
		return errcode.New(errcode.InvalidState, "host %s still runs %d VMs; stop or destroy them first", hostUUID, n)
	}
	return nil
}
