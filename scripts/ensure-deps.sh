#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine
# with Rust: PostgreSQL server binaries, cargo-nextest, etcd and etcdctl
# (for the etcd API comparison tests), and the validators of deploy/
# (systemd-analyze; kubernetes-validate from PyPI in a venv under
# target/tools/). protoc is not needed (the proto crate builds with a
# vendored protoc).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}

have_postgres() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

if ! have_postgres; then
    echo "ensure-deps: installing PostgreSQL server binaries" >&2
    apt_install postgresql
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

# tests/tests/deploy_systemd.rs checks deploy/systemd/ with systemd-analyze.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "ensure-deps: installing systemd (for systemd-analyze)" >&2
    apt_install systemd
fi

# tests/tests/etcd_api.rs holds raftgres' etcd v3 API to a real etcd: it runs
# the same `etcdctl` (etcd-client) commands against a raftgres cluster and a
# throw-away single-member etcd (etcd-server) and compares the outputs.
# The server's own packaging may start an etcd on 2379; the tests never use it.
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    echo "ensure-deps: installing etcd-server and etcd-client (for etcd and etcdctl)" >&2
    apt_install etcd-server etcd-client
fi

# tests/tests/deploy_kubernetes.rs validates deploy/kubernetes/ against the
# Kubernetes schemas with kubernetes-validate (it carries the schemas, so
# the test needs no network). Pinned, so that a new release cannot change
# the verdict under us.
kubernetes_validate_version="1.37.0"
venv="target/tools/venv"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$kubernetes_validate_version"; then
    echo "ensure-deps: installing kubernetes-validate $kubernetes_validate_version into $venv" >&2
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
        apt_install python3 python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes-validate==$kubernetes_validate_version"
fi
