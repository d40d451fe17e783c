//! The join handshake (`serve --join`): a node that knows no membership
//! asks the cluster whether it was added and refuses to start when no
//! member says so. A node that has been added must never go through it
//! again: if no member answered (they are down, or were all added the
//! same way and wait too), it would refuse to restart, and a cluster whose
//! voters all joined could never start again.

use raftgres::core::{EntryPayload, NodeId};

use crate::store::Store;

/// Checks that node `node`, about to ask whether it was added, holds no
/// membership that lists it: neither the one stored at its log start nor
/// one in a log entry.
pub fn check_asking(node: NodeId, store: &Store) -> Result<(), String> {
    if store.membership.contains(node) {
        return Err(format!(
            "node {node} asks whether it was added, though the membership stored at its \
             log start ({}) lists it",
            store.membership
        ));
    }
    for entry in &store.entries {
        if let EntryPayload::Membership(membership) = &entry.payload {
            if membership.contains(node) {
                return Err(format!(
                    "node {node} asks whether it was added, though its log's membership at \
                     index {} ({membership}) lists it",
                    entry.index
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{Entry, LogIndex, Membership, Term};

    fn store_with_log_membership(voters: &[u64]) -> Store {
        let mut store = Store::default();
        store.entries.push(Entry {
            term: Term(1),
            index: LogIndex(1),
            payload: EntryPayload::Membership(Box::new(Membership::new(
                voters.iter().copied().map(NodeId),
            ))),
        });
        store
    }

    #[test]
    fn a_node_that_knows_nothing_may_ask() {
        assert_eq!(check_asking(NodeId(4), &Store::default()), Ok(()));
        assert_eq!(
            check_asking(NodeId(4), &store_with_log_membership(&[1, 2, 3])),
            Ok(())
        );
    }

    #[test]
    fn a_node_its_log_lists_must_not_ask() {
        let error = check_asking(NodeId(4), &store_with_log_membership(&[1, 2, 4])).unwrap_err();
        assert!(error.contains("index 1"), "{error}");
        let mut store = Store::default();
        store.membership = Membership::new([NodeId(4)]);
        let error = check_asking(NodeId(4), &store).unwrap_err();
        assert!(error.contains("log start"), "{error}");
    }
}
