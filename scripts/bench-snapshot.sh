#!/usr/bin/env bash
# `make bench-snapshot`: a follower's catch-up by snapshot against `pg_dump |
# pg_restore` of the same table, on this machine. Builds release binaries,
# then runs `raftgres-bench snapshot`, which starts a 3-node raftgres (its
# own 3 Postgres instances) in a temp dir, stops a follower, loads
# SNAPSHOT_MIB MiB of KV rows through the leader, starts the follower again
# and times its snapshot transfer and catch-up with the peak memory of
# leader and follower, checks the follower's rows against the leader's,
# runs the pg_dump | pg_restore baseline (checked the same way) and writes
# the "## Snapshots: N MiB" section of docs/BENCHMARKS.md. Everything it
# started is stopped on exit (trap); the directory is kept after a failure.
#
# Bounded: the benchmark gives up after SNAPSHOT_TIMEOUT_MINUTES (default
# 20) and is killed two minutes later if it has not stopped by then.
#
# Settings (environment): SNAPSHOT_MIB=256 SNAPSHOT_VALUE_BYTES=16384
# SNAPSHOT_CLIENTS=64 SNAPSHOT_COMPACTION_ENTRIES=1000
# SNAPSHOT_TIMEOUT_MINUTES=20 SNAPSHOT_MARKDOWN=docs/BENCHMARKS.md (empty:
# the section is not written).
set -euo pipefail
cd "$(dirname "$0")/.."

MIB="${SNAPSHOT_MIB:-256}"
VALUE_BYTES="${SNAPSHOT_VALUE_BYTES:-16384}"
CLIENTS="${SNAPSHOT_CLIENTS:-64}"
COMPACTION_ENTRIES="${SNAPSHOT_COMPACTION_ENTRIES:-1000}"
TIMEOUT_MINUTES="${SNAPSHOT_TIMEOUT_MINUTES:-20}"
MARKDOWN="${SNAPSHOT_MARKDOWN-docs/BENCHMARKS.md}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    scripts/ensure-deps.sh
fi
if [ ! -x /usr/bin/time ]; then
    echo "bench-snapshot: installing GNU time (peak memory of pg_dump and pg_restore)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
fi

cargo build --release -p raftgres-bench -p raftgres-cli
BENCH=target/release/raftgres-bench
RAFTGRES_BIN="$PWD/target/release/raftgres"
export RAFTGRES_BIN

WORK="$(mktemp -d "${TMPDIR:-/tmp}/raftgres-bench-snapshot.XXXXXX")"
# Postgres runs as its own user, which must reach its data directory.
chmod 755 "$WORK"
BENCH_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    # Whatever the bench could not stop (it stops its cluster on SIGTERM).
    if [ -d "$WORK/cluster" ]; then
        "$RAFTGRES_BIN" dev down --dir "$WORK/cluster" >/dev/null 2>&1 || true
    fi
    if [ "$status" -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "bench-snapshot: failed (exit $status); logs kept in $WORK" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

markdown_arguments=()
if [ -n "$MARKDOWN" ]; then
    markdown_arguments=(--markdown "$MARKDOWN")
fi
timeout --signal=TERM --kill-after=30 $((TIMEOUT_MINUTES * 60 + 120)) \
    "$BENCH" snapshot \
    --cluster-dir "$WORK/cluster" \
    --mebibytes "$MIB" \
    --value-bytes "$VALUE_BYTES" \
    --clients "$CLIENTS" \
    --compaction-entries "$COMPACTION_ENTRIES" \
    --timeout-minutes "$TIMEOUT_MINUTES" \
    --command-line "make bench-snapshot" \
    "${markdown_arguments[@]}" &
BENCH_PID=$!
wait "$BENCH_PID"
