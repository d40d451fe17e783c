//! Unit tests of the safety rules in DESIGN.md, each built so that it
//! fails when its rule is broken. Scenario scripts in
//! `sim/tests/scenarios/` cover whole-cluster behaviour.

use super::*;

fn config(id: u64, voters: u64) -> Config {
    let mut config = Config::new(NodeId(id), (1..=voters).map(NodeId).collect());
    config.pre_vote = false;
    config
}

fn node(id: u64, voters: u64) -> Raft {
    Raft::new(config(id, voters), DurableState::default(), id).unwrap()
}

fn node_with_log(id: u64, voters: u64, term: u64, entry_terms: &[u64]) -> Raft {
    let entries = entry_terms
        .iter()
        .enumerate()
        .map(|(offset, entry_term)| Entry {
            term: Term(*entry_term),
            index: LogIndex(offset as u64 + 1),
            payload: EntryPayload::Command(vec![]),
        })
        .collect();
    let durable = DurableState {
        membership: Default::default(),
        hard_state: HardState {
            term: Term(term),
            voted_for: None,
        },
        snapshot: SnapshotMeta::default(),
        entries,
        applied: LogIndex(0),
    };
    let mut config = config(id, voters);
    // These tests send vote requests right after a restart.
    config.check_quorum = false;
    Raft::new(config, durable, id).unwrap()
}

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    let body = MessageBody::VoteRequest {
        pre_vote: false,
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        leadership_transfer: false,
    };
    message(from, to, term, body)
}

fn granted(messages: &[Message]) -> Option<bool> {
    messages.iter().find_map(|message| match message.body {
        MessageBody::VoteResponse { granted, .. } => Some(granted),
        _ => None,
    })
}

fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> Message {
    let entries = entries
        .iter()
        .map(|(index, term)| Entry {
            term: Term(*term),
            index: LogIndex(*index),
            payload: EntryPayload::Blank,
        })
        .collect();
    let body = MessageBody::AppendRequest {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    };
    message(from, to, term, body)
}

fn append_response(from: u64, to: u64, term: u64, index: u64) -> Message {
    let body = MessageBody::AppendResponse {
        index: LogIndex(index),
        rejected: false,
        reject_hint_index: LogIndex(0),
        reject_hint_term: Term(0),
    };
    message(from, to, term, body)
}

/// Makes node 1 leader of term 1 in a cluster of `voters`, with every
/// follower holding its blank entry; returns it with nothing pending.
fn leader(voters: u64) -> Raft {
    let mut leader = node(1, voters);
    leader.campaign_now();
    for peer in 2..=voters {
        leader.step(message(
            peer,
            1,
            1,
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            },
        ));
    }
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.ready();
    let (index, term) = ready.persist_point().unwrap();
    leader.persisted(index, term);
    for peer in 2..=voters {
        leader.step(append_response(peer, 1, 1, 1));
    }
    assert_eq!(leader.log().commit_index(), LogIndex(1));
    let ready = leader.ready();
    leader.applied(ready.committed_entries.last().unwrap().index);
    leader
}

#[test]
fn rule_1_a_vote_is_sent_only_after_it_is_durable() {
    let mut follower = node(2, 3);
    follower.step(vote_request(1, 2, 1, 0, 0));
    let ready = follower.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(1),
            voted_for: Some(NodeId(1))
        })
    );
    assert_eq!(
        granted(&ready.messages),
        None,
        "a vote must not go out before it is durable"
    );
    assert_eq!(granted(&ready.messages_after_persist), Some(true));
}

#[test]
fn rule_1_a_candidate_asks_for_votes_only_after_its_own_vote_is_durable() {
    let mut candidate = node(1, 3);
    candidate.campaign_now();
    let ready = candidate.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(1),
            voted_for: Some(NodeId(1))
        })
    );
    assert!(ready.messages.is_empty());
    assert_eq!(ready.messages_after_persist.len(), 2);
}

#[test]
fn rule_2_appends_are_acknowledged_only_after_they_are_durable() {
    let mut follower = node(2, 3);
    follower.step(append(1, 2, 1, (0, 0), &[(1, 1), (2, 1)], 0));
    let ready = follower.ready();
    assert_eq!(ready.entries.len(), 2);
    assert!(!ready
        .messages
        .iter()
        .any(|message| matches!(message.body, MessageBody::AppendResponse { .. })));
    assert_eq!(
        ready.messages_after_persist,
        vec![append_response(2, 1, 1, 2)]
    );
}

#[test]
fn rule_2_a_conflicting_suffix_is_replaced_in_the_same_batch() {
    let mut follower = node_with_log(2, 3, 1, &[1, 1, 1]);
    follower.step(append(1, 2, 2, (1, 1), &[(2, 2)], 0));
    let ready = follower.ready();
    // The batch starts at the conflict: the driver deletes index 2 and up
    // and writes the new entry in one transaction.
    assert_eq!(
        ready.entries.first().map(|entry| (entry.index, entry.term)),
        Some((LogIndex(2), Term(2)))
    );
    assert_eq!(follower.log().last_index(), LogIndex(2));
}

