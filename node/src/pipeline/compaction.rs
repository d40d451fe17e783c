//! Log compaction policy. The state machine is its own snapshot (see
//! `transfer`), so compacting the log needs only the applied index: every
//! `every` applied entries the applied index becomes a mark, and the log is
//! compacted to the mark before it. Between one and two times `every`
//! entries stay in the log for followers that lag a little; a follower
//! further behind is streamed a snapshot.

use crate::core::LogIndex;

/// Where the log is compacted to next.
#[derive(Debug)]
pub(super) struct Compaction {
    /// Entries between two marks (non-zero).
    every: u64,
    /// The latest mark: the log is compacted to it at the next one.
    mark: LogIndex,
}

impl Compaction {
    /// The log starts after `log_start`, which is the first mark.
    pub(super) fn new(every: u64, log_start: LogIndex) -> Compaction {
        Compaction {
            every: every.max(1),
            mark: log_start,
        }
    }

    /// Entries up to `applied` are applied; returns the index to compact
    /// the log to, when one is due and the log (which starts after
    /// `log_start`) still holds it.
    pub(super) fn applied(&mut self, applied: LogIndex, log_start: LogIndex) -> Option<LogIndex> {
        if applied.0 < self.mark.0.saturating_add(self.every) {
            return None;
        }
        let point = std::mem::replace(&mut self.mark, applied);
        (point > log_start).then_some(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_compacted_to_the_mark_before_the_latest() {
        let mut compaction = Compaction::new(100, LogIndex(0));
        assert_eq!(compaction.applied(LogIndex(99), LogIndex(0)), None);
        assert_eq!(compaction.applied(LogIndex(100), LogIndex(0)), None);
        assert_eq!(compaction.applied(LogIndex(150), LogIndex(0)), None);
        assert_eq!(
            compaction.applied(LogIndex(230), LogIndex(0)),
            Some(LogIndex(100))
        );
        assert_eq!(
            compaction.applied(LogIndex(330), LogIndex(100)),
            Some(LogIndex(230))
        );
    }

    #[test]
    fn a_mark_the_log_no_longer_holds_compacts_nothing() {
        // An installed snapshot moved the log's start past the mark.
        let mut compaction = Compaction::new(100, LogIndex(0));
        assert_eq!(compaction.applied(LogIndex(100), LogIndex(0)), None);
        assert_eq!(compaction.applied(LogIndex(500), LogIndex(400)), None);
        assert_eq!(
            compaction.applied(LogIndex(600), LogIndex(400)),
            Some(LogIndex(500))
        );
    }
}
