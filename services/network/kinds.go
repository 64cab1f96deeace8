package network

import (
	"context"

	"gorm.io/gorm"

	"mplane/services/resource"
)

// L3Kind is the L3 network's simple kind: POST/GET/DELETE /v1/l3-networks
// and updateL3Network. A delete refuses while an IP of the network is used.
var L3Kind = resource.NewKind(resource.Spec[L3NetworkVO, L3Params]{
	Name: "l3-network", Noun: "L3Network", Path: "l3-networks", What: "l3 network",
	Check:  func(ctx context.Context, db *gorm.DB, p *L3Params) error { return p.Check(ctx, db) },
	New:    l3Row,
	Delete: DeleteL3Network,
})

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
	Delete: DeleteIpRange,
	Models: []any{&ipRangeSchema{}},
})
