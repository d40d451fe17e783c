//! A node refuses, at start-up, a database that is not its own or that
//! another node process already drives.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use raftgres::client::ReadMode;
use raftgres_devcluster::cluster::find_raftgres_binary;
use raftgres_devcluster::postgres::free_port;
use raftgres_proto::v1::GetRequest;
use raftgres_tests::{fresh_dir, kv_client, TestCluster, POLL_INTERVAL, WAIT_MAX};

/// How long a refused start may take: connecting, then one check.
const REFUSAL_MAX: Duration = Duration::from_secs(20);

/// Runs `raftgres serve --config CONFIG EXTRA..` to completion (killing it
/// after [`REFUSAL_MAX`]); returns whether it succeeded, its output and
/// how long it ran.
async fn serve_once(config: &Path, extra: &[String]) -> (bool, String, Duration) {
    let binary = find_raftgres_binary().expect("the node binary");
    let started = Instant::now();
    let child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn raftgres serve");
    let output = match tokio::time::timeout(REFUSAL_MAX, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for raftgres serve"),
        Err(_) => panic!(
            "`raftgres serve --config {} {extra:?}` still ran after {REFUSAL_MAX:?} instead of refusing to start",
            config.display()
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text, started.elapsed())
}

/// Addresses no one listens on, so that a refused start cannot fail on a
/// busy port instead of on the database.
fn fresh_listen_flags() -> Vec<String> {
    let port = || free_port().expect("a free port");
    vec![
        "--listen-addr".into(),
        format!("127.0.0.1:{}", port()),
        "--metrics-addr".into(),
        format!("127.0.0.1:{}", port()),
    ]
}

/// Polls a stale read of `key` on node `id` until it returns `value`.
async fn wait_for_value_on(cluster: &TestCluster, id: u64, key: &str, value: &str) {
    let mut kv = kv_client(cluster.node_address(id)).await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let answer = kv
            .get(GetRequest {
                key: key.as_bytes().to_vec(),
                mode: ReadMode::Stale as i32,
            })
            .await
            .map(|response| response.into_inner().kv.map(|pair| pair.value));
        if matches!(&answer, Ok(Some(found)) if found == value.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} does not serve {key} = {value}: {answer:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Proves that a second `raftgres serve` with the very config of a running
/// node exits non-zero quickly, saying the database is in use by another
/// node process, and that the running node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_running_nodes_database_is_refused() {
    let mut cluster = TestCluster::start("second-process").await;
    let client = cluster.client();
    client.put("before", "1").await.expect("put before");
    let node = 1;
    let pid = cluster.pid(node).expect("node 1 runs");

    let (succeeded, output, took) = serve_once(&cluster.config_path(node), &[]).await;
    println!("second process refused after {took:?}");
    assert!(!succeeded, "a second node process started:\n{output}");
    assert!(
        output.contains("already in use by another raftgres node process"),
        "the refusal does not say why:\n{output}"
    );

    assert_eq!(cluster.pid(node), Some(pid), "node 1 was replaced or died");
    let status = cluster.status(node).await.expect("node 1 answers");
    assert!(status.storage_healthy, "{status:?}");
    client.put("after", "2").await.expect("put after");
    wait_for_value_on(&cluster, node, "after", "2").await;
    cluster.assert_no_node_exited();
}

/// Proves that a node started on another node's database (another node id,
/// or another cluster id) exits non-zero naming the identity mismatch, and
/// that the database's owner then starts on it and catches up unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_database_of_another_node_or_cluster() {
    let mut cluster = TestCluster::start("identity").await;
    let client = cluster.client();
    client.put("before", "1").await.expect("put before");
    let owner = 2;
    cluster.wait_caught_up(owner).await;
    // The owner must be stopped, or the advisory lock would refuse the
    // intruder before its identity is checked.
    cluster
        .stop_node_gracefully(owner)
        .await
        .expect("stop node 2");
    let owners_database = cluster.postgres(owner).conninfo();

    let mut as_node_1 = vec!["--postgres".to_string(), owners_database.clone()];
    as_node_1.extend(fresh_listen_flags());
    let (succeeded, output, _) = serve_once(&cluster.config_path(1), &as_node_1).await;
    assert!(!succeeded, "node 1 started on node 2's database:\n{output}");
    assert!(
        output.contains("belongs to cluster \"dev\" node 2")
            && output.contains("opened as cluster \"dev\" node 1"),
        "the refusal does not name the identity mismatch:\n{output}"
    );

    let mut as_other_cluster = vec!["--cluster-id".to_string(), "intruder".to_string()];
    as_other_cluster.extend(fresh_listen_flags());
    let (succeeded, output, _) = serve_once(&cluster.config_path(owner), &as_other_cluster).await;
    assert!(
        !succeeded,
        "a node of another cluster started on node 2's database:\n{output}"
    );
    assert!(
        output.contains("belongs to cluster \"dev\" node 2")
            && output.contains("opened as cluster \"intruder\" node 2"),
        "the refusal does not name the identity mismatch:\n{output}"
    );

    client.put("while-down", "2").await.expect("put while down");
    cluster.start_node(owner).expect("restart node 2");
    cluster.wait_caught_up(owner).await;
    wait_for_value_on(&cluster, owner, "before", "1").await;
    wait_for_value_on(&cluster, owner, "while-down", "2").await;
    cluster.assert_no_node_exited();
}

/// Proves that a node's configuration file only bootstraps the cluster's
/// membership: node 3, restarted with a fourth peer added to its file,
/// still reports the membership stored at its first start, votes with
/// it, and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_membership_outlives_an_edited_configuration() {
    let mut cluster = TestCluster::start("bootstrap-only").await;
    let client = cluster.client();
    client.put("before", "1").await.expect("put before");
    let node = 3;
    cluster.wait_caught_up(node).await;
    cluster
        .stop_node_gracefully(node)
        .await
        .expect("stop node 3");
    let path = cluster.config_path(node);
    let mut text = std::fs::read_to_string(&path).expect("node 3's configuration");
    text.push_str("\n[[peer]]\nid = 4\naddress = \"127.0.0.1:9\"\n");
    std::fs::write(&path, text).expect("edited configuration");
    cluster.start_node(node).expect("restart node 3");
    cluster.wait_caught_up(node).await;
    let status = cluster.status(node).await.expect("node 3 answers");
    let membership = status.membership.expect("a membership");
    assert_eq!(
        membership.voters,
        [1, 2, 3],
        "the edited file changed who votes: {membership:?}"
    );
    client.put("after", "2").await.expect("put after");
    wait_for_value_on(&cluster, node, "after", "2").await;
    cluster.assert_no_node_exited();
}

/// Proves that a node whose `peer_source_addr` is not an address of its
/// host refuses to start, naming the setting, before it touches its
/// database (every peer connection would otherwise fail, silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_source_address_the_host_does_not_have_is_refused() {
    let dir = fresh_dir("peer-source");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node-1.toml");
    let config_text = |source: &str| {
        format!(
            "cluster_id = \"dev\"\nnode_id = 1\nlisten_addr = \"127.0.0.1:1\"\n\
             postgres = \"host=127.0.0.1 port=1 user=postgres dbname=postgres\"\n\
             peer_source_addr = \"{source}\"\n\
             [[peer]]\nid = 1\naddress = \"127.0.0.1:1\"\n"
        )
    };
    // 192.0.2.1 is documentation space (RFC 5737): no host has it.
    std::fs::write(&config, config_text("192.0.2.1")).unwrap();
    let (succeeded, output, _) = serve_once(&config, &fresh_listen_flags()).await;
    assert!(
        !succeeded,
        "started with a foreign source address:\n{output}"
    );
    assert!(
        output.contains("peer_source_addr 192.0.2.1 is not an address of this host"),
        "the refusal does not name the setting:\n{output}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
