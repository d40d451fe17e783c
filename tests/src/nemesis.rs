//! Faults against a running cluster: processes, their Postgres servers and
//! the network between them, applied at times drawn from a seed.
//!
//! A schedule alternates a fault (one kind, or a process or membership
//! fault combined with a network fault) held for a while, its healing,
//! and a quiet period. At most one process or membership fault is in
//! place at a time, so a majority of a 3-node cluster always has its
//! processes, and at most one network fault, so healing one never heals
//! another.
//!
//! Membership faults ([`membership`]) change who the members are: a node
//! added and promoted (and a voter removed when healed), a node killed for
//! good and replaced by a fresh one, the leader removed (and a fresh node
//! added when healed). Each is healed back to as many voters as the
//! campaign started with, so the cluster's size stays bounded.
//!
//! Every peer link goes through the proxies, those of nodes added during
//! a campaign too (`member add` is given the new node's proxy, and each
//! node calls from an address of its own, which tells the proxy the link;
//! see [`crate::proxy`]).

pub mod membership;

use std::process::Command;
use std::time::Duration;

use raftgres::client::{ClientOptions, Role};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::proxy::{NetworkFault, ProxyMesh};
use crate::TestCluster;

/// How long a stopped Postgres may take to start again (recovery after an
/// immediate stop replays its WAL).
const POSTGRES_START_MAX: Duration = Duration::from_secs(60);

/// A kind of fault, as reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of the leader, restarted when healed.
    KillLeader,
    /// `kill -9` of a follower, restarted when healed.
    KillFollower,
    /// SIGSTOP of the leader for longer than an election timeout, SIGCONT
    /// when healed.
    PauseLeader,
    /// SIGSTOP of a follower.
    PauseFollower,
    /// The leader's Postgres crashes under the running node (SIGKILL of
    /// its postmaster: like `pg_ctl stop -m immediate`, nothing is flushed
    /// or checkpointed), started again when healed.
    PostgresCrashLeader,
    /// The same under a follower.
    PostgresCrashFollower,
    /// `pg_ctl stop -m immediate` of the leader's Postgres under the
    /// running node, started again when healed.
    PostgresStopLeader,
    /// The same under a follower.
    PostgresStopFollower,
    /// The leader cannot exchange anything with the other nodes.
    PartitionLeader,
    /// Nothing from one node reaches another (between the leader and a
    /// follower, in either direction); the other direction works.
    Blackhole,
    /// Added latency between the leader and a follower.
    Latency,
    /// The leader hands leadership to a follower.
    TransferLeadership,
    /// A fresh node is added as a learner, catches up and is promoted;
    /// when healed, a voter drawn when it was added (maybe the new one,
    /// maybe the leader by then) is removed.
    MemberAddRemove,
    /// A follower is killed for good and a fresh node added as a learner;
    /// when healed, the learner is promoted once caught up and the dead
    /// node removed (the documented replacement).
    ReplaceFollower,
    /// The same with the leader killed.
    ReplaceLeader,
    /// The leader is removed from the membership (it steps down once the
    /// change commits) and stopped; when healed, a fresh node is added and
    /// promoted.
    RemoveLeader,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 16] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::PauseFollower,
        FaultKind::PostgresCrashLeader,
        FaultKind::PostgresCrashFollower,
        FaultKind::PostgresStopLeader,
        FaultKind::PostgresStopFollower,
        FaultKind::PartitionLeader,
        FaultKind::Blackhole,
        FaultKind::Latency,
        FaultKind::TransferLeadership,
        FaultKind::MemberAddRemove,
        FaultKind::ReplaceFollower,
        FaultKind::ReplaceLeader,
        FaultKind::RemoveLeader,
    ];

    /// The kinds that change the membership.
    pub const MEMBERSHIP: [FaultKind; 4] = [
        FaultKind::MemberAddRemove,
        FaultKind::ReplaceFollower,
        FaultKind::ReplaceLeader,
        FaultKind::RemoveLeader,
    ];

    /// A short name for reports and command lines.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseFollower => "pause-follower",
            FaultKind::PostgresCrashLeader => "postgres-crash-leader",
            FaultKind::PostgresCrashFollower => "postgres-crash-follower",
            FaultKind::PostgresStopLeader => "postgres-stop-leader",
            FaultKind::PostgresStopFollower => "postgres-stop-follower",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Latency => "latency",
            FaultKind::TransferLeadership => "transfer-leadership",
            FaultKind::MemberAddRemove => "member-add-remove",
            FaultKind::ReplaceFollower => "replace-follower",
            FaultKind::ReplaceLeader => "replace-leader",
            FaultKind::RemoveLeader => "remove-leader",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether it acts on the network (through the proxies).
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader | FaultKind::Blackhole | FaultKind::Latency
        )
    }

    /// Whether it changes the membership.
    pub fn is_membership(&self) -> bool {
        FaultKind::MEMBERSHIP.contains(self)
    }

    /// Whether it may be combined with another fault: not a leadership
    /// transfer (instant), nor the leader's removal (it leaves two voters
    /// of three, which any fault beside it would stop until both heal,
    /// and a partition of the other leader could leave its change
    /// uncommittable).
    pub fn combines(&self) -> bool {
        !matches!(
            self,
            FaultKind::TransferLeadership | FaultKind::RemoveLeader
        )
    }
}

