package network

import (
	"context"
	"net/http"

	"gorm.io/gorm"

	"mplane/api/route"
	"mplane/services/resource"
)

// L3Kind is the L3 network's simple kind: POST/GET/DELETE /v1/l3-networks,
// updateL3Network, and ZStack's AddDnsToL3Network (POST
// /v1/l3-networks/{l3NetworkUuid}/dns) and RemoveDnsFromL3Network (DELETE
// /v1/l3-networks/{l3NetworkUuid}/dns/{dns}), which answer the network. Its
// inventory has its DNS servers and IP ranges. A delete refuses while an IP
// of the network is used.
var L3Kind = resource.NewKind(resource.Spec[L3NetworkVO, L3Params]{
	Name: "l3-network", Noun: "L3Network", Path: "l3-networks", What: "l3 network", Access: route.Shared,
	Check:  func(ctx context.Context, db *gorm.DB, p *L3Params) error { return p.Check(ctx, db) },
	New:    l3Row, // unused: Create inserts, under the L2 network's lock
	Create: createL3,
	Delete: func(ctx context.Context, db *gorm.DB, req resource.DeleteReq) error {
		return DeleteL3Network(ctx, db, req.UUID)
	},
	Calls: []resource.Call[L3NetworkVO]{AddDNS, RemoveDNS},
	Query: []route.QueryOption{route.PreloadOrdered("DNSRefs", "id"), route.PreloadOrdered("IPRanges", "start_ip_long")},
	// The foreign key to l2_networks comes with Migrate (which adds it to
	// a table made without it); its DNS servers' to it here.
	Models: []any{&L3NetworkVO{}, &l3DNSSchema{}},
})

// AddDNS and RemoveDNS are the L3 kind's DNS calls (ZStack's
// AddDnsToL3Network and RemoveDnsFromL3Network), in the network's chain:
// adding one it has, or removing one it has not, is a no-op.
var (
	AddDNS = resource.NewCall(resource.CallSpec[L3NetworkVO, DNSParams]{
		Name: "AddDnsToL3Network", Method: http.MethodPost, Path: "l3-networks/{l3NetworkUuid}/dns",
		Target: func(p *DNSParams) string { return p.L3NetworkUUID },
		Apply:  addDNS,
	})
	RemoveDNS = resource.NewCall(resource.CallSpec[L3NetworkVO, DNSParams]{
		Name: "RemoveDnsFromL3Network", Method: http.MethodDelete, Path: "l3-networks/{l3NetworkUuid}/dns/{dns}",
		Target: func(p *DNSParams) string { return p.L3NetworkUUID },
		Apply:  removeDNS,
	})
)

// IPRangeKind is the IP range's simple kind: POST
// /v1/l3-networks/{uuid}/ip-ranges, GET and DELETE /v1/l3-networks/ip-ranges,
// updateIpRange. Its model carries the foreign key to l3_networks, so
// L3Kind migrates first.
var IPRangeKind = resource.NewKind(resource.Spec[IpRangeVO, IPRangeParams]{
	Name: "ip-range", Noun: "IpRange", Path: "l3-networks/ip-ranges", What: "ip range",
	CreateAt: "l3-networks/{uuid}/ip-ranges",
	Parent:   func(p *IPRangeParams) *string { return &p.L3NetworkUUID },
	Check:    func(ctx context.Context, db *gorm.DB, p *IPRangeParams) error { return p.Check(ctx, db) },
	New:      func(resource.Base, IPRangeParams) IpRangeVO { return IpRangeVO{} }, // unused: Create adds the range
	Create: func(ctx context.Context, db *gorm.DB, uuid string, p IPRangeParams) (IpRangeVO, error) {
		p.UUID = uuid
		return AddIpRange(ctx, db, p)
	},
	Delete: func(ctx context.Context, db *gorm.DB, req resource.DeleteReq) error {
		return DeleteIpRange(ctx, db, req.UUID)
	},
	Models: []any{&ipRangeSchema{}},
})

// L2Kinds are the L2 networks' simple kinds, in ZStack's REST shape:
//
//   - Networks, every L2 network: POST /v1/l2-networks/no-vlan (its own
//     create) and the further creates CreateVlan (/vlan), CreatePool
//     (/vxlan-pool) and CreateVxlan (/vxlan); GET /v1/l2-networks and the
//     views of one type (/vlan, /vxlan, /vxlan-pool); DELETE
//     /v1/l2-networks/{uuid}; updateL2Network; Attach and Detach (POST and
//     DELETE /v1/l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}; a
//     VXLAN network is neither attached nor detached: it follows its
//     pool's clusters);
//   - VniRanges, a pool's VNI ranges: POST
//     /v1/l2-networks/vxlan-pool/{uuid}/vni-range, GET
//     /v1/l2-networks/vxlan-pool/vni-range, DELETE and updateVniRange
//     (ZStack's paths; "vni-ranges" is accepted too).
//
// Every operation on one L2 network runs in its chain on its owner. A
// VXLAN network's create allocates its VNI, and its delete releases it,
// through the allocator the kinds were made with.
type L2Kinds struct {
	Networks    *resource.KindOf[L2NetworkVO, L2NoVlanParams]
	CreateVlan  *resource.CreateOf[L2NetworkVO, L2VlanParams]
	CreatePool  *resource.CreateOf[L2NetworkVO, L2VxlanPoolParams]
	CreateVxlan *resource.CreateOf[L2NetworkVO, L2VxlanParams]
	Attach      *resource.CallOf[L2NetworkVO, ClusterRefParams]
	Detach      *resource.CallOf[L2NetworkVO, ClusterRefParams]
	VniRanges   *resource.KindOf[VniRangeVO, VniRangeParams]
}

