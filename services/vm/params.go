package vm

import (
	"context"
	"errors"
	"strings"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/diskoffering"
	"mplane/services/host"
	"mplane/services/image"
	"mplane/services/offering"
	"mplane/services/resource"
)

// IP is one allocated address.
type IP struct {
	IP, Netmask, Gateway string
	UsedIPUUID           string
}

// IPAM is what the VM service needs of the network service (declared
// here, by its consumer).
type IPAM interface {
	// Allocate takes a free IP of l3 for owner (a NIC UUID): staticIP if
	// not "" (InvalidState if it is in use, InvalidArgument if it is in
	// no range of l3).
	Allocate(ctx context.Context, l3UUID, ownerUUID, staticIP string) (IP, error)
	// ReleaseByOwner gives back owner's IPs; idempotent.
	ReleaseByOwner(ctx context.Context, ownerUUID string) error
	// Release gives back one IP by its used IP UUID; idempotent.
	Release(ctx context.Context, usedIPUUID string) error
	// Realize makes sure the L2 network of each of l3UUIDs has its bridge
	// on the host, and answers each L3 network's bridge name.
	Realize(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error)
	// RealizeAgain is Realize sending every bridge again, made or not:
	// the host's agent said one is missing.
	RealizeAgain(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error)
	// Usable reports an error if l3 does not exist or has no IP range.
	Usable(ctx context.Context, l3UUID string) error
	// Placement is where a VM on the L3 networks can run; an error if one
	// does not exist or they are in different zones (InvalidArgument).
	Placement(ctx context.Context, l3UUIDs []string) (NetPlacement, error)
}

// Validate checks the parameters' shape.
func (p *CreateParams) Validate() error {
	var problems []string
	if strings.TrimSpace(p.Name) == "" {
		problems = append(problems, "name is required")
	}
	if p.InstanceOfferingUUID == "" {
		problems = append(problems, "instanceOfferingUuid is required")
	}
	if p.ImageUUID == "" {
		problems = append(problems, "imageUuid is required")
	}
	if len(p.L3NetworkUUIDs) == 0 {
		problems = append(problems, "l3NetworkUuids must name at least one L3 network")
	}
	seen := map[string]bool{}
	for _, l3 := range p.L3NetworkUUIDs {
		if l3 == "" {
			problems = append(problems, "l3NetworkUuids must not contain an empty UUID")
		} else if seen[l3] {
			problems = append(problems, "l3NetworkUuids lists "+l3+" twice")
		}
		seen[l3] = true
	}
	for _, off := range p.DataDiskOfferingUUIDs {
		if off == "" {
			problems = append(problems, "dataDiskOfferingUuids must not contain an empty UUID")
		}
	}
	if p.DefaultL3NetworkUUID != "" && !seen[p.DefaultL3NetworkUUID] {
		problems = append(problems, "defaultL3NetworkUuid must be one of l3NetworkUuids")
	}
	if len(problems) > 0 {
		return errcode.New(errcode.InvalidArgument, "%s", strings.Join(problems, "; "))
	}
	return nil
}

// Check verifies that everything the parameters name exists: the offering,
// the image, each L3 network with an IP range, and the host if one is
// required. It returns the sizing the offering and image give.
func (p *CreateParams) Check(ctx context.Context, db *gorm.DB, ipam IPAM) (*Sizing, error) {
	off, img, err := lookupRefs(ctx, db, p)
	if err != nil {
		return nil, err
	}
	sz := &Sizing{CPUNum: off.CPUNum, MemorySize: off.MemorySize, Platform: img.Platform}
	if img.MediaType != image.MediaRootVolumeTemplate {
		return nil, errcode.New(errcode.InvalidArgument, "imageUuid %s is a %s image: a VM boots from a %s image", img.UUID, img.MediaType, image.MediaRootVolumeTemplate)
	}
	for _, uuid := range p.DataDiskOfferingUUIDs {
		if _, err := resource.Load[diskoffering.DiskOfferingVO](ctx, db, "disk offering", uuid); err != nil {
			if errcode.Has(err, errcode.ResourceNotFound) {
				return nil, errcode.New(errcode.InvalidArgument, "dataDiskOfferingUuids: disk offering %s does not exist", uuid)
			}
			return nil, err
		}
	}
	for _, l3 := range p.L3NetworkUUIDs {
		if err := ipam.Usable(ctx, l3); err != nil {
			return nil, err
		}
	}
	net, err := ipam.Placement(ctx, p.L3NetworkUUIDs)
	if err != nil {
		return nil, err
	}
	if p.ZoneUUID != "" && net.Zone != "" && p.ZoneUUID != net.Zone {
		return nil, errcode.New(errcode.InvalidArgument, "zoneUuid %s is not the zone of the VM's L3 networks (%s): leave it out or name zone %s",
			p.ZoneUUID, net.Zone, net.Zone)
	}
	if p.HostUUID != "" {
		var n int64
		if err := db.WithContext(ctx).Model(&host.HostVO{}).Where("uuid = ?", p.HostUUID).Count(&n).Error; err != nil {
			return nil, errcode.Wrap(errcode.Internal, err, "look up host %s", p.HostUUID)
		}
		if n == 0 {
			return nil, errcode.New(errcode.InvalidArgument, "hostUuid %s does not exist", p.HostUUID)
		}
	}
	return sz, nil
}

func lookupRefs(ctx context.Context, db *gorm.DB, p *CreateParams) (*offering.InstanceOfferingVO, *image.ImageVO, error) {
	var off offering.InstanceOfferingVO
	if err := db.WithContext(ctx).First(&off, "uuid = ?", p.InstanceOfferingUUID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, nil, errcode.New(errcode.InvalidArgument, "instanceOfferingUuid %s does not exist", p.InstanceOfferingUUID)
		}
		return nil, nil, errcode.Wrap(errcode.Internal, err, "look up instance offering")
	}
	img, err := image.LoadReady(ctx, db, p.ImageUUID) // a missing or not yet Ready image is a 400
	if err != nil {
		return nil, nil, err
	}
	return &off, img, nil
}