#[test]
fn rule_3_the_leader_counts_itself_only_for_durable_entries() {
    let mut leader = leader(3);
    let index = leader.propose(b"x".to_vec()).unwrap();
    let ready = leader.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(
        !ready.messages.is_empty(),
        "the leader replicates while its own write is in flight"
    );
    leader.step(append_response(2, 1, 1, index.0));
    assert_eq!(
        leader.log().commit_index(),
        LogIndex(1),
        "one follower alone is not a quorum of three"
    );
    leader.persisted(index, Term(1));
    assert_eq!(leader.log().commit_index(), index);
}

/// The commit index each message of `ready` carries, by recipient, and
/// whether the message carried entries.
fn commits_told(ready: &Ready) -> Vec<(u64, u64, bool)> {
    ready
        .messages
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::AppendRequest {
                leader_commit,
                entries,
                ..
            } => Some((message.to.0, leader_commit.0, !entries.is_empty())),
            MessageBody::HeartbeatRequest { leader_commit, .. } => {
                Some((message.to.0, leader_commit.0, false))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_moved_commit_index_rides_the_next_append_or_is_announced_at_the_next_tick() {
    let mut leader = leader(3);
    // The blank entry committed when the followers acknowledged it; the
    // appends they got carried commit index 0.
    assert_eq!(
        commits_told(&leader.ready()),
        vec![],
        "no message of its own"
    );
    leader.tick();
    assert_eq!(
        commits_told(&leader.ready()),
        vec![(2, 1, false), (3, 1, false)],
        "the next tick announces it to both"
    );
    leader.tick();
    assert_eq!(
        commits_told(&leader.ready()),
        vec![(2, 1, false), (3, 1, false)],
        "the heartbeat carries it again, and nothing else goes out"
    );
    // Entry 2 commits with follower 2; entry 3's appends carry that.
    let second = leader.propose(b"x".to_vec()).unwrap();
    let ready = leader.ready();
    assert_eq!(commits_told(&ready), vec![(2, 1, true), (3, 1, true)]);
    leader.persisted(second, Term(1));
    leader.step(append_response(2, 1, 1, second.0));
    assert_eq!(leader.log().commit_index(), second);
    assert_eq!(
        commits_told(&leader.ready()),
        vec![],
        "no message of its own"
    );
    let third = leader.propose(b"y".to_vec()).unwrap();
    let ready = leader.ready();
    assert_eq!(commits_told(&ready), vec![(2, 2, true), (3, 2, true)]);
    leader.persisted(third, Term(1));
    leader.tick();
    assert_eq!(
        commits_told(&leader.ready()),
        vec![],
        "both were told with entry 3; the tick has nothing to announce"
    );
    // Entry 3 commits, and no append follows: the tick announces it, to
    // follower 3 only up to what the leader sent it.
    leader.step(append_response(3, 1, 1, third.0));
    assert_eq!(leader.log().commit_index(), third);
    assert_eq!(commits_told(&leader.ready()), vec![]);
    leader.tick();
    let told = commits_told(&leader.ready());
    assert!(
        told.contains(&(2, 3, false)) && told.contains(&(3, 3, false)),
        "{told:?}"
    );
}

#[test]
fn rule_4_only_committed_and_durable_entries_are_applied() {
    let mut follower = node(2, 3);
    follower.step(append(1, 2, 1, (0, 0), &[(1, 1), (2, 1)], 1));
    let ready = follower.ready();
    assert!(ready.committed_entries.is_empty(), "nothing is durable yet");
    follower.persisted(LogIndex(2), Term(1));
    let ready = follower.ready();
    assert_eq!(
        ready.committed_entries.len(),
        1,
        "only index 1 is committed"
    );
    follower.applied(LogIndex(1));
    assert!(
        follower.ready().committed_entries.is_empty(),
        "each entry is handed out once"
    );
}

#[test]
fn rule_5_entries_of_earlier_terms_are_committed_only_through_the_current_term() {
    // Node 1 restarts in term 2 with an uncommitted entry of term 1 and wins
    // term 3; a quorum then holds the term-1 entry, but not the new blank.
    let mut leader = node_with_log(1, 3, 2, &[1]);
    leader.campaign_now();
    leader.step(message(
        2,
        1,
        3,
        MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        },
    ));
    assert_eq!(leader.role(), Role::Leader);
    leader.ready();
    leader.persisted(LogIndex(2), Term(3));
    leader.step(append_response(2, 1, 3, 1));
    assert_eq!(
        leader.log().commit_index(),
        LogIndex(0),
        "index 1 is of term 1: not committed by counting"
    );
    leader.step(append_response(2, 1, 3, 2));
    assert_eq!(leader.log().commit_index(), LogIndex(2));
}

#[test]
fn one_vote_per_term() {
    let mut follower = node(3, 3);
    follower.step(vote_request(1, 3, 5, 0, 0));
    assert_eq!(
        granted(&follower.ready().messages_after_persist),
        Some(true)
    );
    follower.step(vote_request(2, 3, 5, 0, 0));
    assert_eq!(
        granted(&follower.ready().messages_after_persist),
        Some(false)
    );
    follower.step(vote_request(1, 3, 5, 0, 0));
    assert_eq!(
        granted(&follower.ready().messages_after_persist),
        Some(true),
        "a retried request is granted again"
    );
}

#[test]
fn votes_go_only_to_candidates_with_up_to_date_logs() {
    let mut voter = node_with_log(3, 3, 2, &[1, 2]);
    voter.step(vote_request(1, 3, 3, 5, 1));
    assert_eq!(
        granted(&voter.ready().messages_after_persist),
        Some(false),
        "older last term loses"
    );
    voter.step(vote_request(2, 3, 4, 1, 2));
    assert_eq!(
        granted(&voter.ready().messages_after_persist),
        Some(false),
        "same term, shorter log loses"
    );
    voter.step(vote_request(2, 3, 5, 2, 2));
    assert_eq!(granted(&voter.ready().messages_after_persist), Some(true));
}

#[test]
fn a_candidate_of_an_earlier_term_is_refused_in_the_current_one() {
    let mut voter = node_with_log(3, 3, 5, &[1]);
    voter.step(vote_request(1, 3, 3, 9, 1));
    let ready = voter.ready();
    assert_eq!(voter.term(), Term(5));
    let refusals: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|message| matches!(message.body, MessageBody::VoteResponse { .. }))
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "the candidate is told, or it may never learn the term: {:?}",
        ready.messages
    );
    assert_eq!(refusals[0].term, Term(5));
    assert_eq!(granted(&ready.messages), Some(false));
    let mut candidate = node_with_log(1, 3, 2, &[1]);
    candidate.campaign_now();
    assert_eq!(
        (candidate.role(), candidate.term()),
        (Role::Candidate, Term(3))
    );
    candidate.step(refusals[0].clone());
    assert_eq!(
        (candidate.role(), candidate.term()),
        (Role::Follower, Term(5))
    );
}

