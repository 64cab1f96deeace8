// Package storage is primary and backup storage: where volumes live and
// where images are kept.
//
// Primary storage comes in two types, as in ZStack:
//
//   - LocalStorage: a directory on each host of the clusters it is attached
//     to (its url, e.g. /var/lib/mplane/local). Every host's directory has
//     its own capacity (LocalStorageHostRefVO); a volume lives on one
//     host's directory, so a VM using it runs on that host.
//   - SharedMountPoint: one directory (a mounted share) that every host of
//     the attached clusters sees at its url; one capacity.
//
// Both are served by the hosts' agents (the KVM agent serves the storage
// commands on the directory it maps the url to; the storage's url travels
// in protocol.StorageHeader): local storage commands go to the volume's
// host, shared storage commands to any Connected host of an attached
// cluster.
//
// Backup storage (type ImageStoreBackupStorage) is a storage agent of its
// own (mplane agent storage) at hostname:port, attached to zones. Images
// are downloaded into it and fetched from it into primary storage's image
// cache on first use.
//
// # Capacity
//
// Capacity is reserved like a host's CPU and memory: one conditional
// update that succeeds only while enough is available, recorded with a
// reservation row (StorageReservationVO, keyed by the volume or snapshot)
// in the same transaction, so concurrent creates on any number of nodes
// never overcommit a storage and a release is idempotent. Available
// capacity is total minus the reservations, always: CapacityDrift reports
// any storage where it is not.
package storage
