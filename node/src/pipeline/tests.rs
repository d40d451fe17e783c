//! One test per obligation of the pipeline's driver (see the module
//! documentation), plus the answers clients get.

use std::time::Duration;

use super::*;
use crate::core::{Config, DurableState, EntryPayload, LogIndex, NodeId, Role, Term};

const TICK: Duration = Duration::from_millis(10);

fn at_ticks(ticks: u64) -> Instant {
    Instant(TICK * ticks as u32)
}

/// The tests' pipeline settings; a snapshot every 1,000 entries.
fn config(read_context_first: u64) -> PipelineConfig {
    PipelineConfig {
        tick: TICK,
        transfer_timeout: TICK * 40,
        read_context_first,
        storage_stall_timeout: TICK * 20,
        compaction_entries: 1_000,
        write_entries_max: WRITE_ENTRIES_MAX_DEFAULT,
        apply_ahead: false,
        follower_apply_wait: Duration::ZERO,
        transfer: crate::pipeline::TransferConfig {
            chunk_bytes: 1 << 10,
            chunks_in_flight: 4,
            resend_after: TICK * 20,
            view_ttl: TICK * 600,
        },
        staged: None,
    }
}

fn single_node() -> Pipeline {
    let raft = Raft::new(
        Config::new(NodeId(1), vec![NodeId(1)]),
        DurableState::default(),
        7,
    )
    .expect("a valid configuration");
    let config = config(1 << 40);
    Pipeline::new(raft, config, Instant::default())
}

/// Carries out every write at once (applying the batch one carries with
/// empty responses) and returns the other outputs.
fn complete_writes(pipeline: &mut Pipeline, now: Instant) -> Vec<Output> {
    let mut others = Vec::new();
    loop {
        let outputs = pipeline.take_outputs();
        if outputs.is_empty() {
            return others;
        }
        for output in outputs {
            match output {
                Output::Write(job) => {
                    let applied = job
                        .apply
                        .as_ref()
                        .map(|batch| apply_all(&batch.entries, b""));
                    pipeline.handle(now, Input::WriteDone(WriteDone::of(job, applied)));
                }
                other => others.push(other),
            }
        }
    }
}

/// A single-node leader with its blank entry durable and applied.
fn leader() -> (Pipeline, Instant) {
    let mut pipeline = single_node();
    let now = at_ticks(30);
    pipeline.advance(now);
    let outputs = complete_writes(&mut pipeline, now);
    assert_eq!(pipeline.raft().role(), Role::Leader, "{outputs:?}");
    for output in outputs {
        if let Output::Apply(batch) = output {
            let last = batch.entries.last().unwrap().index;
            pipeline.handle(now, Input::ApplyDone(apply_all(&batch.entries, b"")));
            assert_eq!(pipeline.raft().log().applied_index(), last);
        }
    }
    complete_writes(&mut pipeline, now);
    (pipeline, now)
}

fn apply_all(batch: &[crate::core::Entry], response: &[u8]) -> ApplyDone {
    ApplyDone {
        applied: batch.last().unwrap().index,
        outcomes: batch
            .iter()
            .map(|entry| {
                (
                    entry.index,
                    entry.term,
                    ApplyOutcome::Response(response.to_vec()),
                )
            })
            .collect(),
    }
}

fn writes(outputs: &[Output]) -> Vec<&WriteJob> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Write(job) => Some(job),
            _ => None,
        })
        .collect()
}

fn replies(outputs: &[Output]) -> Vec<(RequestId, Reply)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Reply { request, reply } => Some((*request, reply.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn obligation_1_elapsed_time_reaches_the_core_as_ticks_before_anything_else() {
    let mut pipeline = single_node();
    pipeline.advance(at_ticks(5));
    assert_eq!(
        pipeline.raft().role(),
        Role::Follower,
        "too early to campaign"
    );
    // One stalled turn that swallowed a whole election timeout: the ticks
    // are delivered before the proposal is looked at, so the node has
    // campaigned by then and the proposal is refused as "no leader" rather
    // than handled by a node that believes time stood still.
    pipeline.handle(
        at_ticks(30),
        Input::Propose {
            request: RequestId(1),
            command: b"x".to_vec(),
        },
    );
    let outputs = pipeline.take_outputs();
    assert!(
        outputs
            .iter()
            .any(|output| matches!(output, Output::RoleChanged { .. })),
        "{outputs:?}"
    );
    assert_ne!(pipeline.raft().term(), Term(0));
}

#[test]
fn obligation_2_one_write_at_a_time_and_later_work_is_merged() {
    let (mut pipeline, now) = leader();
    for request in 1..=3 {
        pipeline.handle(
            now,
            Input::Propose {
                request: RequestId(request),
                command: vec![request as u8],
            },
        );
    }
    let outputs = pipeline.take_outputs();
    let first = writes(&outputs);
    assert_eq!(first.len(), 1, "one write in flight: {outputs:?}");
    assert_eq!(first[0].entries.len(), 1);
    let first = first[0].clone();
    pipeline.handle(now, Input::WriteDone(WriteDone::of(first, None)));
    let outputs = pipeline.take_outputs();
    let second = writes(&outputs);
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].entries.len(),
        2,
        "the two later proposals share one write"
    );
}

