//! What a run is a function of, besides its seed.

use raftgres::core::{Config, NodeId};

use crate::profile::{CoreSettings, WorkloadSettings};

/// The settings of one simulated run. Together with the seed they decide
/// the run completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Cluster size.
    pub nodes: usize,
    /// Simulated ticks to run.
    pub ticks: u64,
    /// Fault profile name (see `profile::PROFILE_NAMES`).
    pub faults: String,
    /// A planted bug to enable in every node (needs the `planted-bugs`
    /// feature).
    pub planted_bug: Option<String>,
    /// Keep the readable event trace.
    pub trace: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys the clients use.
    pub keys: u64,
    /// Election timeout lower bound, in ticks.
    pub election_ticks_min: u64,
    /// Election timeout upper bound (exclusive), in ticks.
    pub election_ticks_max: u64,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u64,
    /// Run the pre-vote phase (section 9.6).
    pub pre_vote: bool,
    /// Leaders step down without a quorum; followers ignore campaigns while
    /// they hear from a leader.
    pub check_quorum: bool,
    /// Most entries per AppendEntries message.
    pub entries_per_message_max: usize,
    /// Most bytes of entries per AppendEntries message (one larger entry
    /// travels alone).
    pub message_bytes_max: usize,
    /// Ticks allowed, after faults stop, for a command to commit.
    pub liveness_ticks_max: u64,
    /// A client gives up on a request after this many ticks (its outcome is
    /// then unknown).
    pub client_timeout_ticks: u64,
    /// Longest a client waits between requests.
    pub client_think_ticks_max: u64,
    /// With `Some(patience)`, one client beyond `clients` only reads,
    /// mostly with a lease, always at the node it last found leading (a
    /// reader pinned to its leader, as a cache refresher is). While faults
    /// strike it gives up on a read after `patience` ticks and asks the
    /// same node again, so a leader that has been cut off keeps being
    /// asked until it says it no longer leads: the moment an expired or
    /// too long lease serves a stale read. Once faults stop it waits like
    /// every other client.
    pub pinned_reader_patience_ticks: Option<u64>,
    /// Search budget of the linearizability checker, per key.
    pub linearizability_steps_max: u64,
    /// Ticks a read started after recovery may take, however often it is
    /// redirected (see `checkers::read_liveness`).
    pub read_ticks_max: u64,
    /// New terms allowed after recovery (see `checkers::term_settling`).
    pub new_terms_after_recovery_max: u64,
    /// Most reads a node's core tracks (`Config::pending_reads_max`); the
    /// swarm sometimes draws a handful so that the bound is reached.
    pub pending_reads_max: usize,
    /// Ticks a node may hold a request after recovery (see
    /// `checkers::held_requests`): above the transfer timeout (twice the
    /// largest election timeout, at most 80 ticks), the longest any
    /// request legitimately waits on a healthy cluster.
    pub held_request_ticks_max: u64,
}

impl SimConfig {
    /// Defaults for `nodes` nodes, `ticks` ticks and profile `faults`.
    pub fn new(nodes: usize, ticks: u64, faults: &str) -> SimConfig {
        SimConfig {
            nodes,
            ticks,
            faults: faults.to_string(),
            planted_bug: None,
            trace: false,
            clients: 3,
            keys: 3,
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            entries_per_message_max: 64,
            message_bytes_max: 1 << 20,
            liveness_ticks_max: 400,
            client_timeout_ticks: 150,
            client_think_ticks_max: 4,
            pinned_reader_patience_ticks: None,
            linearizability_steps_max: 2_000_000,
            read_ticks_max: 100,
            new_terms_after_recovery_max: 2,
            held_request_ticks_max: 150,
            pending_reads_max: 16_384,
        }
    }

    /// The tick at which faults stop: late enough to leave the liveness
    /// window at the end of the run, or half way through a short run.
    pub fn fault_end_tick(&self) -> u64 {
        let window = self.liveness_ticks_max + 100;
        if self.ticks >= 2 * window {
            self.ticks - window
        } else {
            self.ticks / 2
        }
    }

