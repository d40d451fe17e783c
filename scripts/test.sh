#!/usr/bin/env bash
# The whole test suite: unit, scenario, storage (against a real Postgres),
# simulator sweeps, planted-bug detection, and end-to-end tests with real
# node processes. One shared Postgres instance serves the storage tests
# (one database per test); end-to-end tests start their own instances.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-deps.sh

cargo build --workspace --all-targets

test_pg_dir="$(mktemp -d /tmp/raftgres-test-pg.XXXXXX)"
cleanup() {
    cargo run -q -p raftgres-devcluster --bin raftgres-pg -- stop --data-dir "$test_pg_dir" >/dev/null 2>&1 || true
    rm -rf "$test_pg_dir"
}
trap cleanup EXIT
RAFTGRES_TEST_PG="$(cargo run -q -p raftgres-devcluster --bin raftgres-pg -- start --data-dir "$test_pg_dir")"
export RAFTGRES_TEST_PG

cargo nextest run --workspace --no-fail-fast
# The planted-bug hunts run on the seed ranges recorded per bug, in an
# optimized build (10,000-tick worlds); `make sim-hunt` is the full proof.
cargo nextest run --release -p raftgres-sim --features planted-bugs --no-fail-fast
