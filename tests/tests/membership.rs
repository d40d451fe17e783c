//! Membership changes on a running cluster of real processes: a learner
//! added and promoted under load, a dead node replaced, the leader
//! removed, and a node that asks to join without having been added. In
//! every test each write the cluster acknowledged is read back at the end,
//! linearizably.

use std::time::{Duration, Instant};

use raftgres::client::{Client, MemberRole, ReadMode};
use raftgres_proto::v1::RangeRequest;
use raftgres_tests::{
    assert_present, bounded, kv_client, read_prefix, settled_voters, write_keys, BackgroundWriter,
    TestCluster, WAIT_MAX,
};

/// Keys written before a test changes anything.
const KEYS_BEFORE: usize = 100;
/// Where the replacement test's nodes take snapshots and compact: well
/// below [`KEYS_BEFORE`], so that a new node cannot catch up from the log.
const COMPACTION_ENTRIES: &str = "20";
/// Bounds of every background writer: writes, time, pause between writes.
const WRITES_MAX: usize = 5_000;
const WRITING_TIME_MAX: Duration = Duration::from_secs(120);
const WRITE_PAUSE: Duration = Duration::from_millis(10);

fn start_writer(client: &Client, prefix: &str) -> BackgroundWriter {
    BackgroundWriter::start(
        client.clone(),
        prefix,
        WRITES_MAX,
        WRITING_TIME_MAX,
        WRITE_PAUSE,
    )
}

/// Stops `writer` and asserts that every write it saw acknowledged, and
/// every key written before, reads back linearizably through `client`.
async fn assert_nothing_lost(client: &Client, writer: BackgroundWriter, prefix: &str) {
    let outcome = writer.finish().await;
    println!(
        "writer {prefix}: {} acknowledged, {} failed (slowest {:?}): {:?}",
        outcome.acknowledged.len(),
        outcome.failed.len(),
        outcome.latency_max,
        outcome.failed
    );
    assert!(!outcome.acknowledged.is_empty(), "no write got through");
    let before: Vec<usize> = (0..KEYS_BEFORE).collect();
    assert_present(&read_prefix(client, "before/").await, "before/", &before);
    let during = read_prefix(client, prefix).await;
    assert_present(&during, prefix, &outcome.acknowledged);
    for key in during.keys() {
        let i: usize = key[prefix.len()..].parse().expect("a written key");
        assert!(
            outcome.acknowledged.contains(&i) || outcome.failed.iter().any(|(f, _)| *f == i),
            "{key} was never written"
        );
    }
}

/// Asserts that node `id` holds every key written before the test in its
/// own state (a stale read answers from the node's applied state only).
async fn assert_applied_locally(cluster: &mut TestCluster, id: u64) {
    cluster.wait_caught_up(id).await;
    let mut kv = kv_client(cluster.node_address(id)).await;
    let range = kv
        .range(RangeRequest {
            prefix: b"before/".to_vec(),
            limit: 10_000,
            mode: ReadMode::Stale as i32,
        })
        .await
        .unwrap_or_else(|status| panic!("stale range on node {id}: {status}"))
        .into_inner();
    assert_eq!(range.kvs.len(), KEYS_BEFORE, "node {id} lacks entries");
}

