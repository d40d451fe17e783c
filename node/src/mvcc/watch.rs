//! A watch: which changes of the history it sends next, so that a watcher
//! sees every change to its range once, in revision order, with no gap and
//! no duplicate, whatever node serves it and however the changes arrive.
//!
//! The server reads the history in windows of whole revisions (every
//! change of a command commits at once, so a window never splits one) and
//! hands each window to [`Watch::take`]; the watch keeps the revision it
//! needs next.

use super::{Event, KeyRange, Revision, Revisions};

/// Revisions read in one window: a watch far behind catches up in windows
/// of this many.
pub const WATCH_REVISIONS_PER_WINDOW_MAX: i64 = 1000;

/// One watch of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The keys watched.
    pub range: KeyRange,
    /// The first revision not yet sent. Invariant: only grows.
    pub next_revision: Revision,
    /// Leave puts out.
    pub no_put: bool,
    /// Leave deletes out.
    pub no_delete: bool,
}

/// What a watch does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new.
    Wait,
    /// Read the changes to the range with revisions in `from..=to`, then
    /// [`Watch::take`] them.
    Read {
        /// The first revision of the window.
        from: Revision,
        /// The last.
        to: Revision,
    },
    /// The revision it needs next was compacted: it ends, telling the
    /// client the compaction point.
    Compacted(Revision),
}

impl Watch {
    /// A watch of `range` from `start_revision` (0 or less: from the
    /// revision after `revisions.current`, so only new changes).
    pub fn new(range: KeyRange, start_revision: Revision, revisions: Revisions) -> Watch {
        let next_revision = if start_revision > 0 {
            start_revision
        } else {
            revisions.current + 1
        };
        Watch {
            range,
            next_revision,
            no_put: false,
            no_delete: false,
        }
    }

    /// What to do with the store at `revisions`.
    pub fn step(&self, revisions: Revisions) -> Step {
        if self.next_revision < revisions.compacted {
            return Step::Compacted(revisions.compacted);
        }
        if self.next_revision > revisions.current {
            return Step::Wait;
        }
        let to = revisions
            .current
            .min(self.next_revision + WATCH_REVISIONS_PER_WINDOW_MAX - 1);
        Step::Read {
            from: self.next_revision,
            to,
        }
    }

    /// What to send from the read of a window `from..=to` that
    /// [`Self::step`] asked for. The read is a statement of its own, taken
    /// after `step`'s: the store may have moved in between, forward (a
    /// compaction) or back (a Postgres crash that lost asynchronous
    /// applies, which the log replays). So the read brings the revisions
    /// it saw, and the window ends at the read's current revision when
    /// that is below `to`: revisions the read did not see are read again
    /// later, never skipped. Each change carries what the server sends
    /// beside it (the previous version, for `prev_kv`).
    pub fn take<T>(&mut self, from: Revision, to: Revision, read: WindowRead<T>) -> Taken<T> {
        assert_eq!(
            from, self.next_revision,
            "a watch took a window that does not start where it stopped"
        );
        if from < read.revisions.compacted {
            return Taken::Compacted(read.revisions.compacted);
        }
        let to = to.min(read.revisions.current);
        assert!(
            read.changes
                .iter()
                .all(|(change, _)| (from..=to).contains(&change.revision)
                    && self.range.contains(&change.key)),
            "a watch took changes outside its window or range"
        );
        self.next_revision = self.next_revision.max(to + 1);
        Taken::Changes(
            read.changes
                .into_iter()
                .filter(|(change, _)| match change.kv {
                    Some(_) => !self.no_put,
                    None => !self.no_delete,
                })
                .collect(),
        )
    }
}

/// One read of a window of history: the store's revisions as the read saw
/// them, and every change to the watched range in the window (up to the
/// read's current revision), in (revision, sub) order, each with what the
/// server sends beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRead<T> {
    /// The store's revisions, read by the same statement as the changes.
    pub revisions: Revisions,
    /// The changes.
    pub changes: Vec<(Event, T)>,
}

/// What a window read gives the watch's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken<T> {
    /// The changes to send (perhaps none), in order.
    Changes(Vec<(Event, T)>),
    /// The window was compacted before it was read: the watch ends,
    /// telling the client the compaction point.
    Compacted(Revision),
}

#[cfg(test)]
mod tests {
    use super::super::{Command, MvccStore, PutRequest, RequestOp};
    use super::*;

