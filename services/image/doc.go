// Package image is the image service: images downloaded into backup
// storage, as ZStack's AddImage does.
//
// POST /v1/images names a URL and one or more backup storages; the create
// is a recorded flow on the image's owner, in the image's chain
// ("image-<uuid>"):
//
//  1. record: the image row (status Downloading) and one
//     ImageBackupStorageRefVO per backup storage (Downloading, 0%);
//  2. download: every backup storage's agent downloads the URL in parallel
//     (protocol.DownloadImage) into images/<uuid>/<uuid>.<format> under
//     its root; the agent's progress events update the ref's
//     downloadProgress, so GET /v1/images/{uuid} shows the percent. A
//     backup storage whose download fails loses its ref (and its agent is
//     asked to delete the path); if every one fails the step fails, naming
//     each failure;
//  3. ready: the image becomes Ready with the size, actual size, format and
//     MD5 the agent reported, and every remaining ref Ready at 100%.
//
// A failure rolls back what ran: the files are deleted on every backup
// storage, the refs and the row removed, so a failed image leaves nothing
// (ZStack removes an image whose every download failed). The job completes
// when the download does. A node that takes an image over from a dead
// owner rolls back its unfinished create.
//
// DELETE /v1/images/{uuid} deletes the files on every backup storage
// (idempotent), then the refs and the row; updateImage and
// changeImageState change the name, description and state. LoadReady is
// what the VM and volume services use to take an image.
package image
