//! Membership changes through the whole core: learners, joint consensus,
//! a leader that removes itself, and membership changes under a faulty
//! network with crashes (the test cluster's random actions include them).

use super::test_cluster::TestCluster;
use super::{
    DurableState, Entry, EntryPayload, LogIndex, Membership, MembershipChange, MembershipError,
    Message, MessageBody, NodeId, Role, Term,
};

/// Delivers everything, processes every node and ticks, `rounds` times:
/// a reliable network in which elections and changes complete.
fn settle(cluster: &mut TestCluster, rounds: usize) {
    for round in 0..rounds {
        cluster.process_all();
        while !cluster.in_flight.is_empty() {
            let message = cluster.in_flight.remove(0);
            cluster.deliver(message);
            cluster.process_all();
        }
        if round % 2 == 0 {
            cluster.tick_all();
        }
    }
}

fn leader_of(cluster: &mut TestCluster) -> usize {
    settle(cluster, 60);
    cluster.leader().expect("a leader is elected")
}

fn change(
    cluster: &mut TestCluster,
    change: MembershipChange,
) -> Result<LogIndex, MembershipError> {
    let leader = leader_of(cluster);
    cluster.nodes[leader]
        .raft
        .as_mut()
        .expect("the leader runs")
        .change_membership(change)
}

fn membership_of(cluster: &TestCluster, index: usize) -> Membership {
    cluster.nodes[index]
        .raft
        .as_ref()
        .expect("runs")
        .membership()
        .clone()
}

fn ids(list: &[u64]) -> std::collections::BTreeSet<NodeId> {
    list.iter().copied().map(NodeId).collect()
}

#[test]
fn a_learner_is_added_then_promoted_through_a_joint_membership() {
    let mut cluster = TestCluster::with_joining(3, 1, 7);
    let add = MembershipChange::AddLearner {
        node: NodeId(4),
        address: Some("10.0.0.4:7000".into()),
    };
    change(&mut cluster, add).unwrap();
    settle(&mut cluster, 40);
    for index in 0..4 {
        let membership = membership_of(&cluster, index);
        assert_eq!(membership.learners, ids(&[4]), "node {}", index + 1);
        assert_eq!(membership.voters, ids(&[1, 2, 3]));
    }
    // The learner holds the log and never campaigns.
    let leader = cluster.leader().unwrap();
    let leader_last = cluster.nodes[leader]
        .raft
        .as_ref()
        .unwrap()
        .log()
        .last_index();
    let learner = cluster.nodes[3].raft.as_ref().unwrap();
    assert_eq!(learner.log().last_index(), leader_last);
    assert_eq!(learner.role(), Role::Follower);

    let joint_index = change(&mut cluster, MembershipChange::Promote(NodeId(4))).unwrap();
    let leader = cluster.leader().unwrap();
    let joint = membership_of(&cluster, leader);
    assert!(joint.is_joint(), "{joint}");
    assert_eq!(joint.voters, ids(&[1, 2, 3, 4]));
    assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
    settle(&mut cluster, 40);
    for index in 0..4 {
        let membership = membership_of(&cluster, index);
        assert!(!membership.is_joint(), "node {}: {membership}", index + 1);
        assert_eq!(membership.voters, ids(&[1, 2, 3, 4]));
        assert!(membership.learners.is_empty());
        assert_eq!(membership.addresses[&NodeId(4)], "10.0.0.4:7000");
        let log = cluster.nodes[index].raft.as_ref().unwrap().log();
        assert!(log.commit_index() > joint_index, "the second phase commits");
    }
}

#[test]
fn one_change_at_a_time() {
    let mut cluster = TestCluster::with_joining(3, 2, 11);
    let leader = leader_of(&mut cluster);
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    raft.change_membership(MembershipChange::AddLearner {
        node: NodeId(4),
        address: None,
    })
    .unwrap();
    let second = raft.change_membership(MembershipChange::AddLearner {
        node: NodeId(5),
        address: None,
    });
    assert_eq!(second, Err(MembershipError::ChangeInProgress));
    let invalid = raft.change_membership(MembershipChange::Promote(NodeId(5)));
    assert_eq!(invalid, Err(MembershipError::ChangeInProgress));
    settle(&mut cluster, 40);
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    assert!(matches!(
        raft.change_membership(MembershipChange::Promote(NodeId(5))),
        Err(MembershipError::Invalid(reason)) if reason.contains("not a learner")
    ));
    assert!(matches!(
        raft.change_membership(MembershipChange::AddLearner { node: NodeId(2), address: None }),
        Err(MembershipError::Invalid(reason)) if reason.contains("already a member")
    ));
    // A vote for it could not be stored: Postgres keeps node ids in bigint.
    for node in [NodeId(0), NodeId(NodeId::MAX.0 + 1)] {
        assert!(matches!(
            raft.change_membership(MembershipChange::AddLearner { node, address: None }),
            Err(MembershipError::Invalid(reason)) if reason.contains("node ids run from 1 to")
        ));
    }
    let mut beyond = Membership::new([NodeId(1), NodeId(2)]);
    beyond.learners.insert(NodeId(u64::MAX));
    assert!(beyond
        .invalid_reason()
        .is_some_and(|reason| reason.contains("above the largest node id")));
    let follower = (leader + 1) % 3;
    let refused = cluster.nodes[follower]
        .raft
        .as_mut()
        .unwrap()
        .change_membership(MembershipChange::Remove(NodeId(1)));
    assert!(matches!(refused, Err(MembershipError::NotLeader { .. })));
}

