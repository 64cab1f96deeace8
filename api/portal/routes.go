package portal

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/query"
	"mplane/api/rest"
	"mplane/errcode"
	"mplane/services/cluster"
	"mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/vm"
	"mplane/services/zone"
	"mplane/uid"
)

// Register mounts every route of the API on mux (under /v1 and /zstack/v1).
// Authentication is the caller's middleware.
func (p *Portal) Register(mux *http.ServeMux) {
	h := func(pattern string, fn http.HandlerFunc) { rest.HandleFunc(mux, pattern, fn) }

	rest.Handle(mux, "GET /api-jobs/{uuid}", p.jobs.Handler(jobs.HandlerOptions{}))

	// Zones, clusters, offerings, images, L3 networks: the resource service.
	h("POST /zones", createKind[zone.CreateParams](p, "zone", nil))
	h("POST /clusters", createKind(p, "cluster", func(ctx context.Context, db *gorm.DB, c *cluster.CreateParams) error { return c.Check(ctx, db) }))
	h("POST /instance-offerings", createKind[offering.CreateParams](p, "instance-offering", nil))
	h("POST /images", createKind[image.CreateParams](p, "image", nil))
	h("POST /l3-networks", createKind(p, network.L3Kind.Name, func(ctx context.Context, db *gorm.DB, c *network.L3Params) error { return c.Check(ctx, db) }))
	h("POST /l3-networks/{uuid}/ip-ranges", p.createIPRange)
	for _, d := range []struct{ path, kind string }{
		{"zones", "zone"}, {"clusters", "cluster"}, {"instance-offerings", "instance-offering"},
		{"images", "image"}, {"l3-networks", network.L3Kind.Name}, {"l3-networks/ip-ranges", network.IPRangeKind.Name},
	} {
		h("DELETE /"+d.path+"/{uuid}", p.deleteKind(d.kind))
	}

	// Hosts.
	h("POST /hosts/kvm", p.addHost)
	h("PUT /hosts/{uuid}/actions", p.hostAction)
	h("DELETE /hosts/{uuid}", p.deleteHost)

	// VMs.
	h("POST /vm-instances", p.createVM)
	h("PUT /vm-instances/{uuid}/actions", p.vmAction)
	h("DELETE /vm-instances/{uuid}", p.destroyVM)

	// Queries.
	queries(mux, "zones", zoneSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&zone.ZoneVO{}) }, p, []zone.ZoneVO(nil))
	queries(mux, "clusters", clusterSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&cluster.ClusterVO{}) }, p, []cluster.ClusterVO(nil))
	queries(mux, "hosts", hostSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&host.HostVO{}) }, p, []host.HostVO(nil))
	queries(mux, "instance-offerings", offeringSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&offering.InstanceOfferingVO{}) }, p, []offering.InstanceOfferingVO(nil))
	queries(mux, "images", imageSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&image.ImageVO{}) }, p, []image.ImageVO(nil))
	queries(mux, "l3-networks/ip-ranges", ipRangeSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&network.IpRangeVO{}) }, p, []network.IpRangeVO(nil))
	queries(mux, "l3-networks", l3Schema, func(db *gorm.DB) *gorm.DB { return db.Model(&network.L3NetworkVO{}) }, p, []network.L3NetworkVO(nil))
	queries(mux, "vm-instances", vmSchema, func(db *gorm.DB) *gorm.DB { return db.Model(&vm.VmInstanceVO{}).Preload("VMNics") }, p, []vm.VmInstanceVO(nil))
}

// validatable is a params struct the portal can check before the job
// starts.
type validatable interface{ Validate() error }

// createKind handles POST for a resource-service kind: decode and validate
// params (and check references with check), then submit resource.Create
// with a new UUID.
func createKind[P any, PP interface {
	*P
	validatable
}](p *Portal, kind string, check func(context.Context, *gorm.DB, PP) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		params := PP(new(P))
		if _, err := rest.DecodeParams(r, params); err != nil {
			rest.WriteError(w, err)
			return
		}
		if err := params.Validate(); err != nil {
			rest.WriteError(w, err)
			return
		}
		if check != nil {
			if err := check(r.Context(), p.db, params); err != nil {
				rest.WriteError(w, err)
				return
			}
		}
		body, err := json.Marshal(params)
		if err != nil {
			rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "encode params"))
			return
		}
		uuid := uid.New()
		req, _ := json.Marshal(resource.CreateReq{Kind: kind, UUID: uuid, Params: body})
		p.submit(w, r, "create-"+kind, submitReq{Service: resource.BusService, Name: resource.MsgCreate.Name(),
			ResourceUUID: uuid, Body: req, Wrap: "reply"})
	}
}

