//! etcd watches in the simulator: in some swarm worlds, a watch client
//! holds a few watches, each served by one node as the product's watch
//! service serves it (`node/src/server/etcd/watch.rs`): the product's
//! `raftgres::mvcc::watch::Watch` decides, from the node's store, what to
//! read next, and takes each window of history the node's store returns.
//!
//! The service's two statements are two steps here, as in the product:
//! the store's revisions are read and the watch steps; the window is read
//! by a statement of its own, up to [`READ_TICKS_MAX`] ticks later, from
//! the store as it is then (a Postgres crash in between may have lost
//! asynchronous applies, or a compaction run). A read while the node's
//! Postgres is away fails the stream, and a crash of the node ends it;
//! the client then creates the watch again on a node it picks, from the
//! revision after the last event it was sent, as etcd's clients do. A
//! watch told its revision was compacted starts again from the compaction
//! point. `watch_order` checks what every watch was sent.

use raftgres::mvcc::watch::{Step, Taken, Watch};
use raftgres::mvcc::{Event, KeyRange, Revision};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::checkers::watch_order::{WatchOrder, WatchedRange};
use crate::kv::{Command, CommandOutput};
use crate::store::ApplyReport;
use crate::world::World;

/// One in this many swarm worlds runs the watch client.
const WATCH_WORLDS_ONE_IN: u32 = 4;

/// The most watches the client holds.
const WATCHES_MAX: u64 = 6;

/// World ticks between the statement that reads a node's revisions and
/// the one that reads the window, at most, in the slowest worlds (a world
/// draws its own bound up to this).
const READ_TICKS_MAX: u64 = 20;

/// World ticks a client waits before it creates an ended watch again, at
/// most.
const RECREATE_TICKS_MAX: u64 = 30;

/// A watch as one node serves it.
#[derive(Debug)]
struct Served {
    node: usize,
    /// The node's incarnation: a restart ends the stream.
    incarnation: u64,
    watch: Watch,
    /// A window asked for, read at the tick given.
    read: Option<(Revision, Revision, u64)>,
}

/// One of the client's watches.
#[derive(Debug)]
struct ClientWatch {
    id: u64,
    range: WatchedRange,
    /// The revision to create the watch from next: after the last event
    /// the client was sent, or the start it asks for (0: from now).
    resume: Revision,
    /// Whether the next creation asks for a new start (its first, or
    /// after a compaction) rather than resuming.
    fresh: bool,
    served: Option<Served>,
    /// When the client creates the watch (again).
    create_at: u64,
}

/// The watches of a world, and `watch_order`.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    rng: Option<ChaCha8Rng>,
    /// This world's bound on the ticks between a watch's two statements.
    read_ticks_max: u64,
    clients: Vec<ClientWatch>,
    pub(crate) checker: WatchOrder,
}

impl Watches {
    /// The watches of a world: one swarm world in
    /// [`WATCH_WORLDS_ONE_IN`] watches `keys` keys of the workload (drawn
    /// from `rng`, a stream of its own, so that other worlds run as
    /// before).
    pub(crate) fn new(swarm: bool, keys: u64, mut rng: ChaCha8Rng) -> Watches {
        if !swarm || !rng.gen_ratio(1, WATCH_WORLDS_ONE_IN) {
            return Watches::default();
        }
        let word = |word: u64| word.to_be_bytes().to_vec();
        let clients = (1..=rng.gen_range(1..=WATCHES_MAX))
            .map(|id| {
                let first = rng.gen_range(0..keys.max(1));
                let range = match rng.gen_range(0..3) {
                    // Every key, the lease client's included.
                    0 => KeyRange {
                        key: vec![0],
                        range_end: vec![0],
                    },
                    1 => KeyRange::single(word(first)),
                    _ => KeyRange {
                        key: word(first),
                        range_end: word(first + 2),
                    },
                };
                ClientWatch {
                    id,
                    range: WatchedRange {
                        range,
                        no_put: rng.gen_ratio(1, 8),
                        no_delete: rng.gen_ratio(1, 8),
                    },
                    resume: 0,
                    fresh: true,
                    served: None,
                    create_at: rng.gen_range(0..200),
                }
            })
            .collect();
        Watches {
            read_ticks_max: rng.gen_range(0..=READ_TICKS_MAX),
            rng: Some(rng),
            clients,
            checker: WatchOrder::default(),
        }
    }

