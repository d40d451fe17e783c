//! Proves that a cluster runs across hosts: three nodes, each in a network
//! namespace of its own with its own Postgres at its own address (as if on
//! three hosts joined by a switch), peers and clients on mutual TLS, take
//! writes and linearizable reads from a client on a fourth "host", keep
//! every acknowledged write through a `kill -9` of the leader, and take the
//! killed node back, which catches up and holds the writes it missed.
//!
//! Needs root (network namespaces; Postgres then runs as the `postgres` OS
//! user). As another user it says why on stderr and passes without running.
//!
//! The namespaces, the bridge between them and their 10.201.0.0/24
//! addresses exist only for the test: nothing is routed out of them, and
//! they are deleted when the test ends, failed or not.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use raftgres_devcluster::cluster::find_raftgres_binary;
use raftgres_devcluster::postgres::{find_bin_dir, running_as_root, PgInstance, PgInstanceOptions};
use raftgres_tests::certificates::TestAuthority;
use raftgres_tests::fresh_dir;

const NODES: u64 = 3;
/// The subnet on the test's own bridge; host N has `.N`, the client `.100`.
const SUBNET: &str = "10.201.0";
const CLIENT_HOST: u64 = 100;
/// Every host uses the same ports, as separate hosts would.
const GRPC_PORT: u16 = 7000;
const METRICS_PORT: u16 = 9100;
const POSTGRES_PORT: u16 = 5432;
/// Prefix of every namespace this test creates (then the test's pid).
const NAMESPACE_PREFIX: &str = "rgmh";
/// Bound on any one wait of the client (`--timeout`).
const CLIENT_TIMEOUT_SECONDS: &str = "60";
const LEADER_CHANGE_WAIT_MAX: Duration = Duration::from_secs(60);

