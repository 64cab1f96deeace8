package volume

import (
	"fmt"

	"context"
	"net/http"
	"slices"

	"mplane/api/route"
	"mplane/errcode"
	"mplane/services/diskoffering"
	"mplane/services/host"
	"mplane/services/image"
	"mplane/services/resource"
	"mplane/services/storage"
	"mplane/services/zone"
)

// CreateDataVolumeParams are the params of POST /v1/volumes/data: the size
// from a disk offering or diskSize (bytes), and optionally where:
// primaryStorageUuid, and for LocalStorage hostUuid.
type CreateDataVolumeParams struct {
	resource.Params
	DiskOfferingUUID   string `json:"diskOfferingUuid,omitempty"`
	DiskSize           int64  `json:"diskSize,omitempty"`
	PrimaryStorageUUID string `json:"primaryStorageUuid,omitempty"`
	HostUUID           string `json:"hostUuid,omitempty"`
	ZoneUUID           string `json:"zoneUuid,omitempty"`
}

// Validate checks that the size comes from one place.
func (p *CreateDataVolumeParams) Validate() error {
	problems := p.Problems()
	switch {
	case p.DiskSize < 0 || p.DiskSize > diskoffering.MaxDiskSize:
		problems = append(problems, fmt.Sprintf("diskSize must be a positive number of bytes, at most %d (64 TiB), got %d", int64(diskoffering.MaxDiskSize), p.DiskSize))
	case p.DiskOfferingUUID == "" && p.DiskSize == 0:
		problems = append(problems, "diskOfferingUuid or diskSize is required")
	case p.DiskOfferingUUID != "" && p.DiskSize != 0:
		problems = append(problems, "give diskOfferingUuid or diskSize, not both")
	}
	return resource.Invalid(problems)
}

// CopyParams are the params of a volume made from a snapshot or a volume:
// the source's UUID comes from the path.
type CopyParams struct {
	resource.Params
	VolumeSnapshotUUID string `json:"volumeSnapshotUuid,omitempty"`
	VolumeUUID         string `json:"volumeUuid,omitempty"`
	PrimaryStorageUUID string `json:"primaryStorageUuid,omitempty"`
}

// Validate checks the name.
func (p *CopyParams) Validate() error { return resource.Invalid(p.Problems()) }

// TemplateParams are the params of POST
// /v1/volumes/data/from/data-volume-templates/{imageUuid}: a data volume
// from a DataVolumeTemplate image, optionally placed.
type TemplateParams struct {
	resource.Params
	ImageUUID          string `json:"imageUuid"`
	PrimaryStorageUUID string `json:"primaryStorageUuid,omitempty"`
	HostUUID           string `json:"hostUuid,omitempty"`
}

// Validate checks the name.
func (p *TemplateParams) Validate() error { return resource.Invalid(p.Problems()) }

// SnapshotParams are the params of POST /v1/volumes/{uuid}/volume-snapshots.
type SnapshotParams struct {
	resource.Params
	VolumeUUID string `json:"volumeUuid"`
}

// Validate checks the name.
func (p *SnapshotParams) Validate() error { return resource.Invalid(p.Problems()) }

// ResizeParams are the params of resizeDataVolume: the new size in bytes.
type ResizeParams struct {
	Size int64 `json:"size"`
}

// Validate checks the size.
func (p *ResizeParams) Validate() error {
	if p.Size <= 0 || p.Size > diskoffering.MaxDiskSize {
		return errcode.New(errcode.InvalidArgument, "size must be a positive number of bytes, at most %d (64 TiB), got %d", int64(diskoffering.MaxDiskSize), p.Size)
	}
	return nil
}

func (s *Service) acceptCreate(ctx context.Context, in route.In[CreateDataVolumeParams]) (CreateReq, error) {
	p := in.Params
	req := CreateReq{UUID: in.UUID, Name: p.Name, Description: p.Description, Source: SourceBlank, Size: p.DiskSize,
		PrimaryStorageUUID: p.PrimaryStorageUUID, HostUUID: p.HostUUID, ZoneUUID: p.ZoneUUID}
	if p.DiskOfferingUUID != "" {
		off, err := resource.Load[diskoffering.DiskOfferingVO](ctx, in.DB, "disk offering", p.DiskOfferingUUID)
		if err != nil {
			return CreateReq{}, errcode.New(errcode.InvalidArgument, "diskOfferingUuid %s does not exist", p.DiskOfferingUUID)
		}
		req.Size, req.DiskOfferingUUID = off.DiskSize, off.UUID
		if slices.Contains(Strategies, off.AllocatorStrategy) {
			req.Strategy = off.AllocatorStrategy
		}
	}
	for _, ref := range []struct {
		model       any
		field, uuid string
	}{{&storage.PrimaryStorageVO{}, "primaryStorageUuid", p.PrimaryStorageUUID}, {&host.HostVO{}, "hostUuid", p.HostUUID},
		{&zone.ZoneVO{}, "zoneUuid", p.ZoneUUID}} {
		if ref.uuid == "" {
			continue
		}
		if err := resource.MustExist(ctx, in.DB, ref.model, ref.field, ref.uuid); err != nil {
			return CreateReq{}, err
		}
	}
	return req, nil
}