    /// Whether this world runs watches at all.
    pub(crate) fn enabled(&self) -> bool {
        self.rng.is_some()
    }
}

/// What happened to a watch this tick.
enum Turn {
    Nothing,
    /// The stream ended (its node crashed, or a read failed).
    Ended,
    Compacted {
        needed: Revision,
        compact_revision: Revision,
    },
    Sent {
        from: Revision,
        through: Revision,
        changes: Vec<Event>,
    },
}

impl World {
    /// The watch client's turn, every tick in worlds that have one.
    pub(crate) fn run_watches(&mut self) {
        for position in 0..self.watches.clients.len() {
            self.watch_turn(position);
        }
    }

    fn watch_turn(&mut self, position: usize) {
        let now = self.now;
        let client = &self.watches.clients[position];
        let Some(served) = &client.served else {
            if now >= client.create_at {
                self.create_watch(position);
            }
            return;
        };
        let node = &self.nodes[served.node];
        if node.pipeline.is_none() || node.incarnation != served.incarnation {
            return self.end_watch(position);
        }
        if node.paused_until.is_some() {
            return;
        }
        let postgres_away = self.postgres_down_until[served.node] > now;
        let store = node.store.state_machine.mvcc();
        let turn = match served.read {
            None if postgres_away => Turn::Nothing,
            None => match served.watch.step(store.revisions()) {
                Step::Wait => Turn::Nothing,
                Step::Compacted(compact_revision) => Turn::Compacted {
                    needed: served.watch.next_revision,
                    compact_revision,
                },
                Step::Read { from, to } => {
                    let read_ticks_max = self.watches.read_ticks_max;
                    let rng = self.watches.rng.as_mut().expect("a world with watches");
                    let due = now + rng.gen_range(0..=read_ticks_max);
                    let served = self.watches.clients[position]
                        .served
                        .as_mut()
                        .expect("served");
                    served.read = Some((from, to, due));
                    return;
                }
            },
            Some((_, _, due)) if now < due => Turn::Nothing,
            Some(_) if postgres_away => Turn::Ended,
            Some((from, to, _)) => {
                let read = store.read_window(&served.watch.range, from, to);
                let served = self.watches.clients[position]
                    .served
                    .as_mut()
                    .expect("served");
                served.read = None;
                match served.watch.take(from, to, read) {
                    Taken::Compacted(compact_revision) => Turn::Compacted {
                        needed: from,
                        compact_revision,
                    },
                    // The read saw the store behind the window: nothing
                    // was sent, the window is asked for again.
                    Taken::Changes(_) if served.watch.next_revision == from => Turn::Nothing,
                    Taken::Changes(changes) => Turn::Sent {
                        from,
                        through: served.watch.next_revision - 1,
                        changes: changes.into_iter().map(|(change, ())| change).collect(),
                    },
                }
            }
        };
        match turn {
            Turn::Nothing => {}
            Turn::Ended => self.end_watch(position),
            Turn::Compacted {
                needed,
                compact_revision,
            } => {
                let id = self.watches.clients[position].id;
                let result = self
                    .watches
                    .checker
                    .on_compacted(id, needed, compact_revision);
                self.check("watch_order", result);
                self.stats.watches[3] += 1;
                let client = &mut self.watches.clients[position];
                client.resume = compact_revision;
                client.fresh = true;
                self.end_watch(position);
            }
            Turn::Sent {
                from,
                through,
                changes,
            } => {
                let client = &self.watches.clients[position];
                let result =
                    self.watches
                        .checker
                        .on_sent(client.id, &client.range, from, through, &changes);
                match result {
                    Ok(checked) => {
                        self.stats.watches[1] += u64::from(checked > 0);
                        self.stats.watches[2] += checked as u64;
                    }
                    Err(message) => self.fail("watch_order", message),
                }
                if let Some(last) = changes.last() {
                    // The product sends a window only when it holds
                    // changes: the client knows the revision after them.
                    self.watches.clients[position].resume = last.revision + 1;
                }
            }
        }
    }

