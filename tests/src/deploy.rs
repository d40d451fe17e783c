//! Support for the tests of `deploy/` (systemd units, Kubernetes
//! manifests): where the files are, the node's own `raftgres serve
//! --check-config`, and TLS files for it to check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use raftgres_devcluster::cluster::find_raftgres_binary;

use crate::certificates::TestAuthority;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// A file under `deploy/`, read as text.
pub fn read_deploy_file(relative: &str) -> String {
    let path = workspace_root().join("deploy").join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The `raftgres` binary the tests run (built by `make test`).
pub fn raftgres_binary() -> PathBuf {
    find_raftgres_binary().unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `raftgres <arguments>` and returns what it did.
pub fn run_raftgres(arguments: &[&str]) -> Output {
    let binary = raftgres_binary();
    Command::new(&binary)
        .args(arguments)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()))
}

/// The file names of a node's TLS files.
pub struct TlsFileNames<'a> {
    /// The node's certificate.
    pub certificate: &'a str,
    /// Its private key.
    pub key: &'a str,
    /// The cluster's CA certificate.
    pub ca: &'a str,
}

/// Writes the CA certificate and node `node`'s certificate and key (naming
/// `raftgres-node-<node>`) into `dir` under `names`.
pub fn write_node_tls(dir: &Path, authority: &TestAuthority, node: u64, names: &TlsFileNames) {
    std::fs::create_dir_all(dir).expect("creating the TLS directory");
    let issued = authority.issue_node(node);
    std::fs::write(dir.join(names.certificate), &issued.certificate_pem).expect("writing a cert");
    std::fs::write(dir.join(names.key), &issued.key_pem).expect("writing a key");
    std::fs::write(dir.join(names.ca), authority.pem()).expect("writing the CA");
}

/// Asserts that a command succeeded, showing its output if not.
pub fn assert_succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts that a command failed with `expected` in its stderr.
pub fn assert_failed_with(output: &Output, expected: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(expected),
        "{what} should fail mentioning {expected:?}, but ({}):\nstdout: {}\nstderr: {stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
    );
}