    fn put(store: &mut MvccStore, key: &str) {
        store.apply(&Command::Op(RequestOp::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })));
    }

    /// Sends what the store's history holds for `watch`, window by window.
    fn drain(watch: &mut Watch, store: &MvccStore) -> Result<Vec<(Revision, Vec<u8>)>, Revision> {
        let mut sent = Vec::new();
        loop {
            match watch.step(store.revisions()) {
                Step::Wait => return Ok(sent),
                Step::Compacted(revision) => return Err(revision),
                Step::Read { from, to } => {
                    match watch.take(from, to, store.read_window(&watch.range.clone(), from, to)) {
                        Taken::Compacted(revision) => return Err(revision),
                        Taken::Changes(changes) => sent.extend(
                            changes
                                .into_iter()
                                .map(|(change, ())| (change.revision, change.key)),
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn a_watch_sends_every_change_once_in_order_across_windows() {
        let mut store = MvccStore::default();
        let range = KeyRange {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        };
        let mut watch = Watch::new(range.clone(), 0, store.revisions());
        let writes = WATCH_REVISIONS_PER_WINDOW_MAX as usize * 2 + 5;
        for round in 0..writes {
            put(&mut store, if round % 2 == 0 { "a1" } else { "b1" });
        }
        let sent = drain(&mut watch, &store).expect("nothing compacted");
        let expected: Vec<Revision> = (2..2 + writes as i64).step_by(2).collect();
        assert_eq!(
            sent.iter()
                .map(|(revision, _)| *revision)
                .collect::<Vec<_>>(),
            expected
        );
        assert_eq!(drain(&mut watch, &store), Ok(Vec::new()), "no duplicate");
        put(&mut store, "a2");
        assert_eq!(
            drain(&mut watch, &store),
            Ok(vec![(store.revisions().current, b"a2".to_vec())])
        );
        // From a past revision: history replays, then new changes follow.
        let mut replay = Watch::new(range, 4, store.revisions());
        assert_eq!(
            drain(&mut replay, &store)
                .expect("kept")
                .first()
                .map(|s| s.0),
            Some(4)
        );
    }

    #[test]
    fn a_watch_behind_the_compaction_point_ends() {
        let mut store = MvccStore::default();
        for _ in 0..5 {
            put(&mut store, "k");
        }
        store.apply(&Command::Compact(4));
        let mut behind = Watch::new(KeyRange::single("k"), 3, store.revisions());
        assert_eq!(drain(&mut behind, &store), Err(4));
        let mut at = Watch::new(KeyRange::single("k"), 4, store.revisions());
        assert_eq!(
            drain(&mut at, &store).expect("at the compaction point"),
            vec![(4, b"k".to_vec()), (5, b"k".to_vec()), (6, b"k".to_vec())]
        );
    }

    #[test]
    fn a_window_read_after_the_store_moved_sends_only_what_it_saw() {
        let mut store = MvccStore::default();
        for _ in 0..3 {
            put(&mut store, "k");
        }
        let mut watch = Watch::new(KeyRange::single("k"), 2, store.revisions());
        let Step::Read { from, to } = watch.step(store.revisions()) else {
            panic!("the history holds revisions 2 to 4");
        };
        assert_eq!((from, to), (2, 4));
        // The store lost revision 4 (asynchronous applies lost in a
        // crash) before the window was read: 4 is read again once the log
        // replays it, not skipped.
        let mut behind = MvccStore::default();
        for _ in 0..2 {
            put(&mut behind, "k");
        }
        let Taken::Changes(sent) =
            watch.take(from, to, behind.read_window(&watch.range.clone(), from, to))
        else {
            panic!("nothing compacted");
        };
        assert_eq!(
            sent.iter()
                .map(|(change, ())| change.revision)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(watch.next_revision, 4);
        assert_eq!(drain(&mut watch, &store), Ok(vec![(4, b"k".to_vec())]));
        // A compaction between the step and the read ends the watch.
        let mut late = Watch::new(KeyRange::single("k"), 2, store.revisions());
        let Step::Read { from, to } = late.step(store.revisions()) else {
            panic!("the history holds revisions 2 to 4");
        };
        store.apply(&Command::Compact(3));
        assert_eq!(
            late.take(
                from,
                to,
                store.read_window(&KeyRange::single("k"), from, to)
            ),
            Taken::Compacted(3)
        );
    }
}
