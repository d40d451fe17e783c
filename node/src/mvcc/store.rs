//! The whole store in memory: the simulator's model of the Postgres state
//! machine's rows (current rows, history, revisions), driven by the same
//! [`apply`] as the product.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::watch::WindowRead;
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

    /// The read of a watch's window `from..=to` of `range`: what the
    /// product's one statement over the history table returns.
    pub fn read_window(&self, range: &KeyRange, from: Revision, to: Revision) -> WindowRead<()> {
        let mut changes: Vec<(Event, ())> = rows_in(&self.history, range)
            .flatten()
            .filter(|change| (from..=to).contains(&change.revision))
            .map(|change| (change.clone(), ()))
            .collect();
        changes.sort_by_key(|(change, ())| (change.revision, change.sub));
        WindowRead {
            revisions: self.revisions,
            changes,
        }
    }

    /// Every change kept, by key (in key order), each key's oldest first:
    /// the history without [`MvccStore::history`]'s sort, for digests and
    /// snapshots.
    pub fn history_by_key(&self) -> impl Iterator<Item = (&[u8], &[Event])> {
        self.history
            .iter()
            .map(|(key, changes)| (key.as_slice(), changes.as_slice()))
    }

    /// How many changes the history keeps.
    pub fn history_len(&self) -> usize {
        self.history.values().map(Vec::len).sum()
    }

    /// The store a snapshot describes: its revisions, its current rows, its
    /// history (in any order) and its leases (id, granted TTL). The parts
    /// must hold together as a store this module built holds them, or the
    /// error says what does not: the revisions (`1 <= current`,
    /// `compacted <= current`); each key's changes (distinct (revision,
    /// sub), none beyond the current revision, at most one at or below the
    /// compaction point and that one not a delete below it, a put's row naming its
    /// key and its revision); each row (a non-empty key, `1 <= version`,
    /// `create_revision <= mod_revision`, the last change of its key, and
    /// attached to no lease or to one of the leases); no key whose last
    /// change is a put without its row; and each lease once, never 0.
    pub fn from_parts(
        rows: impl IntoIterator<Item = KeyValue>,
        history: impl IntoIterator<Item = Event>,
        leases: impl IntoIterator<Item = (i64, i64)>,
        revisions: Revisions,
    ) -> Result<MvccStore, String> {
        if revisions.current < super::REVISION_INITIAL
            || revisions.compacted < 0
            || revisions.compacted > revisions.current
        {
            return Err(format!("impossible revisions {revisions:?}"));
        }
        let mut by_key: BTreeMap<Vec<u8>, Vec<Event>> = BTreeMap::new();
        for event in history {
            let consistent = !event.key.is_empty()
                && event.revision <= revisions.current
                && event.revision > super::REVISION_INITIAL
                && event.kv.as_ref().is_none_or(|kv| {
                    kv.key == event.key
                        && kv.mod_revision == event.revision
                        && kv.create_revision <= kv.mod_revision
                        && kv.version >= 1
                });
            if !consistent {
                return Err(format!(
                    "change {event:?} does not fit the store at {revisions:?}"
                ));
            }
            by_key.entry(event.key.clone()).or_default().push(event);
        }
        for (key, changes) in &mut by_key {
            changes.sort_by_key(|event| (event.revision, event.sub));
            let repeated = changes
                .windows(2)
                .any(|pair| (pair[0].revision, pair[0].sub) == (pair[1].revision, pair[1].sub));
            let compacted: Vec<&Event> = changes
                .iter()
                .filter(|event| event.revision <= revisions.compacted)
                .collect();
            // A delete at the compaction point itself stays (a watch from
            // there sends it); one below it is gone.
            let kept_below = compacted.len() > 1
                || compacted
                    .iter()
                    .any(|event| event.kv.is_none() && event.revision < revisions.compacted);
            if repeated || kept_below {
                return Err(format!(
                    "the history of key {key:?} does not fit the compaction point {}",
                    revisions.compacted
                ));
            }
        }
        let mut current = Rows::default();
        for (lease, ttl) in leases {
            if lease == 0 || current.1.insert(lease, ttl).is_some() {
                return Err(format!("lease {lease} is not a lease, or is there twice"));
            }
        }
        for row in rows {
            let last = by_key
                .get(&row.key)
                .and_then(|changes| changes.last())
                .and_then(|event| event.kv.as_ref());
            let leased = row.lease == 0 || current.1.contains_key(&row.lease);
            if row.key.is_empty()
                || last != Some(&row)
                || !leased
                || current.0.contains_key(&row.key)
            {
                return Err(format!(
                    "row {row:?} is not the last change of its key in the history, or names no lease"
                ));
            }
            current.0.insert(row.key.clone(), row);
        }
        let missing = by_key.iter().find(|(key, changes)| {
            changes.last().is_some_and(|event| event.kv.is_some()) && !current.0.contains_key(*key)
        });
        if let Some((key, _)) = missing {
            return Err(format!("key {key:?} was last put, but has no row"));
        }
        Ok(MvccStore {
            current,
            history: by_key,
            revisions,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{PutRequest, RequestOp};

    fn put(key: &str, value: &str) -> Command {
        Command::Op(RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        }))
    }

    type Parts = (Vec<KeyValue>, Vec<Event>, Vec<(i64, i64)>, Revisions);

    fn parts(store: &MvccStore) -> Parts {
        let rows = store.rows().values().cloned().collect();
        let history = store.history().into_iter().cloned().collect();
        let leases = store.leases().iter().map(|(id, ttl)| (*id, *ttl)).collect();
        (rows, history, leases, store.revisions())
    }

    #[test]
    fn a_store_rebuilt_from_its_parts_is_the_same_store() {
        let mut store = MvccStore::default();
        for command in [
            put("a", "1"),
            put("b", "2"),
            put("a", "3"),
            Command::Compact(4),
            Command::LeaseGrant { id: 7, ttl: 60 },
        ] {
            store.apply(&command);
        }
        store.apply(&Command::Op(RequestOp::Put(PutRequest {
            key: b"b".to_vec(),
            value: b"4".to_vec(),
            lease: 7,
            ..PutRequest::default()
        })));
        assert_eq!(store.history_len(), 3, "a@2 was compacted away");
        let (rows, history, leases, revisions) = parts(&store);
        let rebuilt = MvccStore::from_parts(rows, history.into_iter().rev(), leases, revisions);
        assert_eq!(rebuilt, Ok(store));
    }

    #[test]
    fn parts_that_do_not_hold_together_are_refused() {
        let mut store = MvccStore::default();
        for command in [put("a", "1"), put("a", "2"), put("b", "3")] {
            store.apply(&command);
        }
        let (rows, history, _, revisions) = parts(&store);
        let refused = |rows: Vec<KeyValue>, history: Vec<Event>, revisions: Revisions| {
            MvccStore::from_parts(rows, history, [], revisions).unwrap_err()
        };
        let behind = Revisions {
            current: 3,
            ..revisions
        };
        assert!(refused(rows.clone(), history.clone(), behind).contains("does not fit"));
        let compacted_past_a = Revisions {
            compacted: 3,
            ..revisions
        };
        assert!(refused(rows.clone(), history.clone(), compacted_past_a).contains("key"));
        assert!(refused(rows[1..].to_vec(), history.clone(), revisions).contains("no row"));
        let mut stale_row = rows.clone();
        stale_row[0].value = b"1".to_vec();
        assert!(refused(stale_row, history.clone(), revisions).contains("not the last change"));
        let mut repeated = history.clone();
        repeated.push(history[0].clone());
        assert!(refused(rows.clone(), repeated, revisions).contains("key"));
        // Key b attached to lease `lease`, in its row and its last change.
        let leased = |lease: i64| {
            let (mut rows, mut history) = (rows.clone(), history.clone());
            rows[1].lease = lease;
            history[2].kv.as_mut().unwrap().lease = lease;
            (rows, history)
        };
        let (rows_7, history_7) = leased(7);
        assert!(
            MvccStore::from_parts(rows_7.clone(), history_7.clone(), [(7, 60)], revisions).is_ok()
        );
        let error = MvccStore::from_parts(rows_7, history_7, [(8, 60)], revisions).unwrap_err();
        assert!(error.contains("names no lease"), "{error}");
        let error = MvccStore::from_parts(rows, history, [(0, 60)], revisions).unwrap_err();
        assert!(error.contains("lease 0"), "{error}");
    }
}