/// Proves that a node added as a learner while clients write receives the
/// whole log, is promoted once it has caught up, and then counts: with
/// four voters, killing an original node (the leader) leaves three, a
/// quorum only with the new node, and the survivors still elect a leader
/// and commit writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_under_load_catches_up_is_promoted_and_counts_toward_quorum() {
    let mut cluster = TestCluster::start("member-add").await;
    let client = cluster.client();
    write_keys(&client, "before/", KEYS_BEFORE).await;
    let writer = start_writer(&client, "during/");
    writer.wait_for_writes(10, "before the change").await;

    let learner = cluster.add_learner().await;
    assert_eq!(learner, 4);
    let listing = cluster.client().member_list().await.expect("member list");
    let member = listing
        .members
        .iter()
        .find(|member| member.id == learner)
        .expect("the learner is listed");
    assert_eq!(member.role(), MemberRole::Learner);
    assert_eq!(member.address, cluster.peer_address(learner));

    let promoted = cluster.promote_when_caught_up(learner).await;
    println!("promoted node {learner}: {promoted:?}");
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    writer.wait_for_writes(10, "after the promotion").await;
    assert_applied_locally(&mut cluster, learner).await;

    // Whichever original node dies, the three left are a quorum of four
    // only with the new node. Killing the leader (the usual case) makes
    // the survivors also need the new node's vote to elect one.
    let leader = cluster.wait_leader().await;
    let victim = if leader == learner { 1 } else { leader };
    tokio::task::block_in_place(|| cluster.kill_node(victim)).expect("kill a node");
    let new_leader = if victim == leader {
        cluster.wait_for_leader_change(leader).await
    } else {
        cluster.wait_leader().await
    };
    println!(
        "killed node {victim} (leader {leader}); node {new_leader} leads, node {learner} votes"
    );
    writer
        .wait_for_writes(10, "with three of four voters, the new one among them")
        .await;
    let client = cluster.client();
    assert_nothing_lost(&client, writer, "during/").await;

    // A node that joined restarts as a member, whatever answers. Alone,
    // every other node down, it must start at once: not ask again whether
    // it was added (nobody would answer, and after 30 s it would exit; a
    // cluster whose voters all joined could then never start again).
    tokio::task::block_in_place(|| -> Result<(), raftgres_devcluster::cluster::DevError> {
        for id in [1, 2, 3, learner] {
            if cluster.pid(id).is_some() {
                cluster.kill_node(id)?;
            }
        }
        cluster.start_node(learner)?;
        Ok(())
    })
    .expect("stop every node, start the joined one alone");
    cluster
        .wait_for_status(learner, "up alone, as a member", |_| true)
        .await;
    tokio::task::block_in_place(|| -> Result<(), raftgres_devcluster::cluster::DevError> {
        for id in [1, 2, 3] {
            cluster.start_node(id)?;
        }
        Ok(())
    })
    .expect("start the original nodes again");
    cluster.wait_leader().await;
    write_keys(&cluster.client(), "after-restart/", 5).await;
    assert_applied_locally(&mut cluster, learner).await;
}

/// Proves the replacement of a dead node: with node 3 killed, node 4 is
/// added, catches up from a snapshot (the leader has compacted its log)
/// and is promoted, node 3 is removed, and the cluster goes on with three
/// voters (1, 2, 4) that every running node agrees on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_replaced_by_a_new_one() {
    let mut cluster = TestCluster::start_with("member-replace", 3, |options| {
        options
            .raft_extra
            .push(("compaction_entries".into(), COMPACTION_ENTRIES.into()));
    })
    .await;
    let client = cluster.client();
    write_keys(&client, "before/", KEYS_BEFORE).await;
    let writer = start_writer(&client, "during/");

    tokio::task::block_in_place(|| cluster.kill_node(3)).expect("kill node 3");
    cluster.wait_leader().await;
    writer.wait_for_writes(10, "with node 3 dead").await;

    let replacement = cluster.add_learner().await;
    cluster.promote_when_caught_up(replacement).await;
    cluster.wait_for_voters(&[1, 2, 3, replacement]).await;
    let removed = cluster
        .client()
        .member_remove(3)
        .await
        .expect("remove node 3");
    println!("removed node 3 at index {}", removed.index);
    cluster.wait_for_voters(&[1, 2, replacement]).await;
    cluster.forget_node(3).await.expect("forget node 3");

    cluster.wait_leader().await;
    writer.wait_for_writes(10, "after the replacement").await;
    for id in cluster.node_ids() {
        cluster
            .wait_for_status(id, "to know voters 1, 2 and 4", |status| {
                status.membership.as_ref().is_some_and(|membership| {
                    let mut voters = membership.voters.clone();
                    voters.sort_unstable();
                    voters == [1, 2, replacement] && membership.voters_outgoing.is_empty()
                })
            })
            .await;
    }
    assert_applied_locally(&mut cluster, replacement).await;
    let log = std::fs::read_to_string(cluster.log_path(replacement)).expect("its log");
    assert!(
        log.contains("installed a snapshot from the leader"),
        "node {replacement} caught up without a snapshot:\n{log}"
    );
    let client = cluster.client();
    assert_nothing_lost(&client, writer, "during/").await;
    cluster.assert_no_node_exited();
}

