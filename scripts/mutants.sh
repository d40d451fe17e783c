#!/usr/bin/env bash
# `make mutants`: measures the simulator with cargo-mutants. Each mutant of
# the pure consensus core and of the pipeline that drives it
# (node/src/core and node/src/pipeline, scope in sim/mutants/mutants.toml)
# is built and tested by the simulator's default-swarm sweep alone
# (sim/tests/mutation_sweep.rs: 200 seeds on 3 nodes and 200 on 5, 10,000
# ticks, release build). Reports the catch rate of non-equivalent mutants
# and the survivors; equivalent mutants are listed, with reasons, in
# sim/mutants/equivalent.txt.
#
# cargo-mutants tests the mutated package (`raftgres`); the extra
# `--package=raftgres-sim --test=mutation_sweep` makes that one cargo
# invocation run the simulator's sweep and nothing else, so the core's own
# unit tests, which would catch more, are not what is measured.
# `--no-default-features` builds the core without the server (no tokio,
# tonic or Postgres), as the simulator does.
#
# Bounded by default: SHARD=0/20 runs one twentieth of the mutants
# (round-robin, so every file is sampled), about half an hour on the
# 2-core development machine. SHARD=all runs every mutant (about 600, at
# roughly a minute each: most of a working day; split it with SHARD=k/n
# across machines and add up the outcome files). SEEDS overrides the 200
# seeds per cluster size.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-mutants.sh

shard="${SHARD:-0/20}"
output_dir="${OUTPUT_DIR:-target/mutants-sim}"
equivalent_list=sim/mutants/equivalent.txt
shard_arguments=()
if [[ "$shard" != all ]]; then
    shard_arguments=(--shard "$shard" --sharding round-robin)
fi

mkdir -p "$output_dir"

# Names carry line and column: an edit above a listed mutant moves it.
# Warn about listed names that no longer exist, so the list is kept true.
cargo mutants --list --config sim/mutants/mutants.toml --package raftgres \
    --no-default-features >"$output_dir/all-mutants.txt"
while IFS= read -r name; do
    if ! grep -qxF "$name" "$output_dir/all-mutants.txt"; then
        echo "warning: $equivalent_list names a mutant that no longer exists: $name" >&2
    fi
done < <(grep -v '^#' "$equivalent_list" | sed 's/ | .*//' | grep .)
# cargo-mutants exits non-zero when mutants survive; the score below is
# the report.
RAFTGRES_MUTATION_SWEEP=1 RAFTGRES_MUTATION_SEEDS="${SEEDS:-200}" \
    cargo mutants \
    --config sim/mutants/mutants.toml \
    --package raftgres \
    --no-default-features \
    --cargo-test-arg=--package=raftgres-sim \
    --cargo-test-arg=--test=mutation_sweep \
    --profile release \
    --timeout 300 \
    --build-timeout 900 \
    --jobs 1 \
    --output "$output_dir" \
    "${shard_arguments[@]}" || true

outcomes="$output_dir/mutants.out"
count() {
    if [[ -f "$outcomes/$1" ]]; then grep -c . "$outcomes/$1" || true; else echo 0; fi
}
caught=$(count caught.txt)
timeouts=$(count timeout.txt)
unviable=$(count unviable.txt)
missed_file="$outcomes/missed.txt"
touch "$missed_file"
equivalent_names="$(grep -v '^#' "$equivalent_list" | sed 's/ | .*//' | grep . || true)"
survivors="$(grep -vxF -f <(printf '%s\n' "$equivalent_names") "$missed_file" || true)"
missed=$(grep -c . "$missed_file" || true)
surviving=$(grep -c . <<<"$survivors" || true)
equivalent=$((missed - surviving))
tested=$((caught + timeouts + surviving))

echo
echo "mutation score of the simulator (shard $shard of node/src/core and node/src/pipeline)"
echo "  caught by a checker        $caught"
echo "  caught by timeout          $timeouts"
echo "  survived                   $surviving"
echo "  equivalent (listed)        $equivalent"
echo "  unviable (did not build)   $unviable"
if ((tested > 0)); then
    echo "  catch rate                 $(((caught + timeouts) * 1000 / tested / 10)).$(((caught + timeouts) * 1000 / tested % 10)) % of $tested non-equivalent mutants"
fi
if [[ -n "$survivors" ]]; then
    echo
    echo "survivors (name each in docs/SIMULATOR.md with why it survives, or in $equivalent_list):"
    sed 's/^/  /' <<<"$survivors"
fi
