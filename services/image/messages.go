package image

import (
	"mplane/cloudbus"
	"mplane/managementnode"
)

// BusService is the bus service: each node consumes "image.<node>".
const BusService = "image"

// CreateReq adds an image with the UUID the API layer chose.
type CreateReq struct {
	UUID   string       `json:"uuid"`
	Params CreateParams `json:"params"`
}

// ResourceUUID is the image.
func (r CreateReq) ResourceUUID() string { return r.UUID }

// Ref names an image.
type Ref struct {
	UUID string `json:"uuid"`
}

// ResourceUUID is the image.
func (r Ref) ResourceUUID() string { return r.UUID }

// ChangeReq changes an image's state (StateEvent enable or disable) or its
// name and description.
type ChangeReq struct {
	UUID        string  `json:"uuid"`
	StateEvent  string  `json:"stateEvent,omitempty"`
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// ResourceUUID is the image.
func (r ChangeReq) ResourceUUID() string { return r.UUID }

// Messages of the image service; each runs on the image's owner, in the
// image's chain.
var (
	MsgCreate      = managementnode.NewOwnedMsg[CreateReq, ImageVO](BusService, "image.AddImage")
	MsgDelete      = managementnode.NewOwnedMsg[Ref, cloudbus.Empty](BusService, "image.DeleteImage")
	MsgUpdate      = managementnode.NewOwnedMsg[ChangeReq, ImageVO](BusService, "image.UpdateImage")
	MsgChangeState = managementnode.NewOwnedMsg[ChangeReq, ImageVO](BusService, "image.ChangeImageState")
)