/// A leader that committed proposal `request`, and the batch that
/// applies it (handed out, not yet reported).
fn committed_proposal(request: u64) -> (Pipeline, Instant, ApplyBatch) {
    let (mut pipeline, now) = leader();
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(request),
            command: b"put".to_vec(),
        },
    );
    let outputs = complete_writes(&mut pipeline, now);
    assert!(replies(&outputs).is_empty(), "no answer before the apply");
    let batch = outputs
        .into_iter()
        .find_map(|output| match output {
            Output::Apply(batch) => Some(batch),
            _ => None,
        })
        .expect("the committed proposal is applied");
    assert!(matches!(batch.entries[0].payload, EntryPayload::Command(_)));
    (pipeline, now, batch)
}

#[test]
fn obligation_3_a_proposal_is_answered_with_its_apply() {
    let (mut pipeline, now, batch) = committed_proposal(9);
    let index = batch.entries[0].index;
    pipeline.handle(now, Input::ApplyDone(apply_all(&batch.entries, b"done")));
    assert_eq!(
        replies(&pipeline.take_outputs()),
        vec![applied(9, index, b"done")]
    );
}

/// Request `request`'s answer: applied at `index` with `response`.
fn applied(request: u64, index: LogIndex, response: &[u8]) -> (RequestId, Reply) {
    let response = response.to_vec();
    (RequestId(request), Reply::Applied { index, response })
}

#[test]
fn obligation_3_outcomes_reported_before_the_commit_answer_at_once_and_once() {
    let (mut pipeline, now, batch) = committed_proposal(9);
    let index = batch.entries[0].index;
    let applied_before = pipeline.raft().log().applied_index();
    let done = apply_all(&batch.entries, b"early");
    pipeline.handle(now, Input::Outcomes(done.outcomes.clone()));
    assert_eq!(
        replies(&pipeline.take_outputs()),
        vec![applied(9, index, b"early")],
        "answered before the commit"
    );
    assert_eq!(
        pipeline.raft().log().applied_index(),
        applied_before,
        "the applied index waits for the commit"
    );
    // A retry after a lost commit outcome reports the entry as unknown:
    // the client has its answer already and gets no second one.
    let retried = ApplyDone {
        outcomes: vec![(index, batch.entries[0].term, ApplyOutcome::Unknown)],
        ..done
    };
    pipeline.handle(now, Input::ApplyDone(retried));
    assert!(replies(&pipeline.take_outputs()).is_empty());
    assert_eq!(pipeline.raft().log().applied_index(), index);
}

fn propose(pipeline: &mut Pipeline, now: Instant, request: u64) {
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(request),
            command: vec![request as u8],
        },
    );
}

fn the_write(outputs: &[Output]) -> WriteJob {
    match writes(outputs).as_slice() {
        [job] => (*job).clone(),
        other => panic!("expected one write, found {other:?}"),
    }
}

fn apply_batches(outputs: &[Output]) -> Vec<ApplyBatch> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Apply(batch) => Some(batch.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn committed_entries_ride_the_next_write_in_one_transaction() {
    let (mut pipeline, now) = leader();
    propose(&mut pipeline, now, 1);
    let first = the_write(&pipeline.take_outputs());
    assert_eq!(first.apply, None, "nothing was committed yet");
    // A second proposal while the first write is in flight waits for it.
    propose(&mut pipeline, now, 2);
    assert!(pipeline.take_outputs().is_empty());
    // The first write makes entry 1 durable, hence committed (one node):
    // the second write carries its apply, and no apply goes alone.
    pipeline.handle(now, Input::WriteDone(WriteDone::of(first.clone(), None)));
    let outputs = pipeline.take_outputs();
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
    let second = the_write(&outputs);
    let carried = second.apply.clone().expect("the write carries the apply");
    assert_eq!(carried.entries, first.entries);
    assert_eq!(second.entries.len(), 1);
    assert!(replies(&outputs).is_empty(), "no answer before the commit");
    let applied = apply_all(&carried.entries, b"one");
    pipeline.handle(now, Input::WriteDone(WriteDone::of(second, Some(applied))));
    let outputs = pipeline.take_outputs();
    assert_eq!(
        replies(&outputs),
        vec![(
            RequestId(1),
            Reply::Applied {
                index: first.entries[0].index,
                response: b"one".to_vec()
            }
        )],
        "answered as soon as its write committed"
    );
    // Nothing waits to be written now: entry 2 is applied alone.
    assert!(writes(&outputs).is_empty(), "{outputs:?}");
    let alone = apply_batches(&outputs);
    assert_eq!(alone.len(), 1, "{outputs:?}");
    assert_eq!(alone[0].entries.len(), 1);
}

#[test]
#[should_panic(expected = "exactly when it carried one")]
fn a_write_that_carried_an_apply_must_report_it() {
    let (mut pipeline, now) = leader();
    propose(&mut pipeline, now, 1);
    let first = the_write(&pipeline.take_outputs());
    propose(&mut pipeline, now, 2);
    pipeline.handle(now, Input::WriteDone(WriteDone::of(first, None)));
    let mut second = the_write(&pipeline.take_outputs());
    assert!(second.apply.is_some());
    second.apply = None;
    pipeline.handle(now, Input::WriteDone(WriteDone::of(second, None)));
}

#[test]
fn the_log_is_compacted_behind_the_applied_index() {
    let raft = Raft::new(
        Config::new(NodeId(1), vec![NodeId(1)]),
        DurableState::default(),
        7,
    )
    .unwrap();
    let config = PipelineConfig {
        compaction_entries: 3,
        write_entries_max: WRITE_ENTRIES_MAX_DEFAULT,
        apply_ahead: false,
        ..config(1)
    };
    let mut pipeline = Pipeline::new(raft, config, Instant::default());
    let mut now = at_ticks(30);
    pipeline.advance(now);
    let mut starts = Vec::new();
    for request in 1..=9 {
        propose(&mut pipeline, now, request);
        for output in complete_writes(&mut pipeline, now) {
            if let Output::Apply(batch) = output {
                pipeline.handle(now, Input::ApplyDone(apply_all(&batch.entries, b"")));
                complete_writes(&mut pipeline, now);
            }
        }
        let log = pipeline.raft().log();
        let start = log.snapshot().index;
        if start > LogIndex(0) {
            // At least `compaction_entries` stay for followers that lag.
            assert!(log.applied_index().0 >= start.0 + 3, "{start} {log:?}");
        }
        if starts.last() != Some(&start) {
            starts.push(start);
        }
        now = now.after(TICK);
    }
    assert!(starts.len() >= 3, "compacted more than once: {starts:?}");
}

#[test]
fn a_proposal_whose_index_another_leader_filled_is_refused() {
    let (mut pipeline, now) = leader();
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(4),
            command: b"mine".to_vec(),
        },
    );
    let outputs = complete_writes(&mut pipeline, now);
    let batch = outputs
        .into_iter()
        .find_map(|output| match output {
            Output::Apply(batch) => Some(batch),
            _ => None,
        })
        .unwrap();
    let mut done = apply_all(&batch.entries, b"theirs");
    done.outcomes[0].1 = Term(99);
    pipeline.handle(now, Input::ApplyDone(done));
    let answered = replies(&pipeline.take_outputs());
    assert!(
        matches!(
            answered.as_slice(),
            [(RequestId(4), Reply::Refused(Refusal::Unavailable(_)))]
        ),
        "{answered:?}"
    );
}

