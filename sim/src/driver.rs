//! The simulator's driver of the production pipeline: what the tokio node
//! (`node/src/server/driver.rs`) does against Postgres and gRPC, done
//! against the simulated store and network. It decides nothing: it feeds
//! the pipeline its inputs at the node's monotonic instant (obligation 1),
//! carries out every write (with the apply batch it carries), every
//! apply and every stage job as one atomic transaction and reports it
//! (obligations 2, 3 and 8), serves views of the state machine from
//! the store (obligation 7),
//! retrying a transaction that failed or whose
//! commit had an unknown outcome, as the product's storage tasks do,
//! sends what the pipeline sends (obligation 4), and routes replies to the
//! clients waiting for them (obligation 5).

use raftgres::core::{LogIndex, Message, MessageBody, NodeId};
use raftgres::pipeline::{ApplyBatch, ApplyDone, Input, Output, StageJob, WriteDone, WriteJob};
use rand::Rng;

use crate::checkers::{
    apply_after_durable, covered_applies, crash_recovery, honest_peers, join_handshake,
    message_size,
};
use crate::leases::LeaseAsk;
use crate::network::SendFate;
use crate::node::{Queued, QueuedInput, SimNode, Waiting};
use crate::store::{ApplyReport, ApplySettings, Fate, Store, Transaction};
use crate::world::World;

/// The longest a storage task waits before retrying, in ticks (the
/// product's backoff tops out at 2 s).
const RETRY_BACKOFF_TICKS_MAX: u64 = 50;

/// The chance per tick that the WAL writer flushes a node's asynchronous
/// commits (Postgres's `wal_writer_delay` is 200 ms: about every 20 ticks).
const WAL_FLUSH_PER_MILLION: u32 = 50_000;

impl World {
    /// Feeds `input` (or only the passing of time) to node `index`'s
    /// pipeline at the node's instant, then carries out what it asks.
    pub(crate) fn handle(&mut self, index: usize, input: Option<Input>) {
        let before = self.before_step(index, input.as_ref());
        let waits_before = self.nodes[index]
            .pipeline
            .as_ref()
            .map(|pipeline| pipeline.follower_apply_waits());
        if !self.nodes[index].handle(input) {
            return;
        }
        if let (Some(before), Some(pipeline)) = (waits_before, &self.nodes[index].pipeline) {
            let after = pipeline.follower_apply_waits();
            for (total, (after, before)) in self
                .stats
                .follower_apply_waits
                .iter_mut()
                .zip(after.into_iter().zip(before))
            {
                *total += after - before;
            }
        }
        self.stats.steps += 1;
        self.read_refusals_sent.clear();
        self.carry_out(index);
        self.check_step(index, before);
    }

