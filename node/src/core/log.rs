//! The replicated log as one node holds it: a compacted prefix (described
//! by its snapshot index and term), the entries after it, and three
//! positions that only move forward except where noted:
//!
//! ```text
//!  snapshot.index   applied   commit      durable        last
//!  ------|-------------|---------|-----------|--------------|
//!        | compacted   | applied | committed | durable tail | written, not yet durable
//! ```
//!
//! invariants: snapshot.index <= applied <= commit <= last index;
//! durable <= last index; only entries above `commit` are ever truncated.
//!
//! The log also knows the cluster's membership: the one in force at the
//! snapshot and every membership entry after it. The latest is in force
//! (it takes effect when appended), so a truncation that removes a
//! membership entry brings back the one before it.

use super::types::{Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term};

/// One node's log.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// For invariant messages only.
    node: NodeId,
    /// The compacted prefix ends here.
    snapshot: SnapshotMeta,
    /// The membership in force at the snapshot index.
    snapshot_membership: Membership,
    /// Every membership entry in `entries`, by index, oldest first.
    memberships: Vec<(LogIndex, Membership)>,
    /// Entries after the snapshot. Invariant: `entries[i].index ==
    /// snapshot.index + 1 + i`, and terms never decrease along the log.
    entries: Vec<Entry>,
    /// Highest index known committed. Invariant: never decreases.
    commit: LogIndex,
    /// Highest index the driver confirmed applied. Invariant: <= commit.
    applied: LogIndex,
    /// Highest index handed to the driver to apply. Invariant:
    /// applied <= apply_handed <= commit.
    apply_handed: LogIndex,
    /// Highest index known durable on this node's disk (with the term it
    /// has in `entries`). It goes back only when a truncation removes
    /// entries above it.
    durable: LogIndex,
    /// First index not yet handed to the driver for persisting.
    unpersisted_from: LogIndex,
    /// Planted bug: hand committed entries out before they are durable.
    #[cfg(feature = "planted-bugs")]
    pub(super) bug_apply_before_durable: bool,
}

/// The entries asked for were compacted away: send a snapshot instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted;