#[test]
fn a_linearizable_read_is_answered_at_the_applied_index() {
    let (mut pipeline, now) = leader();
    pipeline.handle(
        now,
        Input::Read {
            request: RequestId(2),
            mode: ReadMode::Linearizable,
        },
    );
    let answered = replies(&complete_writes(&mut pipeline, now));
    assert!(
        matches!(
            answered.as_slice(),
            [(RequestId(2), Reply::ReadReady { index })] if *index == pipeline.raft().log().applied_index()
        ),
        "{answered:?}"
    );
}

/// A proposal waiting at shutdown may still commit through the next
/// leader: its client is told the outcome is unknown, never "not applied".
#[test]
fn obligation_6_shutdown_answers_every_waiting_request() {
    let (mut pipeline, now) = leader();
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(1),
            command: b"x".to_vec(),
        },
    );
    pipeline.take_outputs();
    pipeline.fail_all("stopping");
    let answered = replies(&pipeline.take_outputs());
    assert!(
        matches!(
            answered.as_slice(),
            [(RequestId(1), Reply::Refused(Refusal::OutcomeUnknown(_)))]
        ),
        "{answered:?}"
    );
}

#[test]
fn a_transfer_asked_of_a_node_without_a_leader_is_refused() {
    let mut cluster_node = {
        let raft = Raft::new(
            Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]),
            DurableState::default(),
            3,
        )
        .unwrap();
        let config = config(1);
        Pipeline::new(raft, config, Instant::default())
    };
    cluster_node.handle(
        at_ticks(1),
        Input::Transfer {
            request: RequestId(5),
            target: NodeId(2),
        },
    );
    let answered = replies(&cluster_node.take_outputs());
    assert!(
        matches!(
            answered.as_slice(),
            [(
                RequestId(5),
                Reply::Refused(Refusal::NotLeader { leader: None })
            )]
        ),
        "a follower without a leader refuses: {answered:?}"
    );
}

#[test]
fn a_lease_read_is_answered_once_its_index_is_applied() {
    let (mut pipeline, now) = leader();
    assert!(pipeline.raft().log().applied_index() > LogIndex(0));
    pipeline.handle(
        now,
        Input::Read {
            request: RequestId(11),
            mode: ReadMode::Lease,
        },
    );
    let answered = replies(&complete_writes(&mut pipeline, now));
    assert!(
        matches!(
            answered.as_slice(),
            [(RequestId(11), Reply::ReadReady { index })] if *index <= pipeline.raft().log().applied_index()
        ),
        "{answered:?}"
    );
}

fn message_from(from: u64, term: Term, body: crate::core::MessageBody) -> Input {
    Input::Peer(crate::core::Message {
        from: NodeId(from),
        to: NodeId(1),
        term,
        body,
    })
}

/// Node 1 of three, elected by node 2's votes, with its blank entry
/// acknowledged by both followers.
fn three_node_leader() -> (Pipeline, Instant) {
    three_node_leader_with(config(1))
}

