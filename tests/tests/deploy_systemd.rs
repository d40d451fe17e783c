//! Proves that deploy/systemd/ holds units systemd accepts as installed
//! (`systemd-analyze verify` on a file-system root laid out as
//! docs/OPERATIONS.md installs them: the binary, the unit, its Postgres
//! drop-in, and the host's own units such as Debian's postgresql@.service),
//! and that the config the unit starts the node with — the example
//! deploy/systemd/raftgres.toml, for each of the three hosts — passes the
//! node's own `raftgres serve --check-config` run with the unit's very
//! command line, so that neither can drift from the code; and that the
//! check opens no Postgres connection and binds no port.
//!
//! systemd-analyze comes from the `systemd` package, which
//! scripts/ensure-deps.sh installs; the test fails without it on a machine
//! with apt, and says why and passes only where it cannot be installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use raftgres_tests::certificates::TestAuthority;
use raftgres_tests::deploy::{
    assert_failed_with, assert_succeeded, raftgres_binary, read_deploy_file, run_raftgres,
    workspace_root, write_node_tls, TlsFileNames,
};
use raftgres_tests::fresh_dir;

const UNIT: &str = "raftgres.service";
/// Where docs/OPERATIONS.md installs the binary and the config.
const INSTALLED_BINARY: &str = "/usr/local/bin/raftgres";
const INSTALLED_CONFIG: &str = "/etc/raftgres/raftgres.toml";
/// The example config's TLS files, as the unit's header comment lists them.
const INSTALLED_TLS_DIR: &str = "/etc/raftgres/tls";
const TLS_NAMES: TlsFileNames<'static> = TlsFileNames {
    certificate: "node.pem",
    key: "node.key",
    ca: "ca.pem",
};

/// Whether systemd-analyze can run here; `false` only where it cannot be
/// installed (no apt), after saying so.
fn systemd_analyze_present() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return true;
    }
    assert!(
        !Path::new("/usr/bin/apt-get").exists(),
        "systemd-analyze is missing; scripts/ensure-deps.sh (run by `make test`) installs it \
         (apt-get install systemd)"
    );
    eprintln!(
        "deploy_systemd: SKIPPED: systemd-analyze is not installed and this machine has no apt \
         to install it with; the units in deploy/systemd/ were not verified"
    );
    false
}

/// The host's directory of packaged units.
fn host_unit_dir() -> PathBuf {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("multi-user.target").exists())
        .expect("the host has systemd's packaged units (multi-user.target)")
}

/// A file-system root with the units installed as the docs say.
fn installed_root() -> PathBuf {
    let root = fresh_dir("systemd-root");
    let packaged = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&packaged).unwrap();
    let host_units = host_unit_dir();
    assert!(
        host_units.join("postgresql@.service").exists(),
        "Debian's postgresql@.service is missing from {}; the raftgres unit's drop-in wants \
         postgresql@15-raftgres.service (install postgresql: scripts/ensure-deps.sh)",
        host_units.display()
    );
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&host_units)
        .arg(&packaged)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying {}", host_units.display());

    let units = root.join("etc/systemd/system");
    let drop_ins = units.join("raftgres.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    let source = workspace_root().join("deploy/systemd");
    std::fs::copy(source.join(UNIT), units.join(UNIT)).unwrap();
    for entry in std::fs::read_dir(source.join("raftgres.service.d")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), drop_ins.join(entry.file_name())).unwrap();
    }

    let binary = root.join(INSTALLED_BINARY.trim_start_matches('/'));
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    if std::fs::hard_link(raftgres_binary(), &binary).is_err() {
        std::fs::copy(raftgres_binary(), &binary).unwrap();
    }
    root
}

fn verify(root: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["--man=no", "--generators=no", UNIT])
        .env_remove("SYSTEMD_LOG_LEVEL")
        .output()
        .expect("systemd-analyze runs")
}

