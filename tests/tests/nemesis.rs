//! The nemesis suite against real processes: the peer proxies carry the
//! cluster's traffic and cut it when told, and short seeded campaigns of
//! every fault kind keep every asserted check (docs/NEMESIS.md).

use std::time::Duration;

use raftgres_tests::campaign::{self, CampaignOptions};
use raftgres_tests::nemesis::FaultKind;
use raftgres_tests::proxy::{Direction, NetworkFault, ProxyMesh};
use raftgres_tests::{bounded, TestCluster};

/// Proves that with the proxy mesh in place every peer message goes
/// through a proxy, that isolating the leader behind its proxies makes
/// the others elect a new one, that healing brings it back, and that a
/// node added afterwards is reached through a proxy that a partition cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_traffic_goes_through_the_proxies_and_a_partition_isolates_the_leader() {
    let mesh = ProxyMesh::new();
    let mut cluster = TestCluster::start_with("nemesis-proxy", 3, |options| {
        mesh.install(options);
    })
    .await;
    let (leader, _) = cluster.leader_status().await;
    let follower = cluster.others(leader)[0];
    let client = cluster.client();
    bounded("a put", Duration::from_secs(30), client.put("a", "1"))
        .await
        .unwrap();
    assert!(
        mesh.forwarded_bytes(leader, follower, Direction::Request) > 0,
        "the leader's appends to node {follower} go through its proxy"
    );
    mesh.apply(&NetworkFault::Partition(vec![
        vec![leader],
        cluster.others(leader),
    ]));
    let new_leader = cluster
        .wait_for_status(follower, "to follow a new leader", |status| {
            status.leader_id != 0 && status.leader_id != leader
        })
        .await
        .leader_id;
    assert_ne!(new_leader, leader);
    mesh.heal();
    let healed = cluster.wait_leader().await;
    assert_ne!(healed, 0);
    bounded(
        "a put after healing",
        Duration::from_secs(30),
        client.put("a", "2"),
    )
    .await
    .unwrap();
    // A node added now is reached through a proxy too, and a partition
    // cuts it: nothing more reaches it until the partition heals.
    let (leader, _) = cluster.leader_status().await;
    let added = cluster.add_node().await.unwrap();
    cluster
        .wait_for_status(added, "to be sent the log", |status| {
            status.applied_index > 0
        })
        .await;
    assert!(
        mesh.forwarded_bytes(leader, added, Direction::Request) > 0,
        "the leader's appends to added node {added} go through its proxy"
    );
    let others = cluster.others(added);
    mesh.apply(&NetworkFault::Partition(vec![vec![added], others.clone()]));
    let sent_to_added = || -> Vec<u64> {
        others
            .iter()
            .map(|&node| mesh.forwarded_bytes(node, added, Direction::Request))
            .collect()
    };
    let cut_off = sent_to_added();
    bounded(
        "a put while the added node is cut off",
        Duration::from_secs(30),
        client.put("a", "3"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = sent_to_added();
    assert_eq!(
        cut_off, still,
        "nothing reached node {added} through the partition"
    );
    mesh.heal();
    let (_, status) = cluster.leader_status().await;
    let applied = status.applied_index;
    cluster
        .wait_for_status(added, "to catch up after healing", |status| {
            status.applied_index >= applied
        })
        .await;
    cluster.assert_no_node_exited();
}

/// Seeds of the short campaign: `NEMESIS_SEEDS` (comma-separated) or two.
fn seeds() -> Vec<u64> {
    std::env::var("NEMESIS_SEEDS")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|seed| seed.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 2])
}

/// Proves, for a few seeds of about twenty seconds each, that under every
/// fault kind alone and combined the history of writes, Linearizable and
/// Lease reads is linearizable, Stale reads only return written values and
/// never go back in time on a node, no acknowledged write is lost or
/// applied twice, the nodes converge to the same applied index and rows,
/// and every fault recovers within its bound. Session rows agreeing and
/// the two-election-timeout recovery target are reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_campaigns_of_every_fault_kind_keep_every_check() {
    let seconds = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    for seed in seeds() {
        let mut options = CampaignOptions::new(seed, Duration::from_secs(seconds));
        options.artifacts_dir = std::env::temp_dir().join("raftgres-nemesis-test");
        let report = campaign::run(options).await;
        let text = raftgres_tests::report::text(&report);
        eprintln!("{text}");
        assert!(report.passed(), "seed {seed} failed:\n{text}");
        assert!(!report.faults.is_empty(), "seed {seed} applied no fault");
        assert!(
            report
                .history
                .iter()
                .filter(|record| record.acknowledged_write())
                .count()
                > 20,
            "seed {seed}: too few acknowledged writes to judge anything"
        );
    }
}

/// Proves that while nodes are added, promoted, replaced and removed
/// (the leader among them), alone and together with network faults,
/// every asserted check keeps holding over the final members, a node that
/// joined during the campaign included, and that the workers follow the
/// membership: writes are acknowledged after the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_campaign_of_membership_changes_keeps_every_check() {
    let seconds = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(40);
    let seed = 3;
    let mut options = CampaignOptions::new(seed, Duration::from_secs(seconds));
    options.faults = FaultKind::MEMBERSHIP.to_vec();
    options
        .faults
        .extend([FaultKind::Latency, FaultKind::PartitionLeader]);
    options.combine_probability = 0.3;
    options.artifacts_dir = std::env::temp_dir().join("raftgres-nemesis-test");
    let report = campaign::run(options).await;
    let text = raftgres_tests::report::text(&report);
    eprintln!("{text}");
    assert!(report.passed(), "seed {seed} failed:\n{text}");
    let changes: Vec<_> = report
        .faults
        .iter()
        .filter(|fault| fault.kind.is_membership() && fault.error.is_none())
        .collect();
    assert!(
        changes.len() >= 2,
        "seed {seed}: fewer than two membership changes went through:\n{text}"
    );
    assert!(
        report.members.iter().any(|member| *member > 3),
        "seed {seed}: no node added during the campaign is a member at the end:\n{text}"
    );
}