#[test]
fn a_leader_that_removes_itself_hands_over_and_steps_down_once_the_change_commits() {
    let mut cluster = TestCluster::new(3, 3);
    let leader = leader_of(&mut cluster);
    let leader_id = NodeId(leader as u64 + 1);
    change(&mut cluster, MembershipChange::Remove(leader_id)).unwrap();
    // Through the joint phase the old leader keeps leading, but takes no
    // new proposals: it is about to hand over.
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    assert_eq!(raft.role(), Role::Leader);
    assert_eq!(
        raft.propose(vec![1]),
        Err(crate::core::ProposeError::TransferInProgress)
    );
    settle(&mut cluster, 80);
    let old = cluster.nodes[leader].raft.as_ref().unwrap();
    assert_ne!(old.role(), Role::Leader);
    assert!(
        !old.membership().is_voter(leader_id),
        "{}",
        old.membership()
    );
    let new_leader = cluster.leader().expect("the others elect a leader");
    assert_ne!(new_leader, leader);
    // Handed over, not elected after a timeout: the new leader's term is
    // the next one.
    let new_term = cluster.nodes[new_leader].raft.as_ref().unwrap().term();
    assert_eq!(new_term.0, old.term().0 + 1, "a TimeoutNow's campaign");
    let remaining = membership_of(&cluster, new_leader);
    assert_eq!(remaining.voters.len(), 2);
    assert!(!remaining.is_joint());
    // The removed node never campaigns again.
    let term = old.term();
    settle(&mut cluster, 80);
    let old = cluster.nodes[leader].raft.as_ref().unwrap();
    assert_eq!(old.role(), Role::Follower);
    assert!(old.term() >= term);
}

#[test]
fn the_last_voter_cannot_be_removed() {
    let mut cluster = TestCluster::new(1, 5);
    let leader = leader_of(&mut cluster);
    let refused = change(
        &mut cluster,
        MembershipChange::Remove(NodeId(leader as u64 + 1)),
    );
    assert!(
        matches!(refused, Err(MembershipError::Invalid(reason)) if reason.contains("last voter"))
    );
}

#[test]
fn a_truncated_membership_entry_brings_the_previous_membership_back() {
    // Node 1 leads term 1 and appends a membership entry that never
    // reaches anyone; node 2 then leads term 2 and overwrites it.
    let mut cluster = TestCluster::with_joining(3, 1, 21);
    let leader = leader_of(&mut cluster);
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    raft.change_membership(MembershipChange::AddLearner {
        node: NodeId(4),
        address: None,
    })
    .unwrap();
    assert!(raft.membership().learners.contains(&NodeId(4)));
    cluster.process(leader);
    cluster.in_flight.clear();
    cluster.crash(leader);
    settle(&mut cluster, 80);
    let new_leader = cluster.leader().expect("the others elect a leader");
    assert_ne!(new_leader, leader);
    cluster.restart(leader);
    settle(&mut cluster, 80);
    let restarted = cluster.nodes[leader].raft.as_ref().unwrap();
    assert!(
        restarted.membership().learners.is_empty(),
        "the overwritten entry's membership is gone: {}",
        restarted.membership()
    );
}

