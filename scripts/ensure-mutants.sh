#!/usr/bin/env bash
# Installs cargo-mutants (the mutation-testing tool `make mutants` drives)
# when it is missing, through cargo's ordinary registry client, so a fresh
# machine needs nothing installed by hand.
set -euo pipefail
if cargo mutants --version >/dev/null 2>&1; then
    exit 0
fi
echo "installing cargo-mutants (once)" >&2
cargo install cargo-mutants --locked
