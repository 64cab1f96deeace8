package image

import (
	"encoding/hex"
	"net/url"
	"strings"

	"mplane/errcode"
	"mplane/services/resource"
)

// CreateParams are the params of POST /v1/images (ZStack's AddImage): the
// URL the image is downloaded from (http or https) into every backup
// storage of BackupStorageUUIDs. Md5Sum, if given, is checked by the
// storage agents.
type CreateParams struct {
	resource.Params
	URL                string   `json:"url"`
	MediaType          string   `json:"mediaType,omitempty"`
	Format             string   `json:"format,omitempty"`
	Platform           string   `json:"platform,omitempty"`
	GuestOsType        string   `json:"guestOsType,omitempty"`
	System             bool     `json:"system,omitempty"`
	BackupStorageUUIDs []string `json:"backupStorageUuids"`
	Md5Sum             string   `json:"md5sum,omitempty"`
}

var (
	formats    = map[string]bool{FormatQcow2: true, FormatRaw: true, FormatISO: true}
	mediaTypes = map[string]bool{MediaRootVolumeTemplate: true, MediaISO: true, MediaDataVolumeTemplate: true}
	platforms  = map[string]bool{"Linux": true, "Windows": true, "Other": true}
)

// Validate checks the parameters and fills defaults (qcow2,
// RootVolumeTemplate, Linux).
func (p *CreateParams) Validate() error {
	problems := p.Problems()
	if u, err := url.Parse(p.URL); p.URL == "" || err != nil || u.Scheme == "" {
		problems = append(problems, "url is required and must be an absolute URL such as http://server/image.qcow2")
	} else if s := strings.ToLower(u.Scheme); (s != "http" && s != "https") || u.Host == "" {
		problems = append(problems, "url must be an http or https URL with a host (the backup storage downloads it), got \""+u.Redacted()+"\"")
	} else if len(p.URL) > 2048 {
		problems = append(problems, "url must be at most 2048 characters")
	}
	if p.Format == "" {
		p.Format = FormatQcow2
	}
	if p.MediaType == "" {
		p.MediaType = MediaRootVolumeTemplate
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
	if len(p.GuestOsType) > 255 {
		problems = append(problems, "guestOsType must be at most 255 characters")
	}
	if len(p.BackupStorageUUIDs) == 0 {
		problems = append(problems, "backupStorageUuids must name at least one backup storage to download the image into")
	}
	seen := map[string]bool{}
	for _, bs := range p.BackupStorageUUIDs {
		switch {
		case bs == "":
			problems = append(problems, "backupStorageUuids must not contain an empty UUID")
		case seen[bs]:
			problems = append(problems, "backupStorageUuids lists "+bs+" twice")
		}
		seen[bs] = true
	}
	if p.Md5Sum != "" {
		if b, err := hex.DecodeString(p.Md5Sum); err != nil || len(b) != 16 {
			problems = append(problems, "md5sum must be 32 hexadecimal digits, got \""+p.Md5Sum+"\"")
		} else {
			p.Md5Sum = strings.ToLower(p.Md5Sum)
		}
	}
	return resource.Invalid(problems)
}

// ChangeStateParams are the params of changeImageState: stateEvent enable
// or disable.
type ChangeStateParams struct {
	StateEvent string `json:"stateEvent"`
}

// Validate checks the event.
func (p *ChangeStateParams) Validate() error {
	if p.StateEvent != "enable" && p.StateEvent != "disable" {
		return errcode.New(errcode.InvalidArgument, "stateEvent must be enable or disable, got %q", p.StateEvent)
	}
	return nil
}