#[test]
fn changes_under_faults_keep_every_node_consistent() {
    // Random actions include membership changes (adds, promotions,
    // removals of any node, the leader too), crashes, loss and reordering;
    // the cluster's own checks (valid messages only) hold throughout, and
    // no two nodes commit different entries at one index.
    let mut changed = 0;
    for seed in 0..40 {
        let mut cluster = TestCluster::with_joining(3, 2, seed);
        cluster.run(4000);
        for index in 0..5 {
            cluster.restart(index);
        }
        let logs: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| node.raft.as_ref().unwrap().log().clone())
            .collect();
        for a in &logs {
            for b in &logs {
                let low = a.first_index().max(b.first_index());
                let high = a.commit_index().min(b.commit_index());
                let mut index = low;
                while index <= high {
                    assert_eq!(
                        a.term_at(index),
                        b.term_at(index),
                        "seed {seed} index {index}"
                    );
                    index = index.next();
                }
            }
        }
        assert!(
            cluster.reports.is_empty(),
            "seed {seed}: {:?}",
            cluster.reports
        );
        let initial = Membership::new((1..=3).map(NodeId));
        if logs.iter().any(|log| log.membership() != &initial) {
            changed += 1;
        }
    }
    assert!(
        changed >= 20,
        "only {changed} of 40 seeds changed the membership"
    );
}

#[test]
fn a_removed_node_that_campaigns_disturbs_no_one() {
    // Node 3 is removed while cut off; when it returns it campaigns
    // without pre-vote, in ever higher terms: the members ignore it.
    let mut cluster = TestCluster::new(3, 9);
    for node in &mut cluster.nodes {
        let config = &mut node.config;
        config.pre_vote = false;
        config.check_quorum = false;
    }
    for index in 0..3 {
        cluster.crash(index);
        cluster.restart(index);
    }
    let mut leader = leader_of(&mut cluster);
    if leader == 2 {
        cluster.nodes[2]
            .raft
            .as_mut()
            .unwrap()
            .transfer_leadership(NodeId(1))
            .unwrap();
        settle(&mut cluster, 40);
        leader = cluster.leader().unwrap();
    }
    cluster.crash(2);
    change(&mut cluster, MembershipChange::Remove(NodeId(3))).unwrap();
    settle(&mut cluster, 60);
    let term = cluster.nodes[leader].raft.as_ref().unwrap().term();
    assert_eq!(membership_of(&cluster, leader).voters.len(), 2);
    cluster.restart(2);
    settle(&mut cluster, 200);
    let removed = cluster.nodes[2].raft.as_ref().unwrap();
    assert!(removed.term() > term, "the removed node campaigned");
    let members = cluster.nodes[leader].raft.as_ref().unwrap();
    assert_eq!(members.role(), Role::Leader);
    assert_eq!(members.term(), term, "the members' term did not move");
}

#[test]
fn a_node_counts_the_members_of_its_latest_and_its_committed_membership() {
    let mut cluster = TestCluster::with_joining(3, 2, 13);
    let leader = leader_of(&mut cluster);
    // A node that knows no membership yet counts anyone of its cluster.
    let joining = cluster.nodes[4].raft.as_ref().unwrap();
    assert!(joining.knows_member(NodeId(1)) && joining.knows_member(NodeId(9)));
    assert_eq!(joining.peer_set(), None);
    let raft = cluster.nodes[leader].raft.as_ref().unwrap();
    assert!(!raft.knows_member(NodeId(4)), "not added yet");
    // The leader counts the learner from the moment it appends the change.
    let add = MembershipChange::AddLearner {
        node: NodeId(4),
        address: None,
    };
    change(&mut cluster, add).unwrap();
    let raft = cluster.nodes[leader].raft.as_ref().unwrap();
    assert!(raft.knows_member(NodeId(4)));
    assert!(!raft.knows_member(NodeId(5)));
    settle(&mut cluster, 40);
    for index in 0..4 {
        let raft = cluster.nodes[index].raft.as_ref().unwrap();
        let mut expected = ids(&[1, 2, 3, 4]);
        expected.remove(&NodeId(index as u64 + 1));
        assert_eq!(raft.peer_set(), Some(expected), "node {}", index + 1);
        assert!(!raft.knows_member(NodeId(5)), "node {}", index + 1);
    }
    // A removed leader is counted until its removal commits, then not.
    let leader_id = NodeId(leader as u64 + 1);
    change(&mut cluster, MembershipChange::Remove(leader_id)).unwrap();
    let follower = (leader + 1) % 3;
    let mut seen_uncommitted = false;
    cluster.process_all();
    while !cluster.in_flight.is_empty() {
        let message = cluster.in_flight.remove(0);
        cluster.deliver(message);
        cluster.process_all();
        let raft = cluster.nodes[follower].raft.as_ref().unwrap();
        let log = raft.log();
        if !log.membership().contains(leader_id) && log.membership_index() > log.commit_index() {
            seen_uncommitted = true;
            assert!(raft.knows_member(leader_id), "removal not committed yet");
        }
    }
    assert!(
        seen_uncommitted,
        "the follower held the removal uncommitted"
    );
    settle(&mut cluster, 80);
    let raft = cluster.nodes[follower].raft.as_ref().unwrap();
    assert!(!raft.membership().contains(leader_id));
    assert!(
        !raft.knows_member(leader_id),
        "committed without node {leader_id}: {}",
        raft.membership()
    );
    // Now only a current leader's traffic and campaigns are heard from it.
    let term = raft.term();
    let message = |term: Term, body: MessageBody| Message {
        from: leader_id,
        to: NodeId(follower as u64 + 1),
        term,
        body,
    };
    let heartbeat = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(0),
        read_round: 1,
    };
    assert!(raft.hears(&message(term, heartbeat.clone())));
    assert!(!raft.hears(&message(Term(term.0 - 1), heartbeat)));
    assert!(!raft.hears(&message(term, MessageBody::TimeoutNow)));
    let answer = MessageBody::HeartbeatResponse { read_round: 1 };
    assert!(!raft.hears(&message(term, answer)));
}

