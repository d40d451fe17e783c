//! Checks of one step of one node: what the node was in before it took an
//! input, compared with what it did (see `checkers::leader_promptness`,
//! `leader_stickiness`, `forwarded_reads`, `gauges` and the check-quorum
//! rule of `lease_exclusivity`).

use raftgres::core::{LogIndex, MessageBody, NodeId, PeerStatus, Role, Term};
use raftgres::pipeline::Input;

use crate::checkers::leader_stickiness::StickyVoter;
use crate::checkers::{
    clock_ticks, durable_log, election_timer, forwarded_reads, gauges, leader_promptness,
    lease_exclusivity, lease_rounds, membership_safety, prompt_answers, prompt_applies,
    prompt_persistence, wake_up,
};
use crate::node::TICK;
use crate::world::World;

/// What the step checks need to know of a node before its step.
#[derive(Debug, Default)]
pub(crate) struct BeforeStep {
    /// A real vote request without the transfer flag, of a later term,
    /// reaching a node that follows a leader it heard from recently.
    sticky_voter: Option<StickyVoter>,
    /// A read forwarded to the node by a member, in the node's term or a
    /// later one: the forwarder and the read's id.
    forwarded_read: Option<(NodeId, u64)>,
    /// Implausible messages the node had dropped before the step.
    implausible_total: u64,
    /// The node's commit index before the step.
    commit_index: LogIndex,
    /// The ticks that had reached the node's core before the step.
    ticks: u64,
    /// A leader's term and followers before the step.
    leading: Option<(Term, Vec<PeerStatus>)>,
}

impl World {
    /// Notes what `check_step` needs before node `index` takes `input`.
    pub(crate) fn before_step(&self, index: usize, input: Option<&Input>) -> BeforeStep {
        let Some(raft) = self.nodes[index].raft() else {
            return BeforeStep::default();
        };
        let mut before = BeforeStep {
            implausible_total: raft.implausible_total(),
            commit_index: raft.log().commit_index(),
            ticks: raft.ticks(),
            leading: (raft.role() == Role::Leader).then(|| (raft.term(), raft.status().peers)),
            ..BeforeStep::default()
        };
        let Some(Input::Peer(message)) = input else {
            return before;
        };
        let due = self.nodes[index]
            .pipeline
            .as_ref()
            .is_some_and(|pipeline| self.nodes[index].now() >= pipeline.next_tick_at());
        if due {
            // The ticks due reach the core before the message and may
            // change what it is (a timer fires): judge only steps whose
            // state is known.
            return before;
        }
        let config = raft.config();
        if message.to != raft.id()
            || message.term < raft.term()
            || !raft.membership().contains(message.from)
        {
            return before;
        }
        match message.body {
            MessageBody::VoteRequest {
                pre_vote: false,
                leadership_transfer: false,
                ..
            } if message.term > raft.term() => {
                let status = raft.status();
                let heard_ticks_ago = status.election_elapsed;
                if StickyVoter::applies(status.leader, heard_ticks_ago, config.election_ticks_min) {
                    before.sticky_voter = Some(StickyVoter {
                        voter: raft.id(),
                        leader: status.leader.expect("a sticky voter follows a leader"),
                        heard_ticks_ago,
                        election_ticks_min: config.election_ticks_min,
                        candidate: message.from,
                        term: message.term,
                    });
                }
            }
            MessageBody::ReadIndexRequest { context } => {
                before.forwarded_read = Some((message.from, context));
            }
            _ => {}
        }
        before
    }