/// A fault in place, and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedFault {
    /// Node killed; heal restarts it.
    Killed(u64),
    /// Node paused; heal continues it.
    Paused {
        /// The node.
        node: u64,
        /// Its process id.
        pid: u32,
    },
    /// Node's Postgres crashed; heal starts it.
    PostgresCrashed(u64),
    /// Node's Postgres stopped with `pg_ctl stop -m immediate`; heal starts
    /// a server on its data directory and port again.
    PostgresStopped(u64),
    /// A network fault; heal removes every network fault.
    Network(NetworkFault),
    /// Nothing to undo (a leadership transfer).
    Instant,
    /// Node `added` joined as a voter; heal removes `remove` (which may be
    /// `added`).
    MemberAdded {
        /// The new voter.
        added: u64,
        /// The voter to remove when healed.
        remove: u64,
    },
    /// Node `dead` was killed for good and `learner` added; heal promotes
    /// the learner and removes the dead node.
    Replacing {
        /// The killed node, still a voter.
        dead: u64,
        /// Its replacement, a learner.
        learner: u64,
    },
    /// The leader was removed; heal adds a fresh voter.
    LeaderRemoved(u64),
}

/// One fault as the report shows it.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    /// What was done.
    pub kind: FaultKind,
    /// Whether it was applied together with another fault.
    pub combined: bool,
    /// The nodes it targeted, and how.
    pub description: String,
    /// When it was applied, in ns since the campaign started.
    pub started_ns: u64,
    /// When it was healed.
    pub healed_ns: u64,
    /// Why applying or healing it failed, if it did.
    pub error: Option<String>,
}