/// [`three_node_leader`] with `config`.
fn three_node_leader_with(config: PipelineConfig) -> (Pipeline, Instant) {
    use crate::core::MessageBody;
    let mut core_config = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    // The test's followers answer no heartbeats; the leader must not step
    // down for that while its storage stalls.
    core_config.check_quorum = false;
    let raft = Raft::new(core_config, DurableState::default(), 11).unwrap();
    let mut pipeline = Pipeline::new(raft, config, Instant::default());
    let now = at_ticks(30);
    pipeline.advance(now);
    // Carries out the writes and applies every batch, whether handed out
    // committed or ahead (a batch ahead once confirmed).
    let mut ahead = None;
    let mut settle = |pipeline: &mut Pipeline| {
        for output in complete_writes(pipeline, now) {
            let batch = match output {
                Output::Apply(batch) => batch,
                Output::ApplyAhead(batch) => {
                    ahead = Some(batch);
                    continue;
                }
                Output::ConfirmApply => ahead.take().expect("confirmed after handed out"),
                _ => continue,
            };
            pipeline.handle(now, Input::ApplyDone(apply_all(&batch.entries, b"")));
        }
    };
    settle(&mut pipeline);
    let campaign_term = Term(1);
    let grant = |pre_vote| MessageBody::VoteResponse {
        pre_vote,
        granted: true,
    };
    pipeline.handle(now, message_from(2, campaign_term, grant(true)));
    settle(&mut pipeline);
    pipeline.handle(now, message_from(2, campaign_term, grant(false)));
    settle(&mut pipeline);
    assert_eq!(pipeline.raft().role(), Role::Leader);
    let last = pipeline.raft().log().last_index();
    for follower in [2, 3] {
        pipeline.handle(
            now,
            message_from(
                follower,
                campaign_term,
                MessageBody::AppendResponse {
                    index: last,
                    rejected: false,
                    reject_hint_index: LogIndex(0),
                    reject_hint_term: Term(0),
                },
            ),
        );
    }
    // The blank entry is committed: apply it, so that nothing is left in
    // flight.
    settle(&mut pipeline);
    settle(&mut pipeline);
    assert!(ahead.is_none(), "the blank entry is applied");
    assert_eq!(
        pipeline.raft().log().applied_index(),
        pipeline.raft().log().last_index()
    );
    (pipeline, now)
}

/// A three-node leader that applies ahead (obligation 3a).
fn leader_applying_ahead() -> (Pipeline, Instant) {
    three_node_leader_with(PipelineConfig {
        apply_ahead: true,
        ..config(1)
    })
}

fn batches_ahead(outputs: &[Output]) -> Vec<ApplyBatch> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::ApplyAhead(batch) => Some(batch.clone()),
            _ => None,
        })
        .collect()
}

fn count(outputs: &[Output], wanted: &Output) -> usize {
    outputs.iter().filter(|output| *output == wanted).count()
}

/// Follower `follower` answers that it holds the leader's log up to
/// `index`.
fn follower_holds(pipeline: &mut Pipeline, now: Instant, follower: u64, index: LogIndex) {
    let term = pipeline.raft().term();
    let answer = crate::core::MessageBody::AppendResponse {
        index,
        rejected: false,
        reject_hint_index: LogIndex(0),
        reject_hint_term: Term(0),
    };
    pipeline.handle(now, message_from(follower, term, answer));
}

#[test]
fn obligation_3a_a_leader_applies_ahead_and_commits_once_confirmed() {
    let (mut pipeline, now) = leader_applying_ahead();
    let applied_before = pipeline.raft().log().applied_index();
    propose(&mut pipeline, now, 7);
    let outputs = complete_writes(&mut pipeline, now);
    let ahead = batches_ahead(&outputs);
    let [batch] = ahead.as_slice() else {
        panic!("one batch ahead of its commit: {outputs:?}");
    };
    let entry = batch.entries[0].clone();
    assert_eq!(batch.entries, vec![entry.clone()]);
    assert!(matches!(entry.payload, EntryPayload::Command(_)));
    assert!(apply_batches(&outputs).is_empty());
    assert_eq!(
        count(&outputs, &Output::ConfirmApply),
        0,
        "not committed yet"
    );
    assert_eq!(pipeline.raft().log().commit_index(), applied_before);

    // Waiting for the followers is not a stalled storage.
    let later = Instant(now.0 + TICK * 30);
    pipeline.advance(later);
    let outputs = pipeline.take_outputs();
    assert!(
        !outputs
            .iter()
            .any(|output| matches!(output, Output::HandingOff { .. })),
        "{outputs:?}"
    );

    follower_holds(&mut pipeline, later, 2, entry.index);
    let outputs = complete_writes(&mut pipeline, later);
    assert_eq!(count(&outputs, &Output::ConfirmApply), 1, "{outputs:?}");
    assert!(replies(&outputs).is_empty(), "answered with the outcomes");
    assert!(apply_batches(&outputs).is_empty() && batches_ahead(&outputs).is_empty());
    let done = apply_all(&batch.entries, b"ahead");
    pipeline.handle(later, Input::Outcomes(done.outcomes.clone()));
    assert_eq!(
        replies(&pipeline.take_outputs()),
        vec![applied(7, entry.index, b"ahead")]
    );
    pipeline.handle(
        later,
        Input::ApplyDone(ApplyDone {
            outcomes: Vec::new(),
            ..done
        }),
    );
    assert_eq!(pipeline.raft().log().applied_index(), entry.index);
}

