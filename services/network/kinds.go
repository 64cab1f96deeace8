package network

import (
	"context"
	"encoding/json"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/resource"
)

// L3Kind serves L3 networks through the resource service: create from
// L3Params, delete by DeleteL3Network.
var L3Kind = resource.Kind{Name: "l3-network", Model: &L3NetworkVO{}, Create: createL3Kind, Delete: DeleteL3Network}

// IPRangeKind serves IP ranges through the resource service: create from
// IPRangeParams (l3NetworkUuid set), delete by DeleteIpRange. Its model
// carries the foreign key to l3_networks, so L3Kind migrates first.
var IPRangeKind = resource.Kind{Name: "ip-range", Model: &ipRangeSchema{}, Create: createIPRangeKind, Delete: DeleteIpRange}

// createL3Kind creates the network uuid. A redelivered create (the resource
// service runs creates of one UUID one at a time) answers with the row made
// the first time.
func createL3Kind(ctx context.Context, gdb *gorm.DB, uuid string, raw json.RawMessage) (any, error) {
	if l3, err := GetL3Network(ctx, gdb, uuid); err == nil {
		return l3, nil
	}
	var p L3Params
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "l3 network params")
	}
	p.UUID = uuid
	return CreateL3Network(ctx, gdb, p)
}

// createIPRangeKind adds the range uuid; idempotent like createL3Kind (a
// range would otherwise overlap itself).
func createIPRangeKind(ctx context.Context, gdb *gorm.DB, uuid string, raw json.RawMessage) (any, error) {
	var existing []IpRangeVO
	if err := gdb.WithContext(ctx).Where("uuid = ?", uuid).Limit(1).Find(&existing).Error; err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "look up ip range %s", uuid)
	}
	if len(existing) == 1 {
		return existing[0], nil
	}
	var p IPRangeParams
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "ip range params")
	}
	p.UUID = uuid
	return AddIpRange(ctx, gdb, p)
}
