//! Whom the node exchanges peer messages with, and where they listen.
//!
//! Who is heard is the core's decision ([`Raft::hears`], which the
//! simulator applies to every message too); the driver publishes the
//! members it counts after every turn in which they changed, as a
//! [`PeerDirectory`], which the peer gate checks messages against with
//! the same rule, and the transport follows (a stream per peer it knows
//! an address for, opened and closed as members come and go).

use std::collections::{BTreeMap, BTreeSet};

use super::config::NodeConfig;
use crate::core::{heard_from_outside, Message, NodeId, Raft, Term};

/// The peers of one moment: who is heard, and the addresses to reach them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerDirectory {
    /// The nodes counted members ([`Raft::knows_member`]); `None` while
    /// the node knows no membership (it counts every node of its cluster).
    members: Option<BTreeSet<NodeId>>,
    /// Every peer this node can send to, with its peer API's address: the
    /// members, and the nodes its configuration lists (a leader this
    /// node's log does not know yet may be one of them, and must get its
    /// answers).
    addresses: BTreeMap<NodeId, String>,
}

impl PeerDirectory {
    /// The directory of `raft` now: its members ([`Raft::peer_set`]) and
    /// the configuration's `[[peer]]` list, each at the address the
    /// membership gives, else at the one the configuration gives. A member
    /// neither names is heard but not reached (it gets nothing from this
    /// node; the operator sees a warning in the log).
    pub(crate) fn of(raft: &Raft, config: &NodeConfig) -> PeerDirectory {
        let members = raft.peer_set();
        let mut targets: BTreeSet<NodeId> = members.clone().unwrap_or_default();
        targets.extend(config.peers.iter().map(|peer| NodeId(peer.id)));
        targets.remove(&raft.id());
        let log = raft.log();
        let committed = log.membership_at(log.commit_index());
        let addresses = targets
            .into_iter()
            .filter_map(|id| {
                let address = raft
                    .membership()
                    .addresses
                    .get(&id)
                    .or_else(|| committed.addresses.get(&id))
                    .map(String::as_str)
                    .or_else(|| config.peer_address(id.0))?;
                Some((id, address.to_string()))
            })
            .collect();
        PeerDirectory { members, addresses }
    }

    /// Whether `message` is taken by a node at `term` with these members:
    /// [`Raft::hears`]'s rule.
    pub(crate) fn hears(&self, message: &Message, term: Term) -> bool {
        let member = self
            .members
            .as_ref()
            .is_none_or(|members| members.contains(&message.from));
        member || heard_from_outside(message, term)
    }

    /// The peers to send to, with their addresses.
    pub(crate) fn addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.addresses
    }

    /// Where node `id`'s peer API listens, if this directory knows.
    pub(crate) fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// Where clients reach node `id`: the client address the
    /// configuration gives when it lists the node, else its peer address
    /// (a node added by `member add` serves both on one address unless its
    /// operator configured otherwise).
    pub(crate) fn client_address(&self, config: &NodeConfig, id: NodeId) -> Option<String> {
        config
            .client_address(id.0)
            .or_else(|| self.address(id))
            .map(str::to_string)
    }

    /// Members this directory cannot reach: no address known.
    pub(crate) fn unreachable(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .flatten()
            .filter(|id| !self.addresses.contains_key(id))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DurableState, LogIndex, Membership, MessageBody};

    const CONFIG: &str = r#"
        cluster_id = "test"
        node_id = 2
        listen_addr = "127.0.0.1:7002"
        postgres = "host=127.0.0.1 dbname=node2"
        [[peer]]
        id = 1
        address = "127.0.0.1:7001"
        [[peer]]
        id = 2
        address = "127.0.0.1:7002"
        [[peer]]
        id = 3
        address = "127.0.0.1:7003"
    "#;

    fn directory(config: &NodeConfig, membership: Membership) -> PeerDirectory {
        let durable = DurableState {
            membership,
            ..DurableState::default()
        };
        let raft = Raft::new(config.core_config(), durable, 1).unwrap();
        PeerDirectory::of(&raft, config)
    }

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    /// A message from `from` at term 5.
    fn from(from: u64, body: MessageBody) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(5),
            body,
        }
    }

    fn heartbeat(sender: u64) -> Message {
        from(
            sender,
            MessageBody::HeartbeatRequest {
                leader_commit: LogIndex(0),
                read_round: 1,
            },
        )
    }

    fn answer(sender: u64) -> Message {
        from(sender, MessageBody::HeartbeatResponse { read_round: 1 })
    }

    #[test]
    fn a_new_cluster_talks_to_the_configured_voters() {
        let config = NodeConfig::from_toml(CONFIG).unwrap();
        let directory = directory(&config, Membership::default());
        assert_eq!(directory.members, Some(ids(&[1, 3])));
        assert_eq!(directory.address(NodeId(3)), Some("127.0.0.1:7003"));
        assert!(directory.hears(&answer(3), Term(5)));
        assert!(!directory.hears(&answer(4), Term(5)));
        assert!(directory.unreachable().is_empty());
    }

    #[test]
    fn from_outside_the_membership_only_a_current_leader_and_campaigns_are_heard() {
        let config = NodeConfig::from_toml(CONFIG).unwrap();
        let directory = directory(&config, Membership::default());
        assert!(directory.hears(&heartbeat(9), Term(5)));
        assert!(!directory.hears(&heartbeat(9), Term(6)), "a stale leader");
        assert!(!directory.hears(&answer(9), Term(5)));
        assert!(!directory.hears(&from(9, MessageBody::TimeoutNow), Term(5)));
        let campaign = MessageBody::VoteRequest {
            pre_vote: true,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            leadership_transfer: false,
        };
        assert!(directory.hears(&from(9, campaign), Term(9)));
    }

    #[test]
    fn the_stored_membership_decides_and_its_addresses_come_first() {
        let config = NodeConfig::from_toml(CONFIG).unwrap();
        let mut membership = Membership::new(ids(&[1, 2]));
        membership.learners.insert(NodeId(4));
        membership.learners.insert(NodeId(5));
        membership
            .addresses
            .insert(NodeId(1), "10.0.0.1:7000".into());
        membership
            .addresses
            .insert(NodeId(4), "10.0.0.4:7000".into());
        let directory = directory(&config, membership);
        assert_eq!(directory.members, Some(ids(&[1, 4, 5])));
        assert!(!directory.hears(&answer(3), Term(5)), "node 3 was removed");
        assert_eq!(directory.address(NodeId(1)), Some("10.0.0.1:7000"));
        assert_eq!(directory.address(NodeId(4)), Some("10.0.0.4:7000"));
        assert_eq!(
            directory.address(NodeId(3)),
            Some("127.0.0.1:7003"),
            "the configuration's nodes stay reachable"
        );
        assert_eq!(directory.unreachable(), vec![NodeId(5)]);
        assert_eq!(
            directory.client_address(&config, NodeId(4)).as_deref(),
            Some("10.0.0.4:7000")
        );
    }

    #[test]
    fn a_joining_node_hears_anyone_and_reaches_the_configured_peers() {
        let config = NodeConfig::from_toml(&format!("join = true\n{CONFIG}")).unwrap();
        let directory = directory(&config, Membership::default());
        assert!(directory.hears(&answer(7), Term(5)));
        assert_eq!(
            directory
                .addresses()
                .keys()
                .copied()
                .collect::<BTreeSet<_>>(),
            ids(&[1, 3])
        );
    }
}