/// The compaction's check of the stored applied index waits for the lock an
/// apply ahead holds until its confirmation, which waits for the write: a
/// leader does not apply ahead while its write in flight compacts.
#[test]
fn obligation_3a_no_apply_ahead_while_the_write_in_flight_compacts() {
    let (mut pipeline, now) = three_node_leader_with(PipelineConfig {
        apply_ahead: true,
        compaction_entries: 1,
        ..config(1)
    });
    let write_of = |outputs: &[Output]| the_write(outputs);
    // A goes ahead and is confirmed; B's write starts meanwhile.
    propose(&mut pipeline, now, 1);
    let outputs = pipeline.take_outputs();
    let write_a = write_of(&outputs);
    let a = batches_ahead(&outputs).remove(0);
    pipeline.handle(now, Input::WriteDone(WriteDone::of(write_a, None)));
    follower_holds(&mut pipeline, now, 2, a.entries[0].index);
    let outputs = pipeline.take_outputs();
    assert_eq!(count(&outputs, &Output::ConfirmApply), 1, "{outputs:?}");
    propose(&mut pipeline, now, 2);
    let write_b = write_of(&pipeline.take_outputs());
    // A's apply makes a compaction due: queued behind B's write, and C
    // merges into it.
    pipeline.handle(now, Input::ApplyDone(apply_all(&a.entries, b"")));
    propose(&mut pipeline, now, 3);
    assert!(batches_ahead(&pipeline.take_outputs()).is_empty());
    pipeline.handle(now, Input::WriteDone(WriteDone::of(write_b, None)));
    let outputs = pipeline.take_outputs();
    let compacting = write_of(&outputs);
    assert!(compacting.compact_to.is_some(), "{compacting:?}");
    assert_eq!(compacting.entries.len(), 1, "C rides the compaction");
    assert!(
        batches_ahead(&outputs).is_empty(),
        "applied ahead while the write in flight compacts: {outputs:?}"
    );
    // Once it is done, B and C go ahead.
    pipeline.handle(now, Input::WriteDone(WriteDone::of(compacting, None)));
    let ahead = batches_ahead(&pipeline.take_outputs());
    assert_eq!(ahead.len(), 1);
    assert_eq!(ahead[0].entries.len(), 2);
}

/// A leader's batch ahead whose first entry committed before leadership
/// was lost: abandoned, and that entry applied again after, in a batch of
/// its own; the rest never.
#[test]
fn obligation_3a_an_apply_ahead_is_abandoned_when_leadership_is_lost() {
    let (mut pipeline, now) = leader_applying_ahead();
    // One entry ahead, confirmed and applied; two more proposed meanwhile
    // go ahead together next.
    propose(&mut pipeline, now, 1);
    let first = batches_ahead(&complete_writes(&mut pipeline, now)).remove(0);
    propose(&mut pipeline, now, 2);
    propose(&mut pipeline, now, 3);
    assert!(batches_ahead(&complete_writes(&mut pipeline, now)).is_empty());
    follower_holds(&mut pipeline, now, 2, first.entries[0].index);
    let outputs = complete_writes(&mut pipeline, now);
    assert_eq!(count(&outputs, &Output::ConfirmApply), 1);
    pipeline.handle(now, Input::ApplyDone(apply_all(&first.entries, b"")));
    let ahead = batches_ahead(&complete_writes(&mut pipeline, now));
    let [batch] = ahead.as_slice() else {
        panic!("the next batch goes ahead: {ahead:?}");
    };
    assert_eq!(batch.entries.len(), 2);
    let (second, third) = (batch.entries[0].clone(), batch.entries[1].clone());

    // The second commits; the third does not before a new term begins.
    follower_holds(&mut pipeline, now, 2, second.index);
    let outputs = complete_writes(&mut pipeline, now);
    assert_eq!(count(&outputs, &Output::ConfirmApply), 0, "{outputs:?}");
    assert!(apply_batches(&outputs).is_empty());
    let term = Term(pipeline.raft().term().0 + 1);
    pipeline.handle(
        now,
        message_from(
            2,
            term,
            crate::core::MessageBody::VoteRequest {
                pre_vote: false,
                last_log_index: second.index,
                last_log_term: second.term,
                leadership_transfer: true,
            },
        ),
    );
    let outputs = complete_writes(&mut pipeline, now);
    assert_ne!(pipeline.raft().role(), Role::Leader);
    assert_eq!(count(&outputs, &Output::AbandonApply), 1, "{outputs:?}");
    assert!(
        apply_batches(&outputs).is_empty(),
        "nothing before the rollback"
    );

    pipeline.handle(now, Input::ApplyAbandoned);
    let outputs = complete_writes(&mut pipeline, now);
    let applied = apply_batches(&outputs);
    assert_eq!(applied.len(), 1, "{outputs:?}");
    assert_eq!(
        applied[0].entries,
        vec![second],
        "the committed entry, not {third:?}"
    );
}

/// Follower `follower` answers that it holds the leader's last entry.
fn follower_holds_the_last_entry(pipeline: &mut Pipeline, now: Instant, follower: u64) {
    let last = pipeline.raft().log().last_index();
    let term = pipeline.raft().term();
    let answer = crate::core::MessageBody::AppendResponse {
        index: last,
        rejected: false,
        reject_hint_index: LogIndex(0),
        reject_hint_term: Term(0),
    };
    pipeline.handle(now, message_from(follower, term, answer));
}

