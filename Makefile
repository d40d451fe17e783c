# raftgres: every target says what it does. See README.md.
.PHONY: run test sim sim-hunt sim-repro mutants nemesis bench bench-storage bench-snapshot fmt lint verify

# Bring up a local 3-node cluster (its own Postgres instances) and show it working.
run:
	scripts/ensure-deps.sh
	cargo build --release -p raftgres-cli
	scripts/demo.sh

# The whole test suite (installs and starts what it needs).
test:
	scripts/test.sh

# A large simulator sweep: 10,000 seeds of a 5-node cluster, 10,000 ticks each
# (the `sim` build profile: release with whole-program optimisation).
sim:
	cargo run --profile sim -p raftgres-sim -- run --seeds 0..10000 --nodes 5 --ticks 10000 --faults swarm

# The full planted-bug proof: every planted bug found by the default swarm
# within seeds 0..500 on 3 and on 5 nodes (10,000 ticks), and the same
# sweeps clean without a bug. Prints the seeds each bug needed.
sim-hunt:
	scripts/sim-hunt.sh

# Mutation testing of node/src/core and node/src/pipeline with the
# simulator's sweep as the only test (cargo-mutants, installed on first
# use): a bounded sample by default
# (SHARD=0/20, about half an hour); SHARD=all for every mutant. Reports the
# catch rate and the surviving mutants. Not part of `make test`.
SHARD ?= 0/20
mutants:
	SHARD=$(SHARD) scripts/mutants.sh

# Replay one simulator seed with its event trace: make sim-repro SEED=42 [NODES=5] [TICKS=10000] [FAULTS=swarm]
NODES ?= 5
TICKS ?= 10000
FAULTS ?= swarm
sim-repro:
	cargo run --release -p raftgres-sim -- run --seeds $(SEED)..$$(($(SEED)+1)) --nodes $(NODES) --ticks $(TICKS) --faults $(FAULTS) --trace

# A long nemesis campaign against a real cluster (faults on processes,
# Postgres and the network; checked histories), with a progress bar and a
# report under target/nemesis/: make nemesis [SEED=1] [MINUTES=20]
NEMESIS_SEED ?= $(if $(SEED),$(SEED),1)
MINUTES ?= 20
nemesis:
	scripts/ensure-deps.sh
	cargo build --release -p raftgres-cli
	cargo run --release -p raftgres-tests --bin raftgres-nemesis -- --seed $(NEMESIS_SEED) --minutes $(MINUTES)

# Benchmarks (numbers go to docs/BENCHMARKS.md): raftgres against etcd,
# then storage appends against a plain INSERT baseline.
bench:
	scripts/bench.sh
	$(MAKE) bench-storage

# Storage append throughput against a plain multi-row INSERT baseline.
bench-storage:
	scripts/ensure-deps.sh
	cargo run --release -p raftgres-bench --example append_bench

# A follower's catch-up by snapshot of 256 MiB of KV rows (transfer and
# catch-up time, peak RSS of leader and follower) against pg_dump |
# pg_restore of the same table; both copies checked against the leader's.
# Writes the "## Snapshots: 256 MiB" section of docs/BENCHMARKS.md. A few
# minutes, abandoned after 20. Not part of `make test` or `make bench`.
# Settings: SNAPSHOT_MIB=256 SNAPSHOT_VALUE_BYTES=16384 (see the script).
bench-snapshot:
	scripts/bench-snapshot.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p raftgres-sim --all-targets --features planted-bugs -- -D warnings

# The read-only gate: formatting, lints and tests.
verify:
	bash .ci/run
