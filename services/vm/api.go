package vm

import (
	"context"

	"mplane/api/route"
	"mplane/errcode"
)

// StopParams are the params of stopVmInstance.
type StopParams struct {
	// Type is "grace" (the default) or "cold".
	Type string `json:"type,omitempty"`
}

// Validate checks the stop type.
func (p *StopParams) Validate() error {
	if p.Type != "" && p.Type != "grace" && p.Type != "cold" {
		return errcode.New(errcode.InvalidArgument, "stopVmInstance.type must be grace or cold, got %q", p.Type)
	}
	return nil
}

// API is the VM's REST surface: POST /v1/vm-instances creates a VM, GET
// queries (with vmNics), the actions start, stop, reboot, destroy and
// expunge it, DELETE destroys it.
func (s *Service) API() []route.Resource {
	op := func(_ context.Context, in route.In[struct{}]) (OpReq, error) { return OpReq{UUID: in.UUID}, nil }
	nics, nicCalls, nicActions := s.nicAPI()
	return []route.Resource{nics, {
		Path:   "vm-instances",
		Access: route.Owned,
		Name:   "VM",
		Query:  route.QueryOf[VmInstanceVO](route.Preload("VMNics"), route.Preload("VMNics.UsedIPs"), route.PreloadOrdered("AllVolumes", volumeOrder)),
		Create: route.Ptr(route.Create(MsgCreate, s.acceptCreate)),
		Actions: []route.Op{
			route.Action("startVmInstance", MsgStart, op),
			route.Action("stopVmInstance", MsgStop, func(_ context.Context, in route.In[StopParams]) (OpReq, error) {
				return OpReq{UUID: in.UUID, Type: in.Params.Type}, nil
			}),
			route.Action("rebootVmInstance", MsgReboot, op),
			route.Action("destroyVmInstance", MsgDestroy, op),
			route.ActionNoResult("expungeVmInstance", MsgExpunge, op),
			nicActions[0], nicActions[1],
		},
		Delete: route.Ptr(route.Delete(MsgDestroy, func(_ context.Context, in route.In[route.DeleteParams]) (OpReq, error) {
			return OpReq{UUID: in.UUID}, nil
		}).Existing()),
		Calls: append(volumeCalls(), nicCalls...),
	}}
}

// acceptCreate checks what a create names (the offering, the image, each L3
// network with an IP range, the host if one is required) and passes the
// sizing it read to the owner, which then reads nothing again.
func (s *Service) acceptCreate(ctx context.Context, in route.In[CreateParams]) (CreateReq, error) {
	sizing, err := in.Params.Check(ctx, in.DB, s.opts.IPAM)
	if err != nil {
		return CreateReq{}, err
	}
	static, err := staticIPs(in.SystemTags, in.Params.L3NetworkUUIDs)
	if err != nil {
		return CreateReq{}, err
	}
	return CreateReq{UUID: in.UUID, Params: in.Params, Sizing: sizing, StaticIPs: static}, nil
}