#[test]
fn a_leader_whose_write_stalls_hands_leadership_to_an_up_to_date_follower() {
    use crate::core::MessageBody;
    let (mut pipeline, now) = three_node_leader();
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(1),
            command: b"x".to_vec(),
        },
    );
    let outputs = pipeline.take_outputs();
    assert_eq!(writes(&outputs).len(), 1, "the write starts and never ends");
    follower_holds_the_last_entry(&mut pipeline, now, 2);
    pipeline.take_outputs();

    let later = Instant(now.0 + TICK * 10);
    pipeline.advance(later);
    assert!(
        !pipeline
            .take_outputs()
            .iter()
            .any(|output| matches!(output, Output::HandingOff { .. })),
        "half a stall timeout is not a stall"
    );
    let stalled = Instant(now.0 + TICK * 21);
    pipeline.handle(
        stalled,
        Input::Read {
            request: RequestId(2),
            mode: ReadMode::Linearizable,
        },
    );
    let outputs = pipeline.take_outputs();
    assert!(
        outputs.iter().any(
            |output| matches!(output, Output::HandingOff { target, .. } if *target == NodeId(2))
        ),
        "{outputs:?}"
    );
    assert!(
        outputs.iter().any(|output| matches!(
            output,
            Output::Send(message) if message.to == NodeId(2) && message.body == MessageBody::TimeoutNow
        )),
        "the caught-up follower is told to campaign: {outputs:?}"
    );
    assert!(
        matches!(
            replies(&outputs).as_slice(),
            [(RequestId(2), Reply::Refused(Refusal::Unavailable(_)))]
        ),
        "reads on a node whose storage stalled are refused at once: {outputs:?}"
    );
}

/// The nemesis suite's leader whose Postgres crashed while only an apply
/// was in flight: its clients all waited for that apply, so it wrote
/// nothing new, and it kept leading until Postgres came back (3.2 s).
#[test]
fn a_leader_whose_apply_stalls_hands_leadership_to_an_up_to_date_follower() {
    let (mut pipeline, now) = three_node_leader();
    pipeline.handle(
        now,
        Input::Propose {
            request: RequestId(1),
            command: b"x".to_vec(),
        },
    );
    // The append is durable here; the follower's answer commits it.
    let others = complete_writes(&mut pipeline, now);
    assert!(apply_batches(&others).is_empty());
    follower_holds_the_last_entry(&mut pipeline, now, 2);
    let outputs = pipeline.take_outputs();
    assert_eq!(
        apply_batches(&outputs).len(),
        1,
        "the apply starts and never ends: {outputs:?}"
    );
    assert!(writes(&outputs).is_empty(), "nothing else is written");
    pipeline.advance(Instant(now.0 + TICK * 10));
    assert!(
        !pipeline
            .take_outputs()
            .iter()
            .any(|output| matches!(output, Output::HandingOff { .. })),
        "half a stall timeout is not a stall"
    );
    pipeline.advance(Instant(now.0 + TICK * 21));
    let outputs = pipeline.take_outputs();
    assert!(
        outputs.iter().any(
            |output| matches!(output, Output::HandingOff { target, .. } if *target == NodeId(2))
        ),
        "{outputs:?}"
    );
    pipeline.handle(
        Instant(now.0 + TICK * 21),
        Input::Propose {
            request: RequestId(2),
            command: b"y".to_vec(),
        },
    );
    assert!(
        matches!(
            replies(&pipeline.take_outputs()).as_slice(),
            [(RequestId(2), Reply::Refused(Refusal::Unavailable(_)))]
        ),
        "proposals to a node whose apply stalled are refused at once"
    );
}

#[test]
fn a_state_machine_behind_with_no_batch_coming_gets_the_last_entry_again() {
    let (mut pipeline, now) = leader();
    let applied = pipeline.raft().log().applied_index();
    assert_eq!(applied, LogIndex(1));
    // Not behind, or behind with a batch coming: nothing to do.
    pipeline.handle(
        now,
        Input::StateMachineBehind {
            stored_applied: applied,
        },
    );
    assert!(pipeline.take_outputs().is_empty());
    // Behind on an idle node: the applier is handed the last applied
    // entry, so it replays what it lost up to it.
    pipeline.handle(
        now,
        Input::StateMachineBehind {
            stored_applied: LogIndex(0),
        },
    );
    let outputs = pipeline.take_outputs();
    let batch = outputs
        .iter()
        .find_map(|output| match output {
            Output::Apply(batch) => Some(batch.clone()),
            _ => None,
        })
        .expect("an apply batch");
    assert_eq!(
        batch
            .entries
            .iter()
            .map(|entry| entry.index)
            .collect::<Vec<_>>(),
        vec![applied]
    );
    // One batch at a time: a second report while it is in flight waits.
    pipeline.handle(
        now,
        Input::StateMachineBehind {
            stored_applied: LogIndex(0),
        },
    );
    assert!(pipeline.take_outputs().is_empty());
    pipeline.handle(now, Input::ApplyDone(apply_all(&batch.entries, b"")));
    assert_eq!(pipeline.raft().log().applied_index(), applied);
}

