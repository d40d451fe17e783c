#!/usr/bin/env bash
# `make bench` (first half): raftgres against etcd, same workload, same
# machine. Installs etcd (Debian's etcd-server) and PostgreSQL if missing,
# builds release binaries, starts a 3-member etcd on loopback (its own data
# directories under a temp dir, default durability), then runs
# `raftgres-bench compare`, which starts a 3-node raftgres with its own 3
# Postgres instances, runs the sweep (clients 1, 16, 64, 256, 1024 writing
# 100-byte values, plus a linearizable-read point, a 50/50 read/write point
# and a 1 KiB-value write point, 64 clients each) against both, then the
# etcd-API point (64 clients writing, run back to back against raftgres
# through raftgres.v1.Kv, raftgres through its etcd API, and etcd), measures
# the raw Postgres ceiling on the leader's instance, and writes
# target/bench/results.{json,csv}, docs/bench-throughput.svg and the
# "## raftgres vs etcd" section of docs/BENCHMARKS.md. Everything it started
# is stopped on exit (trap).
#
# Bounded: 20 s measured + 3 s warm-up per point and system, 19 runs, about
# 9 minutes in all; the compare step is killed after BENCH_TIMEOUT_SECONDS.
#
# Settings (environment): BENCH_CLIENTS=1,16,64,256,1024 BENCH_READ_CLIENTS=64
# BENCH_MIX_CLIENTS=64 (50 % reads) BENCH_LARGE_VALUE_CLIENTS=64
# BENCH_LARGE_VALUE_BYTES=1024 BENCH_ETCD_API_CLIENTS=64 (0 clients: no such
# point)
# BENCH_DURATION_SECONDS=20 BENCH_WARMUP_SECONDS=3 BENCH_TIMEOUT_SECONDS=900
# ETCD_PORT_FIRST=23790 (6 consecutive free ports from here are used).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS="${BENCH_CLIENTS:-1,16,64,256,1024}"
READ_CLIENTS="${BENCH_READ_CLIENTS:-64}"
MIX_CLIENTS="${BENCH_MIX_CLIENTS:-64}"
LARGE_VALUE_CLIENTS="${BENCH_LARGE_VALUE_CLIENTS:-64}"
LARGE_VALUE_BYTES="${BENCH_LARGE_VALUE_BYTES:-1024}"
ETCD_API_CLIENTS="${BENCH_ETCD_API_CLIENTS:-64}"
DURATION_SECONDS="${BENCH_DURATION_SECONDS:-20}"
WARMUP_SECONDS="${BENCH_WARMUP_SECONDS:-3}"
TIMEOUT_SECONDS="${BENCH_TIMEOUT_SECONDS:-900}"
PORT_FIRST="${ETCD_PORT_FIRST:-23790}"
ETCD_MEMBERS=3
ETCD_START_SECONDS=30

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v etcd >/dev/null 2>&1; then
    echo "bench: installing etcd (Debian package etcd-server)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    scripts/ensure-deps.sh
fi

cargo build --release -p raftgres-bench -p raftgres-cli
BENCH=target/release/raftgres-bench
RAFTGRES_BIN="$PWD/target/release/raftgres"
export RAFTGRES_BIN

WORK="$(mktemp -d "${TMPDIR:-/tmp}/raftgres-bench.XXXXXX")"
# Postgres runs as its own user, which must reach its data directory.
chmod 755 "$WORK"
ETCD_PIDS=()
BENCH_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    # Whatever the bench could not stop (it stops its cluster on SIGTERM).
    "$RAFTGRES_BIN" dev down --dir "$WORK/raftgres" >/dev/null 2>&1 || true
    for pid in "${ETCD_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${ETCD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "bench: failed (exit $status); logs kept in $WORK" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# 2 ports per member (client, peer), consecutive and free.
port=$PORT_FIRST
while :; do
    busy=0
    for offset in $(seq 0 $((ETCD_MEMBERS * 2 - 1))); do
        if port_in_use $((port + offset)); then busy=1; break; fi
    done
    [ "$busy" -eq 0 ] && break
    port=$((port + ETCD_MEMBERS * 2))
    if [ "$port" -gt $((PORT_FIRST + 1000)) ]; then
        echo "bench: no $((ETCD_MEMBERS * 2)) consecutive free ports from $PORT_FIRST" >&2
        exit 1
    fi
done
client_port() { echo $((port + ($1 - 1) * 2)); }
peer_port() { echo $((port + ($1 - 1) * 2 + 1)); }

initial_cluster=""
for member in $(seq 1 $ETCD_MEMBERS); do
    initial_cluster+="${initial_cluster:+,}member-$member=http://127.0.0.1:$(peer_port "$member")"
done
endpoints=""
for member in $(seq 1 $ETCD_MEMBERS); do
    etcd --name "member-$member" \
        --data-dir "$WORK/etcd-$member" \
        --listen-client-urls "http://127.0.0.1:$(client_port "$member")" \
        --advertise-client-urls "http://127.0.0.1:$(client_port "$member")" \
        --listen-peer-urls "http://127.0.0.1:$(peer_port "$member")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$member")" \
        --initial-cluster "$initial_cluster" \
        --initial-cluster-token raftgres-bench \
        --initial-cluster-state new \
        >"$WORK/etcd-$member.log" 2>&1 &
    ETCD_PIDS+=("$!")
    endpoints+="${endpoints:+,}127.0.0.1:$(client_port "$member")"
done
echo "bench: etcd $ETCD_MEMBERS members on $endpoints (pids ${ETCD_PIDS[*]}), logs in $WORK" >&2

deadline=$((SECONDS + ETCD_START_SECONDS))
for member in $(seq 1 $ETCD_MEMBERS); do
    until port_in_use "$(client_port "$member")"; do
        if ! kill -0 "${ETCD_PIDS[$((member - 1))]}" 2>/dev/null; then
            echo "bench: etcd member $member exited:" >&2
            tail -20 "$WORK/etcd-$member.log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "bench: etcd member $member did not listen within ${ETCD_START_SECONDS}s" >&2
            exit 1
        fi
        sleep 0.2
    done
done

pids="$(IFS=,; echo "${ETCD_PIDS[*]}")"
timeout --kill-after=60 "$TIMEOUT_SECONDS" "$BENCH" compare \
    --etcd-endpoints "$endpoints" \
    --etcd-pids "$pids" \
    --clients "$CLIENTS" \
    --read-point-clients "$READ_CLIENTS" \
    --mix-point-clients "$MIX_CLIENTS" \
    --large-value-point-clients "$LARGE_VALUE_CLIENTS" \
    --large-value-bytes "$LARGE_VALUE_BYTES" \
    --etcd-api-point-clients "$ETCD_API_CLIENTS" \
    --duration-seconds "$DURATION_SECONDS" \
    --warmup-seconds "$WARMUP_SECONDS" \
    --cluster-dir "$WORK/raftgres" \
    --output-dir target/bench \
    --svg docs/bench-throughput.svg \
    --markdown docs/BENCHMARKS.md \
    --command-line "make bench   # scripts/bench.sh" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
echo "bench: results in target/bench/results.json, docs/bench-throughput.svg, docs/BENCHMARKS.md" >&2
