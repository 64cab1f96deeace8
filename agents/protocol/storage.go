package protocol

// The storage agent's paths (agents/storage): one agent serves a directory
// as primary storage (volumes, snapshots, an image cache) or as backup
// storage (images, served to primary storage agents at PathFiles). Like
// ZStack's LocalStorage, NFS primary storage and ImageStore agents, every
// command names files by path, here always relative to the agent's root
// (--root): an absolute path, a path with a ".." element or one that leaves
// the root through a symbolic link is refused with an error result.
//
// Sizes are bytes. Size is a volume's or image's virtual size (what the
// guest sees), ActualSize what its file occupies on disk (allocated blocks;
// a sparse file occupies less than its length). Formats are FormatQcow2 and
// FormatRaw.
//
// Every command but echo and connect is asynchronous.
const (
	// PathStorageEcho is sync (raw): 200, empty body; no secret needed.
	PathStorageEcho = "/storage/echo"
	// PathStorageConnect is sync: StorageConnectCmd -> StorageConnectRsp.
	PathStorageConnect = "/storage/connect"
	// PathStoragePing is async: StoragePingCmd -> StoragePingRsp.
	PathStoragePing = "/storage/ping"
	// PathStorageCapacity is async: {} -> StorageRsp (the root's file
	// system).
	PathStorageCapacity = "/storage/capacity"

	// PathVolumeCreateEmpty is async: CreateEmptyVolumeCmd -> VolumeRsp.
	PathVolumeCreateEmpty = "/volume/create-empty"
	// PathVolumeCreateFromImage is async: CreateVolumeFromImageCmd ->
	// VolumeRsp. A linked clone (qcow2 backed by the image) when the agent
	// has qemu-img, else a sparse copy of the image.
	PathVolumeCreateFromImage = "/volume/create-from-image"
	// PathVolumeClone is async: CloneVolumeCmd -> VolumeRsp. A full,
	// standalone, sparse copy.
	PathVolumeClone = "/volume/clone"
	// PathVolumeResize is async: ResizeVolumeCmd -> VolumeRsp. Grow only.
	PathVolumeResize = "/volume/resize"
	// PathVolumeDelete is async: DeleteCmd -> StorageRsp. Idempotent.
	PathVolumeDelete = "/volume/delete"
	// PathVolumeInfo is async: VolumeInfoCmd -> VolumeRsp.
	PathVolumeInfo = "/volume/info"
	// PathVolumeRevert is async: RevertVolumeCmd -> VolumeRsp: the volume's
	// content becomes the snapshot's, exactly.
	PathVolumeRevert = "/volume/revert"

	// PathSnapshotCreate is async: CreateSnapshotCmd -> SnapshotRsp.
	PathSnapshotCreate = "/snapshot/create"
	// PathSnapshotDelete is async: DeleteCmd -> StorageRsp. Idempotent.
	PathSnapshotDelete = "/snapshot/delete"

	// PathImageDownload is async: DownloadImageCmd -> ImageRsp. Downloads
	// from an http(s) URL, posting EventProgressReport events.
	PathImageDownload = "/image/download"
	// PathImageFetch is async: FetchImageCmd -> ImageRsp. Copies an image
	// from a backup storage agent's PathFiles into a local cache path,
	// once: later fetches of the same path answer Cached.
	PathImageFetch = "/image/fetch"
	// PathImageDelete is async: DeleteCmd -> StorageRsp. Idempotent.
	PathImageDelete = "/image/delete"

	// PathFiles is the prefix of the file endpoint: GET or HEAD
	// PathFiles + "<relative path>" answers the file's bytes, with
	// Content-Length and range requests (206). It needs the storage's
	// secret (SecretHeader) once it has one. Only regular files under the
	// root are served; other paths get 403 (escaping the root) or 404.
	PathFiles = "/files/"
)

// StorageHeader is mplane's addition for storage served by a KVM host's
// own agent (ZStack's LocalStorage and SharedMountPoint primary storage,
// served by kvmagent's plugins): a KVM agent (agents/kvm) serves storage
// commands on one or more directories of its host, and every storage
// command sent to it, every path of StorageCommandPaths and the file
// endpoint PathFiles, must carry this header. Its value is the primary
// storage's URL, an absolute path as ZStack's primary storage url (e.g.
// "/var/lib/mplane/local"); the agent serves the command on the directory
// it maps that URL to (mplane agent kvm --storage URL=DIR). A command
// without the header, or naming a URL the agent does not serve, fails: an
// error result for an async command, 400 (missing) or 404 (unknown) for
// the file endpoint, saying which URLs the agent serves and how to add one.
// The secret (SecretHeader) is the host's. A standalone storage agent
// (agents/storage) ignores the header.
const StorageHeader = "X-Mplane-Storage"