impl RaftLog {
    /// A log restored from durable state: everything loaded is durable.
    pub fn restore(
        node: NodeId,
        snapshot: SnapshotMeta,
        snapshot_membership: Membership,
        entries: Vec<Entry>,
        applied: LogIndex,
    ) -> RaftLog {
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index.0,
                snapshot.index.0 + 1 + offset as u64,
                "node {node}: loaded log is not contiguous after snapshot {snapshot:?}"
            );
        }
        let last = LogIndex(snapshot.index.0 + entries.len() as u64);
        assert!(
            applied >= snapshot.index && applied <= last,
            "node {node}: applied index {applied} outside snapshot {} ..= last {last}",
            snapshot.index
        );
        let memberships = entries.iter().filter_map(membership_of).collect();
        RaftLog {
            node,
            snapshot,
            snapshot_membership,
            memberships,
            entries,
            commit: applied,
            applied,
            apply_handed: applied,
            durable: last,
            unpersisted_from: last.next(),
            #[cfg(feature = "planted-bugs")]
            bug_apply_before_durable: false,
        }
    }

    /// The compacted prefix.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The membership in force: the latest in the log.
    pub fn membership(&self) -> &Membership {
        self.memberships
            .last()
            .map_or(&self.snapshot_membership, |(_, membership)| membership)
    }

    /// Index of the entry that set the membership in force (the snapshot
    /// index when the log holds no membership entry).
    pub fn membership_index(&self) -> LogIndex {
        self.memberships
            .last()
            .map_or(self.snapshot.index, |(index, _)| *index)
    }

    /// The membership in force at `index` (at least the snapshot index):
    /// what a snapshot taken there records.
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.memberships
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or(&self.snapshot_membership, |(_, membership)| membership)
    }

    /// Every membership entry the log holds, with its index, oldest first.
    pub fn membership_entries(&self) -> &[(LogIndex, Membership)] {
        &self.memberships
    }

    /// The membership in force at the snapshot index.
    pub fn snapshot_membership(&self) -> &Membership {
        &self.snapshot_membership
    }

    /// First index still held (snapshot index + 1).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    /// Index of the last entry (the snapshot index when empty).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.index.0 + self.entries.len() as u64)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.term, |entry| entry.term)
    }

    /// Highest committed index.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// Highest applied index confirmed by the driver.
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// Highest durable index.
    pub fn durable_index(&self) -> LogIndex {
        self.durable
    }

    /// Term of the entry at `index`: `None` when it was compacted (other
    /// than the snapshot's own index) or lies beyond the log.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last_index() {
            return None;
        }
        Some(self.entry_at(index).term)
    }

    fn entry_at(&self, index: LogIndex) -> &Entry {
        &self.entries[(index.0 - self.snapshot.index.0 - 1) as usize]
    }

    /// Whether this log holds an entry at `index` with `term`.
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// Whether a candidate whose log ends at (`last_index`, `last_term`) is
    /// at least as up-to-date as this log (section 5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Up to `count_max` entries (and about `bytes_max` bytes, at least one
    /// entry) from `from` on.
    pub fn entries_from(
        &self,
        from: LogIndex,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Entry>, Compacted> {
        if from <= self.snapshot.index {
            return Err(Compacted);
        }
        if from > self.last_index() {
            return Ok(Vec::new());
        }
        let start = (from.0 - self.snapshot.index.0 - 1) as usize;
        let mut bytes = 0;
        let mut taken = Vec::new();
        for entry in self.entries[start..].iter().take(count_max) {
            bytes += entry.size_bytes();
            if !taken.is_empty() && bytes > bytes_max {
                break;
            }
            taken.push(entry.clone());
        }
        Ok(taken)
    }

    /// Appends `entries` at the end (the leader's own proposals).
    pub fn append(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "node {}: append at index {} leaves a gap after {}",
                self.node,
                entry.index,
                self.last_index()
            );
            assert!(
                entry.term >= self.last_term(),
                "node {} term {}: entry at index {} would lower the log's term from {}",
                self.node,
                entry.term,
                entry.index,
                self.last_term()
            );
            self.memberships.extend(membership_of(&entry));
            self.entries.push(entry);
        }
    }

    /// The follower side of AppendEntries (Figure 2, receiver steps 2-5):
    /// if the entry at `prev_index` has `prev_term`, delete any conflicting
    /// suffix, append the new entries and return the index of the last
    /// entry the request covers. `None` when the logs do not match.
    pub fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        skip_truncate: bool,
    ) -> Option<LogIndex> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let conflict = entries.iter().position(|entry| {
            !self.matches(entry.index, entry.term) && entry.index > self.snapshot.index
        });
        if let Some(position) = conflict {
            let first_new = entries[position].index;
            if first_new <= self.last_index() {
                if skip_truncate {
                    // Planted bug: keep the conflicting entries, add only the
                    // ones past the end.
                    let past_end: Vec<Entry> = entries
                        .into_iter()
                        .filter(|entry| entry.index > self.last_index())
                        .collect();
                    self.append(past_end);
                    return Some(last_new);
                }
                self.truncate_from(first_new);
            }
            self.append(entries.into_iter().skip(position).collect());
        }
        Some(last_new)
    }

    /// Deletes every entry at `from` and after. Truncating a committed entry
    /// would break state machine safety, so it is a panic.
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.commit,
            "node {}: truncating from index {} would remove committed entries (commit {})",
            self.node,
            from,
            self.commit
        );
        assert!(
            from > self.snapshot.index,
            "node {}: truncating into the snapshot at {}",
            self.node,
            from
        );
        self.entries
            .truncate((from.0 - self.snapshot.index.0 - 1) as usize);
        self.memberships.retain(|(index, _)| *index < from);
        self.durable = self.durable.min(from.prev());
        self.unpersisted_from = self.unpersisted_from.min(from);
    }

    /// The follower's hint for a rejected AppendEntries at (`index`,
    /// `term`): the last index at or below `index` whose term is at most
    /// `term`, with that term. The leader can skip every entry above it in
    /// one round trip. A walk that reaches the snapshot answers with the
    /// snapshot's position: it is committed, so the leader holds it too.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let probe = self.last_possible_match(index, term);
        match self.term_at(probe) {
            Some(found) => (probe, found),
            None => (self.snapshot.index, self.snapshot.term),
        }
    }

    /// The leader's side of fast backtracking: the last index at or below
    /// `index` where a follower whose entry at `index` has `term` may agree
    /// with this log. An entry whose term is above `term` cannot match (the
    /// follower's terms up to `index` are at most `term`). Below the
    /// snapshot nothing is known, so the answer may fall there, and the
    /// next send to that follower is the snapshot.
    pub fn last_possible_match(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut probe = index.min(self.last_index());
        while probe >= self.snapshot.index {
            match self.term_at(probe) {
                Some(found) if found <= term => return probe,
                _ if probe == LogIndex(0) => return probe,
                _ => probe = probe.prev(),
            }
        }
        probe
    }

    /// Raises the commit index; lowering it is ignored (a stale message).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "node {}: commit index {} beyond last index {}",
            self.node,
            index,
            self.last_index()
        );
        self.commit = index;
        true
    }

    /// Records that the driver made everything up to (`index`, `term`)
    /// durable. Ignored when the log no longer holds that entry (it was
    /// truncated while the write was in flight; a later write covers it).
    pub fn persisted(&mut self, index: LogIndex, term: Term) -> bool {
        if index <= self.durable || !self.matches(index, term) {
            return false;
        }
        self.durable = index;
        true
    }

    /// Entries not yet handed to the driver for persisting; marks them
    /// handed. The first one's index tells the driver where to truncate.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.unpersisted_from.max(self.first_index());
        let taken = self
            .entries_from(from, usize::MAX, usize::MAX)
            .unwrap_or_default();
        self.unpersisted_from = self.last_index().next();
        taken
    }

    /// Whether entries wait to be handed for persisting.
    pub fn has_unpersisted(&self) -> bool {
        self.unpersisted_from <= self.last_index()
    }

    /// Committed, durable entries not yet handed to the driver to apply (at
    /// most `count_max`); marks them handed. Entries are applied only once
    /// durable here, so the applied index never runs ahead of the local log.
    pub fn take_committed(&mut self, count_max: usize) -> Vec<Entry> {
        let high = self.apply_limit();
        if high <= self.apply_handed {
            return Vec::new();
        }
        let count = ((high.0 - self.apply_handed.0) as usize).min(count_max);
        let taken = self
            .entries_from(self.apply_handed.next(), count, usize::MAX)
            .expect("entries after the applied index are never compacted");
        self.apply_handed = taken.last().map_or(self.apply_handed, |entry| entry.index);
        taken
    }

    /// Highest index handed out for applying (or covered by a snapshot).
    pub fn apply_handed_index(&self) -> LogIndex {
        self.apply_handed
    }

    /// Whether committed entries wait to be handed for applying.
    pub fn has_committed_to_apply(&self) -> bool {
        self.apply_limit() > self.apply_handed
    }

    /// Entries up to here may be applied: committed and durable here.
    fn apply_limit(&self) -> LogIndex {
        #[cfg(feature = "planted-bugs")]
        {
            if self.bug_apply_before_durable {
                return self.commit;
            }
        }
        self.commit.min(self.durable)
    }

    /// Records that the driver applied everything up to `index`.
    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.apply_handed,
            "node {}: applied {} but only {} was handed out for applying",
            self.node,
            index,
            self.apply_handed
        );
        self.applied = self.applied.max(index);
    }

    /// Drops entries up to `index` (already applied and captured in a state
    /// machine snapshot by the driver).
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot.index {
            return;
        }
        assert!(
            index <= self.applied,
            "node {}: compacting to {} beyond applied {}",
            self.node,
            index,
            self.applied
        );
        let term = self.term_at(index).expect("an applied entry is in the log");
        self.snapshot_membership = self.membership_at(index).clone();
        self.memberships.retain(|(at, _)| *at > index);
        self.entries
            .drain(..(index.0 - self.snapshot.index.0) as usize);
        self.snapshot = SnapshotMeta { index, term };
    }

    /// Replaces the whole log with a leader's snapshot: the state machine is
    /// restored from it, so everything up to its index counts as committed
    /// and applied. Becomes durable when the driver reports it persisted.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta, membership: Membership) {
        assert!(
            meta.index > self.commit,
            "node {}: snapshot at {} does not pass commit {}",
            self.node,
            meta.index,
            self.commit
        );
        self.entries.clear();
        self.memberships.clear();
        self.snapshot_membership = membership;
        self.snapshot = meta;
        self.commit = meta.index;
        self.applied = meta.index;
        self.apply_handed = meta.index;
        self.durable = self.durable.min(meta.index.prev());
        self.unpersisted_from = meta.index.next();
    }

    /// Every entry held (for tests and inspection).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// The membership `entry` sets, with its index, if it sets one.
