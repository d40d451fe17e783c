#!/usr/bin/env bash
# `make run`: brings up a local 3-node cluster (each node with its own
# Postgres, under .dev/demo), writes and reads keys, kills the leader with
# kill -9, shows a new leader take over with every key intact, restarts the
# killed node and shows it catch up, then keeps the cluster running until
# Ctrl-C. Expects target/release/raftgres (`cargo build --release -p raftgres-cli`);
# RAFTGRES_BIN=path runs another build.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${RAFTGRES_BIN:-target/release/raftgres}"
DIR=.dev/demo
NODES=3
STARTUP_SECONDS=180

if [ ! -x "$BIN" ]; then
    echo "demo: $BIN is missing; run: cargo build --release -p raftgres-cli" >&2
    exit 1
fi

if [ -t 1 ]; then bold=$'\033[1m'; plain=$'\033[0m'; else bold=""; plain=""; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
# Shows a raftgres command, then runs it.
raftgres() {
    printf '$ raftgres %s\n' "$*"
    "$BIN" "$@"
}

# Whatever an earlier demo that was killed left running.
"$BIN" dev down --dir "$DIR" >/dev/null 2>&1 || true
mkdir -p "$DIR"
UP_OUTPUT="$DIR/dev-up.out"
UP_LOG="$DIR/dev-up.log"

say "starting a $NODES-node cluster in $DIR, each node with its own Postgres (the first start runs initdb)"
# In its own session, so that Ctrl-C reaches only this script, which then
# stops the cluster once, gracefully.
if command -v setsid >/dev/null 2>&1; then
    setsid "$BIN" dev up --dir "$DIR" --nodes "$NODES" >"$UP_OUTPUT" 2>"$UP_LOG" &
else
    "$BIN" dev up --dir "$DIR" --nodes "$NODES" >"$UP_OUTPUT" 2>"$UP_LOG" &
fi
UP_PID=$!

cleanup() {
    trap - EXIT INT TERM
    if kill -0 "$UP_PID" 2>/dev/null; then
        say "stopping the cluster"
        kill -TERM "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
    # Anything `dev up` could not stop (it stops restarted nodes too,
    # through their pid files).
    "$BIN" dev down --dir "$DIR" >/dev/null 2>&1 || true
    echo "stopped; data kept in $DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deadline=$((SECONDS + STARTUP_SECONDS))
until grep -q "cluster is up" "$UP_OUTPUT" 2>/dev/null; do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "demo: raftgres dev up failed:" >&2
        cat "$UP_OUTPUT" "$UP_LOG" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "demo: the cluster did not come up within ${STARTUP_SECONDS}s; see $UP_LOG and $DIR/node-*.log" >&2
        exit 1
    fi
    sleep 0.5
done
cat "$UP_OUTPUT"

RAFTGRES_ENDPOINTS="$(cat "$DIR/endpoints")"
export RAFTGRES_ENDPOINTS
leader="$("$BIN" wait leader --timeout 60)"
follower=1
if [ "$follower" = "$leader" ]; then follower=2; fi
follower_address="$(cut -d, -f"$follower" <<<"$RAFTGRES_ENDPOINTS")"

say "node $leader leads; writing keys (the client finds the leader by itself)"
raftgres kv put greeting "hello from raftgres"
raftgres kv put color blue
raftgres kv put color green
raftgres kv put city Lisbon
raftgres kv put planet Mars

say "reading them back, linearizable, asking only follower node $follower ($follower_address)"
for key in greeting color city planet; do
    raftgres kv get "$key" --endpoints "$follower_address"
done

say "cluster status"
raftgres status

leader_pid="$(cat "$DIR/node-$leader.pid")"
say "killing the leader, node $leader (pid $leader_pid), with kill -9"
kill -9 "$leader_pid"

new_leader="$leader"
until [ "$new_leader" != "$leader" ]; do
    new_leader="$("$BIN" wait leader --timeout 60)"
done
say "node $new_leader leads now"
raftgres status

say "every key is still there (read through the new leader)"
raftgres kv range

say "restarting node $leader on its existing data"
raftgres dev start-node --dir "$DIR" "$leader"
raftgres wait caught-up "$leader" --timeout 60
raftgres status

say "cluster is running; Ctrl-C to stop"
echo "try: $BIN kv put name value --endpoints $RAFTGRES_ENDPOINTS"
echo "node logs: $DIR/node-*.log"
wait "$UP_PID"