    /// These settings with the core settings a swarm world drew, except
    /// where the command line moved a setting away from its default: such
    /// a setting is pinned (so `--no-pre-vote` still means no pre-vote).
    pub fn with_core_settings(&self, drawn: CoreSettings) -> SimConfig {
        let defaults = SimConfig::new(self.nodes, self.ticks, &self.faults);
        let mut config = self.clone();
        if self.pre_vote == defaults.pre_vote {
            config.pre_vote = drawn.pre_vote;
        }
        if self.check_quorum == defaults.check_quorum {
            config.check_quorum = drawn.check_quorum;
        }
        if self.entries_per_message_max == defaults.entries_per_message_max {
            config.entries_per_message_max = drawn.entries_per_message_max;
        }
        if self.message_bytes_max == defaults.message_bytes_max {
            config.message_bytes_max = drawn.message_bytes_max;
        }
        let timeouts = (self.election_ticks_min, self.election_ticks_max);
        if timeouts == (defaults.election_ticks_min, defaults.election_ticks_max) {
            config.election_ticks_min = drawn.election_ticks_min;
            config.election_ticks_max = drawn.election_ticks_max;
        }
        config
    }

    /// These settings with the client settings a swarm world drew, except
    /// where the command line moved a setting away from its default.
    pub fn with_workload_settings(&self, drawn: WorkloadSettings) -> SimConfig {
        let defaults = SimConfig::new(self.nodes, self.ticks, &self.faults);
        let mut config = self.clone();
        if self.clients == defaults.clients {
            config.clients = drawn.clients;
        }
        if self.client_timeout_ticks == defaults.client_timeout_ticks {
            config.client_timeout_ticks = drawn.client_timeout_ticks;
        }
        if self.pinned_reader_patience_ticks.is_none() {
            config.pinned_reader_patience_ticks = drawn.pinned_reader_patience_ticks;
        }
        config
    }

    /// Whether readers may outnumber the read slots of a node
    /// (`pending_reads_max`): a node refuses reads beyond its bound
    /// ("retry") with no fairness between readers, so one reader may be
    /// refused for as long as the others keep the slots. Reads must still
    /// be answered, refused or served, but not within a latency bound.
    pub fn reads_may_starve(&self) -> bool {
        self.pending_reads_max <= self.clients
    }

    /// The core configuration of node `id`.
    pub fn raft_config(&self, id: NodeId) -> Config {
        let voters = (1..=self.nodes as u64).map(NodeId).collect();
        let mut config = Config::new(id, voters);
        config.election_ticks_min = self.election_ticks_min;
        config.election_ticks_max = self.election_ticks_max;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.uncommitted_entries_max = 4096;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.entries_per_message_max = self.entries_per_message_max;
        config.message_bytes_max = self.message_bytes_max;
        config.pending_reads_max = self.pending_reads_max;
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bug = self.planted_bug.as_deref().map(|name| {
                raftgres::core::PlantedBug::from_name(name)
                    .unwrap_or_else(|| panic!("unknown planted bug {name:?}"))
            });
        }
        #[cfg(not(feature = "planted-bugs"))]
        assert!(
            self.planted_bug.is_none(),
            "planted bugs need the planted-bugs feature"
        );
        config
    }

    /// The command line that replays `seed` with these settings.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut command = String::from("cargo run --release -p raftgres-sim");
        if self.planted_bug.is_some() {
            command.push_str(" --features planted-bugs");
        }
        command.push_str(&format!(
            " -- run --seeds {seed}..{} --nodes {} --ticks {} --faults {}",
            seed + 1,
            self.nodes,
            self.ticks,
            self.faults
        ));
        if let Some(bug) = &self.planted_bug {
            command.push_str(&format!(" --planted-bug {bug}"));
        }
        let defaults = SimConfig::new(self.nodes, self.ticks, &self.faults);
        if self.clients != defaults.clients {
            command.push_str(&format!(" --clients {}", self.clients));
        }
        if self.keys != defaults.keys {
            command.push_str(&format!(" --keys {}", self.keys));
        }
        if (self.election_ticks_min, self.election_ticks_max)
            != (defaults.election_ticks_min, defaults.election_ticks_max)
        {
            command.push_str(&format!(
                " --election-ticks {}-{}",
                self.election_ticks_min, self.election_ticks_max
            ));
        }
        if !self.pre_vote {
            command.push_str(" --no-pre-vote");
        }
        if !self.check_quorum {
            command.push_str(" --no-check-quorum");
        }
        if self.entries_per_message_max != defaults.entries_per_message_max {
            command.push_str(&format!(
                " --entries-per-message-max {}",
                self.entries_per_message_max
            ));
        }
        if self.message_bytes_max != defaults.message_bytes_max {
            command.push_str(&format!(" --message-bytes-max {}", self.message_bytes_max));
        }
        command.push_str(" --trace");
        command
    }
}
