package image

import (
	"time"

	"mplane/services/resource"
)

// States (administrative) and statuses of an image, ZStack's. An image is
// Downloading until one backup storage has it, then Ready; an image whose
// every download failed is removed, as ZStack does.
const (
	StateEnabled  = "Enabled"
	StateDisabled = "Disabled"

	StatusDownloading = "Downloading"
	StatusReady       = "Ready"
)

// Formats and media types of images.
const (
	FormatQcow2 = "qcow2"
	FormatRaw   = "raw"
	FormatISO   = "iso"

	MediaRootVolumeTemplate = "RootVolumeTemplate"
	MediaDataVolumeTemplate = "DataVolumeTemplate"
	MediaISO                = "ISO"
)

// ImageVO is a row of images and, as JSON, ZStack's ImageInventory with
// its backupStorageRefs. Size is the virtual size (what a guest sees) and
// ActualSize the file's allocation, both as the backup storage's agent
// reported them; Md5Sum is the file's MD5 (hex).
type ImageVO struct {
	resource.Base
	URL         string `gorm:"column:url;size:2048;not null" json:"url"`
	Format      string `gorm:"column:format;size:32;not null" json:"format"`
	MediaType   string `gorm:"column:media_type;size:32;not null" json:"mediaType"`
	Platform    string `gorm:"column:platform;size:32;not null" json:"platform"`
	GuestOsType string `gorm:"column:guest_os_type;size:255" json:"guestOsType,omitempty"`
	System      bool   `gorm:"column:system;not null;default:false" json:"system"`
	Size        int64  `gorm:"column:size;not null" json:"size"`
	ActualSize  int64  `gorm:"column:actual_size;not null;default:0" json:"actualSize"`
	Md5Sum      string `gorm:"column:md5_sum;size:32" json:"md5Sum,omitempty"`
	State       string `gorm:"column:state;size:32;not null" json:"state"`
	Status      string `gorm:"column:status;size:32;not null" json:"status"`

	BackupStorageRefs []ImageBackupStorageRefVO `gorm:"foreignKey:ImageUUID;references:UUID" json:"backupStorageRefs"`
}

// TableName is images.
func (ImageVO) TableName() string { return "images" }

// ImageBackupStorageRefVO is one image on one backup storage: where the
// file is (InstallPath, relative to the storage agent's root) and, while
// it downloads, how far it got (DownloadProgress, percent 0-100).
type ImageBackupStorageRefVO struct {
	ImageUUID         string    `gorm:"column:image_uuid;primaryKey;size:32" json:"imageUuid"`
	BackupStorageUUID string    `gorm:"column:backup_storage_uuid;primaryKey;size:32;index" json:"backupStorageUuid"`
	InstallPath       string    `gorm:"column:install_path;size:1024;not null" json:"installPath"`
	Status            string    `gorm:"column:status;size:32;not null" json:"status"`
	DownloadProgress  int       `gorm:"column:download_progress;not null;default:0" json:"downloadProgress"`
	CreateDate        time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate        time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is image_backup_storage_refs.
func (ImageBackupStorageRefVO) TableName() string { return "image_backup_storage_refs" }

// Models are the package's tables, in dependency order.
func Models() []any { return []any{&ImageVO{}, &ImageBackupStorageRefVO{}} }

// InstallPath is where an image's file is on every backup storage,
// relative to the storage agent's root: images/<uuid>/<uuid>.<format>.
func InstallPath(imageUUID, format string) string {
	return "images/" + imageUUID + "/" + imageUUID + "." + format
}