// createIPRange handles POST /l3-networks/{uuid}/ip-ranges.
func (p *Portal) createIPRange(w http.ResponseWriter, r *http.Request) {
	l3 := r.PathValue("uuid")
	if err := p.mustExist(r.Context(), &network.L3NetworkVO{}, "L3 network", l3); err != nil {
		rest.WriteError(w, err)
		return
	}
	// Decoded as a type without methods: the L3 network comes from the
	// path, and validation must see it.
	type ipRangeBody network.IPRangeParams
	var decoded ipRangeBody
	if _, err := rest.DecodeParams(r, &decoded); err != nil {
		rest.WriteError(w, err)
		return
	}
	params := network.IPRangeParams(decoded)
	params.L3NetworkUUID = l3
	if err := params.Validate(); err != nil {
		rest.WriteError(w, err)
		return
	}
	if err := params.Check(r.Context(), p.db); err != nil {
		rest.WriteError(w, err)
		return
	}
	body, _ := json.Marshal(params)
	uuid := uid.New()
	req, _ := json.Marshal(resource.CreateReq{Kind: network.IPRangeKind.Name, UUID: uuid, Params: body})
	p.submit(w, r, "add-ip-range", submitReq{Service: resource.BusService, Name: resource.MsgCreate.Name(),
		ResourceUUID: uuid, Body: req, Wrap: "reply"})
}

func (p *Portal) deleteKind(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		uuid := r.PathValue("uuid")
		if err := checkDeleteMode(r); err != nil {
			rest.WriteError(w, err)
			return
		}
		req, _ := json.Marshal(resource.DeleteReq{Kind: kind, UUID: uuid})
		p.submit(w, r, "delete-"+kind, submitReq{Service: resource.BusService, Name: resource.MsgDelete.Name(), ResourceUUID: uuid, Body: req})
	}
}

func checkDeleteMode(r *http.Request) error {
	switch m := r.URL.Query().Get("deleteMode"); m {
	case "", "Permissive", "Enforcing":
		return nil
	default:
		return errcode.New(errcode.InvalidArgument, "deleteMode must be Permissive or Enforcing, got %q", m)
	}
}

// hostParams are the API parameters of POST /hosts/kvm.
type hostParams struct {
	Name         string `json:"name,omitempty"`
	Description  string `json:"description,omitempty"`
	ManagementIP string `json:"managementIp"`
	AgentPort    int    `json:"agentPort,omitempty"`
	ClusterUUID  string `json:"clusterUuid"`
	// Username, Password and SSHPort are ZStack's (it deploys the agent over
	// SSH); mplane's agents run already, so they are accepted and unused.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	SSHPort  int    `json:"sshPort,omitempty"`
}

func (p *Portal) addHost(w http.ResponseWriter, r *http.Request) {
	var params hostParams
	if _, err := rest.DecodeParams(r, &params); err != nil {
		rest.WriteError(w, err)
		return
	}
	if params.ClusterUUID == "" {
		rest.WriteError(w, errcode.New(errcode.InvalidArgument, "clusterUuid is required"))
		return
	}
	var c cluster.ClusterVO
	if err := p.db.WithContext(r.Context()).First(&c, "uuid = ?", params.ClusterUUID).Error; err != nil {
		rest.WriteError(w, notFoundAsInvalid(err, "clusterUuid", params.ClusterUUID))
		return
	}
	uuid := uid.New()
	req := host.AddKVMHostReq{UUID: uuid, Name: params.Name, Description: params.Description, ManagementIP: params.ManagementIP,
		AgentPort: params.AgentPort, ZoneUUID: c.ZoneUUID, ClusterUUID: c.UUID}
	if err := host.ValidateAdd(&req); err != nil {
		rest.WriteError(w, err)
		return
	}
	body, _ := json.Marshal(req)
	p.submit(w, r, "add-kvm-host", submitReq{Service: host.BusService, Name: host.MsgAddKVMHost.Name(), ResourceUUID: uuid, Body: body, Wrap: "inventory"})
}

func (p *Portal) hostAction(w http.ResponseWriter, r *http.Request) {
	uuid := r.PathValue("uuid")
	if err := p.mustExist(r.Context(), &host.HostVO{}, "host", uuid); err != nil {
		rest.WriteError(w, err)
		return
	}
	a, err := rest.DecodeAction(r, "reconnectHost")
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	body, _ := json.Marshal(host.HostRef{UUID: uuid})
	p.submit(w, r, a.Name, submitReq{Service: host.BusService, Name: host.MsgReconnectHost.Name(), ResourceUUID: uuid, Body: body, Wrap: "inventory"})
}

func (p *Portal) deleteHost(w http.ResponseWriter, r *http.Request) {
	uuid := r.PathValue("uuid")
	if err := checkDeleteMode(r); err != nil {
		rest.WriteError(w, err)
		return
	}
	var n int64
	if err := p.db.WithContext(r.Context()).Model(&vm.VmInstanceVO{}).Where("host_uuid = ?", uuid).Count(&n).Error; err != nil {
		rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "count VMs on host %s", uuid))
		return
	}
	if n > 0 {
		rest.WriteError(w, errcode.New(errcode.InvalidState, "host %s still runs %d VMs; stop or destroy them first", uuid, n))
		return
	}
	body, _ := json.Marshal(host.HostRef{UUID: uuid})
	p.submit(w, r, "delete-host", submitReq{Service: host.BusService, Name: host.MsgDeleteHost.Name(), ResourceUUID: uuid, Body: body})
}