#[test]
fn a_candidate_that_learns_a_later_term_from_a_refusal_keeps_its_election_timer() {
    // Section 5.2: the timer restarts on granting a vote or hearing from a
    // leader. Restarted by a refusal, a candidate times out a round trip
    // behind the node the refuser voted for, every time.
    let mut candidate = node_with_log(1, 3, 2, &[1]);
    candidate.campaign_now();
    for _ in 0..3 {
        candidate.tick();
    }
    assert_eq!(candidate.status().election_elapsed, 3);
    let timeout = candidate.status().election_timeout;
    let refusal = MessageBody::VoteResponse {
        pre_vote: false,
        granted: false,
    };
    candidate.step(message(2, 1, 7, refusal));
    let status = candidate.status();
    assert_eq!((status.role, status.term), (Role::Follower, Term(7)));
    assert_eq!(
        (status.election_elapsed, status.election_timeout),
        (3, timeout),
        "the timer runs on"
    );
    // A leader of the later term restarts it.
    candidate.step(append(2, 1, 7, (1, 1), &[], 1));
    assert_eq!(candidate.status().election_elapsed, 0);
}

#[test]
fn pre_vote_changes_neither_term_nor_vote() {
    let mut voter = node_with_log(3, 3, 2, &[1]);
    let body = MessageBody::VoteRequest {
        pre_vote: true,
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        leadership_transfer: false,
    };
    voter.step(message(1, 3, 3, body));
    let ready = voter.ready();
    assert_eq!(ready.hard_state, None);
    assert_eq!(voter.term(), Term(2));
    assert_eq!(ready.messages.len(), 1);
    assert_eq!(
        ready.messages[0].term,
        Term(3),
        "a granted pre-vote answers in the proposed term"
    );
    assert_eq!(granted(&ready.messages), Some(true));
}

