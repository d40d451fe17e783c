//! Applying one command to a keyspace: etcd's put, delete-range, range,
//! transaction and compaction rules.

use std::collections::BTreeSet;

use super::{
    shape_range, Answer, Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Event, KeyRange, KeyValue, KvError, Outcome, PutRequest, PutResponse,
    RangeRequest, RequestOp, ResponseOp, Revisions, TxnRequest, TxnResponse, TXN_OPERATIONS_MAX,
};

/// The current rows a command reads and changes. The simulator's model
/// holds every row; the Postgres state machine holds the rows of the
/// ranges [`footprint`] named, read before the batch, which is all a
/// command ever looks at.
pub trait Keyspace {
    /// The rows in `range`, in key order.
    fn range(&self, range: &KeyRange) -> Vec<KeyValue>;
    /// Sets a row.
    fn put(&mut self, kv: KeyValue);
    /// Removes a row.
    fn delete(&mut self, key: &[u8]);
    /// The granted TTL of lease `lease`, when it exists.
    fn lease(&self, lease: i64) -> Option<i64>;
    /// The rows attached to lease `lease`, in key order.
    fn lease_rows(&self, lease: i64) -> Vec<KeyValue>;
    /// Creates (`Some(ttl)`) or removes (`None`) lease `lease`.
    fn set_lease(&mut self, lease: i64, ttl: Option<i64>);
}

/// Checks a command before it is proposed, as etcd's API does: keys are
/// not empty, a put that keeps its value or lease names none, a
/// transaction has at most [`TXN_OPERATIONS_MAX`] compares and operations
/// per branch and changes no key twice in one branch, and its ranges read
/// the current revision. The error says what is wrong.
pub fn check_command(command: &Command) -> Result<(), String> {
    match command {
        // A range carried in the log reads where the log puts it: at the
        // current revision.
        Command::Op(operation) => check_op(operation),
        Command::Compact(revision) => {
            if *revision < 0 {
                return Err(format!(
                    "cannot compact to the negative revision {revision}"
                ));
            }
            Ok(())
        }
        Command::LeaseGrant { id, ttl } => {
            if *id <= 0 {
                return Err(format!("lease id {id} is not a positive number"));
            }
            if !(1..=super::LEASE_TTL_MAX).contains(ttl) {
                return Err("lease TTL is out of range".into());
            }
            Ok(())
        }
        Command::LeaseRevoke(id) => {
            if *id <= 0 {
                return Err(format!("lease id {id} is not a positive number"));
            }
            Ok(())
        }
    }
}

fn check_op(operation: &RequestOp) -> Result<(), String> {
    match operation {
        RequestOp::Range(range) => {
            check_key(&range.range.key)?;
            if range.revision > 0 {
                return Err(
                    "a range inside a transaction reads the current revision; revision must be 0"
                        .into(),
                );
            }
            Ok(())
        }
        RequestOp::Put(put) => {
            check_key(&put.key)?;
            if put.ignore_value && !put.value.is_empty() {
                return Err("value is provided".into());
            }
            if put.ignore_lease && put.lease != 0 {
                return Err("lease is provided".into());
            }
            Ok(())
        }
        RequestOp::DeleteRange(delete) => check_key(&delete.range.key),
        RequestOp::Txn(txn) => {
            if txn.compare.len() > TXN_OPERATIONS_MAX
                || txn.success.len() > TXN_OPERATIONS_MAX
                || txn.failure.len() > TXN_OPERATIONS_MAX
            {
                return Err("too many operations in txn request".into());
            }
            for compare in &txn.compare {
                check_key(&compare.range.key)?;
            }
            for operation in txn.success.iter().chain(&txn.failure) {
                check_op(operation)?;
            }
            for branch in [&txn.success, &txn.failure] {
                branch_writes(branch)?;
            }
            Ok(())
        }
    }
}

