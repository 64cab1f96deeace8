// Package storage is mplane's storage agent: a real program doing real work
// on one directory (its root), for primary storage (volumes, snapshots, a
// cache of images) and backup storage (images, served to primary storage
// agents). It speaks the agent protocol like the KVM agent
// (agents/agentserver; docs/agent-protocol.md, "Storage agent"); its wire
// types and paths are in agents/protocol/storage.go, shaped after ZStack's
// LocalStorage, NFS primary storage and ImageStore agents.
//
//	a, err := storage.New(storage.Options{Root: "/var/lib/mplane/ps-1", Listen: "127.0.0.1:7080"})
//	err = a.Start(ctx) // listens and serves until Stop
//	defer a.Stop(ctx)
//
// (Serve and Shutdown do the same for a caller with a listener of its own.)
// An agent can also be mounted in another one, never started: its Handler
// serves the requests the other routes to it, SetConnection connects it,
// Shutdown stops it. The KVM agent (agents/kvm, Options.Storage) serves
// the storage of its host so, selected by protocol.StorageHeader.
//
// or as a process: mplane agent storage --root DIR --listen 127.0.0.1:7080.
//
// # Formats
//
// With qemu-img (Options.QemuImg, by default found on PATH) volumes are
// qcow2: blank ones from qemu-img create, volumes from an image linked
// clones (the image as backing file, named relative to the volume so the
// root can move), clones flattened by qemu-img convert, snapshots internal
// (qemu-img snapshot; install path "<volume>@<snapshot uuid>"). Without it
// (or with QemuImgNone) volumes are raw sparse files, volumes from an image
// and clones sparse copies, snapshots sparse copies in files of their own;
// a raw volume gets file snapshots on an agent with qemu-img too. Sparse
// copies skip the source's holes (SEEK_DATA/SEEK_HOLE) and never write a
// block of zeros. Resizing only grows.
//
// # Guarantees
//
//   - Paths: every path in a command is relative to the root. Absolute
//     paths, ".." elements and symbolic links leading out of the root (or
//     nowhere) are refused with an error result; so is a qcow2 file whose
//     backing chain leaves the root or names a protocol, before qemu-img
//     opens it. The file endpoint answers 403 for them.
//   - No half-written file: every file the agent creates or replaces is
//     written under a temporary name in its directory, fsynced, moved into
//     place (a hard link that fails if the target exists, or a rename
//     when replacing) and its directory fsynced; on any failure (a write
//     error, a full disk, a cancelled command, a download that fails) the
//     temporary is removed. Temporary files a crash left are removed by
//     New. qemu-img's in-place operations (snapshot, revert to an
//     internal snapshot, resize) are as safe as qemu-img makes them.
//   - Downloads check the URL's scheme, the HTTP status, the announced and
//     received sizes (the command's expectedSize), the MD5 and the space
//     left; an interrupted transfer is resumed with a range request
//     (Options.DownloadRetries times) and otherwise fails. Progress events
//     (/progress/report) go to the sendCommandUrl of the last connect.
//   - Commands on one file are serialized (path locks); deletes are
//     idempotent; creating over an existing file is an error, never an
//     overwrite. A format given by the node (the one the agent reported)
//     is authoritative: a raw disk whose guest wrote a qcow2 header stays
//     raw.
//   - Security: as the KVM agent, a connect carrying a secret makes every
//     later request but echo need it in X-Mplane-Secret (401 otherwise),
//     the file endpoint included; events carry it. The secret is kept in
//     memory only: a restarted agent answers ping without a UUID and waits
//     for a connect.
//   - Shutdown is idempotent: it stops accepting, lets running commands
//     finish and deliver within its context, then cancels them (their
//     temporary files are removed) and sends the queued events.
package storage