// StorageCommandPaths lists the storage commands a KVM agent serving
// storage routes by StorageHeader: every storage path but PathStorageEcho
// and PathStorageConnect (the host's /host/echo and /host/connect do their
// work), all of them async. The file endpoint (the PathFiles prefix) is
// routed by the header too. The slice is the caller's.
func StorageCommandPaths() []string {
	return []string{
		PathStoragePing,
		PathStorageCapacity,
		PathVolumeCreateEmpty,
		PathVolumeCreateFromImage,
		PathVolumeClone,
		PathVolumeResize,
		PathVolumeDelete,
		PathVolumeInfo,
		PathVolumeRevert,
		PathSnapshotCreate,
		PathSnapshotDelete,
		PathImageDownload,
		PathImageFetch,
		PathImageDelete,
	}
}

// Volume and image formats.
const (
	FormatQcow2 = "qcow2"
	FormatRaw   = "raw"
)

// Process types of the EventProgressReport events the storage agent posts
// (ProgressEvent.ProcessType; ResourceUUID is the command's imageUuid,
// ServerUUID the storage's UUID given at connect).
const (
	ProcessDownloadImage = "DownloadImage"
	ProcessFetchImage    = "FetchImage"
)

// StorageConnectCmd is the body of PathStorageConnect: UUID is the primary
// or backup storage's UUID, SendCommandURL where the agent posts its
// events. Secret works as in ConnectCmd: once given, every command but echo
// must carry it in SecretHeader, a later connect too.
type StorageConnectCmd struct {
	UUID           string `json:"uuid"`
	SendCommandURL string `json:"sendCommandUrl"`
	Version        string `json:"version,omitempty"`
	Secret         string `json:"secret,omitempty"`
}

// StorageCapacity is the root's file system: statfs's total and available
// (to an unprivileged user) bytes. Every StorageRsp, VolumeRsp,
// SnapshotRsp and ImageRsp carries it, measured after the command, as
// ZStack's storage agents' AgentResponse does.
type StorageCapacity struct {
	TotalCapacity     int64 `json:"totalCapacity"`
	AvailableCapacity int64 `json:"availableCapacity"`
}

// StorageRsp answers the commands that return only the capacity.
type StorageRsp struct {
	Response
	StorageCapacity
}

// StorageConnectRsp answers PathStorageConnect. Formats lists the formats
// the agent creates volumes in, preferred first: [qcow2, raw] when it has
// qemu-img (whose version is QemuImgVersion), [raw] otherwise.
type StorageConnectRsp struct {
	Response
	StorageCapacity
	Version        string   `json:"version"`
	Formats        []string `json:"formats"`
	QemuImgVersion string   `json:"qemuImgVersion,omitempty"`
}

// StoragePingCmd is the body of PathStoragePing.
type StoragePingCmd struct {
	UUID string `json:"uuid"`
}

// StoragePingRsp answers PathStoragePing. UUID and SendCommandURL are
// missing until the agent is connected (a restarted agent forgets them):
// another UUID than the expected one means the node must connect again.
type StoragePingRsp struct {
	Response
	UUID           string `json:"uuid,omitempty"`
	SendCommandURL string `json:"sendCommandUrl,omitempty"`
	Version        string `json:"version"`
}

// CreateEmptyVolumeCmd is the body of PathVolumeCreateEmpty: a blank volume
// of Size bytes at InstallPath (which must not exist). Format "" lets the
// agent choose (qcow2 when it has qemu-img, else a sparse raw file);
// FormatQcow2 fails on an agent without qemu-img.
type CreateEmptyVolumeCmd struct {
	VolumeUUID  string `json:"volumeUuid,omitempty"`
	InstallPath string `json:"installPath"`
	Size        int64  `json:"size"`
	Format      string `json:"format,omitempty"`
}

