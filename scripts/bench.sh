#!/usr/bin/env bash
# Every benchmark of mplane on this machine, in one run (`make bench`):
#
#   micro  the micro benchmarks, each beside its baseline (raw amqp091
#          request/reply, plain HTTP POST ...): make bench-bus bench-thread
#          bench-ring bench-agents
#   a      embedded `mplane run` (in-process bus, SQLite), 1,000 VMs, 64 in flight
#   b      cluster mode (RabbitMQ + MariaDB), 1 node: 100 VMs one at a time
#          (the idle latency), then 1,000 VMs with 64 in flight
#   c      cluster mode, 3 nodes, 1,000 VMs with 64 in flight spread over
#          them, CPU profiles of the 3 nodes during the creates
#   d      cluster mode, 1 node, 10,000 creates submitted at once
#   e      cluster mode, 1 node, agents answering after 50 ms, 1,000 VMs with
#          64 in flight
#
# Each scenario starts its own processes (3 simulated agents with room for
# 10,000 one-vCPU VMs, each serving the bench's local primary storage, where
# every VM gets its root volume, on a directory of its own; the node(s)),
# with its own data directory, database and bus_prefix (in a RabbitMQ vhost
# of the run), and stops them at its end, removing the agents' directories;
# a trap stops whatever is left, drops the databases and removes the run's
# temporary directory on any exit.
# Results: bench-results/<time>/ (JSON reports, tables, logs, profiles,
# summary.md); bench-results/latest points to the last run.
#
# Environment: BENCH_SCENARIOS (default "micro a b c d e"), BENCH_VMS (1000),
# BENCH_BIG_VMS (10000), BENCH_IDLE_VMS (100), BENCH_CONCURRENCY (64),
# BENCH_PROFILE_SECONDS (20), BENCH_RESULTS (bench-results), BIN
# (bin/mplane, built here without -race), BENCH_BUILD (1; 0 runs BIN as it
# is, e.g. an earlier build: BIN=/tmp/prev-bin/mplane BENCH_BUILD=0; flags
# it lacks are left out), BENCH_CODE (what the summary says of the code;
# default the tree's commit), BENCH_AGENT_FLAGS (more flags for every
# `mplane agent kvm`, e.g. "--qemu-img none": raw copies instead of qcow2
# linked clones made by a qemu-img process), GO, MAKE.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
GO=${GO:-go}
MAKE=${MAKE:-make}
BIN=${BIN:-bin/mplane}
[[ $BIN = /* ]] || BIN=$ROOT/$BIN
BUILD=${BENCH_BUILD:-1}
SCENARIOS=${BENCH_SCENARIOS:-micro a b c d e}
VMS=${BENCH_VMS:-1000}
BIG_VMS=${BENCH_BIG_VMS:-10000}
IDLE_VMS=${BENCH_IDLE_VMS:-100}
INFLIGHT=${BENCH_CONCURRENCY:-64}
PROFILE_SECONDS=${BENCH_PROFILE_SECONDS:-20}
RESULTS_ROOT=${BENCH_RESULTS:-$ROOT/bench-results}
STAMP=$(date +%Y%m%d-%H%M%S)
R=$RESULTS_ROOT/$STAMP
RUN_ID=$(date +%s)_$$
PASSWORD=bench-$RANDOM$RANDOM$RANDOM
MYSQL=(mariadb -h 127.0.0.1 -P 3306 -u root)
AGENT_MEMORY=$((16 << 40)) # 16 TiB: 65,536 VMs of 256 MiB per agent
AGENT_CPUS=4096
read -r -a AGENT_FLAGS <<<"${BENCH_AGENT_FLAGS:-}"
# The url of the bench's LocalStorage (mplane bench --local-storage-url):
# each agent serves it on its own directory, $TMP/<scenario>-agent<N>.
LOCAL_URL=/mplane/local

# Settings of the caller's environment must not leak into the processes.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^MPLANE_' || true)

log() { printf '\n=== %s %s\n' "$(date +%T)" "$*" >&2; }

SCEN=none
SCEN_PIDS=()
NODE_PIDS=()
AGENT_PIDS=()
DBS=()
VHOST=
FAILED=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mplane-bench.XXXXXX")

# stop_scenario stops the scenario's processes: SIGTERM, then SIGKILL for
# any still running 15 s later.
stop_scenario() {
	local pid i
	((${#SCEN_PIDS[@]})) || return 0
	for pid in "${SCEN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for ((i = 0; i < 75; i++)); do
		local alive=0
		for pid in "${SCEN_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.2
	done
	for pid in "${SCEN_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	SCEN_PIDS=()
	NODE_PIDS=()
	AGENT_PIDS=()
}

drop_db() { "${MYSQL[@]}" -e "DROP DATABASE IF EXISTS \`$1\`" 2>/dev/null || true; }

cleanup() {
	local rc=$?
	stop_scenario
	local db
	for db in "${DBS[@]}"; do drop_db "$db"; done
	if [ -n "$VHOST" ]; then rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true; fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: run CMD in the background for the current scenario,
# its output in logs/<scenario>-NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$R/logs/$SCEN-$name.log" 2>&1 &
	SCEN_PIDS+=($!)
}

# free_port VAR: a loopback port nobody listens on, into VAR. Ports are
# taken below the kernel's ephemeral range, which outgoing connections use.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
NEXT_PORT=$((EPHEMERAL_LOW > 22000 ? 12000 + RANDOM % (EPHEMERAL_LOW - 22000) : 40000 + RANDOM % 10000))
free_port() {
	while (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do NEXT_PORT=$((NEXT_PORT + 1)); done
	printf -v "$1" '%d' "$NEXT_PORT"
	NEXT_PORT=$((NEXT_PORT + 1))
}

# wait_http URL SECONDS: until URL answers 2xx.
wait_http() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		curl -sf -o /dev/null "$1" && return 0
		sleep 0.2
	done
	echo "bench: $1 did not answer within $2 s (logs in $R/logs)" >&2
	return 1
}

# start_agents LATENCY: three simulated KVM agents, each serving the local
# primary storage at $LOCAL_URL on a directory of its own (removed by
# end_scenario); sets AGENTS. No --state-file: with one, an agent rewrites
# and fsyncs the JSON of all its VMs on every change, CPU (milliseconds per
# change at thousands of VMs) taken from the management plane on this
# shared machine.
start_agents() {
	local i p storage=()
	AGENTS=
	for i in 1 2 3; do
		free_port p
		if ((HAS_AGENT_STORAGE)); then
			mkdir -p "$TMP/$SCEN-agent$i"
			storage=(--storage "$LOCAL_URL=$TMP/$SCEN-agent$i")
		fi
		start "agent$i" "$BIN" agent kvm --listen "127.0.0.1:$p" --cpu "$AGENT_CPUS" --memory "$AGENT_MEMORY" \
			--latency "$1" --log-level warn "${storage[@]}" "${AGENT_FLAGS[@]}"
		AGENT_PIDS+=("${SCEN_PIDS[-1]}")
		AGENTS+="${AGENTS:+,}http://127.0.0.1:$p"
	done
	for p in ${AGENTS//,/ }; do wait_http "$p/debug/stats" 30 || return 1; done
}

# start_cluster N: N `mplane server` nodes on a new database; sets NODES.
start_cluster() {
	local n=$1 db="mplane_bench_${RUN_ID}_$SCEN" i p
	"${MYSQL[@]}" -e "CREATE DATABASE \`$db\`" || return 1
	DBS+=("$db")
	NODES=
	for ((i = 1; i <= n; i++)); do
		free_port p
		start "node$i" env MPLANE_BUS_URL="$AMQP_URL" MPLANE_BUS_PREFIX="bench_${RUN_ID}_$SCEN" \
			MPLANE_DATABASE_DSN="mysql://root:@tcp(127.0.0.1:3306)/$db" MPLANE_API_LISTEN="127.0.0.1:$p" \
			MPLANE_ADMIN_PASSWORD="$PASSWORD" MPLANE_DATA_DIR="$TMP/$SCEN-node$i" MPLANE_LOG_LEVEL=warn \
			MPLANE_DRAIN_TIMEOUT=5s MPLANE_WEBHOOK_ALLOW=127.0.0.1 "$BIN" server
		NODE_PIDS+=("${SCEN_PIDS[-1]}")
		NODES+="${NODES:+,}http://127.0.0.1:$p"
		# The first node creates the schema; the others join after.
		if ((i == 1)); then wait_http "http://127.0.0.1:$p/readyz" 90 || return 1; fi
	done
	# /admin on the API listener needs an admin session (the cluster's:
	# valid on every node).
	local first=${NODES%%,*} session
	session=$(curl -sf -X PUT "$first/v1/accounts/login" \
		-d "{\"logInByAccount\": {\"accountName\": \"admin\", \"password\": \"$PASSWORD\"}}" | grep -o '"uuid": *"[0-9a-f]*"' | head -1 | grep -o '[0-9a-f]\{32\}')
	for p in ${NODES//,/ }; do
		wait_http "$p/readyz" 90 || return 1
		for ((i = 0; i < 150; i++)); do
			curl -sf -H "Authorization: OAuth $session" "$p/admin/status" | grep -Eq "\"members\": *$n\b" && break
			sleep 0.2
		done
	done
}

# Where the machine's CPU goes during each `mplane bench` run, from /proc:
# the nodes, the agents (with the qemu-img processes they ran), MariaDB,
# RabbitMQ, and the whole machine (the rest is the bench client and
# everything else), with MariaDB's statement count.
CLK_TCK=$(getconf CLK_TCK)
MARIADB_PID=$(pgrep -xo mariadbd || pgrep -xo mysqld || true)
RABBIT_PID=$(pgrep -xo beam.smp || true)
ticks_of() { # PID... -> CPU ticks (user + system) of those processes and of the children they waited for (the agents' qemu-img)
	local t=0 p v
	for p in "$@"; do
		v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}') || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
machine_snap() { # -> "busy nodes agents mariadb rabbitmq statements"
	local busy questions
	busy=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
	questions=$("${MYSQL[@]}" -N -e "SHOW GLOBAL STATUS LIKE 'Questions'" 2>/dev/null | awk '{print $2}')
	echo "$busy $(ticks_of "${NODE_PIDS[@]}") $(ticks_of "${AGENT_PIDS[@]}") $(ticks_of $MARIADB_PID) $(ticks_of $RABBIT_PID) ${questions:-0}"
}

# bench LABEL ARGS...: one `mplane bench` run against the scenario's
# processes; its table is printed and kept, its JSON saved, and where the
# CPU went appended to machine.md.
bench() {
	local label=$1 before after t0 jobs
	shift
	if ((HAS_BENCH_LOCAL_URL)); then set -- "$@" --local-storage-url "$LOCAL_URL"; fi
	log "$label: mplane bench $*"
	before=$(machine_snap)
	t0=$(date +%s.%N)
	if ! MPLANE_BENCH_PASSWORD=$PASSWORD "$BIN" bench --label "$label" --save "$R/$label.json" "$@" | tee "$R/$label.txt"; then
		FAILED+=("$label")
	fi
	after=$(machine_snap)
	jobs=$(grep -Eo '"ops": [0-9]+' "$R/$label.json" 2>/dev/null | awk '{s += $2} END {print s + 0}')
	echo "$before $after $t0 $(date +%s.%N) $jobs" | awk -v label="$label" -v tck="$CLK_TCK" -v cpus="$(nproc)" '{
		wall = $14 - $13; busy = ($7 - $1) / tck; nodes = ($8 - $2) / tck; agents = ($9 - $3) / tck
		db = ($10 - $4) / tck; mq = ($11 - $5) / tck; q = $12 - $6; jobs = $15
		rest = busy - nodes - agents - db - mq
		printf "| %s | %.1f | %.1f (%.0f%% of %d CPUs) | %.1f | %.1f | %.1f | %.1f | %.1f | %d (%.0f per job) |\n", label, wall, busy,
			100 * busy / (wall * cpus), cpus, nodes, db, mq, agents, rest, q, (jobs > 0 ? q / jobs : 0)
	}' >>"$R/machine.md"
}

end_scenario() {
	stop_scenario
	local db="mplane_bench_${RUN_ID}_$SCEN"
	if printf '%s\n' "${DBS[@]}" | grep -qx "$db"; then drop_db "$db"; fi
	# The agents' storage (root volumes, image caches) and the nodes' data.
	rm -rf "$TMP/$SCEN"-*
	log "scenario $SCEN done ($((SECONDS - SCEN_START)) s)"
}

begin_scenario() {
	SCEN=$1
	SCEN_START=$SECONDS
	log "scenario $SCEN: $2"
}

scenario_micro() {
	log "micro benchmarks: $MAKE bench-bus bench-thread bench-ring bench-agents"
	if ! "$MAKE" --no-print-directory bench-bus bench-thread bench-ring bench-agents 2>&1 | tee "$R/micro.txt"; then
		FAILED+=(micro)
	fi
}

scenario_a() {
	begin_scenario a "embedded mplane run, $VMS VMs, $INFLIGHT in flight"
	local p
	free_port p
	# The in-process hosts of `mplane run` report 32 vCPUs each (room for
	# 96 VMs) and would count as management CPU: external agents instead.
	# The bench's webhook receiver is on loopback, which the node refuses by
	# default.
	start node1 env MPLANE_WEBHOOK_ALLOW=127.0.0.1 "$BIN" run --hosts 0 --data-dir "$TMP/a-data" --api-listen "127.0.0.1:$p" \
		--admin-password "$PASSWORD" --log-level warn
	NODE_PIDS+=("${SCEN_PIDS[-1]}")
	wait_http "http://127.0.0.1:$p/readyz" 90 || return 1
	start_agents 0s || return 1
	bench a-embedded --url "http://127.0.0.1:$p" --agents "$AGENTS" --setup --vms "$VMS" --concurrency "$INFLIGHT"
	end_scenario
}

scenario_b() {
	begin_scenario b "cluster mode, 1 node: $IDLE_VMS VMs one at a time, then $VMS VMs with $INFLIGHT in flight"
	start_agents 0s || return 1
	start_cluster 1 || return 1
	bench b0-cluster-1node-idle --url "$NODES" --agents "$AGENTS" --setup --vms "$IDLE_VMS" --concurrency 1 --ops create,destroy
	bench b-cluster-1node --url "$NODES" --agents "$AGENTS" --vms "$VMS" --concurrency "$INFLIGHT"
	end_scenario
}

scenario_c() {
	begin_scenario c "cluster mode, 3 nodes, $VMS VMs with $INFLIGHT in flight, CPU profiles during the creates"
	start_agents 0s || return 1
	start_cluster 3 || return 1
	mkdir -p "$R/profiles"
	bench c-cluster-3nodes --url "$NODES" --agents "$AGENTS" --setup --vms "$VMS" --concurrency "$INFLIGHT" \
		--profile-seconds "$PROFILE_SECONDS" --profile-dir "$R/profiles"
	end_scenario
}

scenario_d() {
	begin_scenario d "cluster mode, 1 node, $BIG_VMS creates submitted at once"
	start_agents 0s || return 1
	start_cluster 1 || return 1
	bench d-cluster-1node-submit-all --url "$NODES" --agents "$AGENTS" --setup --vms "$BIG_VMS" --concurrency "$INFLIGHT" \
		--submit-all --ops create
	end_scenario
}

scenario_e() {
	begin_scenario e "cluster mode, 1 node, agents with 50 ms latency, $VMS VMs with $INFLIGHT in flight"
	start_agents 50ms || return 1
	start_cluster 1 || return 1
	bench e-cluster-1node-agent-50ms --url "$NODES" --agents "$AGENTS" --setup --vms "$VMS" --concurrency "$INFLIGHT"
	end_scenario
}

# profile_tops writes the top CPU costs of the saved profiles (all nodes
# merged, then each node) next to them.
profile_tops() {
	local dir=$R/profiles f
	compgen -G "$dir/*.pprof" >/dev/null || return 0
	{
		echo "## all nodes merged: flat"
		"$GO" tool pprof -top -nodecount=30 "$dir"/*.pprof 2>&1
		echo
		echo "## all nodes merged: cumulative, mplane and its libraries"
		"$GO" tool pprof -top -cum -nodecount=150 "$dir"/*.pprof 2>&1 |
			grep -E 'flat%|mplane/|gorm|database/sql|go-sql-driver|amqp091|net/http\.|encoding/json' | awk 'NR <= 45'
		echo
		echo "## all nodes merged: cumulative"
		"$GO" tool pprof -top -cum -nodecount=60 "$dir"/*.pprof 2>&1
		for f in "$dir"/*.pprof; do
			echo
			echo "## $(basename "$f"): flat"
			"$GO" tool pprof -top -nodecount=15 "$f" 2>&1
		done
	} >"$dir/top.txt"
}

main() {
	mkdir -p "$R/logs"
	printf '*\n' >"$RESULTS_ROOT/.gitignore"
	ln -sfn "$STAMP" "$RESULTS_ROOT/latest"
	log "results in $R"
	bash scripts/services.sh
	# Other load on the machine shows in every figure: say how busy it was.
	local b0 b1 idle_note
	b0=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
	sleep 3
	b1=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
	idle_note=$(echo "$b0 $b1" | awk '{b = $3 - $1; i = $4 - $2; printf "%.0f", 100 * b / (b + i + 1e-9)}')
	if ((idle_note > 15)); then
		echo "bench: warning: the machine is ${idle_note}% busy before the run; other load distorts the figures" >&2
	fi
	if ((BUILD)); then
		# Read-only: no index refresh (GIT_OPTIONAL_LOCKS=0).
		COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
		if GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then COMMIT+=" with local changes"; fi
		log "build $BIN (without -race)"
		"$GO" build -o "$BIN" ./cmd/mplane
		BUILT_NOTE="Binary built without -race."
	else
		COMMIT="$BIN as given (BENCH_BUILD=0)"
		BUILT_NOTE="Binary $BIN, not built by this run."
		log "using $BIN as it is (BENCH_BUILD=0)"
	fi
	COMMIT=${BENCH_CODE:-$COMMIT}
	# An earlier build may lack these (before VMs had root volumes).
	HAS_AGENT_STORAGE=0
	HAS_BENCH_LOCAL_URL=0
	local help # (not piped into grep -q: pipefail would see the SIGPIPE)
	help=$("$BIN" agent kvm --help 2>&1 || true)
	if [[ $help == *--storage* ]]; then HAS_AGENT_STORAGE=1; fi
	help=$("$BIN" bench --help 2>&1 || true)
	if [[ $help == *--local-storage-url* ]]; then HAS_BENCH_LOCAL_URL=1; fi

	local s
	for s in $SCENARIOS; do
		case $s in
		micro) scenario_micro ;;
		a | b | c | d | e)
			if [ -z "${AMQP_URL:-}" ] && [ "$s" != a ]; then
				VHOST=mplane-bench-$RUN_ID
				if rabbitmqctl -q add_vhost "$VHOST" >/dev/null 2>&1 &&
					rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null 2>&1; then
					AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$VHOST
				else
					VHOST=
					AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
				fi
			fi
			# A scenario that cannot start is reported; the others still run.
			if ! "scenario_$s"; then
				echo "bench: scenario $s could not start its processes (logs in $R/logs)" >&2
				FAILED+=("$s")
				end_scenario
			fi
			;;
		*) echo "bench: unknown scenario $s (want micro a b c d e)" >&2 && exit 2 ;;
		esac
	done

	profile_tops
	local reports=() took=$SECONDS
	for s in "$R"/*.json; do [ -e "$s" ] && reports+=("$s"); done
	if ((${#reports[@]})); then
		local micro=()
		[ -f "$R/micro.txt" ] && micro=(--micro "$R/micro.txt")
		"$BIN" bench summary "${micro[@]}" --took "${took}s" "${reports[@]}" \
			--note "Code: $COMMIT. Machine busy before the run (3 s sample): $idle_note%. $BUILT_NOTE" >"$R/summary.md"
		if [ -f "$R/machine.md" ]; then
			{
				printf '\n### Where the CPU went during each run (from /proc; "rest" is the bench client and the rest of the machine)\n\n'
				printf '| run | wall s | machine busy CPU s | nodes CPU s | MariaDB | RabbitMQ | agents (with their qemu-img) | rest | SQL statements |\n'
				printf '|---|---|---|---|---|---|---|---|---|\n'
				cat "$R/machine.md"
			} >>"$R/summary.md"
		fi
		if [ -f "$R/profiles/top.txt" ]; then
			{
				printf '\n### CPU profile of the 3 nodes during the creates (go tool pprof -top, merged)\n\n```\n'
				sed -n '/^## all nodes merged: flat/,/^## all nodes merged: cumulative$/p' "$R/profiles/top.txt" | sed '$d'
				printf '```\n\nEach node and the whole cumulative view: profiles/top.txt.\n'
			} >>"$R/summary.md"
		fi
		log "summary ($R/summary.md)"
		cat "$R/summary.md"
	fi
	log "make bench took $((SECONDS / 60)) min $((SECONDS % 60)) s"
	if ((${#FAILED[@]})); then
		echo "bench: failed: ${FAILED[*]}" >&2
		exit 1
	fi
}

main "$@"