#[test]
fn a_leader_steps_down_when_it_sees_a_higher_term() {
    let mut leader = leader(3);
    leader.step(append_response(2, 1, 7, 0));
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(leader.term(), Term(7));
    assert_eq!(
        leader.propose(vec![]),
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn leader_refuses_proposals_beyond_the_uncommitted_limit() {
    let mut config = config(1, 1);
    config.uncommitted_entries_max = 2;
    let mut leader = Raft::new(config, DurableState::default(), 1).unwrap();
    leader.campaign_now();
    assert_eq!(leader.role(), Role::Leader);
    // The blank entry is the first uncommitted one.
    assert!(leader.propose(vec![1]).is_ok());
    assert_eq!(leader.propose(vec![2]), Err(ProposeError::Backpressure));
    let ready = leader.ready();
    let (index, term) = ready.persist_point().unwrap();
    leader.persisted(index, term);
    assert!(leader.propose(vec![3]).is_ok(), "committing frees room");
}

#[test]
fn single_node_commits_and_serves_reads_on_its_own() {
    let mut leader = Raft::new(config(1, 1), DurableState::default(), 1).unwrap();
    leader.campaign_now();
    let index = leader.propose(b"x".to_vec()).unwrap();
    leader.read_index(9).unwrap();
    let ready = leader.ready();
    let (last, term) = ready.persist_point().unwrap();
    assert_eq!(last, index);
    leader.persisted(last, term);
    let ready = leader.ready();
    assert_eq!(ready.committed_entries.len(), 2);
    leader.applied(index);
    assert_eq!(leader.ready().reads, vec![ReadState { context: 9, index }]);
}

/// Simulator seed 450 (5 nodes, swarm): the only voter won its term
/// alone and sent appends of that term to its learners before the term
/// was durable; it crashed, came back in the previous term, won the same
/// term again and wrote another entry at an index a learner held from the
/// first time (log matching broken).
#[test]
fn a_leader_that_won_alone_speaks_only_once_its_term_is_durable() {
    let mut membership = Membership::new([NodeId(1)]);
    membership.learners.insert(NodeId(2));
    let durable = DurableState {
        membership,
        ..DurableState::default()
    };
    let mut leader = Raft::new(config(1, 1), durable, 1).unwrap();
    leader.campaign_now();
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.ready();
    assert!(ready.hard_state.is_some());
    assert!(
        ready.messages.is_empty(),
        "sent before the term is durable: {:?}",
        ready.messages
    );
    assert!(!ready.messages_after_persist.is_empty());
    let (last, term) = ready.persist_point().unwrap();
    // A heartbeat before the write completes waits too.
    for _ in 0..leader.config().heartbeat_ticks {
        leader.tick();
    }
    assert!(leader.ready().messages.is_empty());
    leader.persisted(last, term);
    for _ in 0..leader.config().heartbeat_ticks {
        leader.tick();
    }
    assert!(
        !leader.ready().messages.is_empty(),
        "once the term is durable the leader speaks at once"
    );
}

#[test]
fn reads_need_a_leader() {
    let mut follower = node(2, 3);
    assert_eq!(
        follower.read_index(1),
        Err(ReadError::NoLeader { leader: None })
    );
}

#[test]
fn heartbeats_never_commit_beyond_the_local_log() {
    let mut follower = node(2, 3);
    follower.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0));
    let body = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(5),
        read_round: 1,
    };
    follower.step(message(1, 2, 1, body));
    assert_eq!(follower.log().commit_index(), LogIndex(1));
}

