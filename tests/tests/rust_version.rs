//! Proves that the workspace's declared `rust-version` can build it: every
//! member inherits it (so that clippy's `incompatible_msrv` lint, run by
//! `make lint`, checks our own use of std against it), and no dependency
//! declares a newer one than the workspace does. Read from
//! `cargo metadata`, so a dependency upgrade that needs a newer compiler
//! fails here until the workspace's `rust-version` is raised with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Rust version as `major.minor.patch` (a missing patch is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RustVersion([u64; 3]);

impl RustVersion {
    fn parse(text: &str) -> RustVersion {
        let mut parts = [0; 3];
        let mut count = 0;
        for (slot, part) in parts.iter_mut().zip(text.split('.')) {
            *slot = part
                .parse()
                .unwrap_or_else(|_| panic!("{text:?} is not a Rust version"));
            count += 1;
        }
        assert!(
            (2..=3).contains(&count) && text.split('.').count() == count,
            "{text:?} is not a Rust version"
        );
        RustVersion(parts)
    }
}

impl std::fmt::Display for RustVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [major, minor, patch] = self.0;
        write!(formatter, "{major}.{minor}.{patch}")
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `rust-version` of `[workspace.package]` in the root Cargo.toml.
fn declared_workspace_version() -> RustVersion {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
    let section = manifest
        .split("[workspace.package]")
        .nth(1)
        .expect("the root Cargo.toml has a [workspace.package] table");
    let section = section.split("\n[").next().unwrap_or(section);
    let line = section
        .lines()
        .find(|line| line.trim_start().starts_with("rust-version"))
        .expect("[workspace.package] declares rust-version");
    let value = line.split('=').nth(1).expect("rust-version = \"...\"");
    RustVersion::parse(value.trim().trim_matches('"'))
}

/// The host triple, from the rustc beside the cargo running the tests.
fn host_triple() -> String {
    let rustc = Path::new(env!("CARGO")).with_file_name("rustc");
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", rustc.display()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// One package of the resolved graph: name, version, declared
/// rust_version, and whether it is a member of the workspace.
struct Package {
    name: String,
    version: String,
    rust_version: Option<RustVersion>,
    member: bool,
}

/// The packages that build on this host (dependencies of other platforms
/// are not downloaded, and `--offline` keeps the test off the network).
fn resolved_packages() -> Vec<Package> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(workspace())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|id| id.as_str())
        .collect();
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|package| resolved.contains(&package["id"].as_str().unwrap_or_default()))
        .map(|package| Package {
            name: package["name"].as_str().unwrap_or_default().to_string(),
            version: package["version"].as_str().unwrap_or_default().to_string(),
            rust_version: package["rust_version"].as_str().map(RustVersion::parse),
            member: members.contains(&package["id"].as_str().unwrap_or_default()),
        })
        .collect()
}

#[test]
fn every_member_inherits_the_workspace_rust_version_so_clippy_checks_it() {
    let declared = declared_workspace_version();
    let packages = resolved_packages();
    let members: Vec<&Package> = packages.iter().filter(|package| package.member).collect();
    assert!(
        members.len() >= 10,
        "expected every workspace member, found {}",
        members.len()
    );
    for member in members {
        assert_eq!(
            member.rust_version,
            Some(declared),
            "{} must declare `rust-version.workspace = true` (clippy's incompatible_msrv \
             lint reads the package's rust-version)",
            member.name
        );
    }
}

#[test]
fn no_dependency_needs_a_newer_rust_than_the_workspace_declares() {
    let declared = declared_workspace_version();
    let packages = resolved_packages();
    assert!(
        packages.iter().filter(|package| !package.member).count() > 100,
        "cargo metadata listed too few dependencies to be the real graph"
    );
    let newer: Vec<String> = packages
        .iter()
        .filter(|package| {
            package
                .rust_version
                .is_some_and(|version| version > declared)
        })
        .map(|package| {
            let version = package.rust_version.expect("filtered on Some");
            format!(
                "{} {} (rust-version {version})",
                package.name, package.version
            )
        })
        .collect();
    assert!(
        newer.is_empty(),
        "the workspace declares rust-version {declared}, but these need a newer compiler: \
         {newer:?}; raise rust-version in the root Cargo.toml (and run `make lint`)"
    );
}

#[test]
fn versions_compare_by_number_not_by_text() {
    assert!(RustVersion::parse("1.88") > RustVersion::parse("1.9.5"));
    assert_eq!(RustVersion::parse("1.88"), RustVersion::parse("1.88.0"));
    assert!(RustVersion::parse("1.88.1") > RustVersion::parse("1.88"));
}