#[test]
fn a_learner_behind_by_more_than_one_message_is_not_promoted() {
    let mut cluster = TestCluster::with_joining(3, 1, 17);
    // Added while down, the learner has acknowledged nothing: a log
    // shorter than one message is no excuse.
    cluster.crash(3);
    change(
        &mut cluster,
        MembershipChange::AddLearner {
            node: NodeId(4),
            address: None,
        },
    )
    .unwrap();
    settle(&mut cluster, 40);
    let leader = cluster.leader().unwrap();
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    assert!(raft.log().last_index().0 < raft.config().entries_per_message_max as u64);
    assert!(matches!(
        raft.change_membership(MembershipChange::Promote(NodeId(4))),
        Err(MembershipError::LearnerBehind {
            node: NodeId(4),
            ..
        })
    ));
    cluster.restart(3);
    settle(&mut cluster, 40);
    cluster.crash(3);
    let leader = cluster.leader().unwrap();
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    let per_message = raft.config().entries_per_message_max;
    for command in 0..=per_message {
        raft.propose(vec![command as u8]).unwrap();
    }
    settle(&mut cluster, 10);
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    let refused = raft.change_membership(MembershipChange::Promote(NodeId(4)));
    assert!(
        matches!(refused, Err(MembershipError::LearnerBehind { node: NodeId(4), behind }) if behind > per_message as u64),
        "{refused:?}"
    );
    cluster.restart(3);
    settle(&mut cluster, 60);
    let leader = cluster.leader().unwrap();
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    raft.change_membership(MembershipChange::Promote(NodeId(4)))
        .expect("caught up, the learner is promoted");
}

#[test]
fn a_node_refused_as_no_member_steps_down_to_the_refusing_term() {
    let mut cluster = TestCluster::new(3, 19);
    let leader = leader_of(&mut cluster);
    let by = NodeId((leader as u64 + 1) % 3 + 1);
    let raft = cluster.nodes[leader].raft.as_mut().unwrap();
    let term = raft.term();
    raft.not_heard_by(by, term);
    assert_eq!(raft.role(), Role::Leader, "an equal term says nothing new");
    raft.not_heard_by(raft.id(), Term(term.0 + 5));
    assert_eq!(raft.role(), Role::Leader, "not from itself");
    raft.not_heard_by(by, Term(term.0 + 5));
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.term(), Term(term.0 + 5));
    assert_eq!(raft.status().leader, None);
}

/// A node that joined and took the log from its start stores no
/// membership at its log start, but its log holds the entry that added
/// it: restarted, it must not ask the cluster again (a cluster whose
/// voters all joined would wait on itself for ever).
#[test]
fn a_node_whose_log_holds_a_membership_does_not_wait_to_be_added() {
    let mut durable = DurableState::default();
    assert!(durable.waits_to_be_added(), "an empty node asks");
    durable.entries.push(Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::Blank,
    });
    assert!(
        durable.waits_to_be_added(),
        "entries without a membership say nothing"
    );
    durable.entries.push(Entry {
        term: Term(1),
        index: LogIndex(2),
        payload: EntryPayload::Membership(Box::new(Membership::new([NodeId(1)]))),
    });
    assert!(!durable.waits_to_be_added());
    let snapshot_only = DurableState {
        membership: Membership::new([NodeId(1)]),
        ..DurableState::default()
    };
    assert!(!snapshot_only.waits_to_be_added());
}