/// The keys a list of operations puts and the ranges it deletes, checked
/// as etcd's API checks them: a key put twice is an error, unless once in
/// each branch of one nested transaction (only one of them runs); so is a
/// key put inside a range deleted at its own level or by an earlier nested
/// transaction. A delete from a key on (`range_end` `\0`) conflicts with
/// no put, as in etcd.
fn branch_writes(operations: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), String> {
    let duplicate = || Err("duplicate key given in txn request".to_string());
    let deleted = |deletes: &[KeyRange], key: &[u8]| {
        deletes
            .iter()
            .any(|range| range.range_end != [0] && range.contains(key))
    };
    let mut deletes: Vec<KeyRange> = operations
        .iter()
        .filter_map(|operation| match operation {
            RequestOp::DeleteRange(delete) => Some(delete.range.clone()),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for operation in operations {
        let RequestOp::Txn(txn) = operation else {
            continue;
        };
        let (puts_then, deletes_then) = branch_writes(&txn.success)?;
        let (puts_else, deletes_else) = branch_writes(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&deletes, key) {
                return duplicate();
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&deletes, key) {
                return duplicate();
            }
            puts.insert(key.clone());
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for operation in operations {
        let RequestOp::Put(put) = operation else {
            continue;
        };
        if puts.contains(&put.key) || deleted(&deletes, &put.key) {
            return duplicate();
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deletes))
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is not provided".into());
    }
    Ok(())
}

/// Every range `command` may read or change, on either branch of every
/// transaction: a keyspace holding the rows of these holds all the command
/// needs.
pub fn footprint(command: &Command) -> Vec<KeyRange> {
    let mut ranges = Vec::new();
    if let Command::Op(operation) = command {
        op_footprint(operation, &mut ranges);
    }
    ranges
}

/// Every lease `command` may look up, change, or whose keys it may read:
/// with [`footprint`]'s ranges, all a command needs from a keyspace.
pub fn lease_footprint(command: &Command) -> Vec<i64> {
    fn named(operation: &RequestOp, leases: &mut Vec<i64>) {
        match operation {
            RequestOp::Put(put) if put.lease != 0 => leases.push(put.lease),
            RequestOp::Txn(txn) => {
                for operation in txn.success.iter().chain(&txn.failure) {
                    named(operation, leases);
                }
            }
            _ => {}
        }
    }
    let mut leases = Vec::new();
    match command {
        Command::Op(operation) => named(operation, &mut leases),
        Command::LeaseGrant { id, .. } | Command::LeaseRevoke(id) => leases.push(*id),
        Command::Compact(_) => {}
    }
    leases
}

fn op_footprint(operation: &RequestOp, ranges: &mut Vec<KeyRange>) {
    match operation {
        RequestOp::Range(range) => ranges.push(range.range.clone()),
        RequestOp::Put(put) => ranges.push(KeyRange::single(put.key.clone())),
        RequestOp::DeleteRange(delete) => ranges.push(delete.range.clone()),
        RequestOp::Txn(txn) => {
            ranges.extend(txn.compare.iter().map(|compare| compare.range.clone()));
            for operation in txn.success.iter().chain(&txn.failure) {
                op_footprint(operation, ranges);
            }
        }
    }
}

/// Applies `command` (checked by [`check_command`]) to `keyspace` at the
/// store's `revisions`, and returns the answer and the changes, one event
/// per changed key, in order. A refused command changes nothing.
pub fn apply(
    keyspace: &mut impl Keyspace,
    revisions: &mut Revisions,
    command: &Command,
) -> (Outcome, Vec<Event>) {
    match command {
        Command::LeaseGrant { id, ttl } => {
            let result = if keyspace.lease(*id).is_some() {
                Err(KvError::LeaseExists)
            } else {
                keyspace.set_lease(*id, Some(*ttl));
                Ok(Answer::LeaseGranted)
            };
            let outcome = Outcome {
                result,
                revision: revisions.current,
            };
            (outcome, Vec::new())
        }
        Command::LeaseRevoke(id) => {
            if keyspace.lease(*id).is_none() {
                let outcome = Outcome {
                    result: Err(KvError::LeaseNotFound),
                    revision: revisions.current,
                };
                return (outcome, Vec::new());
            }
            let mut writer = Writer {
                keyspace,
                revision: revisions.current + 1,
                events: Vec::new(),
            };
            for kv in writer.keyspace.lease_rows(*id) {
                writer.keyspace.delete(&kv.key);
                writer.record(kv.key, None);
            }
            writer.keyspace.set_lease(*id, None);
            let events = writer.events;
            if !events.is_empty() {
                revisions.current += 1;
            }
            let outcome = Outcome {
                result: Ok(Answer::LeaseRevoked),
                revision: revisions.current,
            };
            (outcome, events)
        }
        Command::Compact(revision) => {
            let result = if *revision <= revisions.compacted {
                Err(KvError::Compacted)
            } else if *revision > revisions.current {
                Err(KvError::FutureRevision)
            } else {
                revisions.compacted = *revision;
                Ok(Answer::Compacted)
            };
            let outcome = Outcome {
                result,
                revision: revisions.current,
            };
            (outcome, Vec::new())
        }
        Command::Op(operation) => {
            let mut writer = Writer {
                keyspace,
                revision: revisions.current + 1,
                events: Vec::new(),
            };
            // A lone operation is checked and run as a transaction of one
            // without compares would be: the same checks, one revision.
            let result = match operation {
                RequestOp::Txn(txn) => writer
                    .txn(txn)
                    .map(|response| Answer::Op(ResponseOp::Txn(response))),
                operation => check_operation(&*writer.keyspace, operation)
                    .map(|()| Answer::Op(writer.operation(operation, &mut std::iter::empty()))),
            };
            let events = writer.events;
            if !events.is_empty() {
                revisions.current += 1;
            }
            let outcome = Outcome {
                result,
                revision: revisions.current,
            };
            (outcome, events)
        }
    }
}

/// Carries out one command's operations at revision `revision`.
struct Writer<'a, K> {
    keyspace: &'a mut K,
    /// The revision this command's changes get. Invariant: one more than
    /// the store's before the command.
    revision: i64,
    events: Vec<Event>,
}

impl<K: Keyspace> Writer<'_, K> {
    fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, KvError> {
        // Every compare on the path is judged against the state before the
        // transaction, and the puts on it are checked, before anything
        // changes.
        let mut path = Vec::new();
        compare_path(&*self.keyspace, txn, &mut path);
        check_path(&*self.keyspace, txn, &path)?;
        let mut path = path.into_iter();
        Ok(self.run(txn, &mut path))
    }

    fn run(&mut self, txn: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> TxnResponse {
        let succeeded = path.next().expect("a path entry per transaction on it");
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let responses = branch
            .iter()
            .map(|operation| self.operation(operation, path))
            .collect();
        TxnResponse {
            succeeded,
            responses,
        }
    }

    /// Runs one operation (a nested transaction takes its branch from
    /// `path`).
    fn operation(
        &mut self,
        operation: &RequestOp,
        path: &mut impl Iterator<Item = bool>,
    ) -> ResponseOp {
        match operation {
            RequestOp::Range(range) => ResponseOp::Range(self.range(range)),
            RequestOp::Put(put) => ResponseOp::Put(self.put(put)),
            RequestOp::DeleteRange(delete) => ResponseOp::DeleteRange(self.delete(delete)),
            RequestOp::Txn(nested) => ResponseOp::Txn(self.run(nested, path)),
        }
    }

    fn range(&self, range: &RangeRequest) -> super::RangeResponse {
        let kvs = self.keyspace.range(&range.range);
        let count = kvs.len() as i64;
        super::RangeResponse {
            header_revision: self.seen_revision(),
            ..shape_range(kvs, count, range)
        }
    }

    /// The revision an operation sees: this command's once it changed
    /// something, the store's before it otherwise.
    fn seen_revision(&self) -> i64 {
        if self.events.is_empty() {
            self.revision - 1
        } else {
            self.revision
        }
    }

    fn put(&mut self, put: &PutRequest) -> PutResponse {
        let previous = self
            .keyspace
            .range(&KeyRange::single(put.key.clone()))
            .pop();
        let (create_revision, version) = match &previous {
            Some(previous) => (previous.create_revision, previous.version + 1),
            None => (self.revision, 1),
        };
        let value = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        let kv = KeyValue {
            key: put.key.clone(),
            value,
            create_revision,
            mod_revision: self.revision,
            version,
            lease,
        };
        self.record(put.key.clone(), Some(kv.clone()));
        self.keyspace.put(kv);
        PutResponse {
            header_revision: self.revision,
            prev_kv: previous.filter(|_| put.prev_kv),
        }
    }

    fn delete(&mut self, delete: &DeleteRangeRequest) -> DeleteRangeResponse {
        let deleted = self.keyspace.range(&delete.range);
        for kv in &deleted {
            self.keyspace.delete(&kv.key);
            self.record(kv.key.clone(), None);
        }
        DeleteRangeResponse {
            header_revision: self.seen_revision(),
            deleted: deleted.len() as i64,
            prev_kvs: if delete.prev_kv { deleted } else { Vec::new() },
        }
    }

    fn record(&mut self, key: Vec<u8>, kv: Option<KeyValue>) {
        let sub = self.events.len() as i64;
        self.events.push(Event {
            revision: self.revision,
            sub,
            kv,
            key,
        });
    }
}

/// The branch each transaction on the taken path takes, in the order the
/// transactions are met (the outer first, then the nested ones of the
/// branch taken, depth first), judged against `keyspace` as it is.
fn compare_path(keyspace: &impl Keyspace, txn: &TxnRequest, path: &mut Vec<bool>) {
    let succeeded = txn
        .compare
        .iter()
        .all(|compare| compare_holds(keyspace, compare));
    path.push(succeeded);
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for operation in branch {
        if let RequestOp::Txn(nested) = operation {
            compare_path(keyspace, nested, path);
        }
    }
}

/// The checks etcd makes before a transaction changes anything: a put that
/// keeps the value or lease needs the key, and a named lease must exist.
fn check_path(keyspace: &impl Keyspace, txn: &TxnRequest, path: &[bool]) -> Result<(), KvError> {
    fn walk<'a>(
        keyspace: &impl Keyspace,
        txn: &TxnRequest,
        path: &mut impl Iterator<Item = &'a bool>,
    ) -> Result<(), KvError> {
        let succeeded = *path.next().expect("a path entry per transaction on it");
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for operation in branch {
            match operation {
                RequestOp::Txn(nested) => walk(keyspace, nested, path)?,
                operation => check_operation(keyspace, operation)?,
            }
        }
        Ok(())
    }
    walk(keyspace, txn, &mut path.iter())
}