/// Proves that removing the leader works: the change commits, the leader
/// steps down, the two remaining voters elect one of themselves, and
/// writes continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_can_be_removed_and_the_others_elect_a_new_one() {
    let mut cluster = TestCluster::start("member-remove-leader").await;
    let client = cluster.client();
    write_keys(&client, "before/", KEYS_BEFORE).await;
    let writer = start_writer(&client, "during/");
    writer.wait_for_writes(10, "before the change").await;

    let leader = cluster.wait_leader().await;
    let remaining = cluster.others(leader);
    let removed = client
        .member_remove(leader)
        .await
        .expect("remove the leader");
    println!("removed leader {leader} at index {}", removed.index);
    // The membership settles before the remaining voters have elected a
    // leader (the removed leader steps down first): wait for both.
    let settled = cluster
        .wait_for_membership("the remaining voters and a leader among them", |listing| {
            raftgres_tests::settled_voters(listing) == Some(remaining.clone())
                && listing.leader_id != 0
        })
        .await;
    assert!(
        remaining.contains(&settled.leader_id),
        "the leader after the change must be one of {remaining:?}: {settled:?}"
    );
    // Bounded by the stop timeout (SIGKILL after it).
    cluster
        .forget_node(leader)
        .await
        .expect("forget the old leader");

    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    writer
        .wait_for_writes(10, "after the leader's removal")
        .await;
    let client = cluster.client();
    assert_nothing_lost(&client, writer, "during/").await;
    cluster.assert_no_node_exited();
}

/// Proves that a node started with `--join` that the cluster never added
/// exits by itself with an error naming the command that adds it, and
/// leaves the cluster's membership and data untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_without_being_added_exits_with_a_clear_error() {
    let mut cluster = TestCluster::start("member-join-refused").await;
    let client = cluster.client();
    write_keys(&client, "before/", KEYS_BEFORE).await;

    let stranger = cluster.prepare_node().await.expect("prepare node 4");
    cluster.start_node(stranger).expect("start node 4");
    let started = Instant::now();
    let exit = bounded("the stranger's exit", WAIT_MAX * 2, async {
        loop {
            let exited = cluster.reap_exited();
            if let Some((_, status)) = exited.into_iter().find(|(id, _)| *id == stranger) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    println!(
        "node {stranger} exited after {:?}: {exit}",
        started.elapsed()
    );
    assert!(!exit.contains("status: 0"), "it must fail: {exit}");
    let log = std::fs::read_to_string(cluster.log_path(stranger)).expect("its log");
    for expected in [
        format!("node {stranger} is not a member of cluster"),
        format!("raftgres member add {stranger}"),
    ] {
        assert!(
            log.contains(&expected),
            "the log lacks {expected:?}:\n{log}"
        );
    }

    let listing = client.member_list().await.expect("member list");
    assert_eq!(settled_voters(&listing), Some(vec![1, 2, 3]), "{listing:?}");
    cluster.forget_node(stranger).await.expect("forget node 4");
    let writer = start_writer(&client, "after/");
    writer.wait_for_writes(10, "after the refused join").await;
    assert_nothing_lost(&client, writer, "after/").await;
    cluster.assert_no_node_exited();
}