func (p *Portal) createVM(w http.ResponseWriter, r *http.Request) {
	var params vm.CreateParams
	if _, err := rest.DecodeParams(r, &params); err != nil {
		rest.WriteError(w, err)
		return
	}
	if err := params.Validate(); err != nil {
		rest.WriteError(w, err)
		return
	}
	sizing, err := params.Check(r.Context(), p.db, p.opts.IPAM)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	uuid := uid.New()
	body, _ := json.Marshal(vm.CreateReq{UUID: uuid, Params: params, Sizing: sizing})
	p.submit(w, r, "create-vm-instance", submitReq{Service: vm.BusService, Name: vm.MsgCreate.Name(), ResourceUUID: uuid, Body: body, Wrap: "inventory"})
}

// vmActions maps action names to messages.
var vmActions = map[string]string{
	"startVmInstance":   vm.MsgStart.Name(),
	"stopVmInstance":    vm.MsgStop.Name(),
	"rebootVmInstance":  vm.MsgReboot.Name(),
	"destroyVmInstance": vm.MsgDestroy.Name(),
	"expungeVmInstance": vm.MsgExpunge.Name(),
}

func (p *Portal) vmAction(w http.ResponseWriter, r *http.Request) {
	uuid := r.PathValue("uuid")
	if err := p.mustExist(r.Context(), &vm.VmInstanceVO{}, "VM", uuid); err != nil {
		rest.WriteError(w, err)
		return
	}
	a, err := rest.DecodeAction(r, "startVmInstance", "stopVmInstance", "rebootVmInstance", "destroyVmInstance", "expungeVmInstance")
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	var op struct {
		Type string `json:"type,omitempty"`
	}
	if a.Name == "stopVmInstance" {
		if err := a.Decode(&op); err != nil {
			rest.WriteError(w, err)
			return
		}
		if op.Type != "" && op.Type != "grace" && op.Type != "cold" {
			rest.WriteError(w, errcode.New(errcode.InvalidArgument, "stopVmInstance.type must be grace or cold, got %q", op.Type))
			return
		}
	} else if err := a.Decode(&struct{}{}); err != nil {
		rest.WriteError(w, err)
		return
	}
	wrap := "inventory"
	if a.Name == "expungeVmInstance" {
		wrap = ""
	}
	body, _ := json.Marshal(vm.OpReq{UUID: uuid, Type: op.Type})
	p.submit(w, r, a.Name, submitReq{Service: vm.BusService, Name: vmActions[a.Name], ResourceUUID: uuid, Body: body, Wrap: wrap})
}

func (p *Portal) destroyVM(w http.ResponseWriter, r *http.Request) {
	uuid := r.PathValue("uuid")
	if err := checkDeleteMode(r); err != nil {
		rest.WriteError(w, err)
		return
	}
	if err := p.mustExist(r.Context(), &vm.VmInstanceVO{}, "VM", uuid); err != nil {
		rest.WriteError(w, err)
		return
	}
	body, _ := json.Marshal(vm.OpReq{UUID: uuid})
	p.submit(w, r, "destroy-vm-instance", submitReq{Service: vm.BusService, Name: vm.MsgDestroy.Name(), ResourceUUID: uuid, Body: body})
}

// queries mounts GET /<path> and GET /<path>/{uuid}.
func queries[T any](mux *http.ServeMux, path string, schema *query.Schema, base func(*gorm.DB) *gorm.DB, p *Portal, _ []T) {
	list := func(w http.ResponseWriter, r *http.Request, uuid string) {
		q, err := query.Parse(schema, r.URL.Query())
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		db := base(p.db)
		if uuid != "" {
			db = db.Where("uuid = ?", uuid)
		}
		rows, total, err := query.Find[T](r.Context(), db, q)
		if err != nil {
			rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "query %s", path))
			return
		}
		if uuid != "" && len(rows) == 0 && !q.Count {
			rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "%s %s not found", path, uuid))
			return
		}
		rep, err := q.Reply(rows, total)
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		rest.WriteJSON(w, http.StatusOK, rep)
	}
	rest.HandleFunc(mux, "GET /"+path, func(w http.ResponseWriter, r *http.Request) { list(w, r, "") })
	rest.HandleFunc(mux, "GET /"+path+"/{uuid}", func(w http.ResponseWriter, r *http.Request) { list(w, r, r.PathValue("uuid")) })
}

// mustExist answers 404 for an unknown resource named in the path.
func (p *Portal) mustExist(ctx context.Context, model any, what, uuid string) error {
	var n int64
	if err := p.db.WithContext(ctx).Model(model).Where("uuid = ?", uuid).Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up %s %s", what, uuid)
	}
	if n == 0 {
		return errcode.New(errcode.ResourceNotFound, "%s %s not found", what, uuid)
	}
	return nil
}

func notFoundAsInvalid(err error, field, uuid string) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return errcode.New(errcode.InvalidArgument, "%s %s does not exist", field, uuid)
	}
	return errcode.Wrap(errcode.Internal, err, "look up %s %s", field, uuid)
}

func accountOf(r *http.Request) string {
	if id, ok := auth.FromContext(r.Context()); ok {
		return id.AccountUUID
	}
	return ""
}
