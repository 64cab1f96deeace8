package server

import (
	"context"
	"errors"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/network"
	"mplane/services/vm"
)

// networkIPAM gives the VM service the network service's IP allocation
// and its L2 networks' bridges on the hosts.
type networkIPAM struct {
	db      *gorm.DB
	bridges *network.Bridges
}

func (n networkIPAM) Allocate(ctx context.Context, l3UUID, ownerUUID, staticIP string) (vm.IP, error) {
	var ip network.UsedIpVO
	var err error
	if staticIP != "" {
		ip, err = network.AllocateSpecificIP(ctx, n.db, l3UUID, ownerUUID, staticIP)
	} else {
		ip, err = network.AllocateIP(ctx, n.db, l3UUID, ownerUUID, network.AllocateOptions{})
	}
	if err != nil {
		return vm.IP{}, err
	}
	return vm.IP{IP: ip.IP, Netmask: ip.Netmask, Gateway: ip.Gateway, UsedIPUUID: ip.UUID}, nil
}

func (n networkIPAM) ReleaseByOwner(ctx context.Context, ownerUUID string) error {
	_, err := network.ReleaseByOwner(ctx, n.db, ownerUUID)
	return err
}

func (n networkIPAM) Usable(ctx context.Context, l3UUID string) error {
	if _, err := network.GetL3Network(ctx, n.db, l3UUID); err != nil {
		if errcode.CodeOf(err) == errcode.ResourceNotFound || errors.Is(err, gorm.ErrRecordNotFound) {
			return errcode.New(errcode.InvalidArgument, "l3NetworkUuids: L3 network %s does not exist", l3UUID)
		}
		return err
	}
	ranges, err := network.ListIpRanges(ctx, n.db, l3UUID)
	if err != nil {
		return err
	}
	if len(ranges) == 0 {
		return errcode.New(errcode.InvalidArgument, "l3NetworkUuids: L3 network %s has no IP range; add one with POST /v1/l3-networks/%s/ip-ranges", l3UUID, l3UUID)
	}
	return nil
}

func (n networkIPAM) Placement(ctx context.Context, l3UUIDs []string) (vm.NetPlacement, error) {
	p, err := network.PlacementOf(ctx, n.db, l3UUIDs)
	if err != nil {
		return vm.NetPlacement{}, err
	}
	return vm.NetPlacement{Zone: p.Zone, L2s: p.L2s, Clusters: p.Clusters}, nil
}

func (n networkIPAM) Release(ctx context.Context, usedIPUUID string) error {
	return network.ReleaseIP(ctx, n.db, usedIPUUID)
}

func (n networkIPAM) Realize(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error) {
	return n.bridges.Realize(ctx, hostUUID, l3UUIDs)
}

func (n networkIPAM) RealizeAgain(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error) {
	return n.bridges.RealizeAgain(ctx, hostUUID, l3UUIDs)
}