/// etcd's checks of one operation that is not a transaction: a put that
/// keeps the value or lease needs the key, and a named lease must exist.
fn check_operation(keyspace: &impl Keyspace, operation: &RequestOp) -> Result<(), KvError> {
    let RequestOp::Put(put) = operation else {
        return Ok(());
    };
    if (put.ignore_value || put.ignore_lease)
        && keyspace
            .range(&KeyRange::single(put.key.clone()))
            .is_empty()
    {
        return Err(KvError::KeyNotFound);
    }
    if put.lease != 0 && keyspace.lease(put.lease).is_none() {
        return Err(KvError::LeaseNotFound);
    }
    Ok(())
}

fn compare_holds(keyspace: &impl Keyspace, compare: &Compare) -> bool {
    let kvs = keyspace.range(&compare.range);
    if kvs.is_empty() {
        // A missing key has nothing to compare a value with; its numbers
        // are all 0.
        if matches!(compare.target, CompareTarget::Value(_)) {
            return false;
        }
        return compare_one(&KeyValue::default(), compare);
    }
    kvs.iter().all(|kv| compare_one(kv, compare))
}

fn compare_one(kv: &KeyValue, compare: &Compare) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(version) => kv.version.cmp(version),
        CompareTarget::Create(revision) => kv.create_revision.cmp(revision),
        CompareTarget::Mod(revision) => kv.mod_revision.cmp(revision),
        CompareTarget::Value(value) => kv.value.as_slice().cmp(value.as_slice()),
        CompareTarget::Lease(lease) => kv.lease.cmp(lease),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}