#[test]
fn lease_reads_hold_only_while_a_quorum_recently_answered() {
    let mut leader = leader(3);
    assert_eq!(
        leader.lease_read_index(),
        None,
        "no heartbeat round acknowledged yet"
    );
    leader.tick();
    leader.tick();
    leader.ready();
    let round = leader.read_round;
    leader.step(message(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    assert_eq!(leader.lease_read_index(), Some(LogIndex(1)));
    // Three quarters of election_ticks_min (10) after that round was sent,
    // the lease is gone unless newer rounds are acknowledged.
    for _ in 0..7 {
        leader.tick();
    }
    assert_eq!(leader.lease_read_index(), None);
}

#[test]
fn a_transfer_gives_its_target_a_full_timeout_after_timeout_now() {
    // Node 2 is one entry behind, so the TimeoutNow waits for its catch-up.
    let mut leader = leader(3);
    leader.propose(b"x".to_vec()).unwrap();
    let ready = leader.ready();
    let (index, term) = ready.persist_point().unwrap();
    leader.persisted(index, term);
    leader.transfer_leadership(NodeId(2)).unwrap();
    let timeout_now_sent = |leader: &mut Raft| {
        leader
            .ready()
            .messages
            .iter()
            .any(|message| message.body == MessageBody::TimeoutNow)
    };
    assert!(!timeout_now_sent(&mut leader), "node 2 is behind");
    // The catch-up takes most of the first timeout (election_ticks_min is
    // 10).
    for _ in 0..8 {
        leader.tick();
    }
    leader.step(append_response(2, 1, 1, 2));
    assert!(timeout_now_sent(&mut leader), "node 2 caught up");
    // Ten ticks after the request, but not after the TimeoutNow: node 2's
    // vote requests may be on their way, so the leader still takes no
    // proposal that would leave node 2's log behind.
    for _ in 0..9 {
        leader.tick();
        assert_eq!(
            leader.propose(b"y".to_vec()),
            Err(ProposeError::TransferInProgress)
        );
    }
    // A full timeout after the TimeoutNow, the transfer is abandoned.
    leader.tick();
    assert_eq!(leader.transfer_target, None);
    assert!(leader.propose(b"y".to_vec()).is_ok());
}

#[test]
fn no_lease_reads_in_a_term_once_a_timeout_now_was_sent() {
    let mut leader = leader(3);
    leader.transfer_leadership(NodeId(2)).unwrap();
    let ready = leader.ready();
    assert!(
        ready
            .messages
            .iter()
            .any(|message| message.body == MessageBody::TimeoutNow),
        "node 2 is caught up: {ready:?}"
    );
    // The transfer is abandoned after election_ticks_min ticks; the leader
    // renews its lease with a fresh acknowledged heartbeat round. The
    // TimeoutNow may still be in flight, so the lease must not serve reads.
    for _ in 0..12 {
        leader.tick();
    }
    leader.ready();
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.transfer_target, None, "the transfer was abandoned");
    let round = leader.read_round;
    for peer in [2, 3] {
        leader.step(message(
            peer,
            1,
            1,
            MessageBody::HeartbeatResponse { read_round: round },
        ));
    }
    assert_eq!(leader.lease_read_index(), None);
}

#[test]
fn reads_that_arrive_while_a_round_is_out_share_the_next_round() {
    let mut leader = leader(3);
    let rounds_sent = |ready: &Ready| {
        ready
            .messages
            .iter()
            .filter_map(|message| match message.body {
                MessageBody::HeartbeatRequest { read_round, .. } => Some(read_round),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<u64>>()
    };
    let answer = |leader: &mut Raft, round: u64| {
        leader.step(message(
            2,
            1,
            1,
            MessageBody::HeartbeatResponse { read_round: round },
        ));
    };
    leader.read_index(1).unwrap();
    let first = leader.read_round + 1;
    let ready = leader.ready();
    assert_eq!(
        rounds_sent(&ready),
        std::collections::BTreeSet::from([first]),
        "no round was out"
    );
    leader.read_index(2).unwrap();
    leader.read_index(3).unwrap();
    assert!(!leader.has_ready(), "round {first} is out");
    assert!(rounds_sent(&leader.ready()).is_empty());
    answer(&mut leader, first);
    assert!(leader.has_ready());
    let ready = leader.ready();
    let contexts = |ready: &Ready| {
        ready
            .reads
            .iter()
            .map(|read| read.context)
            .collect::<Vec<_>>()
    };
    assert_eq!(contexts(&ready), vec![1]);
    assert_eq!(
        rounds_sent(&ready),
        std::collections::BTreeSet::from([first + 1]),
        "one round for both reads that waited"
    );
    answer(&mut leader, first + 1);
    assert_eq!(contexts(&leader.ready()), vec![2, 3]);
    assert!(rounds_sent(&leader.ready()).is_empty(), "no read waits");
}

/// A read that waits for the next round because the answers to the round
/// out were lost goes with the next heartbeat tick's round.
#[test]
fn a_read_behind_a_round_whose_answers_are_lost_goes_with_the_next_heartbeat() {
    let mut leader = leader(3);
    leader.read_index(1).unwrap();
    leader.ready();
    leader.read_index(2).unwrap();
    for _ in 0..leader.config().heartbeat_ticks {
        leader.tick();
    }
    leader.ready();
    let round = leader.read_round;
    leader.step(message(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    let reads = leader.ready().reads;
    assert_eq!(
        reads.iter().map(|read| read.context).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn followers_forward_reads_and_the_leader_confirms_them() {
    let mut leader = leader(3);
    leader.step(message(
        2,
        1,
        1,
        MessageBody::ReadIndexRequest { context: 4 },
    ));
    let ready = leader.ready();
    let round = leader.read_round;
    assert!(ready
        .messages
        .iter()
        .any(|message| matches!(message.body, MessageBody::HeartbeatRequest { .. })));
    leader.step(message(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    let ready = leader.ready();
    let answer = MessageBody::ReadIndexResponse {
        context: 4,
        index: LogIndex(1),
        refused: false,
    };
    assert_eq!(ready.messages, vec![message(1, 2, 1, answer)]);
}

#[test]
fn reads_wait_for_an_installed_snapshot_to_be_durable() {
    let mut follower = node(2, 3);
    follower.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0));
    follower.read_index(7).unwrap();
    follower.ready();
    let snapshot = Snapshot {
        membership: Box::new(crate::core::Membership::new((1..=3).map(NodeId))),
        meta: SnapshotMeta {
            index: LogIndex(5),
            term: Term(1),
        },
    };
    follower.step(message(1, 2, 1, MessageBody::InstallSnapshot { snapshot }));
    let answer = MessageBody::ReadIndexResponse {
        context: 7,
        index: LogIndex(5),
        refused: false,
    };
    follower.step(message(1, 2, 1, answer));
    let ready = follower.ready();
    assert!(ready.snapshot.is_some());
    assert!(
        ready.reads.is_empty(),
        "the snapshot is not durable yet: the state machine may still be the old one"
    );
    let (index, term) = ready.persist_point().unwrap();
    follower.persisted(index, term);
    assert_eq!(
        follower.ready().reads,
        vec![ReadState {
            context: 7,
            index: LogIndex(5)
        }]
    );
}

#[test]
fn a_full_window_of_lost_appends_does_not_stall_replication() {
    let mut config = config(1, 3);
    config.inflight_messages_max = 2;
    let mut leader = Raft::new(config, DurableState::default(), 1).unwrap();
    leader.campaign_now();
    for peer in [2, 3] {
        leader.step(message(
            peer,
            1,
            1,
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            },
        ));
    }
    let ready = leader.ready();
    let (index, term) = ready.persist_point().unwrap();
    leader.persisted(index, term);
    leader.step(append_response(2, 1, 1, 1));
    leader.step(append_response(3, 1, 1, 1));
    leader.ready();
    // Node 3 is down: two appends to it are lost and fill its window.
    for command in 0..4u8 {
        leader.propose(vec![command]).unwrap();
        leader.ready();
    }
    let appends_to_3 = |ready: &Ready| {
        ready
            .messages
            .iter()
            .filter(|message| {
                message.to == NodeId(3) && matches!(message.body, MessageBody::AppendRequest { .. })
            })
            .count()
    };
    leader.propose(vec![9]).unwrap();
    assert_eq!(
        appends_to_3(&leader.ready()),
        0,
        "the window to node 3 is full"
    );
    // Node 3 is back and answers a heartbeat: an append must go out.
    leader.step(message(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    assert!(
        appends_to_3(&leader.ready()) > 0,
        "a heartbeat answer reopens a full window"
    );
}

/// The reasons `raft` reported since the last call, as sentences.
fn reported(raft: &mut Raft) -> Vec<String> {
    raft.take_implausible()
        .iter()
        .map(|report| report.to_string())
        .collect()
}

/// Node 2 of 3 at term 2, holding entries of terms 1 and 2, following node
/// 1 (it heard a heartbeat), with nothing pending.
fn follower_of_node_1() -> Raft {
    let mut follower = node_with_log(2, 3, 2, &[1, 2]);
    let heartbeat = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(1),
        read_round: 1,
    };
    follower.step(message(1, 2, 2, heartbeat));
    assert_eq!(follower.leader(), Some(NodeId(1)));
    follower.ready();
    follower
}

/// Leader stickiness holds with check-quorum off too (dissertation
/// 4.2.3): a node removed from the membership that never learnt it
/// campaigns in ever higher terms, and a follower still hearing from its
/// leader must not help it depose that leader. Once an election timeout
/// passes without the leader, the follower votes again.
#[test]
fn a_follower_of_a_live_leader_ignores_campaigns_whatever_check_quorum_says() {
    let mut follower = follower_of_node_1();
    assert!(!follower.config().check_quorum);
    follower.step(vote_request(3, 2, 3, 2, 2));
    let ready = follower.ready();
    assert_eq!(ready.hard_state, None, "the campaign is ignored");
    assert_eq!(granted(&ready.messages_after_persist), None);
    assert_eq!(
        (follower.term(), follower.leader()),
        (Term(2), Some(NodeId(1)))
    );

    for _ in 0..follower.config().election_ticks_min {
        follower.tick();
    }
    follower.ready();
    follower.step(vote_request(3, 2, 4, 2, 2));
    assert_eq!(
        granted(&follower.ready().messages_after_persist),
        Some(true)
    );
}

#[test]
fn a_forwarded_read_whose_answer_never_comes_is_dropped_after_an_election_timeout() {
    let mut follower = follower_of_node_1();
    follower.read_index(5).unwrap();
    assert!(follower.ready().messages.contains(&message(
        2,
        1,
        2,
        MessageBody::ReadIndexRequest { context: 5 }
    )));
    // The leader stays (its heartbeats keep coming), but its answer is lost.
    let heartbeat = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(1),
        read_round: 2,
    };
    let ticks_max = follower.config.election_ticks_max;
    for tick in 1..=ticks_max {
        follower.tick();
        follower.step(message(1, 2, 2, heartbeat.clone()));
        let ready = follower.ready();
        if tick < ticks_max {
            assert!(ready.reads_dropped.is_empty(), "dropped at tick {tick}");
        } else {
            assert_eq!(ready.reads_dropped, vec![5]);
        }
    }
    assert_eq!(follower.leader(), Some(NodeId(1)));
    assert!(follower.reads.is_empty());
}

#[test]
fn probe_1_an_entry_above_the_message_term_is_refused_and_changes_nothing() {
    let mut follower = follower_of_node_1();
    let status = follower.status();
    follower.step(append(1, 2, 2, (2, 2), &[(3, 8)], 3));
    assert_eq!(
        follower.status(),
        status,
        "the refused append changed the node"
    );
    assert!(
        !follower.has_ready(),
        "the refused append must not be answered"
    );
    let reports = reported(&mut follower);
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].contains("entry at index 3 has term 8, above the message's term 2"),
        "{reports:?}"
    );
    assert_eq!(follower.implausible_total(), 1);
}

#[test]
fn probe_2_a_leader_ignores_an_acknowledgement_beyond_its_log_and_reports_the_peer() {
    let mut leader = leader(3);
    let status = leader.status();
    leader.step(append_response(2, 1, 1, 2));
    assert_eq!(leader.role(), Role::Leader, "the leader keeps running");
    assert_eq!(leader.status(), status, "neither commit nor progress moved");
    let reports = leader.take_implausible();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].from, NodeId(2));
    assert_eq!(
        reports[0].reason,
        ImplausibleReason::AcknowledgedBeyondLog {
            index: LogIndex(2),
            last_index: LogIndex(1)
        }
    );
}

#[test]
fn a_follower_ignores_a_second_leader_in_its_term() {
    let mut follower = follower_of_node_1();
    let status = follower.status();
    follower.step(append(3, 2, 2, (2, 2), &[(3, 2)], 3));
    let heartbeat = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(2),
        read_round: 1,
    };
    follower.step(message(3, 2, 2, heartbeat));
    assert_eq!(follower.status(), status);
    assert!(!follower.has_ready());
    let reports = reported(&mut follower);
    assert_eq!(reports.len(), 2);
    assert!(reports[0].contains("whose leader is node 1"), "{reports:?}");
}

#[test]
fn a_leader_ignores_messages_only_another_leader_of_its_term_could_send() {
    let mut leader = leader(3);
    let status = leader.status();
    leader.step(append(2, 1, 1, (1, 1), &[], 1));
    leader.step(message(2, 1, 1, MessageBody::TimeoutNow));
    assert_eq!(leader.status(), status);
    assert_eq!(leader.take_implausible().len(), 2);
}

#[test]
fn a_follower_campaigns_on_timeout_now_only_from_its_leader() {
    let mut follower = follower_of_node_1();
    follower.step(message(3, 2, 2, MessageBody::TimeoutNow));
    assert_eq!(follower.role(), Role::Follower);
    assert!(reported(&mut follower)[0].contains("only the term's leader, node 1"));
    follower.step(message(1, 2, 2, MessageBody::TimeoutNow));
    assert_eq!(follower.role(), Role::Candidate);
}

#[test]
fn a_leader_ignores_acknowledgements_of_heartbeat_rounds_it_never_sent() {
    let mut leader = leader(3);
    leader.read_index(5).unwrap();
    leader.ready();
    let sent = leader.read_round;
    let future = MessageBody::HeartbeatResponse {
        read_round: sent + 1,
    };
    leader.step(message(2, 1, 1, future));
    assert!(
        leader.ready().reads.is_empty(),
        "a forged round must not confirm a read"
    );
    assert!(reported(&mut leader)[0].contains(&format!("only up to {sent}")));
}

/// Simulator seed 664 (5 nodes, swarm): a follower whose log ends below the
/// leader's snapshot, with an entry of an older term there, answered every
/// probe with the same hint; the leader walked back only to its snapshot
/// index and probed there forever instead of sending the snapshot.
#[test]
fn a_follower_behind_the_leaders_snapshot_is_sent_the_snapshot() {
    let durable = DurableState {
        membership: Default::default(),
        hard_state: HardState {
            term: Term(5),
            voted_for: None,
        },
        snapshot: SnapshotMeta {
            index: LogIndex(10),
            term: Term(5),
        },
        entries: vec![Entry {
            term: Term(5),
            index: LogIndex(11),
            payload: EntryPayload::Command(vec![]),
        }],
        applied: LogIndex(10),
    };
    let mut leader = Raft::new(config(1, 3), durable, 1).unwrap();
    leader.campaign_now();
    let granted = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    };
    leader.step(message(2, 1, 6, granted));
    assert_eq!(leader.role(), Role::Leader);
    leader.ready();
    // Node 2's log ends at 9, in term 2: below the leader's snapshot.
    let rejection = |index: u64| MessageBody::AppendResponse {
        index: LogIndex(index),
        rejected: true,
        reject_hint_index: LogIndex(9),
        reject_hint_term: Term(2),
    };
    leader.step(message(2, 1, 6, rejection(11)));
    let sent: Vec<_> = leader
        .ready()
        .messages
        .into_iter()
        .filter(|message| message.to == NodeId(2))
        .map(|message| message.body)
        .collect();
    assert!(
        matches!(
            sent.as_slice(),
            [MessageBody::InstallSnapshot { snapshot }] if snapshot.meta.index == LogIndex(10)
        ),
        "{sent:?}"
    );
}

