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
/// the others elect a new one, and that healing brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_traffic_goes_through_the_proxies_and_a_partition_isolates_the_leader() {
    let mesh = ProxyMesh::new();
    let map = mesh.peer_address_map();
    let mut cluster = TestCluster::start_with("nemesis-proxy", 3, |options| {
        options.peer_address_map = Some(map);
    })
    .await;
    assert_eq!(mesh.links().len(), 6, "one proxy per directed link");
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
