//! The boundary check every peer message passes before the core acts on it.
//!
//! Anyone who reaches a node's peer port can send it a message, and the
//! core's assertions guard against its own bugs, not against input. So each
//! message is first checked, without looking at any node's state, against
//! what every honest sender guarantees: the log's invariants (section 5.3:
//! indexes are contiguous, terms never decrease along a log and never exceed
//! the term of the leader that sent them), the rule that index 0 and only
//! index 0 has term 0, and the shape each role gives its messages in
//! `leader.rs`, `candidate.rs` and `follower.rs`. A message that fails is
//! refused whole and changes nothing.
//!
//! What an honest sender may legitimately send is the bar: a check that
//! could refuse one would cost liveness. Claims that only the receiver's
//! state can judge (an acknowledgement beyond the leader's log, a second
//! leader in one term) are checked where that state lives, in the roles.

use super::message::{Message, MessageBody, SnapshotChunk};
use super::types::{Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term};

/// The largest term a message may carry. No honest cluster gets near it (a
/// new term every millisecond would take 146 million years), and the bound
/// keeps `Term::next` from overflowing in a node that adopted the term.
pub const TERM_MAX: Term = Term(1 << 62);

/// The largest log index a message may carry, for the same reasons as
/// [`TERM_MAX`]: it keeps `LogIndex::next` and index sums from overflowing
/// in a node that adopted an entry at that index.
pub const LOG_INDEX_MAX: LogIndex = LogIndex(1 << 62);