fn membership_of(entry: &Entry) -> Option<(LogIndex, Membership)> {
    match &entry.payload {
        EntryPayload::Membership(membership) => Some((entry.index, (**membership).clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::EntryPayload;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(vec![index as u8]),
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(offset, term)| entry(offset as u64 + 1, *term))
            .collect();
        RaftLog::restore(
            NodeId(1),
            SnapshotMeta::default(),
            Membership::new([NodeId(1)]),
            entries,
            LogIndex(0),
        )
    }

    #[test]
    fn empty_log_positions() {
        let log = log_with_terms(&[]);
        assert_eq!(log.last_index(), LogIndex(0));
        assert_eq!(log.last_term(), Term(0));
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(1)), None);
    }

    /// A log compacted through 10 (term 3), holding 11 (term 3) and 12
    /// (term 4).
    fn compacted_through_10() -> RaftLog {
        let snapshot = SnapshotMeta {
            index: LogIndex(10),
            term: Term(3),
        };
        RaftLog::restore(
            NodeId(1),
            snapshot,
            Membership::new([NodeId(1)]),
            vec![entry(11, 3), entry(12, 4)],
            LogIndex(10),
        )
    }

    #[test]
    fn compacted_prefix_is_not_assumed_to_start_at_one() {
        let log = compacted_through_10();
        assert_eq!(log.first_index(), LogIndex(11));
        assert_eq!(log.term_at(LogIndex(10)), Some(Term(3)));
        assert_eq!(log.term_at(LogIndex(9)), None);
        assert_eq!(log.entries_from(LogIndex(10), 10, 1000), Err(Compacted));
        assert_eq!(
            log.entries_from(LogIndex(12), 10, 1000).unwrap(),
            vec![entry(12, 4)]
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(12), Term(1)),
            (LogIndex(10), Term(3))
        );
    }

    #[test]
    fn backtracking_below_the_snapshot_points_into_it() {
        let log = compacted_through_10();
        assert_eq!(log.last_possible_match(LogIndex(12), Term(3)), LogIndex(11));
        assert_eq!(log.last_possible_match(LogIndex(12), Term(2)), LogIndex(9));
        assert_eq!(log.last_possible_match(LogIndex(7), Term(2)), LogIndex(7));
        assert_eq!(log.last_possible_match(LogIndex(7), Term(9)), LogIndex(7));
        assert_eq!(
            log_with_terms(&[2, 2]).last_possible_match(LogIndex(2), Term(1)),
            LogIndex(0)
        );
        // The follower's hint names a position it holds: its snapshot.
        assert_eq!(
            log.find_conflict_by_term(LogIndex(12), Term(2)),
            (LogIndex(10), Term(3))
        );
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_with_terms(&[1, 1, 2]);
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn try_append_truncates_conflicting_suffix_only() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(
            log.try_append(LogIndex(2), Term(1), vec![entry(3, 2)], false),
            Some(LogIndex(3))
        );
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        // A stale, shorter request that matches must not truncate anything.
        assert_eq!(
            log.try_append(LogIndex(1), Term(1), vec![entry(2, 1)], false),
            Some(LogIndex(2))
        );
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.try_append(LogIndex(3), Term(9), vec![], false), None);
    }

    #[test]
    #[should_panic(expected = "would remove committed entries")]
    fn truncating_committed_entries_panics() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.commit_to(LogIndex(3));
        log.try_append(LogIndex(1), Term(1), vec![entry(2, 2)], false);
    }

    #[test]
    fn durable_and_committed_gate_applying() {
        let mut log = log_with_terms(&[]);
        log.append(vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
        assert_eq!(log.take_unpersisted().len(), 3);
        assert!(log.commit_to(LogIndex(3)));
        assert!(log.take_committed(10).is_empty(), "nothing is durable yet");
        assert!(log.persisted(LogIndex(2), Term(1)));
        assert_eq!(log.take_committed(10).len(), 2);
        assert!(log.persisted(LogIndex(3), Term(1)));
        assert_eq!(log.take_committed(10), vec![entry(3, 1)]);
    }

    #[test]
    fn persisted_report_for_a_truncated_entry_is_ignored() {
        let mut log = log_with_terms(&[]);
        log.try_append(LogIndex(0), Term(0), vec![entry(1, 1), entry(2, 1)], false);
        log.take_unpersisted();
        log.try_append(LogIndex(1), Term(1), vec![entry(2, 2)], false);
        assert!(!log.persisted(LogIndex(2), Term(1)));
        assert_eq!(log.durable_index(), LogIndex(0));
        assert_eq!(log.take_unpersisted(), vec![entry(2, 2)]);
        assert!(log.persisted(LogIndex(2), Term(2)));
    }

    #[test]
    fn compact_and_install_snapshot() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.commit_to(LogIndex(3));
        let handed = log.take_committed(10);
        log.applied_to(handed.last().unwrap().index);
        log.compact(LogIndex(2));
        assert_eq!(
            log.snapshot(),
            SnapshotMeta {
                index: LogIndex(2),
                term: Term(1)
            }
        );
        assert_eq!(log.entries().len(), 2);
        log.install_snapshot(
            SnapshotMeta {
                index: LogIndex(9),
                term: Term(5),
            },
            Membership::new([NodeId(1), NodeId(2)]),
        );
        assert_eq!(log.last_index(), LogIndex(9));
        assert_eq!(log.commit_index(), LogIndex(9));
        assert_eq!(log.applied_index(), LogIndex(9));
        assert!(!log.persisted(LogIndex(8), Term(5)));
        assert!(log.persisted(LogIndex(9), Term(5)));
    }

    #[test]
    fn entries_from_respects_count_and_bytes() {
        let log = log_with_terms(&[1; 10]);
        assert_eq!(
            log.entries_from(LogIndex(1), 3, usize::MAX).unwrap().len(),
            3
        );
        let one_entry_bytes = entry(1, 1).size_bytes();
        assert_eq!(
            log.entries_from(LogIndex(1), 100, one_entry_bytes * 2)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            log.entries_from(LogIndex(1), 100, 1).unwrap().len(),
            1,
            "one entry always goes"
        );
    }

    /// A plain-Vec model of a log: `model[i]` is the term at index i + 1.
    #[derive(Debug, Clone)]
    enum Operation {
        Append { term_bump: u64, count: u64 },
        FollowerAppend { prev_back: u64, terms: Vec<u64> },
        Commit { back: u64 },
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            (0..2u64, 0..4u64)
                .prop_map(|(term_bump, count)| Operation::Append { term_bump, count }),
            (0..6u64, proptest::collection::vec(0..3u64, 0..5))
                .prop_map(|(prev_back, terms)| Operation::FollowerAppend { prev_back, terms }),
            (0..4u64).prop_map(|back| Operation::Commit { back }),
        ]
    }

    proptest! {
        #[test]
        fn log_matches_a_vec_model(operations in proptest::collection::vec(operation(), 1..60)) {
            let mut log = log_with_terms(&[]);
            let mut model: Vec<u64> = Vec::new();
            let mut model_commit = 0u64;
            for operation in operations {
                let last_term = model.last().copied().unwrap_or(0);
                match operation {
                    Operation::Append { term_bump, count } => {
                        let term = last_term + term_bump;
                        for _ in 0..count {
                            model.push(term);
                            log.append(vec![entry(model.len() as u64, term)]);
                        }
                    }
                    Operation::FollowerAppend { prev_back, terms } => {
                        let prev_index = (model.len() as u64).saturating_sub(prev_back);
                        // Claimed prev term: sometimes right, sometimes not.
                        let true_prev_term = if prev_index == 0 { 0 } else { model[prev_index as usize - 1] };
                        let prev_term = if terms.first() == Some(&0) { true_prev_term + 1 } else { true_prev_term };
                        let mut term = prev_term.max(last_term);
                        let mut new_entries = Vec::new();
                        for (offset, bump) in terms.iter().enumerate() {
                            term += bump;
                            new_entries.push(entry(prev_index + 1 + offset as u64, term));
                        }
                        let expected_match = prev_term == true_prev_term;
                        // The model: would this truncate committed entries?
                        let mut expected_model = model.clone();
                        let mut truncates_committed = false;
                        if expected_match {
                            for new_entry in &new_entries {
                                let at = new_entry.index.0 as usize;
                                if at <= expected_model.len() {
                                    if expected_model[at - 1] != new_entry.term.0 {
                                        truncates_committed |= (at as u64) <= model_commit;
                                        expected_model.truncate(at - 1);
                                        expected_model.push(new_entry.term.0);
                                    }
                                } else {
                                    expected_model.push(new_entry.term.0);
                                }
                            }
                        }
                        if truncates_committed {
                            continue;
                        }
                        let result = log.try_append(LogIndex(prev_index), Term(prev_term), new_entries.clone(), false);
                        prop_assert_eq!(result.is_some(), expected_match);
                        if expected_match {
                            prop_assert_eq!(result, Some(LogIndex(prev_index + new_entries.len() as u64)));
                            model = expected_model;
                        }
                    }
                    Operation::Commit { back } => {
                        let target = (model.len() as u64).saturating_sub(back).max(model_commit);
                        log.commit_to(LogIndex(target));
                        model_commit = target;
                    }
                }
                prop_assert_eq!(log.last_index(), LogIndex(model.len() as u64));
                prop_assert_eq!(log.commit_index(), LogIndex(model_commit));
                for (offset, term) in model.iter().enumerate() {
                    prop_assert_eq!(log.term_at(LogIndex(offset as u64 + 1)), Some(Term(*term)));
                }
            }
        }
    }
}