#[test]
fn the_units_pass_systemd_analyze_verify_as_installed() {
    if !systemd_analyze_present() {
        return;
    }
    let root = installed_root();
    let output = verify(&root);
    // verify exits 0 on unknown keys and values it ignores; it says so on
    // stderr, and that counts as failure too.
    assert!(
        output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The check above catches what it must: a misspelt key, and a binary
    // that is not where the unit runs it from.
    let unit = root.join("etc/systemd/system").join(UNIT);
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace("ProtectSystem=", "ProtectSystm=")).unwrap();
    let output = verify(&root);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Unknown key"),
        "a misspelt key went unnoticed: {output:?}"
    );
    std::fs::write(&unit, &text).unwrap();
    std::fs::remove_file(root.join(INSTALLED_BINARY.trim_start_matches('/'))).unwrap();
    let output = verify(&root);
    assert!(
        !output.status.success(),
        "a missing binary went unnoticed: {output:?}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// The arguments of the unit's `key=` command line, the binary first.
fn unit_command(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    let lines: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect();
    assert_eq!(lines.len(), 1, "{UNIT} should have one {key}= line");
    lines[0].split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_unit_starts_the_node_with_a_config_the_node_accepts_on_every_host() {
    let unit = read_deploy_file("systemd/raftgres.service");
    let start = unit_command(&unit, "ExecStart");
    assert_eq!(
        start,
        [INSTALLED_BINARY, "serve", "--config", INSTALLED_CONFIG],
        "ExecStart= no longer runs the installed binary on the installed config; update this \
         test, the example config and docs/OPERATIONS.md together"
    );
    // The unit checks the config before it starts the node.
    let mut checked = start.clone();
    checked.insert(2, "--check-config".into());
    assert_eq!(unit_command(&unit, "ExecStartPre"), checked);

    // The example config, installed: its TLS paths point into the
    // directory the docs install the certificates to, which the test
    // fills with certificates of its own.
    let example = read_deploy_file("systemd/raftgres.toml");
    let dir = fresh_dir("systemd-config");
    let tls_dir = dir.join("tls");
    let installed = dir.join("raftgres.toml");
    std::fs::write(
        &installed,
        example.replace(INSTALLED_TLS_DIR, &tls_dir.display().to_string()),
    )
    .unwrap();
    let config = installed.display().to_string();
    let authority = TestAuthority::new("systemd test CA");

    // Hosts 2 and 3 carry the same file with their own node_id (the
    // override has the same effect as editing the line).
    for node in 1..=3u64 {
        write_node_tls(&tls_dir, &authority, node, &TLS_NAMES);
        let node_flag = node.to_string();
        let mut arguments: Vec<&str> = checked[1..].iter().map(String::as_str).collect();
        *arguments.last_mut().unwrap() = &config;
        arguments.extend(["--node-id", &node_flag]);
        let output = run_raftgres(&arguments);
        assert_succeeded(&output, &format!("check-config of host {node}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("valid: node {node} of cluster"))
                && stdout.contains("3 voter(s)"),
            "{stdout}"
        );
    }

    // The check is the node's start-up check: a certificate of another
    // node is refused, as is a fourth node that is no voter.
    write_node_tls(&tls_dir, &authority, 2, &TLS_NAMES);
    let output = run_raftgres(&[
        "serve",
        "--check-config",
        "--config",
        &config,
        "--node-id",
        "1",
    ]);
    assert_failed_with(
        &output,
        "cannot serve node 1",
        "a certificate of node 2 on node 1",
    );
    let output = run_raftgres(&[
        "serve",
        "--check-config",
        "--config",
        &config,
        "--node-id",
        "4",
    ]);
    assert_failed_with(&output, "not among the voters", "node 4");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_example_config_points_at_the_installed_tls_files() {
    // Without the certificates installed, the check names the file the
    // example expects, where the unit's header says to put it.
    let example = workspace_root().join("deploy/systemd/raftgres.toml");
    let output = run_raftgres(&[
        "serve",
        "--check-config",
        "--config",
        &example.display().to_string(),
    ]);
    if Path::new(INSTALLED_TLS_DIR).exists() {
        eprintln!("{INSTALLED_TLS_DIR} exists on this machine; not checking its absence");
        return;
    }
    assert_failed_with(
        &output,
        &format!(
            "cannot read TLS file {INSTALLED_TLS_DIR}/{}",
            TLS_NAMES.certificate
        ),
        "the example config without its certificates",
    );
}

#[test]
fn the_check_opens_no_connection_and_binds_no_port() {
    // The example's Postgres socket does not exist here, and the test holds
    // the ports the check is told to listen on: it passes all the same.
    let authority = TestAuthority::new("systemd test CA");
    let dir = fresh_dir("systemd-nothing-opened");
    let tls_dir = dir.join("tls");
    write_node_tls(&tls_dir, &authority, 1, &TLS_NAMES);
    let installed = dir.join("raftgres.toml");
    let example = read_deploy_file("systemd/raftgres.toml");
    std::fs::write(
        &installed,
        example.replace(INSTALLED_TLS_DIR, &tls_dir.display().to_string()),
    )
    .unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_address = grpc.local_addr().unwrap().to_string();
    let metrics_address = metrics.local_addr().unwrap().to_string();
    let config = installed.display().to_string();
    let output = run_raftgres(&[
        "serve",
        "--check-config",
        "--config",
        &config,
        "--listen-addr",
        &grpc_address,
        "--metrics-addr",
        &metrics_address,
    ]);
    assert_succeeded(&output, "check-config on ports already taken");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("listening on {grpc_address}")),
        "{output:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