/// The node that says it leads with the highest term, asking every node
/// once with a short timeout (a paused node must not stall the nemesis).
pub async fn current_leader(cluster: &TestCluster) -> Option<u64> {
    let options = ClientOptions {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = raftgres::client::Client::with_options(cluster.addresses(), options).ok()?;
    let mut best: Option<(u64, u64)> = None;
    for id in cluster.node_ids() {
        if let Ok(status) = client.status(cluster.node_address(id)).await {
            if status.role == Role::Leader as i32 && best.is_none_or(|(term, _)| status.term > term)
            {
                best = Some((status.term, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

/// Applies `kind`, choosing targets with `random`. The leader is asked
/// for; with none, a random node plays its part.
pub async fn apply(
    kind: FaultKind,
    cluster: &mut TestCluster,
    mesh: &ProxyMesh,
    random: &mut ChaCha8Rng,
) -> Result<(AppliedFault, String), String> {
    let ids = cluster.node_ids();
    let leader = match current_leader(cluster).await {
        Some(leader) => leader,
        None => *ids.choose(random).expect("a node"),
    };
    let followers: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    let follower = *followers.choose(random).expect("a follower");
    let leader_or_follower = |kind: FaultKind| match kind {
        FaultKind::KillLeader
        | FaultKind::PauseLeader
        | FaultKind::PostgresCrashLeader
        | FaultKind::PostgresStopLeader
        | FaultKind::ReplaceLeader => leader,
        _ => follower,
    };
    match kind {
        FaultKind::KillLeader | FaultKind::KillFollower => {
            let node = leader_or_follower(kind);
            tokio::task::block_in_place(|| cluster.kill_node(node)).map_err(|e| e.to_string())?;
            Ok((AppliedFault::Killed(node), format!("kill -9 node {node}")))
        }
        FaultKind::PauseLeader | FaultKind::PauseFollower => {
            let node = leader_or_follower(kind);
            let pid = cluster
                .pid(node)
                .ok_or(format!("node {node} is not running"))?;
            tokio::task::block_in_place(|| pause_process(pid))?;
            Ok((
                AppliedFault::Paused { node, pid },
                format!("SIGSTOP node {node}"),
            ))
        }
        FaultKind::PostgresCrashLeader | FaultKind::PostgresCrashFollower => {
            let node = leader_or_follower(kind);
            tokio::task::block_in_place(|| cluster.postgres(node).kill())
                .map_err(|e| e.to_string())?;
            Ok((
                AppliedFault::PostgresCrashed(node),
                format!("crash postgres of node {node}"),
            ))
        }
        FaultKind::PostgresStopLeader | FaultKind::PostgresStopFollower => {
            let node = leader_or_follower(kind);
            let dir = cluster.dir().to_path_buf();
            tokio::task::block_in_place(|| {
                raftgres_devcluster::cluster::stop_postgres(
                    &dir,
                    node,
                    raftgres_devcluster::cluster::PostgresStop::Immediate,
                )
            })
            .map_err(|e| e.to_string())?;
            Ok((
                AppliedFault::PostgresStopped(node),
                format!("pg_ctl stop -m immediate under node {node}"),
            ))
        }
        FaultKind::PartitionLeader => {
            let fault = NetworkFault::Partition(vec![vec![leader], followers.clone()]);
            mesh.apply(&fault);
            Ok((
                AppliedFault::Network(fault),
                format!("isolate node {leader}"),
            ))
        }
        FaultKind::Blackhole => {
            let (from, to) = if random.gen_bool(0.5) {
                (leader, follower)
            } else {
                (follower, leader)
            };
            let fault = NetworkFault::Blackhole { from, to };
            mesh.apply(&fault);
            Ok((
                AppliedFault::Network(fault),
                format!("blackhole node {from} -> node {to}"),
            ))
        }
        FaultKind::Latency => {
            let latency = Duration::from_millis(random.gen_range(20..200));
            let fault = NetworkFault::Latency {
                a: leader,
                b: follower,
                latency,
            };
            mesh.apply(&fault);
            Ok((
                AppliedFault::Network(fault),
                format!("{latency:?} between nodes {leader} and {follower}"),
            ))
        }
        FaultKind::TransferLeadership => {
            cluster
                .client()
                .transfer_leadership(follower)
                .await
                .map_err(|e| e.to_string())?;
            Ok((
                AppliedFault::Instant,
                format!("transfer leadership {leader} -> {follower}"),
            ))
        }
        FaultKind::MemberAddRemove => {
            let added = membership::add_voter(cluster).await?;
            let voters = cluster.node_ids();
            let remove = *voters.choose(random).expect("a voter");
            Ok((
                AppliedFault::MemberAdded { added, remove },
                format!("add node {added} (learner, promoted); heal removes node {remove}"),
            ))
        }
        FaultKind::ReplaceFollower | FaultKind::ReplaceLeader => {
            let dead = leader_or_follower(kind);
            tokio::task::block_in_place(|| cluster.kill_node(dead)).map_err(|e| e.to_string())?;
            match membership::add_learner(cluster).await {
                Ok(learner) => Ok((
                    AppliedFault::Replacing { dead, learner },
                    format!(
                        "kill -9 node {dead} for good, add node {learner} as a learner; heal promotes it and removes node {dead}"
                    ),
                )),
                Err(error) => {
                    // Not replaced: the killed node comes back instead.
                    cluster.reap_exited();
                    let restarted = cluster.start_node(dead).map_err(|e| e.to_string());
                    Err(format!(
                        "killed node {dead} but could not add its replacement: {error} (restarted node {dead}: {restarted:?})"
                    ))
                }
            }
        }
        FaultKind::RemoveLeader => {
            membership::remove(cluster, leader).await?;
            Ok((
                AppliedFault::LeaderRemoved(leader),
                format!("remove leader node {leader}; heal adds a fresh voter"),
            ))
        }
    }
}

/// Undoes `fault`; a membership fault is healed to as many voters as
/// before it.
pub async fn heal(
    fault: &AppliedFault,
    cluster: &mut TestCluster,
    mesh: &ProxyMesh,
) -> Result<(), String> {
    match fault {
        AppliedFault::MemberAdded { remove, .. } => membership::remove(cluster, *remove).await,
        AppliedFault::Replacing { dead, learner } => {
            // Not replaced when the learner does not become a voter: the
            // dead node is started again (and the learner removed when the
            // membership is reconciled).
            if let Err(error) = membership::promote_when_caught_up(cluster, *learner).await {
                cluster.reap_exited();
                let restarted = cluster.start_node(*dead).map_err(|e| e.to_string());
                return Err(format!(
                    "{error} (node {learner} running: {}; restarted node {dead}: {restarted:?})",
                    cluster.is_running(*learner)
                ));
            }
            membership::remove(cluster, *dead).await
        }
        AppliedFault::LeaderRemoved(_) => membership::add_voter(cluster).await.map(|_| ()),
        AppliedFault::Killed(node) => {
            cluster.reap_exited();
            cluster
                .start_node(*node)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        AppliedFault::Paused { pid, .. } => signal(*pid, "CONT"),
        AppliedFault::PostgresCrashed(node) => {
            tokio::task::block_in_place(|| cluster.postgres(*node).start_again())
                .map_err(|e| e.to_string())
        }
        AppliedFault::PostgresStopped(node) => {
            // A server of its own on the same data directory and port; the
            // cluster's PgInstance of the node stops it at the end, as it
            // stops whatever runs on that data directory.
            let dir = cluster.dir().to_path_buf();
            tokio::task::block_in_place(|| {
                raftgres_devcluster::cluster::start_postgres(&dir, *node, POSTGRES_START_MAX)
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        AppliedFault::Network(_) => {
            mesh.heal();
            Ok(())
        }
        AppliedFault::Instant => Ok(()),
    }
}

/// Stops process `pid` (SIGSTOP) and returns once every one of its
/// threads has stopped. A multi-threaded process stops when one of its
/// threads takes the signal, and that thread may wait for a CPU while the
/// others run on: until then a node still receives, writes and answers
/// (a follower "stopped" before a write took the write and acknowledged
/// it, and the leader committed it).
pub fn pause_process(pid: u32) -> Result<(), String> {
    signal(pid, "STOP")?;
    let started = std::time::Instant::now();
    loop {
        match running_thread(pid)? {
            None => return Ok(()),
            Some(thread) if started.elapsed() > std::time::Duration::from_secs(5) => {
                return Err(format!(
                    "thread {thread} of process {pid} still runs 5 s after SIGSTOP"
                ));
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// A thread of `pid` that is not stopped, if any (its state in
/// `/proc/PID/task/TID/stat`, the field after the command's closing
/// parenthesis, is not `T`).
fn running_thread(pid: u32) -> Result<Option<u64>, String> {
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).map_err(|error| format!("{tasks}: {error}"))?;
    for entry in entries {
        let path = entry.map_err(|error| format!("{tasks}: {error}"))?.path();
        // A thread that exited meanwhile is not running.
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state != Some('T') {
            let thread = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse().ok())
                .unwrap_or(0);
            return Ok(Some(thread));
        }
    }
    Ok(None)
}

/// Sends `signal` (a `kill -s` name) to `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let output = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .output()
        .map_err(|error| format!("kill -s {signal} {pid}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -s {signal} {pid}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
