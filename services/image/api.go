package image

import (
	"context"

	"mplane/api/route"
	"mplane/services/resource"
)

// API is the image's REST surface: POST /v1/images adds an image (its job
// ends when the download does), GET queries (with backupStorageRefs, whose
// downloadProgress shows a download's percent), updateImage and
// changeImageState change it, DELETE deletes it and its files.
func (s *Service) API() []route.Resource {
	return []route.Resource{{
		Path:   "images",
		Access: route.OwnedShared,
		Name:   "image",
		Query:  route.QueryOf[ImageVO](route.Preload("BackupStorageRefs")),
		Create: route.Ptr(route.Create(MsgCreate, acceptCreate)),
		Actions: []route.Op{
			route.Action("updateImage", MsgUpdate, func(_ context.Context, in route.In[resource.UpdateParams]) (ChangeReq, error) {
				return ChangeReq{UUID: in.UUID, Name: in.Params.Name, Description: in.Params.Description}, nil
			}),
			route.Action("changeImageState", MsgChangeState, func(_ context.Context, in route.In[ChangeStateParams]) (ChangeReq, error) {
				return ChangeReq{UUID: in.UUID, StateEvent: in.Params.StateEvent}, nil
			}),
		},
		Delete: route.Ptr(route.Delete(MsgDelete, func(_ context.Context, in route.In[route.DeleteParams]) (Ref, error) {
			return Ref{UUID: in.UUID}, nil
		})),
	}}
}

// acceptCreate checks that every backup storage named exists and is
// Enabled (a 400 at once otherwise; the owner checks again).
func acceptCreate(ctx context.Context, in route.In[CreateParams]) (CreateReq, error) {
	if _, err := usableBackupStorages(ctx, in.DB, in.Params.BackupStorageUUIDs); err != nil {
		return CreateReq{}, err
	}
	return CreateReq{UUID: in.UUID, Params: in.Params}, nil
}