/// Simulator seeds 3083, 4040 and 7590 (5 nodes, swarm, pre-vote off):
/// every node restarted its election timer when a higher-term vote
/// request arrived, even one it refused, so their next timeouts lined up
/// and split vote followed split vote, with no leader for the whole
/// liveness bound. Only a granted vote or a leader restarts the timer.
#[test]
fn a_refused_vote_request_does_not_restart_the_election_timer() {
    let config = config(1, 3);
    let (min, max) = (config.election_ticks_min, config.election_ticks_max);
    let mut refusing = node_with_log(1, 3, 1, &[1, 1]);
    let mut granting = node_with_log(1, 3, 1, &[1, 1]);
    let waited = max - min + 1;
    for _ in 0..waited {
        refusing.tick();
        granting.tick();
    }
    refusing.step(vote_request(2, 1, 2, 1, 1));
    assert_eq!(
        granted(&refusing.ready().messages_after_persist),
        Some(false)
    );
    granting.step(vote_request(2, 1, 2, 2, 1));
    assert_eq!(
        granted(&granting.ready().messages_after_persist),
        Some(true)
    );
    for _ in waited..max {
        refusing.tick();
        granting.tick();
    }
    assert_eq!(
        refusing.role(),
        Role::Candidate,
        "the timer kept running across the refused request"
    );
    assert_eq!(refusing.term(), Term(3));
    assert_eq!(
        granting.role(),
        Role::Follower,
        "a granted vote restarts the timer"
    );
}