    /// Checks node `index` after a step, given what it was before.
    pub(crate) fn check_step(&mut self, index: usize, before: BeforeStep) {
        if self.violation.is_some() {
            return;
        }
        let node = &self.nodes[index];
        let Some(pipeline) = node.pipeline.as_ref() else {
            return;
        };
        let raft = pipeline.raft();
        let id = node.id;
        let result = clock_ticks::check(
            id,
            raft.ticks(),
            node.clock_micros - node.started_micros,
            TICK.as_micros() as u64,
        );
        if result.is_err() {
            return self.check("clock_ticks", result);
        }
        let result = wake_up::check(id, node.now(), pipeline.wake_at());
        if result.is_err() {
            return self.check("wake_up", result);
        }
        let result =
            gauges::check_proposals_pending(id, pipeline.proposals_pending(), node.proposals.len());
        if result.is_err() {
            return self.check("gauges", result);
        }
        let result = gauges::check_reads_bound(
            id,
            pipeline.reads_pending(),
            raft.config().pending_reads_max,
        );
        if result.is_err() {
            return self.check("gauges", result);
        }
        let config = raft.config();
        let result = election_timer::check(
            id,
            raft.election_timeout(),
            config.election_ticks_min,
            config.election_ticks_max,
        );
        if result.is_err() {
            return self.check("election_timer", result);
        }
        let result = prompt_answers::check(
            id,
            pipeline.lowest_waiting_proposal(),
            pipeline.state_machine_index(),
        );
        if result.is_err() {
            return self.check("prompt_answers", result);
        }
        let result =
            prompt_persistence::check(id, raft.hard_state(), pipeline.hard_state_handed_out());
        if result.is_err() {
            return self.check("prompt_persistence", result);
        }
        let log = raft.log();
        let durable = log.durable_index();
        let result = durable_log::check(
            id,
            durable,
            log.term_at(durable),
            log.snapshot().index,
            node.store.entry(durable).map(|entry| entry.term),
            node.store.log_start.index,
        );
        if result.is_err() {
            return self.check("durable_log", result);
        }
        let result = prompt_applies::check(
            id,
            log.apply_handed_index(),
            log.commit_index(),
            log.durable_index(),
        );
        if result.is_err() {
            return self.check("prompt_applies", result);
        }
        if let Some(voter) = before.sticky_voter {
            let result = voter.check(raft.term(), raft.hard_state().voted_for);
            if result.is_err() {
                return self.check("leader_stickiness", result);
            }
        }
        let leads = raft.role() == Role::Leader;
        if let Some((forwarder, context)) = before.forwarded_read {
            if raft.implausible_total() == before.implausible_total {
                let refused = self.read_refusals_sent.contains(&(forwarder, context));
                let result = forwarded_reads::check(id, forwarder, context, leads, refused);
                if result.is_err() {
                    return self.check("forwarded_reads", result);
                }
            }
        }
        if !leads {
            return;
        }
        let config = raft.config();
        let result = lease_rounds::check(
            id,
            raft.lease_rounds(),
            raft.lease_read_index().is_some(),
            config.election_ticks_min,
        );
        if result.is_err() {
            return self.check("lease_rounds", result);
        }
        if config.check_quorum {
            let bound = 3 * config.election_ticks_max;
            let (term, membership) = (raft.term(), raft.membership());
            let result = self
                .quorum_contact
                .check(id, term, membership, self.now, bound);
            if result.is_err() {
                return self.check("check_quorum", result);
            }
        }
        if !config.check_quorum {
            let claimed = raft.lease_read_index().is_some();
            let result =
                lease_exclusivity::lease_needs_check_quorum(id, raft.term(), false, claimed);
            if result.is_err() {
                return self.check("lease_exclusivity", result);
            }
        }
        let result = membership_safety::check_leader(id, raft.log(), self.commit_index_max);
        if result.is_err() {
            return self.check("membership_safety", result);
        }
        let status = raft.status();
        let result = leader_promptness::check(&status, |index| raft.log().term_at(index));
        if result.is_err() {
            return self.check("leader_promptness", result);
        }
        // The ticks due reach the core before anything else of the step,
        // so the followers open before the step were open at the tick.
        let ticked = raft.ticks() > before.ticks;
        if let (true, Some((term, peers))) = (ticked, &before.leading) {
            if status.role == Role::Leader && status.term == *term {
                let result = leader_promptness::check_commit_announced(
                    id,
                    *term,
                    before.commit_index,
                    peers,
                    |peer| {
                        self.commits_told
                            .get(&(id, peer))
                            .filter(|(told_term, _)| told_term == term)
                            .map(|(_, commit)| *commit)
                    },
                );
                self.check("leader_promptness", result);
            }
        }
    }
}
