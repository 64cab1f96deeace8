// Package kvm is a simulated KVM host agent: it speaks the agent protocol
// like ZStack's kvmagent (through agents/agentserver), keeps VM states in memory
// and optionally in a state file, and helps test and benchmark the
// management plane: configurable latency, failure injection, a record of
// command arrivals and a detector of commands that overlap on one VM.
//
// Run it as a process (mplane agent kvm --listen 127.0.0.1:7070) or in
// process:
//
//	a, err := kvm.New(kvm.Options{Listen: "127.0.0.1:7070", StateFile: "/var/lib/mplane/kvm-1.json"})
//	err = a.Start(ctx) // listens and serves until Stop
//	defer a.Stop(ctx)
//
// (Serve and Shutdown do the same for a caller with a listener of its own.)
//
// # Endpoints
//
// Sync: /host/echo (empty answer), /host/connect, /vm/migrate/incoming
// (agent to agent). Async: /host/ping, /host/capacity, /vm/start, /vm/stop,
// /vm/reboot, /vm/destroy, /vm/attachdatavolume, /vm/detachdatavolume,
// /vm/migrate, /vm/list. Debug: GET /debug/stats, /debug/vms and
// /debug/vm-arrivals (no secret needed), GET /debug/arrivals (the host
// secret needed once the agent has one, unless Options.OpenDebug: it
// lists task UUIDs), POST /debug/vm/crash and /debug/vm/poweroff (the
// secret needed). Bodies are the types in agents/protocol/kvm.go, field
// names as in ZStack.
//
// # Volumes
//
// A start needs rootVolume (volumeUuid, installPath), as kvmagent's does.
// installPath is the file's absolute path on the host: the primary
// storage's URL joined with the path inside it. When it falls under a
// storage the host serves (Options.Storage) the file must exist in that
// storage's directory (the URL replaced by the directory; ".." and symbolic
// links leading out refused), for the root and each data volume, else the
// start fails naming the volume and the path; a path under no served URL
// is not checked (a host without storage is fully simulated). The VM
// records its volumes (root first, then data by deviceId) and NICs
// (protocol.VM Volumes, NICs): in the state file, in /vm/list, through a
// migration. /vm/attachdatavolume and /vm/detachdatavolume change the data
// volumes of a running VM (refused otherwise, as by kvmagent); the file of
// an attached volume is checked the same way; attaching an attached volume
// and detaching a detached one succeed; a deviceId holds one volume; the
// root volume never detaches.
//
// # Storage
//
// As kvmagent's localstorage and smp plugins serve ZStack's LocalStorage
// and SharedMountPoint primary storage, the agent serves storage commands
// on directories of its host (Options.Storage, mplane agent kvm --storage
// URL=DIR): New mounts a real storage agent (agents/storage, qcow2 with
// qemu-img) on each directory. Every storage command
// (protocol.StorageCommandPaths) and the file endpoint (protocol.PathFiles)
// must carry protocol.StorageHeader, the primary storage's URL: it is
// admitted as the agent's own commands (arrival recorded, the host secret
// required) and handed to that storage's agent; without the header, or for
// a URL the host does not serve, an error result (a file request: 400 or
// 404) says which URLs it serves. /host/connect connects the storage
// agents too (SetConnection with the host's UUID, sendCommandUrl and
// secret): their progress events go to the node like the agent's own.
// Latency and failure injection do not apply to storage commands; the
// state file does not record storage. Shutdown shuts the storage agents
// down too.
//
// # Guarantees
//
//   - VM commands are idempotent where kvmagent's are: starting a running
//     VM, stopping a stopped or unknown one, destroying an unknown one
//     succeed; so do attaching an attached volume and detaching a detached
//     one. Rebooting or migrating a VM that is not running, attaching or
//     detaching a volume on one, fails. A start of a running VM changes
//     nothing (its volumes are not looked at again).
//   - Every VM state change, and every attach or detach, is persisted (when Options.StateFile is set,
//     by writing a temporary file and renaming it) before its result and
//     its events are sent, so a restarted agent has every VM it reported.
//     The host secret is kept too; the connection (host UUID,
//     sendCommandUrl) is not, so that the management node's ping sees the
//     restart (no host UUID) and reconnects, as with the Python agent.
//   - Events go to the sendCommandUrl of the last connect, in order, one
//     at a time, retried on connection errors (agents/agentserver's policy):
//     /kvm/reportvmstate {hostUuid, vmUuid, vmState} on every state change
//     (start: Running; stop, destroy of a running VM: Shutdown; incoming
//     migration: Running on the destination; crash: Crashed), plus
//     /kvm/reportvmreboot {vmUuid} on reboot, /kvm/reportvmcrash and
//     /kvm/reportvmshutdown for the simulated crash and guest power-off.
//     The source of a migration sends none. Events may reach the node
//     before the result of the command that caused them. Before the first
//     connect there is nowhere to send them: they are counted, not kept.
//   - Security: a connect carrying "secret" gives the host a secret. From
//     then on every request but /host/echo and the GET debug endpoints
//     must carry it in the X-Mplane-Secret header (protocol.SecretHeader),
//     else 401 and nothing runs; a later connect too, so nobody can take
//     the host over by reconnecting it. Events carry the header. A connect
//     without secret on a host that has none keeps the Python behaviour:
//     no check. To reset a host's secret, remove its state file.
//   - Latency (Options.Latency) delays every command but echo, in the
//     handler, before it acts. Failure injection applies to async
//     commands: with probability NoCallbackRate no result is ever sent
//     (the node's deadline must fire), else with probability FailRate the
//     result is {"success":false} and nothing changes. With probability
//     LostReplyRate a VM command (start, stop, reboot, destroy) acts and
//     then sends no result: a lost reply.
//   - Fencing (protocol.FenceHeader): a command under a lower token than
//     the highest seen is refused with 409 and nothing runs.
//   - Observability: every command's arrival (time, path, task UUID) is
//     recorded before any check (the last Options.ArrivalLog are kept,
//     GET /debug/arrivals, with the host secret); a VM command that
//     starts while another one on the same VM runs is counted as an
//     overlap (the node must serialize the commands of a VM, so the count
//     must stay 0). GET /debug/stats
//     shows commands by path, overlaps, injected failures, events,
//     VM counts by state, arrivals and the framework's counters.
//   - Shutdown is idempotent: it stops accepting, lets running commands
//     finish and deliver, sends queued events and persists, within its
//     context; the event sender is the agent's only goroutine of its own.
package kvm