// NewL2Kinds makes the L2 kinds with vni, the cluster's VNI pool. With vni
// nil they serve to migrate the tables, and any VXLAN network's create or
// delete fails.
func NewL2Kinds(vni VNIAllocator) L2Kinds {
	const attachPath = "l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}"
	k := L2Kinds{
		CreateVlan: resource.NewCreate(resource.CreateSpec[L2NetworkVO, L2VlanParams]{
			Noun: "L2VlanNetwork", Path: "l2-networks/vlan",
			Check:  func(ctx context.Context, db *gorm.DB, p *L2VlanParams) error { return p.Check(ctx, db) },
			Create: createVlan,
		}),
		CreatePool: resource.NewCreate(resource.CreateSpec[L2NetworkVO, L2VxlanPoolParams]{
			Noun: "L2VxlanNetworkPool", Path: "l2-networks/vxlan-pool",
			Check:  func(ctx context.Context, db *gorm.DB, p *L2VxlanPoolParams) error { return p.Check(ctx, db) },
			Create: createPool,
		}),
		CreateVxlan: resource.NewCreate(resource.CreateSpec[L2NetworkVO, L2VxlanParams]{
			Noun: "L2VxlanNetwork", Path: "l2-networks/vxlan",
			Check: func(ctx context.Context, db *gorm.DB, p *L2VxlanParams) error { return p.Check(ctx, db) },
			Create: func(ctx context.Context, db *gorm.DB, uuid string, p L2VxlanParams) (L2NetworkVO, error) {
				return createVxlan(ctx, db, vni, uuid, p)
			},
		}),
		Attach: resource.NewCall(resource.CallSpec[L2NetworkVO, ClusterRefParams]{
			Name: "AttachL2NetworkToCluster", Method: http.MethodPost, Path: attachPath,
			Target: func(p *ClusterRefParams) string { return p.L2NetworkUUID },
			Check:  checkAttach,
			Apply:  attach,
		}),
		Detach: resource.NewCall(resource.CallSpec[L2NetworkVO, ClusterRefParams]{
			Name: "DetachL2NetworkFromCluster", Method: http.MethodDelete, Path: attachPath,
			Target: func(p *ClusterRefParams) string { return p.L2NetworkUUID },
			Check:  checkDetach,
			Apply: func(ctx context.Context, tx *gorm.DB, row *L2NetworkVO, p ClusterRefParams) error {
				return detach(ctx, tx, row, p.ClusterUUID)
			},
		}),
	}
	k.Networks = resource.NewKind(resource.Spec[L2NetworkVO, L2NoVlanParams]{
		Name: "l2-network", Noun: "L2Network", Path: "l2-networks", What: "l2 network",
		CreateAt: "l2-networks/no-vlan", CreateNoun: "L2NoVlanNetwork",
		Check:  func(ctx context.Context, db *gorm.DB, p *L2NoVlanParams) error { return p.Check(ctx, db) },
		New:    func(resource.Base, L2NoVlanParams) L2NetworkVO { return L2NetworkVO{} }, // unused: Create inserts
		Create: createNoVlan,
		Delete: func(ctx context.Context, db *gorm.DB, req resource.DeleteReq) error {
			return deleteL2(ctx, db, vni, req)
		},
		Calls: []resource.Call[L2NetworkVO]{k.CreateVlan, k.CreatePool, k.CreateVxlan, k.Attach, k.Detach},
		Query: []route.QueryOption{route.PreloadOrdered("ClusterRefs", "create_date, cluster_uuid"), route.PreloadOrdered("PoolClusterRefs", "create_date, cluster_uuid"),
			route.PreloadOrdered("VniRanges", "start_vni")},
		Views: []resource.View{
			{Path: "l2-networks/vlan", What: "l2 vlan network", Where: "type = ?", Args: []any{L2VlanNetwork}},
			{Path: "l2-networks/vxlan", What: "vxlan network", Where: "type = ?", Args: []any{VxlanNetwork}},
			{Path: "l2-networks/vxlan-pool", What: "vxlan network pool", Where: "type = ?", Args: []any{VxlanNetworkPool}},
		},
		Models: []any{&l2Schema{}, &vniRangeSchema{}, &l2ClusterRefSchema{}},
	})
	k.VniRanges = resource.NewKind(resource.Spec[VniRangeVO, VniRangeParams]{
		Name: "vni-range", Noun: "VniRange", Path: "l2-networks/vxlan-pool/vni-range", What: "vni range",
		CreateAt: "l2-networks/vxlan-pool/{uuid}/vni-range",
		Parent:   func(p *VniRangeParams) *string { return &p.L2NetworkUUID },
		// mplane's plural, as every other path of it is.
		CreateAliases: []string{"l2-networks/vxlan-pool/{l2NetworkUuid}/vni-ranges"},
		Views:         []resource.View{{Path: "l2-networks/vxlan-pool/vni-ranges", What: "vni range"}},
		Check:         func(ctx context.Context, db *gorm.DB, p *VniRangeParams) error { return p.Check(ctx, db) },
		New:           func(resource.Base, VniRangeParams) VniRangeVO { return VniRangeVO{} }, // unused: Create adds the range
		Create:        createVniRange,
		Delete: func(ctx context.Context, db *gorm.DB, req resource.DeleteReq) error {
			return deleteVniRange(ctx, db, req.UUID)
		},
		Models: []any{&vniRangeSchema{}},
	})
	return k
}

// All are the kinds to serve, in migration order.
func (k L2Kinds) All() []resource.Kind { return []resource.Kind{k.Networks, k.VniRanges} }
