//! Proves the crate boundaries applications rely on: the `raftgres` library
//! pulls in neither the local-cluster tooling (`raftgres-devcluster`) nor
//! the command line's parser, and `raftgres-client` no Postgres driver,
//! no storage, no clap and no toml. Read from `cargo tree`, so a new
//! dependency that breaks a boundary fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The packages in `package`'s normal (not dev, not build) dependency
/// tree, with its default features.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", package, "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(&workspace)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_absent(package: &str, forbidden: &[&str]) {
    let dependencies = normal_dependencies(package);
    assert!(
        dependencies.contains(package),
        "cargo tree -p {package} did not list the package itself: {dependencies:?}"
    );
    for name in forbidden {
        assert!(
            !dependencies.contains(*name),
            "{package} depends on {name}, which it must not (see `cargo tree -p {package} -i {name}`)"
        );
    }
}

#[test]
fn the_node_library_carries_no_dev_tooling_and_no_command_line() {
    assert_absent("raftgres", &["raftgres-devcluster", "raftgres-cli", "clap"]);
}

#[test]
fn the_client_crate_carries_no_postgres_driver_storage_or_command_line() {
    assert_absent(
        "raftgres-client",
        &[
            "tokio-postgres",
            "raftgres-storage-pg",
            "raftgres",
            "raftgres-devcluster",
            "clap",
            "toml",
        ],
    );
}

#[test]
fn the_storage_crate_carries_no_dev_tooling() {
    assert_absent("raftgres-storage-pg", &["raftgres-devcluster", "raftgres"]);
}