    /// Carries out node `index`'s outputs, in order, until none is left.
    fn carry_out(&mut self, index: usize) {
        loop {
            let Some(pipeline) = self.nodes[index].pipeline.as_mut() else {
                return;
            };
            let outputs = pipeline.take_outputs();
            if outputs.is_empty() {
                break;
            }
            let mut sent = false;
            for output in outputs {
                if self.nodes[index].pipeline.is_none() || self.violation.is_some() {
                    return;
                }
                match output {
                    Output::Send(message) => {
                        self.send(message);
                        if !sent {
                            sent = true;
                            if self.crash_after_send(index) {
                                return;
                            }
                        }
                    }
                    Output::Write(job) => self.start_write(index, job, 0),
                    Output::Apply(batch) => {
                        let node = &self.nodes[index];
                        let snapshot = node.raft().expect("running").log().snapshot().index;
                        let first = batch
                            .entries
                            .first()
                            .map_or(LogIndex(0), |entry| entry.index);
                        let result = covered_applies::check(node.id, first, snapshot);
                        if result.is_err() {
                            return self.check("covered_applies", result);
                        }
                        self.start_apply(index, batch, 0)
                    }
                    Output::ApplyAhead(batch) => {
                        let node = &mut self.nodes[index];
                        let snapshot = node.raft().expect("running").log().snapshot().index;
                        let first = batch.entries[0].index;
                        let result = covered_applies::check(node.id, first, snapshot);
                        if result.is_err() {
                            return self.check("covered_applies", result);
                        }
                        let replaced = node.ahead.replace(batch);
                        assert!(replaced.is_none(), "two batches handed out ahead");
                        self.stats.applies_ahead[0] += 1;
                    }
                    Output::ConfirmApply => {
                        // The applier has computed the outcomes while the
                        // entries replicated; from here it is an apply like
                        // any other (a failed COMMIT is retried).
                        let node = &mut self.nodes[index];
                        let batch = node
                            .ahead
                            .take()
                            .expect("a confirmation for a batch handed out ahead");
                        node.ahead_committing = batch.entries.last().map(|entry| entry.index);
                        self.stats.applies_ahead[1] += 1;
                        self.start_apply(index, batch, 0)
                    }
                    Output::AbandonApply => {
                        let node = &mut self.nodes[index];
                        node.ahead
                            .take()
                            .expect("an abandonment for a batch handed out ahead");
                        self.stats.applies_ahead[2] += 1;
                        // The rollback takes a round trip.
                        let due = self.now + 1;
                        node.view_answers.push((due, Input::ApplyAbandoned));
                    }
                    Output::Reply { request, reply } => {
                        self.nodes[index].proposals.remove(&request);
                        let Some((waiting, _)) = self.nodes[index].waiting.remove(&request) else {
                            let id = self.nodes[index].id;
                            return self.fail(
                                "held_requests",
                                format!(
                                    "node {id} answered request {}, which it was not holding \
                                     (answered before, or never asked)",
                                    request.0
                                ),
                            );
                        };
                        self.on_reply(index, waiting, reply);
                    }
                    Output::Implausible(report) => {
                        if self.forged_pending.is_some_and(|(node, forged)| {
                            node == index && forged.reported_by(&report)
                        }) {
                            self.forged_pending = None;
                            continue;
                        }
                        let id = self.nodes[index].id;
                        let result = honest_peers::check_reports(id, &[report]);
                        self.check("honest_peers", result);
                    }
                    Output::HandingOff {
                        target,
                        stalled_for,
                    } => {
                        self.stats.faults.hand_offs += 1;
                        self.nodes[index].handed_off_at = Some(self.now);
                        let id = self.nodes[index].id;
                        self.trace.record(self.now, "hand-off", &[id.0, target.0], || {
                            format!("node {id} storage stalled {stalled_for:?}: hands leadership to {target}")
                        });
                    }
                    Output::RoleChanged { .. } => {}
                    Output::OpenView { view } => self.open_view(index, view),
                    Output::ReadChunk(read) => self.read_chunk(index, read),
                    Output::CloseView { view } => {
                        self.nodes[index].views.remove(&view);
                    }
                    Output::Stage(job) => self.start_stage(index, job, 0),
                }
            }
        }
        self.observe(index);
    }

    /// Whether node `index` crashes right after sending, before anything
    /// else of that batch of outputs happens (the most delicate point of
    /// the persist-before-acknowledge rules).
    fn crash_after_send(&mut self, index: usize) -> bool {
        let rate = self.profile.crash_after_send_per_million;
        self.crash_by_chance(index, rate, "crash")
    }

    /// Whether node `index` crashes right after a transaction committed,
    /// before it learns so: a crash between two transactions.
    fn crash_after_commit(&mut self, index: usize) -> bool {
        let rate = self.profile.crash_after_commit_per_million;
        self.crash_by_chance(index, rate, "crash-after-commit")
    }

    /// Whether node `index` crashes right after a transaction that
    /// installed a snapshot committed.
    fn crash_after_snapshot_install(&mut self, index: usize) -> bool {
        let rate = self.profile.crash_after_snapshot_install_per_million;
        self.crash_by_chance(index, rate, "crash-after-snapshot-install")
    }

    /// Crashes node `index` with chance `per_million` while faults last;
    /// returns whether it did.
    fn crash_by_chance(&mut self, index: usize, per_million: u32, why: &'static str) -> bool {
        if self.now < self.fault_end && Self::chance(&mut self.rng.faults, per_million) {
            self.stats.faults.crashes += 1;
            self.crash(index, why);
            return true;
        }
        false
    }