// API is the REST surface of volumes and volume snapshots, in ZStack's
// names (a copy of a volume, POST /v1/volumes/data/from/volumes/{uuid},
// is mplane's own).
func (s *Service) API() []route.Resource {
	create := func(ctx context.Context, in route.In[CreateDataVolumeParams]) (CreateReq, error) {
		in.UUID = newUUID()
		return s.acceptCreate(ctx, in)
	}
	copyOf := func(source string) route.Build[CopyParams, CreateReq] {
		return func(ctx context.Context, in route.In[CopyParams]) (CreateReq, error) {
			p := in.Params
			var model any = &VolumeVO{}
			src, field := p.VolumeUUID, "volumeUuid"
			if source == SourceSnapshot {
				model, src, field = &VolumeSnapshotVO{}, p.VolumeSnapshotUUID, "volumeSnapshotUuid"
			}
			if err := resource.MustExist(ctx, in.DB, model, field, src); err != nil {
				return CreateReq{}, err
			}
			return CreateReq{UUID: newUUID(), Name: p.Name, Description: p.Description, Source: source, SourceUUID: src}, nil
		}
	}
	return []route.Resource{{
		Path:   "volumes",
		Access: route.Owned,
		Name:   "volume",
		Query:  route.QueryOf[VolumeVO](),
		Actions: []route.Op{
			route.Action("updateVolume", MsgUpdate, func(_ context.Context, in route.In[resource.UpdateParams]) (UpdateReq, error) {
				return UpdateReq{UUID: in.UUID, Name: in.Params.Name, Description: in.Params.Description}, nil
			}),
			route.Action("resizeDataVolume", MsgResize, func(_ context.Context, in route.In[ResizeParams]) (ResizeReq, error) {
				return ResizeReq{UUID: in.UUID, Size: in.Params.Size}, nil
			}),
			route.Action("recoverDataVolume", MsgRecover, func(_ context.Context, in route.In[struct{}]) (Ref, error) {
				return Ref{UUID: in.UUID}, nil
			}),
			route.ActionNoResult("expungeDataVolume", MsgExpunge, func(_ context.Context, in route.In[struct{}]) (Ref, error) {
				return Ref{UUID: in.UUID}, nil
			}),
		},
		Delete: route.Ptr(route.Delete(MsgDelete, func(_ context.Context, in route.In[route.DeleteParams]) (Ref, error) {
			return Ref{UUID: in.UUID, Mode: in.Params.Mode}, nil
		})),
		Calls: []route.Op{
			route.Call(http.MethodPost, "volumes/data", MsgCreate, create).Creating(),
			route.Call(http.MethodPost, "volumes/data/from/volume-snapshots/{volumeSnapshotUuid}", MsgCreate, copyOf(SourceSnapshot)).Creating(),
			route.Call(http.MethodPost, "volumes/data/from/volumes/{volumeUuid}", MsgCreate, copyOf(SourceVolume)).Creating(),
			route.Call(http.MethodPost, "volumes/data/from/data-volume-templates/{imageUuid}", MsgCreate,
				func(ctx context.Context, in route.In[TemplateParams]) (CreateReq, error) {
					p := in.Params
					img, err := image.LoadReady(ctx, in.DB, p.ImageUUID)
					if err != nil {
						return CreateReq{}, err
					}
					if img.MediaType != image.MediaDataVolumeTemplate {
						return CreateReq{}, errcode.New(errcode.InvalidArgument, "image %s is a %s: a data volume is made from a %s image",
							img.UUID, img.MediaType, image.MediaDataVolumeTemplate)
					}
					return CreateReq{UUID: newUUID(), Name: p.Name, Description: p.Description, Source: SourceImage, SourceUUID: img.UUID,
						PrimaryStorageUUID: p.PrimaryStorageUUID, HostUUID: p.HostUUID}, nil
				}).Creating(),
			route.Call(http.MethodPost, "volumes/{volumeUuid}/volume-snapshots", MsgCreateSnapshot,
				func(ctx context.Context, in route.In[SnapshotParams]) (SnapshotReq, error) {
					v, err := Load(ctx, in.DB, in.Params.VolumeUUID)
					if err != nil {
						return SnapshotReq{}, err
					}
					return SnapshotReq{VolumeUUID: v.UUID, SnapshotUUID: newUUID(), Name: in.Params.Name, Description: in.Params.Description}, nil
				}),
		},
	}, {
		Path:   "volume-snapshots",
		Access: route.Owned,
		Name:   "volume snapshot",
		Query:  route.QueryOf[VolumeSnapshotVO](),
		Actions: []route.Op{
			route.Action("revertVolumeFromSnapshot", MsgRevert, func(ctx context.Context, in route.In[struct{}]) (SnapshotRef, error) {
				ref, err := snapshotRef(ctx, in.DB, in.UUID)
				if err != nil {
					return SnapshotRef{}, err
				}
				v, err := Load(ctx, in.DB, ref.VolumeUUID)
				if err != nil {
					return SnapshotRef{}, err
				}
				return ref, revertable(ctx, in.DB, v) // the owner checks again
			}),
		},
		Delete: route.Ptr(route.Delete(MsgDeleteSnapshot, func(ctx context.Context, in route.In[route.DeleteParams]) (SnapshotRef, error) {
			ref, err := snapshotRef(ctx, in.DB, in.UUID)
			if errcode.Has(err, errcode.ResourceNotFound) {
				return SnapshotRef{VolumeUUID: in.UUID, SnapshotUUID: in.UUID}, nil // gone: the delete succeeds
			}
			return ref, err
		})),
	}}
}
