//! Snapshots streamed from an MVCC view, staged durably, installed whole.
//!
//! The state machine lives in the node's database, so it is its own
//! snapshot: no serialized copy is ever kept. When the core says a
//! follower needs compacted entries (an `InstallSnapshot` to send), the
//! leader's pipeline asks its storage to open a *view* (a REPEATABLE READ
//! transaction) and learns the applied index the view sees; that index and
//! its term are the snapshot's. It then reads the view in chunks and
//! streams them, a bounded number unacknowledged at a time:
//!
//! ```text
//!   leader                                     follower
//!   OpenView ──> ViewOpened(meta)
//!   ReadChunk ──> ChunkRead ── SnapshotChunk ──> buffered
//!                                              Stage ──> Staged
//!          <── SnapshotChunkAck(next_seq) ─────────────┘
//!   ...                                        every chunk staged:
//!   CloseView                                  InstallSnapshot ──> core
//!                                              (installed from the staging
//!                                               in one transaction)
//! ```
//!
//! Every chunk carries a CRC-32 of its data and of all data through it.
//! The follower stages chunks durably in order and acknowledges what is
//! staged; after a dropped stream (or a restart of the follower) it
//! resumes from its last staged chunk, as long as the leader still holds
//! the same view. A view whose follower staged nothing for a bounded time
//! is released; after that, and after a leader's restart, the transfer
//! starts over with a new view.
//!
//! While a follower is sent a snapshot at index A, and until it answers
//! that its log reaches A, the leader compacts its log no further than A:
//! otherwise a follower whose transfer takes longer than the log keeps
//! entries would install snapshot after snapshot and never catch up.

use std::collections::BTreeMap;
use std::time::Duration;

use super::clock::Instant;
use super::Output;
use crate::core::{
    LogIndex, Membership, Message, MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term,
};

/// How snapshots are streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// A chunk holds about this many bytes of rows (at least one row):
    /// well below the peer message size limit.
    pub chunk_bytes: usize,
    /// Chunks sent and not yet acknowledged, at most (non-zero).
    pub chunks_in_flight: u64,
    /// With chunks unacknowledged and no acknowledgement for this long,
    /// the leader sends again from the first unacknowledged one.
    pub resend_after: Duration,
    /// A view is held at most this long without the follower staging
    /// anything of it (a dropped stream can resume until then); after
    /// that the transfer starts over from a new view.
    pub view_ttl: Duration,
}

/// A chunk to read from a view (obligation 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadChunk {
    /// The view.
    pub view: u64,
    /// The chunk's position in the transfer.
    pub seq: u64,
    /// Where the chunk starts, as the storage returned it with the chunk
    /// before (empty: at the start).
    pub after: Vec<u8>,
    /// About how many bytes to read (at least one row).
    pub bytes_max: usize,
}

/// A chunk read from a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    /// The view.
    pub view: u64,
    /// The chunk's position, as asked.
    pub seq: u64,
    /// The rows, encoded.
    pub data: Vec<u8>,
    /// Where the next chunk starts; `None` when this is the last.
    pub next: Option<Vec<u8>>,
}

