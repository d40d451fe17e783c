#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine
# with Rust: PostgreSQL server binaries and cargo-nextest. protoc is not
# needed (the proto crate builds with a vendored protoc).
set -euo pipefail

have_postgres() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

if ! have_postgres; then
    echo "ensure-deps: installing PostgreSQL server binaries" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
fi
# The server's own packaging may start a cluster on 5432; raftgres never uses it.

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    # initdb and postgres refuse to run as root; raftgres runs them as this user.
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "ensure-deps: installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi
