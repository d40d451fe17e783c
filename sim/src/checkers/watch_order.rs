//! etcd watches see every change to their range once, in revision order
//! (etcd's "API guarantees" for watches: ordered, "events are ordered by
//! revision"; unique, "an event will never appear on a watch twice";
//! reliable, "a sequence of events will never drop any subsequence of
//! events"; and a watch from a compacted revision is told so; the
//! product's `mvcc::watch`).
//!
//! The truth is what the replicas applied: each revision's changes as the
//! first replica to reach that revision made them (`revisions` and
//! `replica_rows` hold the replicas to one another). Checked:
//! 1. a replica that applies a revision again (the log replaying applies
//!    its Postgres lost) makes the same changes;
//! 2. a watch sent the windows `from..=through` since it was created from
//!    revision `s` was sent exactly the truth's changes to its range (and
//!    through its filters) with revisions in `s..=through`, in (revision,
//!    sub) order: no gap, no duplicate, no reordering, no change that
//!    never happened, and no window beyond the revisions applied anywhere;
//! 3. a client's watch created again on another node (after a crash, a
//!    failed read or a compaction) from the revision after the last event
//!    it was sent neither repeats nor skips a change: its start is above
//!    that event and not beyond what was checked;
//! 4. a watch told its revision was compacted was: the compaction point
//!    it names is above the revision it needed, and a compaction to that
//!    point was applied;
//! 5. liveness (`World::check_watches_caught_up`): at the end of a run,
//!    every watch served by a running node has been sent everything its
//!    node's history holds for it.

use std::collections::BTreeMap;

use raftgres::core::NodeId;
use raftgres::mvcc::{Event, KeyRange, Revision, REVISION_INITIAL};

/// What one watch was sent so far.
#[derive(Clone, Copy, Debug)]
struct Sent {
    /// The first revision not yet checked.
    next: Revision,
    /// The last change sent: (revision, sub).
    last: Option<(Revision, i64)>,
}

/// A client watch's range and filters, as it asked for them.
#[derive(Clone, Debug)]
pub struct WatchedRange {
    /// The keys.
    pub range: KeyRange,
    /// Puts left out.
    pub no_put: bool,
    /// Deletes left out.
    pub no_delete: bool,
}

impl WatchedRange {
    fn keeps(&self, change: &Event) -> bool {
        self.range.contains(&change.key)
            && match change.kv {
                Some(_) => !self.no_put,
                None => !self.no_delete,
            }
    }
}

/// The truth and what every watch was sent.
#[derive(Debug, Default)]
pub struct WatchOrder {
    /// Each revision's changes, in sub order.
    truth: BTreeMap<Revision, Vec<Event>>,
    /// The highest compaction point applied anywhere.
    compacted_max: Revision,
    /// By client watch id.
    watches: BTreeMap<u64, Sent>,
}

impl WatchOrder {
    /// Rule 1: node `node` applied `changes` (in order, perhaps several
    /// revisions).
    pub fn on_applied(&mut self, node: NodeId, changes: &[Event]) -> Result<(), String> {
        let mut start = 0;
        while start < changes.len() {
            let revision = changes[start].revision;
            let end = start
                + changes[start..]
                    .iter()
                    .take_while(|change| change.revision == revision)
                    .count();
            let made = &changes[start..end];
            match self.truth.get(&revision) {
                Some(truth) if truth.as_slice() != made => {
                    return Err(format!(
                        "node {node} made changes {made:?} at revision {revision}, \
                         where a replica made {truth:?}"
                    ))
                }
                Some(_) => {}
                None => {
                    self.truth.insert(revision, made.to_vec());
                }
            }
            start = end;
        }
        Ok(())
    }

    /// A compaction to `revision` was applied (rule 4).
    pub fn on_compaction_applied(&mut self, revision: Revision) {
        self.compacted_max = self.compacted_max.max(revision);
    }

    /// Rule 3: client watch `watch` was created on a node from `start`
    /// (the server's first revision to send); `fresh` when the client
    /// asked for a new start (its first creation, or after a compaction)
    /// rather than resuming.
    pub fn on_created(&mut self, watch: u64, start: Revision, fresh: bool) -> Result<(), String> {
        let sent = self.watches.entry(watch).or_insert(Sent {
            next: start,
            last: None,
        });
        if fresh {
            *sent = Sent {
                next: start,
                last: None,
            };
            return Ok(());
        }
        if let Some((revision, _)) = sent.last.filter(|(revision, _)| start <= *revision) {
            return Err(format!(
                "watch {watch} resumed from revision {start}, at or before the change at \
                 revision {revision} it was already sent"
            ));
        }
        if start > sent.next {
            return Err(format!(
                "watch {watch} resumed from revision {start}, skipping revisions {}..{start}",
                sent.next
            ));
        }
        sent.next = start;
        Ok(())
    }