/// A follower's transfer as its staging stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedTransfer {
    /// The leader streaming it.
    pub leader: NodeId,
    /// The leader's view.
    pub view: u64,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.index`.
    pub membership: Membership,
    /// Chunks below this are staged.
    pub next_seq: u64,
    /// CRC-32 of the staged chunks' data, in order.
    pub running: u32,
    /// The last chunk is staged and the whole checksum matched.
    pub complete: bool,
}

/// Chunks to stage durably in one transaction (obligation 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageJob {
    /// The transfer as it is once the job commits.
    pub transfer: StagedTransfer,
    /// Delete every chunk staged before (a new transfer begins).
    pub restart: bool,
    /// `(seq, data)`, contiguous, ending just below `transfer.next_seq`.
    pub chunks: Vec<(u64, Vec<u8>)>,
}

/// A transfer this leader streams to one follower.
#[derive(Debug)]
struct Outgoing {
    view: u64,
    /// When the view was asked for or the follower last staged a chunk.
    active_at: Instant,
    /// `None` until the view is open.
    stream: Option<Stream>,
}

#[derive(Debug)]
struct Stream {
    meta: SnapshotMeta,
    membership: Membership,
    /// For every chunk read so far and the one after it: where it starts
    /// and the running checksum before it.
    starts: Vec<(Vec<u8>, u32)>,
    /// Known once the last chunk was read.
    last_seq: Option<u64>,
    /// The next chunk to read and send.
    next_seq: u64,
    /// Chunks below this are staged at the follower.
    acked: u64,
    /// The chunk being read, if any.
    reading: Option<u64>,
    /// When `acked` last moved (or the stream began or was rewound).
    progress_at: Instant,
}

/// A transfer this follower receives.
#[derive(Debug)]
struct Incoming {
    transfer: StagedTransfer,
    /// Received, not yet staged: seq -> (data, running checksum, last).
    buffered: BTreeMap<u64, (Vec<u8>, u32, bool)>,
    /// The next stage job deletes what was staged before.
    restart: bool,
    /// A stage job is in flight.
    staging: bool,
    /// Complete and handed to the core, which is installing it: no other
    /// transfer may touch the staging until the install is done.
    installing: bool,
}

/// Both sides of snapshot transfers.
#[derive(Debug)]
pub(super) struct Transfers {
    config: TransferConfig,
    next_view: u64,
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// Per follower sent a snapshot: its index, which the log keeps until
    /// the follower's log reaches it.
    holds: BTreeMap<NodeId, LogIndex>,
    incoming: Option<Incoming>,
}

/// What sending needs to know of the node.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sender {
    pub(super) me: NodeId,
    pub(super) term: Term,
}

impl Sender {
    fn message(self, to: NodeId, body: MessageBody) -> Output {
        Output::Send(Message {
            from: self.me,
            to,
            term: self.term,
            body,
        })
    }
}

impl Transfers {
    /// No transfer yet; view ids start at `first_view` (unique to this
    /// incarnation of the node); `staged` is what the staging held at
    /// start, resumed unless it was complete (a complete transfer that was
    /// not installed is sent again).
    pub(super) fn new(
        config: TransferConfig,
        first_view: u64,
        staged: Option<StagedTransfer>,
    ) -> Transfers {
        let incoming = staged
            .filter(|transfer| !transfer.complete)
            .map(|transfer| Incoming {
                transfer,
                buffered: BTreeMap::new(),
                restart: false,
                staging: false,
                installing: false,
            });
        Transfers {
            config,
            next_view: first_view,
            outgoing: BTreeMap::new(),
            holds: BTreeMap::new(),
            incoming,
        }
    }

    /// The log must not be compacted past this (see the module's
    /// documentation).
    pub(super) fn compaction_floor(&self) -> Option<LogIndex> {
        self.holds.values().min().copied()
    }

    /// `from`'s log matches this leader's through `index`.
    pub(super) fn caught_up(&mut self, from: NodeId, index: LogIndex) {
        if self.holds.get(&from).is_some_and(|hold| *hold <= index) {
            self.holds.remove(&from);
        }
    }

    // ----- the leader's side ---------------------------------------------

    /// The core wants `to` sent a snapshot: a transfer starts, unless one
    /// runs already.
    pub(super) fn wanted(&mut self, to: NodeId, now: Instant, outputs: &mut Vec<Output>) {
        if self.outgoing.contains_key(&to) {
            return;
        }
        let view = self.next_view;
        self.next_view = self.next_view.wrapping_add(1);
        self.outgoing.insert(
            to,
            Outgoing {
                view,
                active_at: now,
                stream: None,
            },
        );
        outputs.push(Output::OpenView { view });
    }

    /// The storage opened `view` at `at`; `membership` is the membership in
    /// force there, `None` when the log no longer knows it (the view is
    /// behind the log's start: it cannot serve).
    pub(super) fn view_opened(
        &mut self,
        view: u64,
        at: SnapshotMeta,
        membership: Option<Membership>,
        now: Instant,
        outputs: &mut Vec<Output>,
    ) {
        let Some((&to, outgoing)) = self.outgoing.iter_mut().find(|(_, out)| out.view == view)
        else {
            outputs.push(Output::CloseView { view });
            return;
        };
        let (Some(membership), false) = (membership, at.index == LogIndex(0)) else {
            self.outgoing.remove(&to);
            outputs.push(Output::CloseView { view });
            return;
        };
        self.holds.insert(to, at.index);
        outgoing.stream = Some(Stream {
            meta: at,
            membership,
            starts: vec![(Vec::new(), 0)],
            last_seq: None,
            next_seq: 0,
            acked: 0,
            reading: None,
            progress_at: now,
        });
        self.pump(to, outputs);
    }

    /// The storage lost `view` (its connection failed): the transfer ends;
    /// the core asks again.
    pub(super) fn view_lost(&mut self, view: u64) {
        let lost = self
            .outgoing
            .iter()
            .find(|(_, outgoing)| outgoing.view == view)
            .map(|(to, _)| *to);
        if let Some(to) = lost {
            self.outgoing.remove(&to);
            self.holds.remove(&to);
        }
    }

    /// The storage read a chunk: it leaves for the follower.
    pub(super) fn chunk_read(
        &mut self,
        read: ChunkRead,
        sender: Sender,
        outputs: &mut Vec<Output>,
    ) {
        let Some((&to, outgoing)) = self
            .outgoing
            .iter_mut()
            .find(|(_, out)| out.view == read.view)
        else {
            return;
        };
        let Some(stream) = outgoing.stream.as_mut() else {
            return;
        };
        if stream.reading == Some(read.seq) {
            stream.reading = None;
        }
        let seq = read.seq;
        if seq != stream.next_seq || seq as usize >= stream.starts.len() {
            // Read before a rewind: the chunk is read again.
            self.pump(to, outputs);
            return;
        }
        let running = SnapshotChunk::crc(stream.starts[seq as usize].1, &read.data);
        match read.next {
            Some(next) if stream.starts.len() == seq as usize + 1 => {
                stream.starts.push((next, running));
            }
            Some(_) => {}
            None => stream.last_seq = Some(seq),
        }
        let chunk = SnapshotChunk {
            view: read.view,
            meta: stream.meta,
            membership: stream.membership.clone(),
            seq,
            checksum: SnapshotChunk::crc(0, &read.data),
            running,
            last: stream.last_seq == Some(seq),
            data: read.data,
        };
        stream.next_seq += 1;
        outputs.push(sender.message(to, MessageBody::SnapshotChunk(Box::new(chunk))));
        self.pump(to, outputs);
    }

    /// `from` staged every chunk of `view` below `next_seq`.
    pub(super) fn acknowledged(
        &mut self,
        from: NodeId,
        (view, index, next_seq): (u64, LogIndex, u64),
        now: Instant,
        outputs: &mut Vec<Output>,
    ) {
        let Some(outgoing) = self.outgoing.get_mut(&from) else {
            return;
        };
        let Some(stream) = outgoing.stream.as_mut() else {
            return;
        };
        if outgoing.view != view
            || stream.meta.index != index
            || next_seq >= stream.starts.len() as u64 + u64::from(stream.last_seq.is_some())
        {
            return;
        }
        if next_seq > stream.acked {
            stream.acked = next_seq;
            stream.progress_at = now;
            outgoing.active_at = now;
        } else if next_seq < stream.acked {
            // The follower lost what it staged (a checksum mismatch made
            // it start over): send again from there.
            stream.acked = next_seq;
            stream.next_seq = next_seq;
            stream.progress_at = now;
        }
        if stream.last_seq.is_some_and(|last| stream.acked > last) {
            let view = outgoing.view;
            self.outgoing.remove(&from);
            outputs.push(Output::CloseView { view });
            return;
        }
        self.pump(from, outputs);
    }

    /// Reads the next chunk for `to`, if the window allows and none is
    /// being read.
    fn pump(&mut self, to: NodeId, outputs: &mut Vec<Output>) {
        let Some(outgoing) = self.outgoing.get_mut(&to) else {
            return;
        };
        let Some(stream) = outgoing.stream.as_mut() else {
            return;
        };
        let window_open = stream.next_seq < stream.acked + self.config.chunks_in_flight;
        let more = stream.last_seq.is_none_or(|last| stream.next_seq <= last);
        if stream.reading.is_some() || !window_open || !more {
            return;
        }
        let seq = stream.next_seq;
        stream.reading = Some(seq);
        outputs.push(Output::ReadChunk(ReadChunk {
            view: outgoing.view,
            seq,
            after: stream.starts[seq as usize].0.clone(),
            bytes_max: self.config.chunk_bytes,
        }));
    }

    /// Time passed, and the node's role and peers are as given: views
    /// idle past their time are closed, silent streams resent from their
    /// first unacknowledged chunk, and transfers of a node that no longer
    /// leads, or to a node no longer a peer, end.
    pub(super) fn tick(
        &mut self,
        now: Instant,
        leading: bool,
        is_peer: impl Fn(NodeId) -> bool,
        outputs: &mut Vec<Output>,
    ) {
        let config = self.config;
        let mut ended = Vec::new();
        let mut rewound = Vec::new();
        for (&to, outgoing) in &mut self.outgoing {
            let expired = now.0.saturating_sub(outgoing.active_at.0) >= config.view_ttl;
            if !leading || !is_peer(to) || expired {
                ended.push(to);
                continue;
            }
            if let Some(stream) = outgoing.stream.as_mut() {
                let silent = now.0.saturating_sub(stream.progress_at.0) >= config.resend_after;
                if silent && stream.acked < stream.next_seq {
                    stream.next_seq = stream.acked;
                    stream.progress_at = now;
                    rewound.push(to);
                }
            }
        }
        if !leading {
            self.holds.clear();
        }
        self.holds.retain(|to, _| is_peer(*to));
        for to in ended {
            self.holds.remove(&to);
            let outgoing = self.outgoing.remove(&to).expect("listed");
            outputs.push(Output::CloseView {
                view: outgoing.view,
            });
        }
        for to in rewound {
            self.pump(to, outputs);
        }
    }

    // ----- the follower's side -------------------------------------------

    /// A chunk from `leader`, this node's leader in the current term.
    pub(super) fn chunk(
        &mut self,
        leader: NodeId,
        chunk: SnapshotChunk,
        sender: Sender,
        outputs: &mut Vec<Output>,
    ) {
        let same = self.incoming.as_ref().is_some_and(|incoming| {
            let transfer = &incoming.transfer;
            transfer.leader == leader && transfer.view == chunk.view && transfer.meta == chunk.meta
        });
        if !same {
            let busy = self
                .incoming
                .as_ref()
                .is_some_and(|incoming| incoming.staging || incoming.installing);
            if busy {
                return;
            }
            if chunk.seq != 0 {
                // Nothing of this transfer is staged here.
                let ack = ack(chunk.view, chunk.meta.index, 0);
                outputs.push(sender.message(leader, ack));
                return;
            }
            self.incoming = Some(Incoming {
                transfer: StagedTransfer {
                    leader,
                    view: chunk.view,
                    meta: chunk.meta,
                    membership: chunk.membership.clone(),
                    next_seq: 0,
                    running: 0,
                    complete: false,
                },
                buffered: BTreeMap::new(),
                restart: true,
                staging: false,
                installing: false,
            });
        }
        let window = self.config.chunks_in_flight;
        let incoming = self.incoming.as_mut().expect("set above");
        let next_seq = incoming.transfer.next_seq;
        if incoming.transfer.complete || chunk.seq < next_seq {
            let ack = ack(chunk.view, chunk.meta.index, next_seq);
            outputs.push(sender.message(leader, ack));
            return;
        }
        if chunk.seq >= next_seq.saturating_add(2 * window) {
            return;
        }
        incoming
            .buffered
            .insert(chunk.seq, (chunk.data, chunk.running, chunk.last));
        self.stage(sender, outputs);
    }

    /// Hands the buffered chunks that continue the staged ones to the
    /// storage, if no stage job runs.
    fn stage(&mut self, sender: Sender, outputs: &mut Vec<Output>) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        if incoming.staging || incoming.transfer.complete {
            return;
        }
        let mut transfer = incoming.transfer.clone();
        let mut chunks = Vec::new();
        while (chunks.len() as u64) < self.config.chunks_in_flight {
            let Some((data, running, last)) = incoming.buffered.remove(&transfer.next_seq) else {
                break;
            };
            if SnapshotChunk::crc(transfer.running, &data) != running {
                // This chunk does not continue what is staged: start over.
                let (view, index) = (transfer.view, transfer.meta.index);
                incoming.buffered.clear();
                incoming.transfer.next_seq = 0;
                incoming.transfer.running = 0;
                incoming.restart = true;
                outputs.push(sender.message(incoming.transfer.leader, ack(view, index, 0)));
                return;
            }
            chunks.push((transfer.next_seq, data));
            transfer.next_seq += 1;
            transfer.running = running;
            if last {
                transfer.complete = true;
                incoming.buffered.clear();
                break;
            }
        }
        if chunks.is_empty() {
            return;
        }
        incoming.staging = true;
        outputs.push(Output::Stage(StageJob {
            transfer,
            restart: std::mem::take(&mut incoming.restart),
            chunks,
        }));
    }

    /// The stage job in flight committed. Returns the snapshot to hand the
    /// core when the transfer is complete (the leader unchanged).
    pub(super) fn staged(
        &mut self,
        staged: StagedTransfer,
        leader_now: Option<NodeId>,
        sender: Sender,
        outputs: &mut Vec<Output>,
    ) -> Option<Message> {
        let incoming = self.incoming.as_mut()?;
        incoming.staging = false;
        incoming.transfer = staged;
        let transfer = &incoming.transfer;
        let (view, index) = (transfer.view, transfer.meta.index);
        outputs.push(sender.message(transfer.leader, ack(view, index, transfer.next_seq)));
        if !transfer.complete {
            self.stage(sender, outputs);
            return None;
        }
        if leader_now != Some(transfer.leader) {
            // Leadership moved on: the new leader sends its own.
            self.incoming = None;
            return None;
        }
        Some(Message {
            from: transfer.leader,
            to: sender.me,
            term: sender.term,
            body: MessageBody::InstallSnapshot {
                snapshot: crate::core::Snapshot {
                    meta: transfer.meta,
                    membership: Box::new(transfer.membership.clone()),
                },
            },
        })
    }

    /// The core was handed the complete transfer: `installing` says
    /// whether it installs it (otherwise its log already held it).
    pub(super) fn handed_over(&mut self, installing: bool) {
        match (installing, self.incoming.as_mut()) {
            (true, Some(incoming)) => incoming.installing = true,
            _ => self.incoming = None,
        }
    }

    /// A snapshot was installed from the staging, which it emptied.
    pub(super) fn installed(&mut self) {
        self.incoming = None;
    }
}

fn ack(view: u64, index: LogIndex, next_seq: u64) -> MessageBody {
    MessageBody::SnapshotChunkAck {
        view,
        index,
        next_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: NodeId = NodeId(1);
    const FOLLOWER: NodeId = NodeId(2);
    const META: SnapshotMeta = SnapshotMeta {
        index: LogIndex(50),
        term: Term(1),
    };

    fn config() -> TransferConfig {
        TransferConfig {
            chunk_bytes: 100,
            chunks_in_flight: 3,
            resend_after: Duration::from_secs(1),
            view_ttl: Duration::from_secs(60),
        }
    }

    fn sender(me: NodeId) -> Sender {
        Sender { me, term: Term(1) }
    }

    /// A leader streaming `view_data` to a follower that stages into
    /// `staging`, over a network that drops what `drop` says.
    struct Harness {
        leader: Transfers,
        follower: Transfers,
        now: Instant,
        view_data: Vec<u8>,
        /// What the follower's storage holds: (seq, data).
        staging: Vec<(u64, Vec<u8>)>,
        /// The follower's transfer as its staging stores it.
        staged: Option<StagedTransfer>,
        /// Every (seq) a stage job wrote, in order.
        stage_writes: Vec<u64>,
        open_views: Vec<u64>,
        unacked_max: u64,
        handed_over: Option<Message>,
    }

    impl Harness {
        fn new(view_bytes: usize) -> Harness {
            Harness {
                leader: Transfers::new(config(), 100, None),
                follower: Transfers::new(config(), 200, None),
                now: Instant::default(),
                view_data: (0..view_bytes).map(|byte| (byte * 7 % 251) as u8).collect(),
                staging: Vec::new(),
                staged: None,
                stage_writes: Vec::new(),
                open_views: Vec::new(),
                unacked_max: 0,
                handed_over: None,
            }
        }

        /// Carries out everything until nothing moves; messages for which
        /// `drop` says so are lost.
        fn run(&mut self, leader_outputs: Vec<Output>, drop: &mut dyn FnMut(&Message) -> bool) {
            let mut queue: Vec<(NodeId, Output)> = leader_outputs
                .into_iter()
                .map(|output| (LEADER, output))
                .collect();
            while !queue.is_empty() {
                let (at, output) = queue.remove(0);
                let mut outputs = Vec::new();
                match output {
                    Output::OpenView { view } => {
                        self.open_views.push(view);
                        let membership = Some(Membership::new([LEADER, FOLLOWER]));
                        self.leader
                            .view_opened(view, META, membership, self.now, &mut outputs);
                    }
                    Output::ReadChunk(read) => {
                        let start = if read.after.is_empty() {
                            0
                        } else {
                            u64::from_be_bytes(read.after.try_into().unwrap()) as usize
                        };
                        let end = (start + read.bytes_max).min(self.view_data.len());
                        let next = (end < self.view_data.len())
                            .then(|| (end as u64).to_be_bytes().to_vec());
                        let chunk = ChunkRead {
                            view: read.view,
                            seq: read.seq,
                            data: self.view_data[start..end].to_vec(),
                            next,
                        };
                        self.leader.chunk_read(chunk, sender(LEADER), &mut outputs);
                    }
                    Output::CloseView { view } => self.open_views.retain(|open| *open != view),
                    Output::Stage(job) => {
                        if job.restart {
                            self.staging.clear();
                        }
                        for (seq, data) in &job.chunks {
                            self.stage_writes.push(*seq);
                            self.staging.push((*seq, data.clone()));
                        }
                        self.staged = Some(job.transfer.clone());
                        let handed = self.follower.staged(
                            job.transfer,
                            Some(LEADER),
                            sender(FOLLOWER),
                            &mut outputs,
                        );
                        if handed.is_some() {
                            self.handed_over = handed;
                            self.follower.handed_over(true);
                        }
                    }
                    Output::Send(message) => {
                        if drop(&message) {
                            continue;
                        }
                        match message.body {
                            MessageBody::SnapshotChunk(chunk) => {
                                assert_eq!(at, LEADER);
                                self.follower
                                    .chunk(LEADER, *chunk, sender(FOLLOWER), &mut outputs);
                            }
                            MessageBody::SnapshotChunkAck {
                                view,
                                index,
                                next_seq,
                            } => {
                                self.leader.acknowledged(
                                    FOLLOWER,
                                    (view, index, next_seq),
                                    self.now,
                                    &mut outputs,
                                );
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
                if let Some(stream) = self
                    .leader
                    .outgoing
                    .get(&FOLLOWER)
                    .and_then(|out| out.stream.as_ref())
                {
                    self.unacked_max = self.unacked_max.max(stream.next_seq - stream.acked);
                }
                queue.extend(outputs.into_iter().map(|output| {
                    let side = match &output {
                        Output::Stage(_) => FOLLOWER,
                        Output::Send(message) => message.from,
                        _ => LEADER,
                    };
                    (side, output)
                }));
            }
        }

        fn start(&mut self) -> Vec<Output> {
            let mut outputs = Vec::new();
            self.leader.wanted(FOLLOWER, self.now, &mut outputs);
            outputs
        }

        fn tick(&mut self, after: Duration) -> Vec<Output> {
            self.now = self.now.after(after);
            let mut outputs = Vec::new();
            self.leader.tick(self.now, true, |_| true, &mut outputs);
            outputs
        }

        fn staged_bytes(&self) -> Vec<u8> {
            self.staging
                .iter()
                .flat_map(|(_, data)| data.clone())
                .collect()
        }
    }

    fn keep_all(_: &Message) -> bool {
        false
    }

    #[test]
    fn a_snapshot_streams_in_chunks_and_reaches_the_core_whole() {
        let mut harness = Harness::new(1_050);
        let start = harness.start();
        harness.run(start, &mut keep_all);
        assert_eq!(harness.staged_bytes(), harness.view_data);
        assert_eq!(harness.stage_writes, (0..11).collect::<Vec<_>>());
        assert!(harness.unacked_max <= 3, "{}", harness.unacked_max);
        assert!(harness.open_views.is_empty(), "the view is released");
        let handed = harness.handed_over.expect("handed to the core");
        assert_eq!(handed.from, LEADER);
        assert_eq!(
            handed.body,
            MessageBody::InstallSnapshot {
                snapshot: crate::core::Snapshot {
                    meta: META,
                    membership: Box::new(Membership::new([LEADER, FOLLOWER])),
                }
            }
        );
    }

    #[test]
    fn a_follower_restarted_mid_stream_resumes_from_its_staged_chunks() {
        let mut harness = Harness::new(2_000);
        let start = harness.start();
        // Everything after the sixth chunk is lost: the follower crashes.
        let mut cut = |message: &Message| match &message.body {
            MessageBody::SnapshotChunk(chunk) => chunk.seq >= 6,
            _ => false,
        };
        harness.run(start, &mut cut);
        assert_eq!(harness.staged.as_ref().unwrap().next_seq, 6);
        harness.follower = Transfers::new(config(), 300, harness.staged.clone());
        let resend = harness.tick(Duration::from_secs(1));
        harness.run(resend, &mut keep_all);
        assert_eq!(harness.staged_bytes(), harness.view_data);
        assert_eq!(
            harness.stage_writes,
            (0..20).collect::<Vec<_>>(),
            "every chunk staged once: the stream resumed, it did not start over"
        );
        assert!(harness.handed_over.is_some());
    }

    #[test]
    fn lost_chunks_are_sent_again_after_a_silence() {
        let mut harness = Harness::new(1_000);
        let start = harness.start();
        let mut first_time = std::collections::BTreeSet::new();
        let mut lossy = |message: &Message| match &message.body {
            // Chunk 4 is lost the first time it is sent.
            MessageBody::SnapshotChunk(chunk) => chunk.seq == 4 && first_time.insert(4),
            _ => false,
        };
        harness.run(start, &mut lossy);
        assert!(harness.handed_over.is_none(), "stuck at chunk 4");
        assert!(
            harness.tick(Duration::from_millis(999)).is_empty(),
            "not yet"
        );
        let resend = harness.tick(Duration::from_millis(1));
        harness.run(resend, &mut keep_all);
        assert_eq!(harness.staged_bytes(), harness.view_data);
        assert!(harness.handed_over.is_some());
    }

    #[test]
    fn a_chunk_that_does_not_continue_the_staged_ones_starts_the_transfer_over() {
        let mut harness = Harness::new(500);
        let start = harness.start();
        let mut tampered = false;
        let mut outputs = Vec::new();
        // Chunk 2 arrives with a running checksum that does not follow
        // chunks 0 and 1 (as if they were staged from other data).
        let mut tamper = |message: &Message| {
            if let MessageBody::SnapshotChunk(chunk) = &message.body {
                if chunk.seq == 2 && !tampered {
                    tampered = true;
                    let mut chunk = (**chunk).clone();
                    chunk.running ^= 1;
                    outputs.push(chunk);
                    return true;
                }
            }
            false
        };
        harness.run(start, &mut tamper);
        let mut answers = Vec::new();
        for chunk in outputs {
            harness
                .follower
                .chunk(LEADER, chunk, sender(FOLLOWER), &mut answers);
        }
        assert!(answers.contains(&Output::Send(Message {
            from: FOLLOWER,
            to: LEADER,
            term: Term(1),
            body: ack(100, META.index, 0),
        })));
        harness.run(answers, &mut keep_all);
        let restarted_at = harness
            .stage_writes
            .iter()
            .skip(1)
            .position(|seq| *seq == 0);
        assert!(
            restarted_at.is_some(),
            "staged again from chunk 0: {:?}",
            harness.stage_writes
        );
        assert_eq!(harness.staged_bytes(), harness.view_data);
    }

    #[test]
    fn an_idle_view_is_released_after_its_time_and_when_leadership_is_lost() {
        let mut harness = Harness::new(1_000);
        let mut start = harness.start();
        // The view opens, nothing ever arrives.
        start.truncate(1);
        harness.run(start, &mut |_| true);
        assert_eq!(harness.open_views, vec![100]);
        let late = harness.tick(Duration::from_secs(60));
        assert!(late.contains(&Output::CloseView { view: 100 }), "{late:?}");
        let mut outputs = Vec::new();
        harness.leader.wanted(FOLLOWER, harness.now, &mut outputs);
        assert_eq!(outputs, vec![Output::OpenView { view: 101 }]);
        let mut closed = Vec::new();
        harness
            .leader
            .tick(harness.now, false, |_| true, &mut closed);
        assert_eq!(closed, vec![Output::CloseView { view: 101 }]);
    }

    #[test]
    fn the_log_keeps_a_snapshot_index_until_the_follower_reaches_it() {
        let mut harness = Harness::new(300);
        assert_eq!(harness.leader.compaction_floor(), None);
        let start = harness.start();
        harness.run(start, &mut keep_all);
        assert!(harness.handed_over.is_some());
        assert_eq!(
            harness.leader.compaction_floor(),
            Some(META.index),
            "the transfer is done, but the follower has not answered yet"
        );
        harness.leader.caught_up(FOLLOWER, LogIndex(49));
        assert_eq!(harness.leader.compaction_floor(), Some(META.index));
        harness.leader.caught_up(FOLLOWER, META.index);
        assert_eq!(harness.leader.compaction_floor(), None);
        let start = harness.start();
        harness.run(start, &mut keep_all);
        let mut outputs = Vec::new();
        harness
            .leader
            .tick(harness.now, false, |_| true, &mut outputs);
        assert_eq!(harness.leader.compaction_floor(), None, "no longer leads");
    }
}