#[test]
fn a_cluster_on_three_hosts_with_tls_survives_a_leader_kill_and_a_restart() {
    if let Some(reason) = why_not_runnable() {
        eprintln!("multi_host: skipped: {reason}");
        return;
    }
    let started = Instant::now();
    let dir = fresh_dir("multi-host");
    let certificates = Certificates::write(&dir.join("tls"));
    let network = Network::create();
    let mut cluster = Cluster::start(&dir, &network, &certificates);
    let client = cluster.client();

    let leader = client.wait_leader();
    eprintln!("multi_host: node {leader} leads");
    for index in 1..=5 {
        client.put(&format!("key-{index}"), &format!("value-{index}"));
    }
    // Linearizable reads, each through one host only: a follower asks the
    // leader across the bridge.
    for node in 1..=NODES {
        assert_eq!(client.get_from(node, "key-3", "linearizable"), "value-3");
    }

    cluster.kill_node(leader);
    let new_leader = client.wait_leader_other_than(leader);
    eprintln!("multi_host: killed node {leader} with kill -9; node {new_leader} leads");
    for index in 1..=5 {
        assert_eq!(
            client.get_from(new_leader, &format!("key-{index}"), "linearizable"),
            format!("value-{index}")
        );
    }
    for index in 6..=8 {
        client.put(&format!("key-{index}"), &format!("value-{index}"));
    }

    cluster.start_node(leader);
    client.run_ok(&["wait", "caught-up", &leader.to_string()]);
    // A stale read answers from the restarted node's own state machine: it
    // holds what was written while it was down.
    for index in 1..=8 {
        assert_eq!(
            client.get_from(leader, &format!("key-{index}"), "stale"),
            format!("value-{index}")
        );
    }
    // The leader timed heartbeats to both peers across the bridge.
    let metrics = client.metrics_of(new_leader);
    for peer in (1..=NODES).filter(|peer| *peer != new_leader) {
        let count = round_trip(&metrics, "count", peer, "heartbeat");
        assert!(
            count > 0.0,
            "no heartbeat round trips to node {peer}:\n{metrics}"
        );
        let mean = round_trip(&metrics, "sum", peer, "heartbeat") / count;
        eprintln!(
            "multi_host: node {new_leader} -> node {peer}: {count} heartbeat round trips, mean {:.2} ms",
            mean * 1000.0
        );
    }
    let status = client.run_ok(&["status", "--json"]);
    for node in 1..=NODES {
        assert!(
            status.contains(&format!("\"{}:{GRPC_PORT}\"", address(node))),
            "{status}"
        );
    }
    eprintln!(
        "multi_host: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(cluster);
    drop(network);
    let _ = fs::remove_dir_all(&dir);
}

/// Why this machine cannot run the test, if it cannot.
fn why_not_runnable() -> Option<String> {
    if !running_as_root() {
        return Some(
            "needs root to create network namespaces (`ip netns add`); CI runs as root".into(),
        );
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is not installed".into());
    }
    if find_bin_dir().is_none() {
        return Some("no Postgres programs found (initdb, pg_ctl)".into());
    }
    None
}

/// `raftgres_peer_round_trip_seconds_{part}` (`count` or `sum`) for
/// `peer` and `message` on a metrics page (0 when absent).
fn round_trip(metrics: &str, part: &str, peer: u64, message: &str) -> f64 {
    let series = format!(
        "raftgres_peer_round_trip_seconds_{part}{{peer=\"{peer}\",message=\"{message}\"}} "
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

fn address(host: u64) -> String {
    format!("{SUBNET}.{host}")
}

fn endpoint(node: u64) -> String {
    format!("{}:{GRPC_PORT}", address(node))
}

/// Runs `command`, panicking with its output unless it succeeds.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ip(arguments: &[&str]) {
    run(Command::new("ip").args(arguments));
}

/// The namespaces: one per node host, one for the client, and a hub
/// holding the bridge every host's `eth0` is plugged into. Deleted on drop.
struct Network {
    prefix: String,
    /// Created so far, deleted in reverse on drop.
    namespaces: Vec<String>,
}

impl Network {
    fn create() -> Network {
        remove_stale_namespaces();
        let mut network = Network {
            prefix: format!("{NAMESPACE_PREFIX}{}", std::process::id()),
            namespaces: Vec::new(),
        };
        let hub = network.add_namespace("hub");
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for host in (1..=NODES).chain([CLIENT_HOST]) {
            let namespace = network.add_namespace(&host.to_string());
            let port = format!("port{host}");
            ip(&[
                "link", "add", "eth0", "netns", &namespace, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            let cidr = format!("{}/24", address(host));
            ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        }
        network
    }

    fn add_namespace(&mut self, name: &str) -> String {
        let namespace = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        namespace
    }

    fn host(&self, host: u64) -> String {
        format!("{}-{host}", self.prefix)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
    }
}

/// Namespaces a run of this test left behind when it was killed before
/// its guards ran (their pid is gone).
fn remove_stale_namespaces() {
    let Ok(listing) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NAMESPACE_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The CA, each node's certificate (naming `raftgres-node-N` and its
/// address) and a client certificate naming no node.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn write(dir: &Path) -> Certificates {
        fs::create_dir_all(dir).unwrap();
        let authority = TestAuthority::new("raftgres multi-host test CA");
        fs::write(dir.join("ca.pem"), authority.pem()).unwrap();
        for node in 1..=NODES {
            let issued = authority.issue(&[&format!("raftgres-node-{node}"), &address(node)]);
            fs::write(
                dir.join(format!("node-{node}.pem")),
                &issued.certificate_pem,
            )
            .unwrap();
            fs::write(dir.join(format!("node-{node}.key")), &issued.key_pem).unwrap();
        }
        let client = authority.issue(&["raftgres-multi-host-client"]);
        fs::write(dir.join("client.pem"), &client.certificate_pem).unwrap();
        fs::write(dir.join("client.key"), &client.key_pem).unwrap();
        Certificates {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// The node processes and their Postgres servers. Dropping it kills the
/// nodes, then stops every Postgres (inside its namespace, so before the
/// namespaces go).
struct Cluster {
    binary: PathBuf,
    dir: PathBuf,
    namespaces: Vec<String>,
    client_namespace: String,
    certificates_dir: PathBuf,
    nodes: Vec<Option<Child>>,
    postgres: Vec<PgInstance>,
}

impl Cluster {
    fn start(dir: &Path, network: &Network, certificates: &Certificates) -> Cluster {
        let binary = find_raftgres_binary().expect("the raftgres binary");
        let mut cluster = Cluster {
            binary,
            dir: dir.to_path_buf(),
            namespaces: (1..=NODES).map(|node| network.host(node)).collect(),
            client_namespace: network.host(CLIENT_HOST),
            certificates_dir: certificates.dir.clone(),
            nodes: (1..=NODES).map(|_| None).collect(),
            postgres: Vec::new(),
        };
        for node in 1..=NODES {
            let mut options = PgInstanceOptions::new(dir.join(format!("pg-{node}")));
            options.host = address(node);
            options.port = Some(POSTGRES_PORT);
            options.network_namespace = Some(cluster.namespace(node).to_string());
            let instance = PgInstance::start(options)
                .unwrap_or_else(|error| panic!("postgres of host {node}: {error}"));
            cluster.postgres.push(instance);
            fs::write(
                dir.join(format!("node-{node}.toml")),
                node_config(node, certificates),
            )
            .unwrap();
        }
        for node in 1..=NODES {
            cluster.start_node(node);
        }
        cluster
    }

    fn namespace(&self, node: u64) -> &str {
        &self.namespaces[node as usize - 1]
    }

    /// Starts `raftgres serve` inside the node's namespace (`ip netns exec`
    /// execs it, so the child is the node process itself).
    fn start_node(&mut self, node: u64) {
        let log_path = self.dir.join(format!("node-{node}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let config = self.dir.join(format!("node-{node}.toml"));
        let child = Command::new("ip")
            .args(["netns", "exec", self.namespace(node)])
            .arg(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting node {node}: {error}"));
        self.nodes[node as usize - 1] = Some(child);
    }

    /// `kill -9`.
    fn kill_node(&mut self, node: u64) {
        let mut child = self.nodes[node as usize - 1]
            .take()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn client(&self) -> ClusterClient {
        ClusterClient {
            binary: self.binary.clone(),
            namespace: self.client_namespace.clone(),
            tls: self.certificates_dir.clone(),
            logs: self.dir.clone(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // Each PgInstance stops its server as it drops.
        self.postgres.clear();
    }
}

/// What host N's operator would write: its own Postgres, its own address,
/// every voter's peer address, and the certificates.
fn node_config(node: u64, certificates: &Certificates) -> String {
    let mut text = format!(
        "cluster_id = \"multi-host\"\n\
         node_id = {node}\n\
         listen_addr = \"{}\"\n\
         metrics_addr = \"{}:{METRICS_PORT}\"\n\
         postgres = \"host={} port={POSTGRES_PORT} user=postgres dbname=postgres\"\n",
        endpoint(node),
        address(node),
        address(node),
    );
    for peer in 1..=NODES {
        text.push_str(&format!(
            "\n[[peer]]\nid = {peer}\naddress = \"{}\"\n",
            endpoint(peer)
        ));
    }
    text.push_str(&format!(
        "\n[raft]\ntick_ms = 50\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nrequire_client_certificate = true\n",
        certificates.path(&format!("node-{node}.pem")),
        certificates.path(&format!("node-{node}.key")),
        certificates.path("ca.pem"),
    ));
    text
}

/// The `raftgres` command run on the client host, with the client
/// certificate.
struct ClusterClient {
    binary: PathBuf,
    namespace: String,
    tls: PathBuf,
    logs: PathBuf,
}

impl ClusterClient {
    fn command(&self, arguments: &[&str], endpoints: &str) -> Command {
        let tls = |name: &str| self.tls.join(name).display().to_string();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(&self.binary)
            .args(arguments)
            .args(["--endpoints", endpoints])
            .args(["--timeout", CLIENT_TIMEOUT_SECONDS])
            .args(["--tls-ca", &tls("ca.pem")])
            .args(["--tls-cert", &tls("client.pem")])
            .args(["--tls-key", &tls("client.key")]);
        command
    }

    fn all_endpoints() -> String {
        (1..=NODES).map(endpoint).collect::<Vec<_>>().join(",")
    }

    /// Runs a command against every node; its stdout, trimmed.
    fn run_ok(&self, arguments: &[&str]) -> String {
        self.run_on(arguments, &ClusterClient::all_endpoints())
    }

    fn run_on(&self, arguments: &[&str], endpoints: &str) -> String {
        let output = self.command(arguments, endpoints).output().unwrap();
        assert!(
            output.status.success(),
            "raftgres {} failed ({}):\n{}{}\nnode logs in {}",
            arguments.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs.display()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn wait_leader(&self) -> u64 {
        let line = self.run_ok(&["wait", "leader"]);
        line.parse()
            .unwrap_or_else(|_| panic!("`wait leader` printed {line:?}"))
    }

    fn wait_leader_other_than(&self, old: u64) -> u64 {
        let deadline = Instant::now() + LEADER_CHANGE_WAIT_MAX;
        loop {
            let leader = self.wait_leader();
            if leader != old {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "node {old} still named leader after {LEADER_CHANGE_WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node `node`'s metrics page, fetched from the client host (with the
    /// shell's /dev/tcp, so that no HTTP tool need be installed).
    fn metrics_of(&self, node: u64) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{}/{METRICS_PORT} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
            address(node)
        );
        let output =
            run(Command::new("ip").args(["netns", "exec", &self.namespace, "bash", "-c", &script]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn put(&self, key: &str, value: &str) {
        self.run_ok(&["kv", "put", key, value]);
    }

    /// Reads `key` through node `node` alone.
    fn get_from(&self, node: u64, key: &str, mode: &str) -> String {
        self.run_on(&["kv", "get", key, "--mode", mode], &endpoint(node))
    }
}
