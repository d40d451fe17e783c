//! A node can run a state machine of the user's own (the ledger of
//! `node/examples/ledger_node.rs`): it replicates, answers through the
//! generic Submit API, keeps its state across restarts, and does not
//! inherit the built-in KV API.

use std::path::PathBuf;

use raftgres_proto::v1::{GetRequest, ReadMode};
use raftgres_tests::{expect_code, kv_client, TestCluster};
use tonic::Code;

/// The example binary, built next to the test binaries by
/// `cargo build --workspace --all-targets` (as `make test` does).
fn ledger_node_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("the test binary's path");
    let binary = deps
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples")
        .join("ledger_node");
    assert!(
        binary.is_file(),
        "{} is missing; build it with `cargo build -p raftgres --example ledger_node`",
        binary.display()
    );
    binary
}

/// A command through the leader-finding client (retries with its session
/// across leader changes); a refusal's status code when it is refused.
async fn submit(cluster: &mut TestCluster, command: &str) -> Result<String, tonic::Status> {
    match cluster.client().submit_command(command).await {
        Ok(response) => Ok(String::from_utf8_lossy(&response.response).into_owned()),
        Err(error) => Err(tonic::Status::new(
            error.code().unwrap_or(Code::Unknown),
            error.to_string(),
        )),
    }
}

/// Proves that a cluster of nodes running the example ledger applies its
/// commands with their deterministic answers (a withdrawal beyond the
/// balance is refused and changes nothing), refuses a malformed command
/// before it reaches the log, serves no KV API, and still holds every
/// balance after every node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_state_machine_replicates_and_keeps_its_state() {
    let binary = ledger_node_binary();
    let mut cluster = TestCluster::start_with("ledger", 3, |options| {
        options.binary = binary;
    })
    .await;
    assert_eq!(
        submit(&mut cluster, "deposit alice 100").await.unwrap(),
        "100"
    );
    assert_eq!(
        submit(&mut cluster, "withdraw alice 30").await.unwrap(),
        "70"
    );
    assert_eq!(
        submit(&mut cluster, "withdraw alice 100").await.unwrap(),
        "insufficient 70"
    );
    assert_eq!(submit(&mut cluster, "deposit bob 5").await.unwrap(), "5");
    expect_code(
        submit(&mut cluster, "steal alice 70").await,
        Code::InvalidArgument,
        "a command the ledger does not know",
    );

    let (leader, _) = cluster.leader_status().await;
    let mut kv = kv_client(cluster.node_address(leader)).await;
    expect_code(
        kv.get(GetRequest {
            key: b"alice".to_vec(),
            mode: ReadMode::Stale as i32,
        })
        .await,
        Code::Unimplemented,
        "the KV API on a ledger node",
    );

    cluster.restart_all().await;
    assert_eq!(submit(&mut cluster, "balance alice").await.unwrap(), "70");
    assert_eq!(submit(&mut cluster, "balance bob").await.unwrap(), "5");
    let leader = cluster.wait_leader().await;
    for follower in cluster.others(leader) {
        cluster.wait_caught_up(follower).await;
    }
    cluster.assert_no_node_exited();
}
