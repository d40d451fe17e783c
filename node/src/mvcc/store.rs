//! The whole store in memory: the simulator's model of the Postgres state
//! machine's rows (current rows, history, revisions), driven by the same
//! [`apply`] as the product.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{
    apply, check_read_revision, shape_range, Command, Event, KeyRange, KeyValue, Keyspace, KvError,
    Outcome, RangeRequest, RangeResponse, Revision, Revisions,
};

/// Current rows, every change not yet compacted, and the revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MvccStore {
    current: Rows,
    /// Every change, by key, oldest first. Invariant: a key's changes have
    /// ascending revisions, and after a compaction at `c` a key keeps at
    /// most one change at or below `c`, never a delete.
    history: BTreeMap<Vec<u8>, Vec<Event>>,
    revisions: Revisions,
}

/// The current rows by key, and the leases with their granted TTLs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rows(BTreeMap<Vec<u8>, KeyValue>, BTreeMap<i64, i64>);

impl Keyspace for Rows {
    fn range(&self, range: &KeyRange) -> Vec<KeyValue> {
        rows_in(&self.0, range).cloned().collect()
    }

    fn put(&mut self, kv: KeyValue) {
        self.0.insert(kv.key.clone(), kv);
    }

    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }

    fn lease(&self, lease: i64) -> Option<i64> {
        self.1.get(&lease).copied()
    }

    fn lease_rows(&self, lease: i64) -> Vec<KeyValue> {
        self.0
            .values()
            .filter(|kv| kv.lease == lease)
            .cloned()
            .collect()
    }

    fn set_lease(&mut self, lease: i64, ttl: Option<i64>) {
        match ttl {
            Some(ttl) => self.1.insert(lease, ttl),
            None => self.1.remove(&lease),
        };
    }
}

/// The values of `map` whose keys are in `range`, in key order.
pub(crate) fn rows_in<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    range: &KeyRange,
) -> impl Iterator<Item = &'a V> {
    let end = match range.end_exclusive() {
        Some(end) if end.as_slice() <= range.key.as_slice() => None,
        end => Some(end),
    };
    let start = range.key.clone();
    end.into_iter().flat_map(move |end| {
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        map.range::<Vec<u8>, _>((Bound::Included(start.clone()), upper))
            .map(|(_, value)| value)
    })
}

impl MvccStore {
    /// The revisions.
    pub fn revisions(&self) -> Revisions {
        self.revisions
    }

    /// Applies one command; returns the answer and the changes it made.
    pub fn apply(&mut self, command: &Command) -> (Outcome, Vec<Event>) {
        let (outcome, events) = apply(&mut self.current, &mut self.revisions, command);
        for event in &events {
            self.history
                .entry(event.key.clone())
                .or_default()
                .push(event.clone());
        }
        if let (Command::Compact(revision), Ok(_)) = (command, &outcome.result) {
            self.compact(*revision);
        }
        (outcome, events)
    }

    /// The current row of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.current.0.get(key)
    }

    /// The current rows, by key.
    pub fn rows(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.current.0
    }

    /// The leases, with their granted TTLs in seconds.
    pub fn leases(&self) -> &BTreeMap<i64, i64> {
        &self.current.1
    }

    /// Every change kept, in revision order.
    pub fn history(&self) -> Vec<&Event> {
        let mut events: Vec<&Event> = self.history.values().flatten().collect();
        events.sort_by_key(|event| (event.revision, event.sub));
        events
    }

    /// A read, at the current revision or a past one not compacted.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        let revision = check_read_revision(request.revision, self.revisions)?;
        let kvs = if revision == self.revisions.current {
            self.current.range(&request.range)
        } else {
            rows_in(&self.history, &request.range)
                .filter_map(|changes| {
                    changes
                        .iter()
                        .rev()
                        .find(|event| event.revision <= revision)
                        .and_then(|event| event.kv.clone())
                })
                .collect()
        };
        let count = kvs.len() as i64;
        Ok(RangeResponse {
            header_revision: self.revisions.current,
            ..shape_range(kvs, count, request)
        })
    }

    /// Forgets what no read or watch at `revision` or later needs: of
    /// each key's changes at or below it, all but the last, and that one
    /// too when it is a delete below `revision` (a delete at `revision`
    /// itself is an event a watch from `revision` still sends).
    fn compact(&mut self, revision: Revision) {
        self.history.retain(|_, changes| {
            let at_or_below = changes
                .iter()
                .take_while(|event| event.revision <= revision)
                .count();
            let keep_from = match changes.get(at_or_below.wrapping_sub(1)) {
                Some(last) if last.kv.is_some() || last.revision == revision => at_or_below - 1,
                _ => at_or_below,
            };
            changes.drain(..keep_from);
            !changes.is_empty()
        });
    }
}