/// Why a message was refused at the boundary. Each one names the field and
/// the values that no honest sender produces.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// `from` or `to` is 0.
    #[error("field `{field}` is 0, which is never a node id")]
    ZeroNodeId {
        /// `from` or `to`.
        field: &'static str,
    },
    /// `from` or `to` above [`NodeId::MAX`].
    #[error(
        "field `{field}` is {value}, above the largest node id {}",
        NodeId::MAX
    )]
    NodeIdTooLarge {
        /// `from` or `to`.
        field: &'static str,
        /// Its value.
        value: NodeId,
    },
    /// `from` equals `to`.
    #[error("node {node} addressed the message to itself; nodes never message themselves")]
    SentToItself {
        /// The node named twice.
        node: NodeId,
    },
    /// A term beyond [`TERM_MAX`].
    #[error(
        "field `{field}` is {value}, above the largest plausible term {}",
        TERM_MAX
    )]
    TermTooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Term,
    },
    /// An index beyond [`LOG_INDEX_MAX`].
    #[error(
        "field `{field}` is {value}, above the largest plausible log index {}",
        LOG_INDEX_MAX
    )]
    IndexTooLarge {
        /// The field.
        field: &'static str,
        /// Its value (for entries, the index the last entry would have).
        value: u64,
    },
    /// A request at term 0: only a leader, a candidate or a follower of a
    /// known leader sends one, and each of them is at term 1 or later.
    #[error("a {kind} request carries term 0, but every sender of one is at term 1 or later")]
    RequestAtTermZero {
        /// The message kind.
        kind: &'static str,
    },
    /// An entry whose index breaks the run from `prev_log_index + 1`.
    #[error("entry number {position} has index {index}, but entries run contiguously from prev_log_index + 1, so it must be {expected}")]
    EntryNotContiguous {
        /// Position of the entry in the message, from 0.
        position: usize,
        /// Its index.
        index: LogIndex,
        /// The index it must have.
        expected: LogIndex,
    },
    /// An entry of term 0: every entry is created by a leader of term 1 or
    /// later.
    #[error("entry at index {index} has term 0, but every entry is created by a leader of term 1 or later")]
    EntryTermZero {
        /// The entry's index.
        index: LogIndex,
    },
    /// An entry from a term later than the leader sending it.
    #[error(
        "entry at index {index} has term {entry_term}, above the message's term {message_term}"
    )]
    EntryTermAboveMessageTerm {
        /// The entry's index.
        index: LogIndex,
        /// The entry's term.
        entry_term: Term,
        /// The message's term.
        message_term: Term,
    },
    /// An entry whose term is below the entry before it (or below
    /// `prev_log_term` for the first entry).
    #[error("entry at index {index} has term {entry_term}, below the term {previous_term} of the entry before it; terms never decrease along a log")]
    EntryTermDecreases {
        /// The entry's index.
        index: LogIndex,
        /// The entry's term.
        entry_term: Term,
        /// The term of the entry before it.
        previous_term: Term,
    },
    /// A log position's term above the message's term: the sender's log
    /// never holds entries of a term later than its own.
    #[error("field `{field}` is {term}, above the message's term {message_term}")]
    TermAboveMessageTerm {
        /// The field.
        field: &'static str,
        /// Its value.
        term: Term,
        /// The message's term.
        message_term: Term,
    },
    /// A vote request whose last log term is not below its term: a
    /// candidate raised its term past every entry it holds when it started
    /// campaigning, and a pre-candidate asks for the term after its own.
    #[error(
        "field `last_log_term` is {last_log_term}, not below the campaign's term {message_term}"
    )]
    LastLogTermNotBelowMessageTerm {
        /// The candidate's last log term.
        last_log_term: Term,
        /// The term it campaigns in.
        message_term: Term,
    },
    /// An (index, term) pair where exactly one is 0.
    #[error("field `{index_field}` is {index} but `{term_field}` is {term}; index 0 and only index 0 has term 0")]
    ZeroPositionMismatch {
        /// The index field.
        index_field: &'static str,
        /// Its value.
        index: LogIndex,
        /// The term field.
        term_field: &'static str,
        /// Its value.
        term: Term,
    },
    /// A snapshot chunk whose data does not match its checksum.
    #[error("snapshot chunk {seq} has checksum {expected:#010x} but its data's is {actual:#010x}")]
    ChunkChecksum {
        /// The chunk's position.
        seq: u64,
        /// The checksum it carries.
        expected: u32,
        /// Its data's.
        actual: u32,
    },
    /// A snapshot that covers nothing.
    #[error("snapshot covers index {index} at term {term}, but a snapshot covers at least index 1 at term 1 or later")]
    EmptySnapshot {
        /// The snapshot's index.
        index: LogIndex,
        /// The snapshot's term.
        term: Term,
    },
    /// A membership no cluster can be in: no voters, a node id 0, a
    /// learner that also votes, an address for a non-member.
    #[error("{field} carries an impossible membership: {reason}")]
    InvalidMembership {
        /// Where it was found.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A rejection of an append after index 0, which always matches.
    #[error("an append response rejects index 0, but every log matches at index 0")]
    RejectedIndexZero,
    /// A rejection whose hint lies beyond the rejected index.
    #[error("field `reject_hint_index` is {hint_index}, above the rejected index {index}; the hint is never beyond it")]
    HintAboveRejectedIndex {
        /// The hint.
        hint_index: LogIndex,
        /// The rejected index.
        index: LogIndex,
    },
    /// A successful append response that carries a backtracking hint.
    #[error("a successful append response carries reject_hint_index {hint_index} and reject_hint_term {hint_term}; only rejections carry a hint")]
    HintOnSuccess {
        /// The hint index.
        hint_index: LogIndex,
        /// The hint term.
        hint_term: Term,
    },
    /// A refused read that nonetheless names an index.
    #[error("a refused read index response carries index {index}; a refusal carries index 0")]
    RefusedReadWithIndex {
        /// The index.
        index: LogIndex,
    },
}

/// Checks `message` against what every honest sender guarantees. Pure and
/// stateless: the gRPC boundary may call it to refuse a message before it
/// reaches the event loop, and `Raft::step` calls it again so that every
/// driver gets the check.
pub fn validate_message(message: &Message) -> Result<(), InvalidMessage> {
    validate_addressing(message)?;
    let term = message.term;
    match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => validate_vote_request(term, *last_log_index, *last_log_term),
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            check_index("leader_commit", *leader_commit)?;
            validate_append_request(term, *prev_log_index, *prev_log_term, entries)
        }
        MessageBody::AppendResponse {
            index,
            rejected,
            reject_hint_index,
            reject_hint_term,
        } => validate_append_response(
            term,
            *index,
            *rejected,
            *reject_hint_index,
            *reject_hint_term,
        ),
        MessageBody::HeartbeatRequest { leader_commit, .. } => {
            check_index("leader_commit", *leader_commit)
        }
        MessageBody::InstallSnapshot { snapshot } => {
            validate_snapshot(term, snapshot.meta, &snapshot.membership)
        }
        MessageBody::SnapshotChunk(chunk) => {
            validate_snapshot(term, chunk.meta, &chunk.membership)?;
            let actual = SnapshotChunk::crc(0, &chunk.data);
            if actual != chunk.checksum {
                return Err(InvalidMessage::ChunkChecksum {
                    seq: chunk.seq,
                    expected: chunk.checksum,
                    actual,
                });
            }
            Ok(())
        }
        MessageBody::SnapshotChunkAck { index, .. } => check_index("index", *index),
        MessageBody::ReadIndexResponse { index, refused, .. } => {
            check_index("index", *index)?;
            if *refused && *index != LogIndex(0) {
                return Err(InvalidMessage::RefusedReadWithIndex { index: *index });
            }
            Ok(())
        }
        MessageBody::VoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndexRequest { .. } => Ok(()),
    }
}