#[test]
fn a_leader_ignores_rejections_of_appends_it_never_sent() {
    let mut leader = leader(3);
    let status = leader.status();
    let body = MessageBody::AppendResponse {
        index: LogIndex(7),
        rejected: true,
        reject_hint_index: LogIndex(3),
        reject_hint_term: Term(1),
    };
    leader.step(message(2, 1, 1, body));
    assert_eq!(leader.status(), status);
    assert!(reported(&mut leader)[0].contains("after index 7"));
}

#[test]
fn a_read_answer_from_a_node_other_than_the_leader_is_ignored() {
    let mut follower = follower_of_node_1();
    follower.read_index(4).unwrap();
    follower.ready();
    let answer = MessageBody::ReadIndexResponse {
        context: 4,
        index: LogIndex(1),
        refused: false,
    };
    follower.step(message(3, 2, 2, answer.clone()));
    follower.applied(LogIndex(0));
    assert!(follower.ready().reads.is_empty());
    assert!(reported(&mut follower)[0].contains("answers read 4"));
    // An answer for a read this node no longer tracks (it restarted, or
    // its leader changed) is honest and ignored without a report.
    let unknown = MessageBody::ReadIndexResponse {
        context: 99,
        index: LogIndex(1),
        refused: false,
    };
    follower.step(message(3, 2, 2, unknown));
    assert!(reported(&mut follower).is_empty());
}