    /// The client creates watch `position` on a node it picks, when that
    /// node runs and its Postgres answers.
    fn create_watch(&mut self, position: usize) {
        let now = self.now;
        let rng = self.watches.rng.as_mut().expect("a world with watches");
        let index = rng.gen_range(0..self.nodes.len());
        let retry_at = now + rng.gen_range(1..=RECREATE_TICKS_MAX);
        let node = &self.nodes[index];
        if !node.is_running() || self.postgres_down_until[index] > now {
            self.watches.clients[position].create_at = retry_at;
            return;
        }
        let revisions = node.store.state_machine.mvcc().revisions();
        let incarnation = node.incarnation;
        let client = &mut self.watches.clients[position];
        if client.fresh && client.resume == 0 && rng.gen_ratio(1, 3) {
            // From a past revision: history replayed, perhaps compacted.
            client.resume = rng.gen_range(1..=revisions.current);
        }
        let mut watch = Watch::new(client.range.range.clone(), client.resume, revisions);
        let (id, start, fresh) = (client.id, watch.next_revision, client.fresh);
        watch.no_put = client.range.no_put;
        watch.no_delete = client.range.no_delete;
        if client.resume <= 0 {
            // Created from now: the created answer's header tells the
            // client the revision it started after.
            client.resume = start;
        }
        client.fresh = false;
        client.served = Some(Served {
            node: index,
            incarnation,
            watch,
            read: None,
        });
        let result = self.watches.checker.on_created(id, start, fresh);
        self.check("watch_order", result);
    }

    /// Watch `position`'s stream ended: the client creates it again later.
    fn end_watch(&mut self, position: usize) {
        let now = self.now;
        let rng = self.watches.rng.as_mut().expect("a world with watches");
        let client = &mut self.watches.clients[position];
        client.served = None;
        client.create_at = now + rng.gen_range(1..=RECREATE_TICKS_MAX);
    }

    /// Node `index`'s apply transaction `report` committed: its changes
    /// and the compactions it applied (rules 1 and 4 of `watch_order`).
    pub(crate) fn on_watch_truth(&mut self, index: usize, report: &ApplyReport) {
        if !self.watches.enabled() {
            return;
        }
        let id = self.nodes[index].id;
        let result = self.watches.checker.on_applied(id, &report.changes);
        self.check("watch_order", result);
        let compactions = report.applied.iter().filter_map(|(_, applied)| {
            match (applied.envelope?.command, applied.output?) {
                (Command::Compact { revision }, CommandOutput::Compaction(Ok(()))) => {
                    Some(revision)
                }
                _ => None,
            }
        });
        if let Some(compaction) = compactions.max() {
            self.watches.checker.on_compaction_applied(compaction);
        }
    }

    /// Rule 5 of `watch_order`, at the end of a run: every watch served
    /// by a running node, its pending read done, has been sent all its
    /// node's history holds for it.
    pub(crate) fn check_watches_caught_up(&mut self) {
        for position in 0..self.watches.clients.len() {
            let Some(served) = &self.watches.clients[position].served else {
                continue;
            };
            let node = &self.nodes[served.node];
            if !node.is_running() || node.incarnation != served.incarnation {
                continue;
            }
            let revisions = node.store.state_machine.mvcc().revisions();
            let (id, next, read) = (
                self.watches.clients[position].id,
                served.watch.next_revision,
                served.read,
            );
            let step = served.watch.step(revisions);
            if read.is_none() && step != Step::Wait {
                let message = format!(
                    "watch {id} on node {} at the end of the run still needs revision {next}; \
                     its node is at revision {} ({step:?})",
                    node.id, revisions.current
                );
                self.fail("watch_order", message);
            }
        }
    }
}