// CreateVolumeFromImageCmd is the body of PathVolumeCreateFromImage:
// ImagePath is the image in this storage (its cache, as ZStack's
// templatePathInCache), InstallPath the new volume (must not exist). Size,
// if larger than the image's virtual size, grows the volume; smaller is an
// error. ImageFormat is the image's format as the agent reported it (""
// reads the file's header).
type CreateVolumeFromImageCmd struct {
	VolumeUUID  string `json:"volumeUuid,omitempty"`
	ImagePath   string `json:"imagePath"`
	ImageFormat string `json:"imageFormat,omitempty"`
	InstallPath string `json:"installPath"`
	Size        int64  `json:"size,omitempty"`
}

// CloneVolumeCmd is the body of PathVolumeClone: a full copy of SrcPath at
// InstallPath (must not exist), standalone (a qcow2 source's backing
// chain is flattened into it) and sparse. Format is the source's format
// as the agent reported it at creation; "" reads the file's header, which
// a guest can forge on a raw disk: send it.
//
// SrcPath is a volume or a snapshot's install path as SnapshotRsp gave it
// (with its Format): a file snapshot's path (a plain file, copied as a
// volume is) or an internal snapshot's "<volume path>@<snapshot uuid>",
// which clones the volume's content as of that snapshot, of the size the
// volume had then (a qcow2 clone; it needs qemu-img). As in
// PathSnapshotDelete and PathVolumeRevert, a SrcPath with an '@' names an
// internal snapshot. A snapshot the volume does not have is an error
// result. The source volume, its snapshots and a file snapshot are only
// read.
type CloneVolumeCmd struct {
	VolumeUUID  string `json:"volumeUuid,omitempty"`
	SrcPath     string `json:"srcPath"`
	Format      string `json:"format,omitempty"`
	InstallPath string `json:"installPath"`
}

// ResizeVolumeCmd is the body of PathVolumeResize: the volume's virtual
// size becomes Size, which must not be smaller than the current one.
type ResizeVolumeCmd struct {
	VolumeUUID  string `json:"volumeUuid,omitempty"`
	InstallPath string `json:"installPath"`
	Format      string `json:"format,omitempty"`
	Size        int64  `json:"size"`
}

// VolumeInfoCmd is the body of PathVolumeInfo.
type VolumeInfoCmd struct {
	InstallPath string `json:"installPath"`
	Format      string `json:"format,omitempty"`
}

// DeleteCmd is the body of PathVolumeDelete, PathSnapshotDelete and
// PathImageDelete. A missing file is a success; a directory is refused. A
// snapshot's InstallPath is the one SnapshotRsp gave.
type DeleteCmd struct {
	UUID        string `json:"uuid,omitempty"`
	InstallPath string `json:"installPath"`
}

// VolumeRsp describes a volume after a command. BackingFile is the
// root-relative path of its backing file (a linked clone's image), empty
// when it has none.
type VolumeRsp struct {
	Response
	StorageCapacity
	InstallPath string `json:"installPath,omitempty"`
	Format      string `json:"format,omitempty"`
	Size        int64  `json:"size"`
	ActualSize  int64  `json:"actualSize"`
	BackingFile string `json:"backingFile,omitempty"`
}

// CreateSnapshotCmd is the body of PathSnapshotCreate. A qcow2 volume (on
// an agent with qemu-img) gets an internal snapshot named SnapshotUUID
// (qemu-img snapshot -c), whose install path in the answer is
// "<volumeInstallPath>@<snapshotUuid>"; InstallPath is then unused. Any
// other volume is copied (sparse) to InstallPath, which must not exist and
// must not contain "@".
type CreateSnapshotCmd struct {
	VolumeUUID        string `json:"volumeUuid,omitempty"`
	SnapshotUUID      string `json:"snapshotUuid"`
	VolumeInstallPath string `json:"volumeInstallPath"`
	Format            string `json:"format,omitempty"`
	InstallPath       string `json:"installPath,omitempty"`
}

// SnapshotRsp answers PathSnapshotCreate. InstallPath names the snapshot
// in PathSnapshotDelete and PathVolumeRevert; Internal tells a snapshot
// inside the volume's qcow2 file from a file of its own. Size and
// ActualSize are the volume's virtual size and the snapshot file's
// allocation (for an internal snapshot, the volume file's).
type SnapshotRsp struct {
	Response
	StorageCapacity
	InstallPath string `json:"installPath"`
	Internal    bool   `json:"internal,omitempty"`
	Format      string `json:"format,omitempty"`
	Size        int64  `json:"size"`
	ActualSize  int64  `json:"actualSize"`
}