#[test]
fn messages_for_other_nodes_are_reported_and_dropped() {
    let mut follower = node(2, 3);
    follower.step(append(1, 3, 1, (0, 0), &[], 0));
    assert_eq!(follower.term(), Term(0));
    let reports = reported(&mut follower);
    assert!(reports[0].contains("addressed to node 3"), "{reports:?}");
}

#[test]
fn a_leader_this_node_does_not_know_yet_is_followed() {
    // Node 2's log lags behind the membership that added node 4, which now
    // leads: node 2 must follow it to learn of the change at all.
    let mut follower = node(2, 3);
    follower.step(append(4, 2, 1, (0, 0), &[(1, 1)], 0));
    assert_eq!(follower.leader(), Some(NodeId(4)));
    assert_eq!(follower.log().last_index(), LogIndex(1));
    assert!(reported(&mut follower).is_empty());
}

#[test]
fn reports_beyond_the_bound_are_counted_but_not_kept() {
    let mut config = config(2, 3);
    config.implausible_reports_max = 2;
    let mut follower = Raft::new(config, DurableState::default(), 2).unwrap();
    for _ in 0..5 {
        follower.step(append(1, 2, 1, (0, 1), &[], 0));
    }
    assert_eq!(follower.take_implausible().len(), 2);
    assert_eq!(follower.implausible_total(), 5);
    follower.step(append(1, 2, 1, (0, 1), &[], 0));
    assert_eq!(follower.take_implausible().len(), 1, "taking frees room");
}

#[test]
fn a_new_leader_appends_its_blank_entry_even_beyond_the_uncommitted_limit() {
    // Node 1 followed a leader far ahead of the commit index it heard of:
    // it holds more uncommitted entries than it would accept as proposals.
    let mut config = config(1, 3);
    config.uncommitted_entries_max = 2;
    config.check_quorum = false;
    let entries = (1..=5)
        .map(|index| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Blank,
        })
        .collect();
    let durable = DurableState {
        hard_state: HardState {
            term: Term(1),
            voted_for: None,
        },
        entries,
        ..DurableState::default()
    };
    let mut candidate = Raft::new(config, durable, 1).unwrap();
    candidate.campaign_now();
    let grant = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    };
    candidate.step(message(2, 1, 2, grant));
    assert_eq!(candidate.role(), Role::Leader);
    assert_eq!(candidate.log().last_index(), LogIndex(6));
    assert_eq!(
        candidate.propose(vec![1]),
        Err(ProposeError::Backpressure),
        "client proposals still meet the limit"
    );
}

#[test]
fn forwarded_reads_beyond_the_pending_limit_are_refused() {
    let mut config = config(1, 3);
    config.pending_reads_max = 2;
    let mut leader = leader(3);
    leader.config = config;
    for context in 0..3 {
        leader.step(message(2, 1, 1, MessageBody::ReadIndexRequest { context }));
    }
    let refusals: Vec<u64> = leader
        .ready()
        .messages
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::ReadIndexResponse {
                context,
                refused: true,
                ..
            } => Some(context),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![2]);
}