    /// Rule 2: client watch `watch` of `range` was sent `changes` for the
    /// window `from..=through`. Returns how many changes it checked.
    pub fn on_sent(
        &mut self,
        watch: u64,
        range: &WatchedRange,
        from: Revision,
        through: Revision,
        changes: &[Event],
    ) -> Result<usize, String> {
        let Some(sent) = self.watches.get_mut(&watch) else {
            return Err(format!(
                "watch {watch} was sent changes before it was created"
            ));
        };
        if from != sent.next {
            return Err(format!(
                "watch {watch} was sent the window {from}..={through} while it needed \
                 revision {} next",
                sent.next
            ));
        }
        let applied_max = self
            .truth
            .keys()
            .next_back()
            .map_or(REVISION_INITIAL, |revision| {
                (*revision).max(REVISION_INITIAL)
            });
        if through > applied_max {
            return Err(format!(
                "watch {watch} was sent the window {from}..={through}, beyond revision \
                 {applied_max}, the highest any replica applied"
            ));
        }
        let expected: Vec<&Event> = self
            .truth
            .range(from..=through)
            .flat_map(|(_, made)| made)
            .filter(|change| range.keeps(change))
            .collect();
        if expected.len() != changes.len()
            || expected
                .iter()
                .zip(changes)
                .any(|(truth, sent)| *truth != sent)
        {
            return Err(format!(
                "watch {watch} of {:?} was sent {} for revisions {from}..={through}, where \
                 the replicas made {}",
                range.range,
                describe(changes.iter()),
                describe(expected.into_iter()),
            ));
        }
        sent.next = through + 1;
        if let Some(last) = changes.last() {
            sent.last = Some((last.revision, last.sub));
        }
        Ok(changes.len())
    }

    /// Rule 4: client watch `watch`, needing revision `needed`, was told
    /// it was compacted at `compact_revision`.
    pub fn on_compacted(
        &self,
        watch: u64,
        needed: Revision,
        compact_revision: Revision,
    ) -> Result<(), String> {
        if compact_revision <= needed || compact_revision > self.compacted_max {
            return Err(format!(
                "watch {watch}, needing revision {needed}, was told the history was \
                 compacted at {compact_revision} (the highest compaction applied: {})",
                self.compacted_max
            ));
        }
        Ok(())
    }
}

fn describe<'a>(changes: impl Iterator<Item = &'a Event>) -> String {
    let changes: Vec<String> = changes
        .map(|change| {
            let kind = if change.kv.is_some() { "put" } else { "delete" };
            format!("{kind} {:?}@{}.{}", change.key, change.revision, change.sub)
        })
        .collect();
    format!("[{}]", changes.join(", "))
}

#[cfg(test)]
mod tests {
    use raftgres::mvcc::KeyValue;

    use super::*;

    fn put(key: u8, revision: Revision) -> Event {
        Event {
            revision,
            sub: 0,
            kv: Some(KeyValue {
                key: vec![key],
                value: vec![1],
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            }),
            key: vec![key],
        }
    }

    fn all() -> WatchedRange {
        WatchedRange {
            range: KeyRange {
                key: vec![0],
                range_end: vec![0],
            },
            no_put: false,
            no_delete: false,
        }
    }

    fn checker() -> WatchOrder {
        let mut checker = WatchOrder::default();
        let changes = [put(1, 2), put(2, 3), put(1, 4)];
        checker.on_applied(NodeId(1), &changes).unwrap();
        checker
    }

    #[test]
    fn every_change_once_in_order_passes_and_a_gap_or_a_repeat_fails() {
        let mut checker = checker();
        checker.on_created(7, 2, true).unwrap();
        assert_eq!(
            checker.on_sent(7, &all(), 2, 3, &[put(1, 2), put(2, 3)]),
            Ok(2)
        );
        // A repeat of revision 3's change.
        let repeated = checker.on_sent(7, &all(), 3, 4, &[put(2, 3), put(1, 4)]);
        assert!(repeated.unwrap_err().contains("needed revision 4"));
        // A gap: revision 4's change left out.
        let gap = checker.on_sent(7, &all(), 4, 4, &[]);
        assert!(gap
            .unwrap_err()
            .contains("where the replicas made [put [1]@4.0]"));
        // Resuming after the last change sent, and not beyond.
        assert!(checker
            .on_created(7, 3, false)
            .unwrap_err()
            .contains("at or before"));
        assert!(checker
            .on_created(7, 5, false)
            .unwrap_err()
            .contains("skipping"));
        checker.on_created(7, 4, false).unwrap();
        assert_eq!(checker.on_sent(7, &all(), 4, 4, &[put(1, 4)]), Ok(1));
        // Nothing beyond what was applied.
        let future = checker.on_sent(7, &all(), 5, 5, &[put(1, 5)]);
        assert!(future.unwrap_err().contains("beyond revision 4"));
    }

    #[test]
    fn a_range_and_its_filters_decide_what_is_expected() {
        let mut checker = checker();
        let single = WatchedRange {
            range: KeyRange::single(vec![1]),
            no_put: false,
            no_delete: false,
        };
        checker.on_created(1, 2, true).unwrap();
        assert_eq!(
            checker.on_sent(1, &single, 2, 4, &[put(1, 2), put(1, 4)]),
            Ok(2)
        );
        let no_put = WatchedRange {
            no_put: true,
            ..all()
        };
        checker.on_created(2, 2, true).unwrap();
        assert_eq!(checker.on_sent(2, &no_put, 2, 4, &[]), Ok(0));
    }

    #[test]
    fn a_replica_that_makes_other_changes_at_a_revision_fails() {
        let mut checker = checker();
        assert!(checker
            .on_applied(NodeId(2), &[put(1, 2), put(2, 3)])
            .is_ok());
        let other = checker.on_applied(NodeId(2), &[put(2, 4)]);
        assert!(other.unwrap_err().contains("node 2 made changes"));
    }

    #[test]
    fn a_compacted_answer_names_an_applied_compaction_above_the_revision_needed() {
        let mut checker = checker();
        assert!(
            checker.on_compacted(1, 2, 3).is_err(),
            "nothing compacted yet"
        );
        checker.on_compaction_applied(3);
        assert!(checker.on_compacted(1, 2, 3).is_ok());
        assert!(checker.on_compacted(1, 3, 3).is_err(), "revision 3 is kept");
        assert!(checker.on_compacted(1, 2, 4).is_err(), "no compaction to 4");
    }
}
