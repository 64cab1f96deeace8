// Package bench measures a running mplane deployment end to end, the way a
// user loads it: VM creates, stops, starts and destroys through the REST
// API, with the management nodes' own counters (GET /admin/process,
// /admin/bus) and the simulated agents' records (GET /debug/vm-arrivals,
// /debug/stats) read around every phase. `mplane bench` is its command;
// scripts/bench.sh runs the standard scenarios with it.
//
// What a run reports, per phase (create, stop, start, destroy):
//
//   - throughput: jobs finished per second of the phase;
//   - latency from the API call to the job's result (p50/p90/p99/max), and
//     from the API call to the agent command of the VM (its first arrival
//     at an agent after the call, joined by VM UUID): how long the
//     management plane takes before the hypervisor is asked;
//   - management CPU per VM (cpuSeconds of every node, delta over the
//     phase, divided by the VMs), each node's resident set;
//   - VM messages handled by each node (vm.* counts of /admin/bus, delta)
//     and each node's share, which shows how evenly the ring spreads work.
//
// Guarantees:
//
//   - Job results are taken from webhooks by default (the X-Web-Hook
//     header, a receiver of the run's own on loopback): the time a job is
//     done is when its result reaches the client, without the quantization
//     of polling and without poll load on the nodes. A run that sees no
//     result for a while polls the outstanding jobs once, so a lost webhook
//     cannot hang it; --wait poll uses the client's polling instead.
//   - Every job of a phase ends (result, failure, or the run's deadline)
//     before the next phase starts, and every failure is counted and the
//     first few kept. Report.Failures says whether the run must fail: a job
//     failed, an agent saw two commands on one VM at once (overlaps), or
//     the agents could not be asked.
//   - Percentiles are nearest-rank (Percentile): an observed value, never
//     an interpolation.
//   - Times of the agents' arrivals are compared with the client's clock,
//     which is exact when the agents run on the same machine (the
//     scenarios of scripts/bench.sh).
package bench
