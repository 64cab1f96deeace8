package main

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/cluster"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/vm"
	"mplane/services/zone"
)

// kinds are the simple resources served by the resource service.
var kinds = []resource.Kind{zone.Kind, cluster.Kind, offering.Kind, image.Kind, network.L3Kind, network.IPRangeKind}

// migrate creates every table, in dependency order.
func migrate(ctx context.Context, db *gorm.DB) error {
	steps := []func(context.Context, *gorm.DB) error{
		managementnode.Migrate,
		func(ctx context.Context, db *gorm.DB) error { return resource.Migrate(ctx, db, kinds) },
		network.Migrate,
		hostsvc.Migrate,
		vm.Migrate,
		auth.Migrate,
		jobs.Migrate,
	}
	for _, m := range steps {
		if err := m(ctx, db); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	return nil
}

// networkIPAM gives the VM service the network service's IP allocation.
type networkIPAM struct{ db *gorm.DB }

func (n networkIPAM) Allocate(ctx context.Context, l3UUID, ownerUUID string) (vm.IP, error) {
	ip, err := network.AllocateIP(ctx, n.db, l3UUID, ownerUUID, network.AllocateOptions{})
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