/// A follower's core counts a snapshot applied as soon as it takes it; the
/// install transaction (rows, sessions, applied index) comes after and may
/// take seconds. The status clients poll, and the applied-index gauge,
/// give the state machine's index: a node is not caught up before its
/// state is (an end-to-end test read an empty state machine from a
/// follower whose status said it had installed a snapshot).
#[test]
fn the_status_gives_the_applied_index_of_the_state_machine() {
    let raft = Raft::new(
        Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]),
        DurableState::default(),
        7,
    )
    .expect("a valid configuration");
    let mut pipeline = Pipeline::new(raft, config(1 << 40), Instant::default());
    let now = Instant::default();
    // Node 2 leads term 1.
    let heartbeat = crate::core::MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(0),
        read_round: 1,
    };
    pipeline.handle(now, message_from(2, Term(1), heartbeat));
    complete_writes(&mut pipeline, now);
    assert_eq!(pipeline.raft().leader(), Some(NodeId(2)));
    let data = b"rows".to_vec();
    let crc = crate::core::SnapshotChunk::crc(0, &data);
    let meta = crate::core::SnapshotMeta {
        index: LogIndex(10),
        term: Term(1),
    };
    let chunk = crate::core::SnapshotChunk {
        view: 5,
        meta,
        membership: crate::core::Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
        seq: 0,
        data,
        last: true,
        checksum: crc,
        running: crc,
    };
    pipeline.handle(
        now,
        message_from(
            2,
            Term(1),
            crate::core::MessageBody::SnapshotChunk(Box::new(chunk)),
        ),
    );
    let stage = pipeline
        .take_outputs()
        .into_iter()
        .find_map(|output| match output {
            Output::Stage(job) => Some(job),
            _ => None,
        })
        .expect("the chunk is staged");
    assert!(stage.transfer.complete);
    pipeline.handle(now, Input::Staged(stage.transfer));
    let install = the_write(&pipeline.take_outputs());
    assert_eq!(
        install.snapshot.as_ref().map(|snapshot| snapshot.meta),
        Some(meta)
    );
    assert_eq!(pipeline.raft().status().applied_index, LogIndex(10));
    assert_eq!(
        pipeline.status().applied_index,
        LogIndex(0),
        "not installed yet"
    );
    pipeline.handle(now, Input::WriteDone(WriteDone::of(install, None)));
    assert_eq!(pipeline.status().applied_index, LogIndex(10));
}

/// How long the followers of the tests below wait for a write to carry
/// their committed entries.
const FOLLOWER_APPLY_WAIT: Duration = Duration::from_millis(5);

/// Node 1 of three, fresh, whose committed entries wait
/// `FOLLOWER_APPLY_WAIT` as a follower's, and the instant it starts at.
fn waiting_follower() -> (Pipeline, Instant) {
    let raft = Raft::new(
        Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]),
        DurableState::default(),
        13,
    )
    .unwrap();
    let config = PipelineConfig {
        follower_apply_wait: FOLLOWER_APPLY_WAIT,
        ..config(1)
    };
    let now = at_ticks(1);
    (Pipeline::new(raft, config, now), now)
}

/// Node 1 of three, following node 2 in term 1: it holds a blank entry
/// and a command (durable), then learns that both are committed from an
/// append that brings nothing to write. Returns the instant it learned.
fn follower_with_committed_entries() -> (Pipeline, Instant) {
    use crate::core::{Entry, MessageBody};
    let (mut pipeline, now) = waiting_follower();
    let entries = vec![
        Entry {
            term: Term(1),
            index: LogIndex(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            term: Term(1),
            index: LogIndex(2),
            payload: EntryPayload::Command(b"put".to_vec()),
        },
    ];
    let append = |prev: u64, entries: Vec<Entry>, commit: u64| MessageBody::AppendRequest {
        prev_log_index: LogIndex(prev),
        prev_log_term: Term(u64::from(prev > 0)),
        entries,
        leader_commit: LogIndex(commit),
    };
    pipeline.handle(now, message_from(2, Term(1), append(0, entries, 0)));
    let outputs = complete_writes(&mut pipeline, now);
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
    pipeline.handle(now, message_from(2, Term(1), append(2, Vec::new(), 2)));
    assert_eq!(pipeline.raft().role(), Role::Follower);
    assert_eq!(pipeline.raft().log().commit_index(), LogIndex(2));
    (pipeline, now)
}

/// The leader's append of one more entry, `index`, to the follower of
/// [`follower_with_committed_entries`], committing through `commit`.
fn next_append(index: u64, commit: u64) -> Input {
    use crate::core::{Entry, MessageBody};
    let entry = Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(vec![index as u8]),
    };
    let body = MessageBody::AppendRequest {
        prev_log_index: LogIndex(index - 1),
        prev_log_term: Term(1),
        entries: vec![entry],
        leader_commit: LogIndex(commit),
    };
    message_from(2, Term(1), body)
}

fn carried(write: &WriteJob) -> Vec<LogIndex> {
    write.apply.as_ref().map_or_else(Vec::new, |batch| {
        batch.entries.iter().map(|entry| entry.index).collect()
    })
}

#[test]
fn a_followers_committed_entries_wait_before_a_write_carries_them() {
    let (mut pipeline, now) = follower_with_committed_entries();
    let outputs = pipeline.take_outputs();
    assert!(
        apply_batches(&outputs).is_empty() && writes(&outputs).is_empty(),
        "the committed entries got a transaction of their own at once: {outputs:?}"
    );
    let deadline = now.after(FOLLOWER_APPLY_WAIT);
    assert_eq!(
        pipeline.wake_at(),
        deadline,
        "the driver wakes when the wait ends"
    );
    // The leader's next append comes before the wait ends, to an idle
    // writer: its write, the one the leader's commit waits for, carries
    // no apply.
    let early = now.after(FOLLOWER_APPLY_WAIT / 4);
    pipeline.handle(early, next_append(3, 2));
    let outputs = pipeline.take_outputs();
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
    let write = the_write(&outputs);
    assert_eq!(
        carried(&write),
        [],
        "a write that started on an idle writer before the wait ended carried the entries"
    );
    pipeline.handle(early, Input::WriteDone(WriteDone::of(write, None)));
    let outputs = pipeline.take_outputs();
    assert!(
        apply_batches(&outputs).is_empty() && writes(&outputs).is_empty(),
        "{outputs:?}"
    );
    // The next append comes after the wait ended: its write carries them.
    let later = deadline.after(FOLLOWER_APPLY_WAIT / 4);
    pipeline.handle(later, next_append(4, 2));
    let outputs = pipeline.take_outputs();
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(carried(&the_write(&outputs)), [LogIndex(1), LogIndex(2)]);
    assert_eq!(pipeline.follower_apply_waits(), [1, 0]);
    assert_eq!(
        pipeline.wake_at(),
        pipeline.next_tick_at(),
        "no wait is left"
    );
}