// RevertVolumeCmd is the body of PathVolumeRevert: SnapshotInstallPath is
// a snapshot of VolumeInstallPath as SnapshotRsp named it.
type RevertVolumeCmd struct {
	VolumeUUID          string `json:"volumeUuid,omitempty"`
	VolumeInstallPath   string `json:"volumeInstallPath"`
	Format              string `json:"format,omitempty"`
	SnapshotInstallPath string `json:"snapshotInstallPath"`
}

// DownloadImageCmd is the body of PathImageDownload: the agent GETs URL
// (http or https) into InstallPath (which must not exist), posting
// EventProgressReport events (ProcessDownloadImage, resourceUuid
// ImageUUID) as the bytes come. Md5Sum (hex) and ExpectedSize (the file's
// length in bytes), when set, are checked. On any failure no file is
// left at InstallPath. A qcow2 image with a backing file is refused.
type DownloadImageCmd struct {
	ImageUUID    string `json:"imageUuid"`
	URL          string `json:"url"`
	InstallPath  string `json:"installPath"`
	Md5Sum       string `json:"md5sum,omitempty"`
	ExpectedSize int64  `json:"expectedSize,omitempty"`
}

// FetchImageCmd is the body of PathImageFetch: a primary storage agent
// copies BackupStoragePath from the backup storage agent at
// BackupStorageURL (its base URL, e.g. http://10.0.0.9:7080; the file is
// read at PathFiles) into its cache at InstallPath, as DownloadImageCmd
// does (events ProcessFetchImage). An existing InstallPath of the expected
// size is a cache hit: no transfer, Cached set. BackupStorageSecret is the
// backup storage agent's secret, if it has one.
type FetchImageCmd struct {
	ImageUUID           string `json:"imageUuid"`
	BackupStorageURL    string `json:"backupStorageUrl"`
	BackupStoragePath   string `json:"backupStoragePath"`
	BackupStorageSecret string `json:"backupStorageSecret,omitempty"`
	InstallPath         string `json:"installPath"`
	Md5Sum              string `json:"md5sum,omitempty"`
	ExpectedSize        int64  `json:"expectedSize,omitempty"`
}

// ImageRsp answers PathImageDownload and PathImageFetch. Md5Sum is the
// file's MD5 (hex), empty for a cache hit.
type ImageRsp struct {
	Response
	StorageCapacity
	InstallPath string `json:"installPath"`
	Format      string `json:"format"`
	Size        int64  `json:"size"`
	ActualSize  int64  `json:"actualSize"`
	Md5Sum      string `json:"md5sum,omitempty"`
	Cached      bool   `json:"cached,omitempty"`
}

// The storage agent's commands, as the management node sends them.
var (
	StorageConnect        = Command[StorageConnectCmd, StorageConnectRsp]{PathStorageConnect}
	StoragePing           = Command[StoragePingCmd, StoragePingRsp]{PathStoragePing}
	StorageCapacityQuery  = Command[struct{}, StorageRsp]{PathStorageCapacity}
	CreateEmptyVolume     = Command[CreateEmptyVolumeCmd, VolumeRsp]{PathVolumeCreateEmpty}
	CreateVolumeFromImage = Command[CreateVolumeFromImageCmd, VolumeRsp]{PathVolumeCreateFromImage}
	CloneVolume           = Command[CloneVolumeCmd, VolumeRsp]{PathVolumeClone}
	ResizeVolume          = Command[ResizeVolumeCmd, VolumeRsp]{PathVolumeResize}
	DeleteVolume          = Command[DeleteCmd, StorageRsp]{PathVolumeDelete}
	VolumeInfo            = Command[VolumeInfoCmd, VolumeRsp]{PathVolumeInfo}
	RevertVolume          = Command[RevertVolumeCmd, VolumeRsp]{PathVolumeRevert}
	CreateSnapshot        = Command[CreateSnapshotCmd, SnapshotRsp]{PathSnapshotCreate}
	DeleteSnapshot        = Command[DeleteCmd, StorageRsp]{PathSnapshotDelete}
	DownloadImage         = Command[DownloadImageCmd, ImageRsp]{PathImageDownload}
	FetchImage            = Command[FetchImageCmd, ImageRsp]{PathImageFetch}
	DeleteImage           = Command[DeleteCmd, StorageRsp]{PathImageDelete}
)
