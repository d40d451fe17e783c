//! Regression tests for bugs the nemesis suite found, each at the cheapest
//! level that shows it so far (docs/NEMESIS.md lists them with seeds).

use std::time::Duration;

use raftgres_tests::campaign::{self, CampaignOptions};
use raftgres_tests::nemesis::{pause_process, signal, FaultKind};
use raftgres_tests::proxy::{NetworkFault, ProxyMesh};
use raftgres_tests::{bounded, BackgroundWriter, TestCluster};

/// Waits until `leader` has heard every other node acknowledge its last
/// log index (or leadership moved).
async fn wait_everyone_heard(cluster: &mut TestCluster, what: &str) {
    let (leader, status) = cluster.leader_status().await;
    let last = status.last_log_index;
    for peer in cluster.others(leader) {
        cluster
            .wait_for_status(
                leader,
                &format!("to hear node {peer} acknowledge index {last} ({what})"),
                |status| {
                    status
                        .peers
                        .iter()
                        .any(|progress| progress.id == peer && progress.match_index >= last)
                        || status.leader_id != leader
                },
            )
            .await;
    }
}

/// Proves that peer links come back every time their connections close
/// while messages are flowing (a leader's appends, the followers' answers
/// under load): after thirty rounds that close all six links, the leader
/// hears both followers acknowledge its last entry. Chasing the follower
/// stall (below), a reading of the transport found that its peer task
/// returned for good when a stream's body closed before the call's
/// answer arrived, instead of connecting again; the link policy
/// (`node/src/pipeline/link.rs`) now decides reconnects and the simulator
/// drives it (planted bug `peer-link-gives-up`). Neither this test nor
/// the next hit that race with the old transport in the runs tried, so
/// they guard reconnecting in general, not that race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_come_back_after_their_connections_close_under_load() {
    let mesh = ProxyMesh::new();
    let mut cluster = TestCluster::start_with("nemesis-links-under-load", 3, |options| {
        mesh.install(options);
    })
    .await;
    let writers: Vec<BackgroundWriter> = (0..4)
        .map(|writer| {
            BackgroundWriter::start(
                cluster.client(),
                &format!("load-{writer}-"),
                5_000,
                Duration::from_secs(60),
                Duration::ZERO,
            )
        })
        .collect();
    writers[0]
        .wait_for_writes(20, "before the links close")
        .await;
    let nodes = [1, 2, 3];
    for round in 0..30u64 {
        // A fault change closes every open connection of a link: each
        // round breaks all six links while writes flow through them.
        for (a, b) in [
            (nodes[0], nodes[1]),
            (nodes[1], nodes[2]),
            (nodes[0], nodes[2]),
        ] {
            mesh.apply(&NetworkFault::Latency {
                a,
                b,
                latency: Duration::from_millis(1 + round % 2),
            });
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    mesh.heal();
    for writer in writers {
        let outcome = writer.finish().await;
        assert!(
            !outcome.acknowledged.is_empty(),
            "a writer saw no write acknowledged: {:?}",
            outcome.failed.first()
        );
    }
    bounded(
        "a put after the links settled",
        Duration::from_secs(30),
        cluster.client().put("settled", "yes"),
    )
    .await
    .unwrap();
    wait_everyone_heard(&mut cluster, "after thirty rounds of closed links").await;
    cluster.assert_no_node_exited();
}

/// Proves that a follower stopped for longer than an election timeout,
/// with its links closed behind its back in every other round, is heard
/// by its leader again once it resumes (the shape of the follower stall
/// the short nemesis campaigns saw once: a follower SIGSTOPped for 1.6 s
/// that never sent its leader another byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_links_close_while_it_is_stopped_answers_its_leader_again() {
    let mesh = ProxyMesh::new();
    let mut cluster = TestCluster::start_with("nemesis-paused-links", 3, |options| {
        mesh.install(options);
    })
    .await;
    let client = cluster.client();
    for round in 0..8u64 {
        let (leader, _) = cluster.leader_status().await;
        let follower = cluster.others(leader)[round as usize % 2];
        let pid = cluster.pid(follower).expect("the follower runs");
        tokio::task::block_in_place(|| pause_process(pid)).unwrap();
        // Odd rounds close its links behind its back (any fault change
        // closes the link's open connections, both ways); every round
        // stops it for longer than an election timeout, so that it wakes
        // up with elapsed ticks and messages to send at once.
        if round % 2 == 1 {
            mesh.apply(&NetworkFault::Latency {
                a: follower,
                b: leader,
                latency: Duration::from_millis(1),
            });
        }
        bounded(
            "a put while a follower is stopped",
            Duration::from_secs(30),
            client.put("round", round.to_string()),
        )
        .await
        .unwrap();
        mesh.heal();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        signal(pid, "CONT").unwrap();
        bounded(
            "a put after the follower resumed",
            Duration::from_secs(30),
            client.put("after", round.to_string()),
        )
        .await
        .unwrap();
        wait_everyone_heard(
            &mut cluster,
            &format!("round {round}, node {follower} paused"),
        )
        .await;
    }
    cluster.assert_no_node_exited();
}

/// Proves that a follower whose Postgres crashes (with latency between it
/// and the leader, and leaders changing around it) catches up once its
/// Postgres is back. The nemesis suite found it stalling for good: in three
/// campaigns of seed 3 out of four (`make nemesis SEED=3 MINUTES=4` twice,
/// and this narrower one once of two runs; a seed fixes the schedule's
/// draws, not which node leads when), after the last Postgres crash under a follower the
/// follower reconnected ("reconnected postgres log store ...
/// last_index=28340"), reported storage_healthy = true and the right leader
/// and term, and never appended another entry for the 60 s the campaign
/// waited, while the leader reported it at `match 0, next 30008` (past the
/// follower's log). Scripted single scenarios (two crashes in a row, with
/// latency, with a kill and restart first, with a leadership transfer while
/// Postgres is down) did not reproduce it, so the regression test is the
/// narrowest campaign that did; it fails on the convergence check. Not
/// reproduced since the peer link policy replaced the transport's
/// reconnect loop (docs/NEMESIS.md), so whether that change fixed it is
/// not proven; the campaign runs in `make test`, shortened to 90 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_catches_up_after_its_postgres_crashes_among_other_faults() {
    let mut options = CampaignOptions::new(3, Duration::from_secs(90));
    options.faults = vec![
        FaultKind::PostgresCrashFollower,
        FaultKind::KillFollower,
        FaultKind::KillLeader,
        FaultKind::Latency,
    ];
    options.artifacts_dir = std::env::temp_dir().join("raftgres-nemesis-regressions");
    let report = campaign::run(options).await;
    let text = raftgres_tests::report::text(&report);
    let stalled: Vec<_> = report
        .violations
        .iter()
        .filter(|violation| violation.check == "convergence")
        .collect();
    assert!(stalled.is_empty(), "a node did not converge:\n{text}");
    assert!(report.passed(), "{text}");
}