    pub(crate) fn send(&mut self, message: Message) {
        let now = self.now;
        let words = [
            message.from.0,
            message.to.0,
            message.term.0,
            message_kind_code(&message.body),
        ];
        self.trace.record(now, "send", &words, || {
            format!(
                "{} -> {} {} term {}",
                message.from,
                message.to,
                describe(&message.body),
                message.term
            )
        });
        self.stats.messages_sent += 1;
        self.idle_traffic.on_send(now);
        match message.body {
            MessageBody::ReadIndexResponse {
                context,
                refused: true,
                ..
            } => self.read_refusals_sent.push((message.to, context)),
            MessageBody::AppendRequest { leader_commit, .. }
            | MessageBody::HeartbeatRequest { leader_commit, .. } => {
                let told = self
                    .commits_told
                    .entry((message.from, message.to))
                    .or_insert((message.term, LogIndex(0)));
                if told.0 != message.term {
                    *told = (message.term, LogIndex(0));
                }
                told.1 = told.1.max(leader_commit);
            }
            _ => {}
        }
        if let MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            let result = self
                .checkers
                .single_vote
                .on_vote(message.from, message.term, message.to);
            self.check("single_vote", result);
        }
        if let MessageBody::AppendRequest { entries, .. } = &message.body {
            let bytes_max = self.config.message_bytes_max;
            let result = message_size::check_append(message.from, message.to, entries, bytes_max);
            self.check("message_size", result);
        }
        match self
            .network
            .send(now, message, &self.profile, &mut self.rng.network)
        {
            SendFate::Lost => self.stats.faults.messages_lost += 1,
            SendFate::Duplicated => self.stats.faults.messages_duplicated += 1,
            SendFate::NotConnected => self.stats.faults.messages_unconnected += 1,
            SendFate::Sent => {}
        }
    }

    pub(crate) fn deliver_messages(&mut self) {
        while let Some(due) = self.network.pop_due(self.now) {
            let message = match due {
                Ok(message) => message,
                Err(_) => {
                    self.stats.faults.messages_partitioned += 1;
                    continue;
                }
            };
            let index = message.to.0 as usize - 1;
            let node = &self.nodes[index];
            if let Some(until) = node.paused_until {
                self.network.enqueue(until, message);
                continue;
            }
            let Some(raft) = node.raft() else {
                continue;
            };
            // The peer gate drops what comes from nodes it does not hear.
            if !raft.hears(&message) {
                self.stats.faults.messages_unheard += 1;
                self.trace
                    .record(self.now, "unheard", &[message.from.0, message.to.0], || {
                        format!(
                            "{} does not hear {}: {}",
                            message.to,
                            message.from,
                            describe(&message.body)
                        )
                    });
                // The gate's refusal reaches the sender as its stream's
                // error, with the receiver's term.
                let (sender, term) = (message.from.0 as usize - 1, raft.term());
                if self.nodes[sender].is_running() {
                    let by = message.to;
                    self.handle(sender, Some(Input::NotHeard { by, term }));
                    if self.violation.is_some() {
                        return;
                    }
                }
                continue;
            }
            if message.body == MessageBody::TimeoutNow {
                self.maybe_deafen_after_timeout_now(message.from);
            }
            self.quorum_contact
                .heard(message.to, message.from, self.now);
            self.handle(index, Some(Input::Peer(message)));
            if self.violation.is_some() {
                return;
            }
        }
    }

    // ----- the store's transactions --------------------------------------

    /// How a new transaction ends and when.
    fn draw_transaction(&mut self, attempts: u32, fatal_allowed: bool) -> (u64, Fate) {
        let rng = &mut self.rng.disk;
        let mut latency = rng.gen_range(1..=self.profile.disk_latency_ticks_max);
        if Self::chance(rng, self.profile.disk_slow_per_million) {
            latency += rng.gen_range(0..=self.profile.disk_slow_ticks_max);
        }
        if attempts > 0 {
            latency += (2u64 << attempts.min(5)).min(RETRY_BACKOFF_TICKS_MAX);
        }
        let fate = if fatal_allowed && Self::chance(rng, self.profile.disk_error_per_million) {
            Fate::Fatal
        } else if Self::chance(rng, self.profile.storage_error_per_million) {
            Fate::Fail
        } else if Self::chance(rng, self.profile.commit_unknown_per_million) {
            Fate::Unknown {
                happened: rng.gen_bool(0.5),
            }
        } else {
            Fate::Commit
        };
        (self.now + latency, fate)
    }

    /// Starts a transaction carrying `job` in node `index`'s `slot`, its
    /// end drawn (see `draw_transaction`); the pipeline hands out one at a
    /// time per slot.
    fn start<J>(
        &mut self,
        index: usize,
        (job, attempts, fatal_allowed): (J, u32, bool),
        what: &str,
        slot: fn(&mut SimNode) -> &mut Option<Transaction<J>>,
    ) {
        let (complete_at, fate) = self.draw_transaction(attempts, fatal_allowed);
        let slot = slot(&mut self.nodes[index]);
        assert!(
            slot.is_none(),
            "node {}: the pipeline handed out a second {what}",
            index + 1
        );
        *slot = Some(Transaction {
            job,
            complete_at,
            fate,
            attempts,
        });
    }

    fn start_write(&mut self, index: usize, job: WriteJob, attempts: u32) {
        let fatal_allowed = attempts == 0;
        if attempts == 0 {
            self.nodes[index].write_since = Some(self.now);
        }
        self.start(index, (job, attempts, fatal_allowed), "write", |node| {
            &mut node.write
        });
    }

    fn start_apply(&mut self, index: usize, job: ApplyBatch, attempts: u32) {
        if attempts == 0 {
            self.nodes[index].apply_since = Some(self.now);
        }
        self.start(index, (job, attempts, false), "apply batch", |node| {
            &mut node.apply
        });
    }

    fn start_stage(&mut self, index: usize, job: StageJob, attempts: u32) {
        self.start(index, (job, attempts, false), "stage job", |node| {
            &mut node.stage
        });
    }

    /// Opens a view of node `index`'s state machine (a REPEATABLE READ
    /// transaction: it sees the rows as they are now); the answer comes
    /// after a round trip to Postgres.
    fn open_view(&mut self, index: usize, view: u64) {
        let due = self.now
            + self
                .rng
                .disk
                .gen_range(1..=self.profile.disk_latency_ticks_max);
        let postgres_away = self.postgres_down_until[index] > self.now;
        let node = &mut self.nodes[index];
        let answer = match node.store.view().filter(|_| !postgres_away) {
            Some((at, rows)) => {
                node.views.insert(view, rows);
                Input::ViewOpened { view, at }
            }
            None => Input::ViewLost { view },
        };
        node.view_answers.push((due, answer));
    }

    /// Reads a chunk of a view; the answer comes after a round trip to
    /// Postgres.
    fn read_chunk(&mut self, index: usize, read: raftgres::pipeline::ReadChunk) {
        let due = self.now
            + self
                .rng
                .disk
                .gen_range(1..=self.profile.disk_latency_ticks_max);
        let postgres_away = self.postgres_down_until[index] > self.now;
        let node = &mut self.nodes[index];
        let answer = match node.views.get(&read.view).filter(|_| !postgres_away) {
            Some(rows) => Input::ChunkRead(Store::read_view(rows, &read)),
            None => {
                node.views.remove(&read.view);
                Input::ViewLost { view: read.view }
            }
        };
        node.view_answers.push((due, answer));
    }

    /// Hands node `index` the answers that are due (of view operations,
    /// of an abandoned apply's rollback).
    pub(crate) fn answer_views(&mut self, index: usize) {
        if !self.nodes[index].is_running() {
            return;
        }
        let now = self.now;
        let answers = &mut self.nodes[index].view_answers;
        if answers.iter().all(|(due, _)| *due > now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(answers)
            .into_iter()
            .partition(|(due, _)| *due <= now);
        self.nodes[index].view_answers = later;
        for (_, answer) in due {
            if self.nodes[index].pipeline.is_none() || self.violation.is_some() {
                return;
            }
            self.handle(index, Some(answer));
        }
    }

    /// The WAL writer flushes asynchronous commits now and then.
    pub(crate) fn flush_wal(&mut self, index: usize) {
        if self.nodes[index].store.unflushed()
            && Self::chance(&mut self.rng.disk, WAL_FLUSH_PER_MILLION)
        {
            self.nodes[index].store.flush();
        }
    }

    /// Ends the transactions of node `index` that are due: commits are
    /// reported to the pipeline, failures retried.
    pub(crate) fn end_transactions(&mut self, index: usize) {
        if !self.nodes[index].is_running() {
            return;
        }
        let postgres_away = self.postgres_down_until[index] > self.now;
        let now = self.now;
        let write_due = |node: &crate::node::SimNode| {
            node.write
                .as_ref()
                .is_some_and(|transaction| transaction.complete_at <= now)
        };
        let apply_due = |node: &crate::node::SimNode| {
            node.apply
                .as_ref()
                .is_some_and(|transaction| transaction.complete_at <= now)
        };
        if write_due(&self.nodes[index]) {
            let transaction = self.nodes[index].write.take().expect("due");
            let fate = if postgres_away {
                Fate::Fail
            } else {
                transaction.fate
            };
            self.end_write(index, transaction, fate);
        }
        if self.nodes[index].pipeline.is_none() || self.violation.is_some() {
            return;
        }
        if apply_due(&self.nodes[index]) {
            let transaction = self.nodes[index].apply.take().expect("due");
            let fate = if postgres_away {
                Fate::Fail
            } else {
                transaction.fate
            };
            self.end_apply(index, transaction, fate);
        }
        if self.nodes[index].pipeline.is_none() || self.violation.is_some() {
            return;
        }
        let stage_due = self.nodes[index]
            .stage
            .as_ref()
            .is_some_and(|transaction| transaction.complete_at <= now);
        if stage_due {
            let transaction = self.nodes[index].stage.take().expect("due");
            let fate = if postgres_away {
                Fate::Fail
            } else {
                transaction.fate
            };
            self.end_stage(index, transaction, fate);
        }
    }

    fn end_stage(&mut self, index: usize, transaction: Transaction<StageJob>, fate: Fate) {
        match fate {
            Fate::Commit | Fate::Fatal => {
                self.nodes[index].store.stage(&transaction.job);
                if self.crash_after_commit(index) {
                    return;
                }
                let staged = transaction.job.transfer;
                self.handle(index, Some(Input::Staged(staged)));
            }
            Fate::Fail | Fate::Unknown { .. } => {
                if let Fate::Unknown { happened } = fate {
                    self.stats.faults.commits_unknown += 1;
                    if happened {
                        self.nodes[index].store.stage(&transaction.job);
                    }
                } else {
                    self.stats.faults.storage_errors += 1;
                }
                self.start_stage(index, transaction.job, transaction.attempts + 1);
            }
        }
    }

    fn end_write(&mut self, index: usize, transaction: Transaction<WriteJob>, fate: Fate) {
        match fate {
            Fate::Commit => {
                self.nodes[index].write_since = None;
                let Some(applied) = self.commit_write(index, &transaction.job) else {
                    return;
                };
                if !self.answer_early(index, applied.as_ref()) {
                    return;
                }
                if self.crash_after_commit(index)
                    || (transaction.job.snapshot.is_some()
                        && self.crash_after_snapshot_install(index))
                {
                    return;
                }
                let done = WriteDone::of(transaction.job, applied);
                self.handle(index, Some(Input::WriteDone(done)));
            }
            Fate::Fail | Fate::Unknown { .. } => {
                if let Fate::Unknown { happened } = fate {
                    self.stats.faults.commits_unknown += 1;
                    if happened {
                        let Some(applied) = self.commit_write(index, &transaction.job) else {
                            return;
                        };
                        if !self.answer_early(index, applied.as_ref()) {
                            return;
                        }
                    }
                } else {
                    self.stats.faults.storage_errors += 1;
                }
                self.start_write(index, transaction.job, transaction.attempts + 1);
            }
            Fate::Fatal => {
                // An error the node cannot interpret: it stops voting and
                // acknowledging until restarted from what is durable.
                self.stats.faults.disk_errors += 1;
                self.crash(index, "disk-error");
            }
        }
    }

    fn end_apply(&mut self, index: usize, transaction: Transaction<ApplyBatch>, fate: Fate) {
        let (settings, ahead) = self.apply_transaction_settings(index, &transaction);
        let committed_ahead = matches!(
            fate,
            Fate::Commit | Fate::Fatal | Fate::Unknown { happened: true }
        );
        if ahead && committed_ahead {
            self.stats.applies_ahead[3] += 1;
        }
        match fate {
            Fate::Commit | Fate::Fatal => {
                self.nodes[index].apply_since = None;
                let Some(report) = self.commit_apply(index, &transaction.job, settings) else {
                    return;
                };
                if !self.answer_early(index, Some(&report.done)) {
                    return;
                }
                if self.crash_after_commit(index) {
                    return;
                }
                self.handle(index, Some(Input::ApplyDone(report.done)));
            }
            Fate::Fail | Fate::Unknown { .. } => {
                if let Fate::Unknown { happened } = fate {
                    self.stats.faults.commits_unknown += 1;
                    if happened {
                        let Some(report) = self.commit_apply(index, &transaction.job, settings)
                        else {
                            return;
                        };
                        if !self.answer_early(index, Some(&report.done)) {
                            return;
                        }
                    }
                } else {
                    self.stats.faults.storage_errors += 1;
                }
                self.start_apply(index, transaction.job, transaction.attempts + 1);
            }
        }
    }

    /// How node `index`'s apply transaction commits: as the world's
    /// settings say, except the first attempt at a batch confirmed ahead
    /// whose applied index stood right below it, which the node's applier
    /// commits without waiting for the WAL flush (a Postgres crash may
    /// lose it; it is replayed), and whether this is that attempt. Ends
    /// the batch's first attempt.
    fn apply_transaction_settings(
        &mut self,
        index: usize,
        transaction: &Transaction<ApplyBatch>,
    ) -> (ApplySettings, bool) {
        let node = &mut self.nodes[index];
        let last = transaction.job.entries.last().map(|entry| entry.index);
        let first = transaction.job.entries.first().map(|entry| entry.index);
        let ahead = node.ahead_committing.take().is_some_and(|confirmed| {
            Some(confirmed) == last
                && transaction.attempts == 0
                && first == Some(node.store.state_machine.applied_index().next())
        });
        let settings = ApplySettings {
            asynchronous_commit: raftgres::pipeline::commits_without_flush(
                self.apply_settings.asynchronous_commit,
                ahead,
            ),
            ..self.apply_settings
        };
        (settings, ahead)
    }

    /// Hands node `index` the outcomes of the apply it just committed
    /// (`Input::Outcomes`), before the commit's report, as the node's
    /// storage tasks do before their COMMIT: its clients are answered
    /// then, and a crash or a lost commit outcome may come between the
    /// answers and the report. False when the node stopped or the run
    /// failed meanwhile.
    fn answer_early(&mut self, index: usize, applied: Option<&ApplyDone>) -> bool {
        let Some(applied) = applied else {
            return true;
        };
        self.handle(index, Some(Input::Outcomes(applied.outcomes.clone())));
        self.nodes[index].pipeline.is_some() && self.violation.is_none()
    }

    /// Carries out `job` on node `index`'s store, with the apply batch it
    /// carries in the same (synchronous) transaction, and reports it to
    /// the checkers. Returns the apply batch's report, if it carried one;
    /// `None` when the store refused it (the run has failed).
    pub(crate) fn commit_write(
        &mut self,
        index: usize,
        job: &WriteJob,
    ) -> Option<Option<raftgres::pipeline::ApplyDone>> {
        let id = self.nodes[index].id;
        let entries_max = self.apply_settings.entries_per_write_max;
        if job.entries.len() > entries_max {
            // storage-pg refuses the append and the node stops.
            self.fail(
                "storage_limits",
                format!(
                    "node {id} handed its store a write of {} entries (from index {}), \
                     beyond the {entries_max} one append may carry",
                    job.entries.len(),
                    job.entries[0].index
                ),
            );
            return None;
        }
        if let Some(value) = crate::store::beyond_postgres_columns(job) {
            // storage-pg refuses the transaction and the node stops.
            self.fail(
                "storage_limits",
                format!("node {id} handed its store {value}, beyond a Postgres bigint"),
            );
            return None;
        }
        if let Err(error) = self.nodes[index].store.write(job) {
            self.fail("corrupt_durable_data", format!("node {id}: {error}"));
            return None;
        }
        if let Some(hard_state) = job.hard_state {
            if let Some(candidate) = hard_state.voted_for {
                let result = self
                    .checkers
                    .single_vote
                    .on_vote(id, hard_state.term, candidate);
                self.check("single_vote", result);
            }
        }
        // A crash may follow any transaction: what each one leaves must
        // be a state the node restarts from.
        let result = crash_recovery::check_restartable(id, &self.nodes[index].store);
        self.check("crash_recovery", result);
        let store = &self.nodes[index].store;
        if let Some(first) = job.entries.first() {
            if let Some(previous_term) = store.term_at(first.index.prev()) {
                let result = self
                    .checkers
                    .log_matching
                    .on_append(id, previous_term, &job.entries);
                self.check("log_matching", result);
            }
        }
        if let Some(snapshot) = &job.snapshot {
            self.stats.snapshots_installed += 1;
            let meta = snapshot.meta;
            self.trace.record(
                self.now,
                "install",
                &[id.0, meta.index.0, meta.term.0],
                || {
                    format!(
                        "node {id} snapshot through {} term {}",
                        meta.index, meta.term
                    )
                },
            );
            let result = self.checkers.state_machine_safety.on_snapshot(id, meta);
            self.check("state_machine_safety", result);
            let digest = self.nodes[index].store.state_machine.rows_hash();
            let result = self.checkers.replica_rows.on_rows(id, meta.index, digest);
            self.check("replica_rows", result);
            self.store_replaced(index);
        }
        if job.compact_to.is_some() {
            self.stats.compactions += 1;
        }
        let store = &self.nodes[index].store;
        self.trace.record(
            self.now,
            "durable",
            &[id.0, store.last().0 .0, store.hard_state.term.0],
            || {
                format!(
                    "node {id} write through {:?} hard state {:?}",
                    job.persist_point, job.hard_state
                )
            },
        );
        let Some(batch) = &job.apply else {
            return Some(None);
        };
        let settings = ApplySettings {
            asynchronous_commit: false,
            ..self.apply_settings
        };
        let report = self.commit_apply(index, batch, settings)?;
        Some(Some(report.done))
    }

    /// Carries out `job` on node `index`'s store and reports what it
    /// applied to the checkers. `None` when the store could not (the run
    /// has failed).
    pub(crate) fn commit_apply(
        &mut self,
        index: usize,
        batch: &ApplyBatch,
        settings: ApplySettings,
    ) -> Option<ApplyReport> {
        let id = self.nodes[index].id;
        let applied_before = self.nodes[index].store.state_machine.applied_index();
        let new = batch
            .entries
            .iter()
            .filter(|entry| entry.index > applied_before);
        for entry in new {
            let result = apply_after_durable::check_apply(
                id,
                entry.index,
                entry.term,
                &self.nodes[index].store,
            );
            self.check("apply_after_durable", result);
        }
        let report = match self.nodes[index].store.apply(batch, settings) {
            Ok(report) => report,
            Err(error) => {
                self.fail("crash_recovery", format!("node {id}: {error}"));
                return None;
            }
        };
        for (entry, applied) in &report.applied {
            self.on_applied(index, entry, applied);
            let result =
                self.checkers
                    .revisions
                    .on_apply(id, entry.index, applied, applied.revision);
            self.check("revisions", result);
        }
        for (at, digest) in &report.digests {
            let result = self.checkers.replica_rows.on_rows(id, *at, *digest);
            self.check("replica_rows", result);
        }
        self.on_watch_truth(index, &report);
        self.check_revisions(index);
        self.check_lease_attachments(index);
        if self.leases.enabled() {
            self.lessor_step(index, false);
        }
        Some(report)
    }

    /// Node `index`'s store was replaced (a snapshot installed, or
    /// asynchronous applies lost): its revision starts from the new one.
    fn store_replaced(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let state_machine = &self.nodes[index].store.state_machine;
        let result = self.checkers.revisions.on_replaced(
            id,
            state_machine.applied_index(),
            state_machine.revisions().current,
        );
        self.check("revisions", result);
        self.check_revisions(index);
        self.check_lease_attachments(index);
    }

    /// Node `index`'s store after a transaction: its revision and rows.
    fn check_revisions(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let mvcc = self.nodes[index].store.state_machine.mvcc();
        let result =
            self.checkers
                .revisions
                .check_store(id, mvcc.revisions().current, mvcc.rows().values());
        let changes = mvcc.history_len() as u64;
        self.check("revisions", result);
        self.stats.history_changes_max = self.stats.history_changes_max.max(changes);
    }

    // ----- crashes, restarts and pauses ----------------------------------

    /// Crashes node `index`: its volatile state is lost; a transaction in
    /// flight happened or not; with a whole-machine crash, Postgres loses
    /// its asynchronous commits too.
    pub(crate) fn crash(&mut self, index: usize, reason: &'static str) {
        let machine = self.rng.disk.gen_bool(0.25);
        let write_happened = self.nodes[index].write.is_some() && self.rng.disk.gen_bool(0.5);
        let apply_happened = self.nodes[index].apply.is_some() && self.rng.disk.gen_bool(0.5);
        let stage_happened = self.nodes[index].stage.is_some() && self.rng.disk.gen_bool(0.5);
        let write = self.nodes[index].write.take();
        let apply = self.nodes[index].apply.take();
        if let Some(stage) = self.nodes[index].stage.take().filter(|_| stage_happened) {
            self.nodes[index].store.stage(&stage.job);
        }
        self.nodes[index].pipeline = None;
        let id = self.nodes[index].id;
        self.network.node_crashed(self.now, id);
        if let Some(write) = write.filter(|_| write_happened) {
            if self.commit_write(index, &write.job).is_none() {
                return;
            }
        }
        if let Some(apply) = apply.filter(|_| apply_happened) {
            let settings = self.apply_settings;
            if self.commit_apply(index, &apply.job, settings).is_none() {
                return;
            }
        }
        if machine {
            self.lose_unflushed(index);
        }
        let node = &mut self.nodes[index];
        node.paused_until = None;
        node.inbox.clear();
        node.waiting.clear();
        node.proposals.clear();
        let down_ticks_max = self.profile.down_ticks_max.max(1);
        node.down_until = Some(self.now + self.rng.faults.gen_range(1..=down_ticks_max));
        let now = self.now;
        let words = [
            index as u64 + 1,
            u64::from(write_happened),
            u64::from(machine),
        ];
        self.trace.record(now, reason, &words, || {
            format!(
                "node {} (write in flight happened {write_happened}, apply {apply_happened}, machine {machine})",
                index + 1
            )
        });
        self.clients_lose_node(index);
    }

    /// Postgres of node `index` loses what it had not flushed.
    pub(crate) fn lose_unflushed(&mut self, index: usize) {
        if let Some((after, before)) = self.nodes[index].store.postgres_crash() {
            self.store_replaced(index);
            self.stats.faults.applies_lost += 1;
            let id = self.nodes[index].id;
            self.trace
                .record(self.now, "applies-lost", &[id.0, after.0, before.0], || {
                    format!("node {id} Postgres lost asynchronous applies {after}..{before}")
                });
        }
    }

    pub(crate) fn restart_due_nodes(&mut self) {
        for index in 0..self.nodes.len() {
            let due = self.nodes[index]
                .down_until
                .is_some_and(|until| until <= self.now);
            if !due {
                continue;
            }
            let id = self.nodes[index].id;
            let result = crash_recovery::check_restartable(id, &self.nodes[index].store);
            if result.is_err() {
                return self.check("crash_recovery", result);
            }
            if !self.join_answered(index) {
                if self.violation.is_some() {
                    return;
                }
                // `serve --join` refuses to start when no member says it
                // was added; it is started again a while later.
                self.nodes[index].down_until = Some(self.now + JOIN_RETRY_TICKS);
                continue;
            }
            let seed = self.rng.cores.gen();
            let settings = self.apply_settings;
            let transfer = self.transfer;
            self.nodes[index].start(&self.config, seed, &settings, transfer);
            self.network.node_started(self.now, id);
            let applied = self.nodes[index].store.state_machine.applied_index();
            self.stats.faults.restarts += 1;
            self.trace
                .record(self.now, "restart", &[id.0, applied.0], || {
                    format!("node {id} applied {applied}")
                });
            let durable_applied = self.nodes[index].store.flushed_applied();
            let result = self
                .checkers
                .index_monotonicity
                .on_restart(id, durable_applied);
            self.check("index_monotonicity", result);
            let hard_state = self.nodes[index].store.hard_state;
            let result =
                self.checkers
                    .single_vote
                    .on_observe(id, hard_state.term, hard_state.voted_for);
            self.check("single_vote", result);
            self.checkers
                .lease_exclusivity
                .on_restart(id, hard_state.term);
            self.handle(index, None);
        }
    }

    /// Whether node `index` may start: always, unless it was started to
    /// join (`serve --join`) and its durable state says it must first ask
    /// whether it was added; then when a running node's membership lists
    /// it (the product asks the nodes its configuration names, and waits
    /// a few seconds for an add just made to reach them).
    fn join_answered(&mut self, index: usize) -> bool {
        let node = &self.nodes[index];
        if !node.joining || !node.store.durable_state().waits_to_be_added() {
            return true;
        }
        let id = node.id;
        let result = join_handshake::check_asking(id, &node.store);
        if result.is_err() {
            self.check("join_handshake", result);
            return false;
        }
        let added = self.nodes.iter().any(|other| {
            other.is_running()
                && other
                    .raft()
                    .is_some_and(|raft| raft.membership().contains(id))
        });
        self.trace
            .record(self.now, "join-asked", &[id.0, u64::from(added)], || {
                format!(
                    "node {id} asks whether it was added: {}",
                    if added { "yes" } else { "no answer" }
                )
            });
        added
    }

    /// Resumes paused nodes that are due: the pipeline first receives
    /// every tick the node's clock ran through (obligation 1), then the
    /// client requests that arrived meanwhile.
    pub(crate) fn resume_due_nodes(&mut self) {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if node.paused_until.is_none_or(|until| until > self.now) {
                continue;
            }
            node.paused_until = None;
            let inbox = std::mem::take(&mut node.inbox);
            self.handle(index, None);
            for queued in inbox {
                self.deliver_queued(index, queued);
            }
        }
    }

    /// Hands a client request to node `index`'s pipeline.
    pub(crate) fn deliver_queued(&mut self, index: usize, queued: Queued) {
        if self.nodes[index].pipeline.is_none() {
            return;
        }
        let mut waiting = queued.waiting;
        if let Waiting::Lease(LeaseAsk::KeepAlive {
            asked_at,
            asked_tick,
            ..
        }) = &mut waiting
        {
            // The product's renewal counts from when the keep-alive
            // reached the node, before its ReadIndex round.
            *asked_at = self.nodes[index].now();
            *asked_tick = self.now;
        }
        let request = self.nodes[index].wait(waiting, self.now);
        let input = match queued.input {
            QueuedInput::Propose(command) => {
                self.nodes[index].proposals.insert(request);
                Input::Propose { request, command }
            }
            QueuedInput::Read(mode) => Input::Read { request, mode },
            QueuedInput::Transfer(target) => Input::Transfer { request, target },
            QueuedInput::ChangeMembership(change) => {
                self.nodes[index].proposals.insert(request);
                Input::ChangeMembership { request, change }
            }
        };
        self.handle(index, Some(input));
    }

    /// Whether node `id` may be sent a request now (it runs, paused or
    /// not).
    pub(crate) fn reachable(&self, id: NodeId) -> bool {
        self.nodes[id.0 as usize - 1].pipeline.is_some()
    }

    /// A client request reaches node `index`: at once, or when it resumes.
    pub(crate) fn send_request(&mut self, index: usize, waiting: Waiting, input: QueuedInput) {
        let queued = Queued { waiting, input };
        if self.nodes[index].paused_until.is_some() {
            self.nodes[index].inbox.push(queued);
        } else {
            self.deliver_queued(index, queued);
        }
    }
}

fn message_kind_code(body: &MessageBody) -> u64 {
    body.kind().bytes().fold(0u64, |code, byte| {
        code.wrapping_mul(31).wrapping_add(u64::from(byte))
    })
}

fn describe(body: &MessageBody) -> String {
    match body {
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "App prev ({prev_log_index},{prev_log_term}) entries {} commit {leader_commit}",
            entries.len()
        ),
        MessageBody::AppendResponse {
            index, rejected, ..
        } => format!("AppResp index {index} rejected {rejected}"),
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => {
            format!("{} last ({last_log_index},{last_log_term})", body.kind())
        }
        MessageBody::VoteResponse { granted, .. } => format!("{} granted {granted}", body.kind()),
        MessageBody::InstallSnapshot { snapshot } => {
            format!("Snapshot through {}", snapshot.meta.index)
        }
        other => other.kind().to_string(),
    }
}

/// Ticks before a node whose join handshake went unanswered is started
/// again (an operator's or supervisor's restart).
const JOIN_RETRY_TICKS: u64 = 20;