#[test]
fn a_followers_write_that_waited_behind_another_carries_its_committed_entries_at_once() {
    let (mut pipeline, now) = follower_with_committed_entries();
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    let early = now.after(FOLLOWER_APPLY_WAIT / 4);
    pipeline.handle(early, next_append(3, 2));
    let first = the_write(&pipeline.take_outputs());
    assert_eq!(carried(&first), []);
    // Entry 4's write queues behind entry 3's: the writer is busy back to
    // back, so it carries the committed entries without waiting longer.
    pipeline.handle(early, next_append(4, 2));
    assert!(
        writes(&pipeline.take_outputs()).is_empty(),
        "one write at a time"
    );
    pipeline.handle(early, Input::WriteDone(WriteDone::of(first, None)));
    let outputs = pipeline.take_outputs();
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
    let second = the_write(&outputs);
    assert_eq!(carried(&second), [LogIndex(1), LogIndex(2)]);
    assert_eq!(pipeline.follower_apply_waits(), [1, 0]);
    // The next write starts on an idle writer again: entries 3 and 4,
    // committed by its append, wait.
    let done = apply_all(&second.apply.clone().unwrap().entries, b"");
    pipeline.handle(early, Input::WriteDone(WriteDone::of(second, Some(done))));
    pipeline.handle(early, next_append(5, 4));
    let outputs = pipeline.take_outputs();
    assert_eq!(carried(&the_write(&outputs)), []);
    assert!(apply_batches(&outputs).is_empty(), "{outputs:?}");
}

#[test]
fn a_followers_committed_entries_are_applied_alone_when_no_write_comes_in_time() {
    let (mut pipeline, now) = follower_with_committed_entries();
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    let deadline = now.after(FOLLOWER_APPLY_WAIT);
    pipeline.advance(now.after(FOLLOWER_APPLY_WAIT / 2));
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    pipeline.advance(deadline);
    let batches = apply_batches(&pipeline.take_outputs());
    assert_eq!(batches.len(), 1, "the wait is over: applied alone");
    assert_eq!(batches[0].entries.len(), 2);
    assert_eq!(pipeline.follower_apply_waits(), [0, 1]);
}

#[test]
fn a_followers_committed_entries_do_not_wait_when_a_read_waits_for_them() {
    use crate::core::MessageBody;
    let (mut pipeline, now) = follower_with_committed_entries();
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    pipeline.handle(
        now,
        Input::Read {
            request: RequestId(7),
            mode: ReadMode::Linearizable,
        },
    );
    let batches = apply_batches(&pipeline.take_outputs());
    assert_eq!(batches.len(), 1, "a read waits here: applied at once");
    assert_eq!(pipeline.follower_apply_waits(), [0, 1]);
    let done = apply_all(&batches[0].entries, b"");
    pipeline.handle(now, Input::ApplyDone(done));
    // The leader confirms the read index; the entries are applied, so
    // the core answers the read.
    let confirmed = MessageBody::ReadIndexResponse {
        context: 1,
        index: LogIndex(2),
        refused: false,
    };
    pipeline.handle(now, message_from(2, Term(1), confirmed));
    assert_eq!(
        replies(&pipeline.take_outputs()),
        [(RequestId(7), Reply::ReadReady { index: LogIndex(2) })]
    );
}

#[test]
fn a_follower_waiting_for_a_queued_write_to_carry_its_entries_sets_no_wake_up() {
    use crate::core::{Entry, MessageBody};
    let (mut pipeline, now) = waiting_follower();
    let append = |prev: u64, last: u64, commit: u64| {
        let entries = (prev + 1..=last)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Command(vec![index as u8]),
            })
            .collect();
        message_from(
            2,
            Term(1),
            MessageBody::AppendRequest {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term(u64::from(prev > 0)),
                entries,
                leader_commit: LogIndex(commit),
            },
        )
    };
    pipeline.handle(now, append(0, 2, 0));
    complete_writes(&mut pipeline, now);
    // Entry 3's write is in flight, carrying nothing committed, when a
    // heartbeat says entries 1 and 2 are committed: they wait for a write.
    pipeline.handle(now, append(2, 3, 0));
    assert!(the_write(&pipeline.take_outputs()).apply.is_none());
    let heartbeat = MessageBody::HeartbeatRequest {
        leader_commit: LogIndex(2),
        read_round: 1,
    };
    pipeline.handle(now, message_from(2, Term(1), heartbeat));
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    assert_eq!(pipeline.wake_at(), now.after(FOLLOWER_APPLY_WAIT));
    // Entry 4's write queues behind the one in flight and will carry
    // them when it starts: the driver need not wake for them, even once
    // the wait would have ended.
    pipeline.handle(now, append(3, 4, 2));
    assert!(
        writes(&pipeline.take_outputs()).is_empty(),
        "one write at a time"
    );
    let later = now.after(FOLLOWER_APPLY_WAIT * 2);
    pipeline.advance(later);
    assert!(apply_batches(&pipeline.take_outputs()).is_empty());
    assert!(
        pipeline.wake_at() > later,
        "a wake-up at {:?} is due again and again from {later:?}",
        pipeline.wake_at()
    );
}
