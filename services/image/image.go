// Package image is the image resource. Images are registered only: their
// URL is recorded, nothing is downloaded yet.
package image

import (
	"net/url"

	"mplane/services/resource"
)

// ImageVO is a row of images and, as JSON, the image inventory.
type ImageVO struct {
	resource.Base
	URL       string `gorm:"column:url;size:2048;not null" json:"url"`
	Format    string `gorm:"column:format;size:32;not null" json:"format"`
	MediaType string `gorm:"column:media_type;size:32;not null" json:"mediaType"`
	Platform  string `gorm:"column:platform;size:32;not null" json:"platform"`
	Size      int64  `gorm:"column:size;not null" json:"size"`
	State     string `gorm:"column:state;size:32;not null" json:"state"`
	Status    string `gorm:"column:status;size:32;not null" json:"status"`
}

// TableName is images.
func (ImageVO) TableName() string { return "images" }

// CreateParams are the API parameters of an image.
type CreateParams struct {
	resource.Params
	URL       string `json:"url"`
	Format    string `json:"format,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	Platform  string `json:"platform,omitempty"`
	Size      int64  `json:"size,omitempty"`
}

var (
	formats    = map[string]bool{"qcow2": true, "raw": true, "iso": true}
	mediaTypes = map[string]bool{"RootVolumeTemplate": true, "ISO": true, "DataVolumeTemplate": true}
	platforms  = map[string]bool{"Linux": true, "Windows": true, "Other": true}
)

// Validate checks the parameters and fills defaults (qcow2,
// RootVolumeTemplate, Linux).
func (p *CreateParams) Validate() error {
	problems := p.Problems()
	if u, err := url.Parse(p.URL); p.URL == "" || err != nil || u.Scheme == "" {
		problems = append(problems, "url is required and must be an absolute URL such as http://server/image.qcow2")
	}
	if p.Format == "" {
		p.Format = "qcow2"
	}
	if p.MediaType == "" {
		p.MediaType = "RootVolumeTemplate"
	}
	if p.Platform == "" {
		p.Platform = "Linux"
	}
	if !formats[p.Format] {
		problems = append(problems, "format must be qcow2, raw or iso, got \""+p.Format+"\"")
	}
	if !mediaTypes[p.MediaType] {
		problems = append(problems, "mediaType must be RootVolumeTemplate, ISO or DataVolumeTemplate, got \""+p.MediaType+"\"")
	}
	if !platforms[p.Platform] {
		problems = append(problems, "platform must be Linux, Windows or Other, got \""+p.Platform+"\"")
	}
	if p.Size < 0 {
		problems = append(problems, "size must not be negative")
	}
	return resource.Invalid(problems)
}

// Kind is the image's simple kind: POST/GET/DELETE /v1/images, updateImage.
var Kind = resource.NewKind(resource.Spec[ImageVO, CreateParams]{
	Name: "image", Noun: "Image", Path: "images",
	New: func(b resource.Base, p CreateParams) ImageVO {
		return ImageVO{Base: b, URL: p.URL, Format: p.Format, MediaType: p.MediaType, Platform: p.Platform, Size: p.Size,
			State: "Enabled", Status: "Ready"}
	},
})