/// Node ids, the term's bound, and term 0 for requests.
fn validate_addressing(message: &Message) -> Result<(), InvalidMessage> {
    if message.from == NodeId(0) {
        return Err(InvalidMessage::ZeroNodeId { field: "from" });
    }
    if message.to == NodeId(0) {
        return Err(InvalidMessage::ZeroNodeId { field: "to" });
    }
    for (field, value) in [("from", message.from), ("to", message.to)] {
        if value > NodeId::MAX {
            return Err(InvalidMessage::NodeIdTooLarge { field, value });
        }
    }
    if message.from == message.to {
        return Err(InvalidMessage::SentToItself { node: message.from });
    }
    check_term("term", message.term)?;
    // Responses may come from a node still at term 0 (a refused pre-vote),
    // but a request comes from a leader, a candidate, or a follower that
    // knows its leader, all of which are at term 1 or later.
    let is_request = matches!(
        message.body,
        MessageBody::VoteRequest { .. }
            | MessageBody::AppendRequest { .. }
            | MessageBody::HeartbeatRequest { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::SnapshotChunk(_)
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndexRequest { .. }
    );
    if is_request && message.term == Term(0) {
        return Err(InvalidMessage::RequestAtTermZero {
            kind: message.body.kind(),
        });
    }
    Ok(())
}

fn validate_vote_request(
    term: Term,
    last_log_index: LogIndex,
    last_log_term: Term,
) -> Result<(), InvalidMessage> {
    check_index("last_log_index", last_log_index)?;
    // Strictly below: a candidate's log holds no entry of the term it just
    // raised itself to, and a pre-candidate asks for the term after its own.
    if last_log_term >= term {
        return Err(InvalidMessage::LastLogTermNotBelowMessageTerm {
            last_log_term,
            message_term: term,
        });
    }
    check_zero_position(
        ("last_log_index", last_log_index),
        ("last_log_term", last_log_term),
    )
}

fn validate_append_request(
    term: Term,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: &[Entry],
) -> Result<(), InvalidMessage> {
    check_index("prev_log_index", prev_log_index)?;
    check_not_above_message_term("prev_log_term", prev_log_term, term)?;
    check_zero_position(
        ("prev_log_index", prev_log_index),
        ("prev_log_term", prev_log_term),
    )?;
    // Checked before the entries are walked, so that the expected indexes
    // below cannot overflow.
    let last_index = prev_log_index.0.saturating_add(entries.len() as u64);
    if last_index > LOG_INDEX_MAX.0 {
        return Err(InvalidMessage::IndexTooLarge {
            field: "entries",
            value: last_index,
        });
    }
    let mut expected = prev_log_index.next();
    let mut previous_term = prev_log_term;
    for (position, entry) in entries.iter().enumerate() {
        if entry.index != expected {
            return Err(InvalidMessage::EntryNotContiguous {
                position,
                index: entry.index,
                expected,
            });
        }
        if entry.term == Term(0) {
            return Err(InvalidMessage::EntryTermZero { index: entry.index });
        }
        if entry.term > term {
            return Err(InvalidMessage::EntryTermAboveMessageTerm {
                index: entry.index,
                entry_term: entry.term,
                message_term: term,
            });
        }
        if entry.term < previous_term {
            return Err(InvalidMessage::EntryTermDecreases {
                index: entry.index,
                entry_term: entry.term,
                previous_term,
            });
        }
        if let EntryPayload::Membership(membership) = &entry.payload {
            check_membership("entries", membership)?;
        }
        expected = expected.next();
        previous_term = entry.term;
    }
    Ok(())
}

fn check_membership(field: &'static str, membership: &Membership) -> Result<(), InvalidMessage> {
    match membership.invalid_reason() {
        Some(reason) => Err(InvalidMessage::InvalidMembership { field, reason }),
        None => Ok(()),
    }
}

fn validate_append_response(
    term: Term,
    index: LogIndex,
    rejected: bool,
    hint_index: LogIndex,
    hint_term: Term,
) -> Result<(), InvalidMessage> {
    check_index("index", index)?;
    if !rejected {
        if hint_index != LogIndex(0) || hint_term != Term(0) {
            return Err(InvalidMessage::HintOnSuccess {
                hint_index,
                hint_term,
            });
        }
        return Ok(());
    }
    if index == LogIndex(0) {
        return Err(InvalidMessage::RejectedIndexZero);
    }
    // The hint comes from `find_conflict_by_term` at or below the rejected
    // index (a follower's snapshot index is at most its commit index, which
    // is at most any index it rejects), and names a term of the follower's
    // log, which is at most the follower's term, the message's term.
    if hint_index > index {
        return Err(InvalidMessage::HintAboveRejectedIndex { hint_index, index });
    }
    check_not_above_message_term("reject_hint_term", hint_term, term)?;
    check_zero_position(
        ("reject_hint_index", hint_index),
        ("reject_hint_term", hint_term),
    )
}

fn validate_snapshot(
    term: Term,
    meta: SnapshotMeta,
    membership: &Membership,
) -> Result<(), InvalidMessage> {
    check_index("snapshot.meta.index", meta.index)?;
    // A leader sends a snapshot only when the entries a follower needs were
    // compacted, so it covers at least one entry.
    if meta.index == LogIndex(0) || meta.term == Term(0) {
        return Err(InvalidMessage::EmptySnapshot {
            index: meta.index,
            term: meta.term,
        });
    }
    check_not_above_message_term("snapshot.meta.term", meta.term, term)?;
    check_membership("snapshot.membership", membership)
}

fn check_term(field: &'static str, value: Term) -> Result<(), InvalidMessage> {
    if value > TERM_MAX {
        return Err(InvalidMessage::TermTooLarge { field, value });
    }
    Ok(())
}

fn check_index(field: &'static str, value: LogIndex) -> Result<(), InvalidMessage> {
    if value > LOG_INDEX_MAX {
        return Err(InvalidMessage::IndexTooLarge {
            field,
            value: value.0,
        });
    }
    Ok(())
}

fn check_not_above_message_term(
    field: &'static str,
    term: Term,
    message_term: Term,
) -> Result<(), InvalidMessage> {
    if term > message_term {
        return Err(InvalidMessage::TermAboveMessageTerm {
            field,
            term,
            message_term,
        });
    }
    Ok(())
}

fn check_zero_position(
    (index_field, index): (&'static str, LogIndex),
    (term_field, term): (&'static str, Term),
) -> Result<(), InvalidMessage> {
    if (index == LogIndex(0)) != (term == Term(0)) {
        return Err(InvalidMessage::ZeroPositionMismatch {
            index_field,
            index,
            term_field,
            term,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_cluster::TestCluster;
    use crate::core::types::{EntryPayload, SnapshotMeta};

    fn message(term: u64, body: MessageBody) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(term),
            body,
        }
    }

    fn append(term: u64, prev: (u64, u64), entries: &[(u64, u64)]) -> Message {
        let entries = entries
            .iter()
            .map(|(index, term)| Entry {
                term: Term(*term),
                index: LogIndex(*index),
                payload: EntryPayload::Command(vec![1, 2, 3]),
            })
            .collect();
        let body = MessageBody::AppendRequest {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        };
        message(term, body)
    }

    fn vote_request(term: u64, last_log_index: u64, last_log_term: u64) -> Message {
        let body = MessageBody::VoteRequest {
            pre_vote: false,
            last_log_index: LogIndex(last_log_index),
            last_log_term: Term(last_log_term),
            leadership_transfer: false,
        };
        message(term, body)
    }

    fn append_response(term: u64, index: u64, rejected: bool, hint: (u64, u64)) -> Message {
        let body = MessageBody::AppendResponse {
            index: LogIndex(index),
            rejected,
            reject_hint_index: LogIndex(hint.0),
            reject_hint_term: Term(hint.1),
        };
        message(term, body)
    }

    fn snapshot(term: u64, index: u64, snapshot_term: u64) -> Message {
        let snapshot = crate::core::Snapshot {
            membership: Box::new(crate::core::Membership::new([NodeId(1), NodeId(2)])),
            meta: SnapshotMeta {
                index: LogIndex(index),
                term: Term(snapshot_term),
            },
        };
        message(term, MessageBody::InstallSnapshot { snapshot })
    }

    /// Asserts that `message` is refused with an error whose sentence
    /// contains every one of `expected`.
    fn assert_refused(message: Message, expected: &[&str]) {
        let error = validate_message(&message)
            .expect_err("the message must be refused")
            .to_string();
        for fragment in expected {
            assert!(
                error.contains(fragment),
                "{error:?} should mention {fragment:?}"
            );
        }
    }

    #[test]
    fn well_formed_messages_of_every_kind_pass() {
        let passing = [
            append(3, (0, 0), &[(1, 1), (2, 3)]),
            append(3, (4, 2), &[]),
            vote_request(4, 6, 3),
            vote_request(1, 0, 0),
            append_response(3, 5, false, (0, 0)),
            append_response(3, 5, true, (4, 2)),
            append_response(3, 5, true, (0, 0)),
            snapshot(3, 9, 2),
            message(
                0,
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: false,
                },
            ),
            message(
                2,
                MessageBody::ReadIndexResponse {
                    context: 7,
                    index: LogIndex(0),
                    refused: true,
                },
            ),
        ];
        for message in passing {
            assert_eq!(validate_message(&message), Ok(()), "{message:?}");
        }
    }

    #[test]
    fn a_zero_node_id_is_refused() {
        let mut from_zero = append(1, (0, 0), &[]);
        from_zero.from = NodeId(0);
        assert_refused(from_zero, &["`from`", "0"]);
        let mut to_zero = append(1, (0, 0), &[]);
        to_zero.to = NodeId(0);
        assert_refused(to_zero, &["`to`"]);
    }

    #[test]
    fn a_node_id_postgres_cannot_hold_is_refused() {
        let mut from_beyond = append(1, (0, 0), &[]);
        from_beyond.from = NodeId(NodeId::MAX.0 + 1);
        assert_refused(from_beyond, &["`from`", "9223372036854775808"]);
        let mut to_beyond = append(1, (0, 0), &[]);
        to_beyond.to = NodeId(u64::MAX);
        assert_refused(to_beyond, &["`to`", "largest node id"]);
        let mut largest = append(1, (0, 0), &[]);
        largest.from = NodeId::MAX;
        assert_eq!(validate_message(&largest), Ok(()));
    }

    #[test]
    fn a_message_to_its_own_sender_is_refused() {
        let mut to_itself = append(1, (0, 0), &[]);
        to_itself.to = NodeId(1);
        assert_refused(to_itself, &["node 1", "itself"]);
    }

    #[test]
    fn a_term_beyond_the_plausible_maximum_is_refused() {
        let huge = message(u64::MAX, MessageBody::TimeoutNow);
        assert_refused(huge, &["`term`", &u64::MAX.to_string()]);
    }

    #[test]
    fn a_request_at_term_zero_is_refused() {
        assert_refused(append(0, (0, 0), &[]), &["App", "term 0"]);
        assert_refused(
            message(0, MessageBody::ReadIndexRequest { context: 1 }),
            &["ReadIndex", "term 0"],
        );
    }

    #[test]
    fn entries_that_do_not_continue_from_prev_log_index_are_refused() {
        assert_refused(
            append(2, (3, 1), &[(5, 2)]),
            &["index 5", "prev_log_index + 1", "must be 4"],
        );
        assert_refused(
            append(2, (3, 1), &[(4, 2), (6, 2)]),
            &["entry number 1", "index 6", "must be 5"],
        );
    }

    #[test]
    fn entries_that_would_overflow_the_index_are_refused() {
        assert_refused(
            append(2, (LOG_INDEX_MAX.0, 1), &[(LOG_INDEX_MAX.0 + 1, 2)]),
            &["`entries`", "largest plausible log index"],
        );
        let body = MessageBody::HeartbeatRequest {
            leader_commit: LogIndex(u64::MAX),
            read_round: 1,
        };
        assert_refused(message(2, body), &["`leader_commit`"]);
    }

    #[test]
    fn an_entry_of_term_zero_is_refused() {
        assert_refused(append(2, (0, 0), &[(1, 0)]), &["index 1", "term 0"]);
    }

    #[test]
    fn an_entry_above_the_message_term_is_refused() {
        assert_refused(
            append(2, (2, 2), &[(3, 8)]),
            &["entry at index 3 has term 8, above the message's term 2"],
        );
    }

    #[test]
    fn entry_terms_that_decrease_are_refused() {
        assert_refused(
            append(5, (2, 2), &[(3, 4), (4, 3)]),
            &["index 4", "term 3", "below the term 4"],
        );
    }

    #[test]
    fn a_first_entry_below_prev_log_term_is_refused() {
        assert_refused(
            append(5, (2, 4), &[(3, 3)]),
            &["index 3", "term 3", "below the term 4"],
        );
    }

    #[test]
    fn a_prev_log_term_above_the_message_term_is_refused() {
        assert_refused(
            append(2, (2, 3), &[]),
            &["`prev_log_term` is 3, above the message's term 2"],
        );
    }

    #[test]
    fn prev_log_index_and_term_must_be_zero_together() {
        assert_refused(
            append(2, (0, 1), &[]),
            &["`prev_log_index` is 0 but `prev_log_term` is 1"],
        );
        assert_refused(
            append(2, (3, 0), &[]),
            &["`prev_log_index` is 3 but `prev_log_term` is 0"],
        );
    }

    #[test]
    fn a_snapshot_that_covers_nothing_is_refused() {
        assert_refused(snapshot(3, 0, 2), &["index 0"]);
        assert_refused(snapshot(3, 4, 0), &["term 0"]);
    }

    #[test]
    fn a_snapshot_term_above_the_message_term_is_refused() {
        assert_refused(
            snapshot(3, 4, 5),
            &["`snapshot.meta.term` is 5, above the message's term 3"],
        );
    }

    #[test]
    fn a_vote_request_whose_last_log_term_is_not_below_its_term_is_refused() {
        assert_refused(
            vote_request(3, 5, 3),
            &["`last_log_term` is 3", "campaign's term 3"],
        );
    }

    #[test]
    fn last_log_index_and_term_must_be_zero_together() {
        assert_refused(vote_request(3, 0, 2), &["`last_log_index` is 0"]);
        assert_refused(vote_request(3, 4, 0), &["`last_log_term` is 0"]);
    }

    #[test]
    fn a_reject_hint_term_above_the_message_term_is_refused() {
        assert_refused(
            append_response(3, 5, true, (4, 4)),
            &["`reject_hint_term` is 4, above the message's term 3"],
        );
    }

    #[test]
    fn reject_hint_index_and_term_must_be_zero_together() {
        assert_refused(
            append_response(3, 5, true, (4, 0)),
            &["`reject_hint_index` is 4 but `reject_hint_term` is 0"],
        );
    }

    #[test]
    fn a_reject_hint_beyond_the_rejected_index_is_refused() {
        assert_refused(
            append_response(3, 5, true, (6, 2)),
            &["`reject_hint_index` is 6", "rejected index 5"],
        );
    }

    #[test]
    fn a_rejection_of_index_zero_is_refused() {
        assert_refused(append_response(3, 0, true, (0, 0)), &["index 0"]);
    }

    #[test]
    fn a_successful_append_response_with_a_hint_is_refused() {
        assert_refused(
            append_response(3, 5, false, (2, 1)),
            &["reject_hint_index 2", "only rejections"],
        );
    }

    #[test]
    fn a_refused_read_that_names_an_index_is_refused() {
        let body = MessageBody::ReadIndexResponse {
            context: 1,
            index: LogIndex(4),
            refused: true,
        };
        assert_refused(message(2, body), &["index 4"]);
    }

    #[test]
    fn every_message_an_honest_cluster_sends_passes_and_nothing_is_reported() {
        // `TestCluster::process` validates each message as it is sent;
        // elections, replication, snapshots, reads, transfers, crashes and
        // a faulty network all happen within these runs.
        let mut committed_total = 0;
        for seed in 0..48 {
            let size = [1, 3, 5][seed as usize % 3];
            let mut cluster = TestCluster::new(size, seed);
            cluster.run(3000);
            assert!(
                cluster.reports.is_empty(),
                "seed {seed}: honest messages were reported: {:?}",
                cluster.reports
            );
            assert!(
                size == 1 || cluster.history.len() > 100,
                "seed {seed}: the run sent too little to prove anything"
            );
            assert!(
                cluster.commit_max > LogIndex(0),
                "seed {seed}: the run committed nothing, so it proves little"
            );
            committed_total += cluster.commit_max.0;
        }
        assert!(
            committed_total > 48 * 20,
            "the runs committed only {committed_total} entries in all"
        );
    }
}
