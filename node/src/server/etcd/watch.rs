//! `etcdserverpb.Watch`: a bidirectional stream of watch creations,
//! cancellations and progress requests in, and created / canceled /
//! event / progress responses out.
//!
//! Each stream is one task. A watch is [`crate::mvcc::watch::Watch`]: it
//! knows the revision it needs next; whenever the node's applied index
//! moves (the driver publishes it after the apply transaction committed),
//! the task reads each watch's next window of history from the node's own
//! tables and sends it. The history is the replicated state, so a watch
//! served by any node sees the same changes in revision order, with no gap
//! and no duplicate, across leader changes; a watch whose next revision
//! was compacted ends with etcd's `compact_revision` answer.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::header;
use crate::mvcc::watch::{Step, Taken, Watch, WindowRead};
use crate::mvcc::{Event, KeyRange, KeyValue, Revisions};
use crate::server::kv::KvStateMachine;
use crate::server::services::{database_error, Shared};

/// Responses queued for one stream's client before the task waits.
const WATCH_RESPONSES_QUEUED_MAX: usize = 64;
/// Watches one stream may hold.
const WATCHES_PER_STREAM_MAX: usize = 1024;
/// How often a watch created with `progress_notify` hears the revision
/// when nothing changed in its range (etcd's default is ten minutes; a
/// shorter one costs one message per watch).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// `etcdserverpb.Watch`.
pub(super) struct EtcdWatch {
    pub(super) shared: Arc<Shared<KvStateMachine>>,
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<etcd::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl etcd::watch_server::Watch for EtcdWatch {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<etcd::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.shared.metrics.client_requests.read.inc();
        let (responses, receiver) = mpsc::channel(WATCH_RESPONSES_QUEUED_MAX);
        let stream = WatchStream {
            shared: self.shared.clone(),
            responses,
            watches: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One watch and how its changes are sent.
struct Served {
    watch: Watch,
    prev_kv: bool,
    progress_notify: bool,
}

/// Why a stream's task ends.
enum End {
    /// The client went away or closed its side.
    Client,
    /// Reading the tables failed; the client is told and may retry.
    Failed(Status),
}

struct WatchStream {
    shared: Arc<Shared<KvStateMachine>>,
    responses: mpsc::Sender<Result<etcd::WatchResponse, Status>>,
    watches: BTreeMap<i64, Served>,
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<etcd::WatchRequest>) {
        let mut applied = self.shared.applied.clone();
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.tick().await;
        let end = loop {
            let turn = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) | Err(_) => Err(End::Client),
                },
                changed = applied.changed() => match changed {
                    Ok(()) => self.send_changes().await,
                    Err(_) => Err(End::Failed(Status::unavailable("the node is shutting down"))),
                },
                _ = progress.tick() => self.send_progress(false).await,
                () = self.responses.closed() => Err(End::Client),
            };
            if let Err(end) = turn {
                break end;
            }
        };
        if let End::Failed(status) = end {
            let _ = self.responses.send(Err(status)).await;
        }
    }

    async fn send(&self, response: etcd::WatchResponse) -> Result<(), End> {
        self.responses
            .send(Ok(response))
            .await
            .map_err(|_| End::Client)
    }

    async fn handle(&mut self, request: etcd::WatchRequest) -> Result<(), End> {
        use etcd::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watches.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                let revisions = self.revisions().await?;
                self.send(etcd::WatchResponse {
                    header: header(&self.shared, revisions.current),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..etcd::WatchResponse::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => self.send_progress(true).await,
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: etcd::WatchCreateRequest) -> Result<(), End> {
        let revisions = self.revisions().await?;
        let refuse = |watch_id, reason: &str| etcd::WatchResponse {
            header: header(&self.shared, revisions.current),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: format!("etcdserver: {reason}"),
            ..etcd::WatchResponse::default()
        };
        if create.key.is_empty() {
            return self.send(refuse(-1, "key is not provided")).await;
        }
        if self.watches.len() >= WATCHES_PER_STREAM_MAX {
            let reason = format!("a stream holds at most {WATCHES_PER_STREAM_MAX} watches");
            return self.send(refuse(-1, &reason)).await;
        }
        let watch_id = if create.watch_id != 0 {
            if self.watches.contains_key(&create.watch_id) {
                return self
                    .send(refuse(create.watch_id, "duplicate watch ID"))
                    .await;
            }
            create.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let range = KeyRange {
            key: create.key,
            range_end: create.range_end,
        };
        let mut watch = Watch::new(range, create.start_revision, revisions);
        for filter in &create.filters {
            match etcd::watch_create_request::FilterType::try_from(*filter) {
                Ok(etcd::watch_create_request::FilterType::Noput) => watch.no_put = true,
                Ok(etcd::watch_create_request::FilterType::Nodelete) => watch.no_delete = true,
                Err(_) => {}
            }
        }
        self.watches.insert(
            watch_id,
            Served {
                watch,
                prev_kv: create.prev_kv,
                progress_notify: create.progress_notify,
            },
        );
        self.send(etcd::WatchResponse {
            header: header(&self.shared, revisions.current),
            watch_id,
            created: true,
            ..etcd::WatchResponse::default()
        })
        .await?;
        self.send_changes().await
    }

    /// Sends every watch what the history holds for it now.
    async fn send_changes(&mut self) -> Result<(), End> {
        let ids: Vec<i64> = self.watches.keys().copied().collect();
        for id in ids {
            loop {
                let revisions = self.revisions().await?;
                let Some(served) = self.watches.get(&id) else {
                    break;
                };
                match served.watch.step(revisions) {
                    Step::Wait => break,
                    Step::Compacted(compact_revision) => {
                        self.watches.remove(&id);
                        self.send(compacted(&self.shared, id, revisions, compact_revision))
                            .await?;
                        break;
                    }
                    Step::Read { from, to } => {
                        let prev_kv = served.prev_kv;
                        let range = served.watch.range.clone();
                        let read = self.read_window(&range, from, to, prev_kv).await?;
                        let served = self.watches.get_mut(&id).expect("still watched");
                        match served.watch.take(from, to, read) {
                            Taken::Compacted(compact_revision) => {
                                self.watches.remove(&id);
                                self.send(compacted(&self.shared, id, revisions, compact_revision))
                                    .await?;
                                break;
                            }
                            Taken::Changes(changes) if changes.is_empty() => {}
                            Taken::Changes(changes) => {
                                let through = served.watch.next_revision - 1;
                                let events = changes
                                    .into_iter()
                                    .map(|(event, previous)| wire_event(event, previous))
                                    .collect();
                                self.send(etcd::WatchResponse {
                                    header: header(&self.shared, through),
                                    watch_id: id,
                                    events,
                                    ..etcd::WatchResponse::default()
                                })
                                .await?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The store's revision to every watch that asked for progress
    /// notifications (`requested`: to every watch, on the client's
    /// request).
    async fn send_progress(&mut self, requested: bool) -> Result<(), End> {
        let revisions = self.revisions().await?;
        if requested {
            // etcd answers a progress request once, for the whole stream.
            return self
                .send(etcd::WatchResponse {
                    header: header(&self.shared, revisions.current),
                    watch_id: -1,
                    ..etcd::WatchResponse::default()
                })
                .await;
        }
        let ids: Vec<i64> = self
            .watches
            .iter()
            .filter(|(_, served)| served.progress_notify)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send(etcd::WatchResponse {
                header: header(&self.shared, revisions.current),
                watch_id: id,
                ..etcd::WatchResponse::default()
            })
            .await?;
        }
        Ok(())
    }

    async fn revisions(&self) -> Result<Revisions, End> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT revision, compact_revision FROM raftgres_kv_revision",
                &[],
            )
            .await
            .map_err(|error| End::Failed(Status::from(database_error(error))))?;
        Ok(Revisions {
            current: row.get(0),
            compacted: row.get(1),
        })
    }

    async fn client(&self) -> Result<Arc<crate::server::services::ReadClient>, End> {
        self.shared
            .reads
            .client()
            .await
            .map_err(|error| End::Failed(Status::from(error)))
    }

    /// The changes to `range` in `from..=to`, each with the key's previous
    /// version when `prev_kv` (and it is still in the history), read in one
    /// statement with the store's revisions, which [`Watch::take`] weighs
    /// (the store may have moved since the revisions the window was asked
    /// from).
    async fn read_window(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<WindowRead<Option<KeyValue>>, End> {
        let client = self.client().await?;
        let end = range.end_exclusive();
        let rows = client
            .query_typed(
                SELECT_WINDOW,
                &[
                    (&range.key, tokio_postgres::types::Type::BYTEA),
                    (&end, tokio_postgres::types::Type::BYTEA),
                    (&from, tokio_postgres::types::Type::INT8),
                    (&to, tokio_postgres::types::Type::INT8),
                    (&prev_kv, tokio_postgres::types::Type::BOOL),
                ],
            )
            .await
            .map_err(|error| End::Failed(Status::from(database_error(error))))?;
        let revisions = rows.first().map_or(Revisions::default(), |row| Revisions {
            compacted: row.get(0),
            current: row.get(13),
        });
        let changes = rows
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(1).is_some())
            .map(|row| {
                let key: Vec<u8> = row.get(3);
                let revision: i64 = row.get(1);
                let value: Option<Vec<u8>> = row.get(4);
                let kv = value.map(|value| KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: row.get(5),
                    mod_revision: revision,
                    version: row.get(6),
                    lease: row.get(7),
                });
                let previous_value: Option<Vec<u8>> = row.get(8);
                let previous = previous_value.map(|value| KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: row.get(9),
                    mod_revision: row.get(10),
                    version: row.get(11),
                    lease: row.get(12),
                });
                let event = Event {
                    revision,
                    sub: row.get(2),
                    kv,
                    key,
                };
                (event, previous)
            })
            .collect();
        Ok(WindowRead { revisions, changes })
    }
}

/// The store's revisions and the changes to a range in a window of
/// revisions, in (revision, sub) order, each with the key's previous
/// version (when `$5` asks for it and it is a put still in the history).
const SELECT_WINDOW: &str = "
    SELECT state.compact_revision, change.revision, change.sub, change.key, change.value,
           change.create_revision, change.version, change.lease,
           previous.value, previous.create_revision, previous.revision, previous.version,
           previous.lease, state.revision
    FROM (SELECT compact_revision, revision FROM raftgres_kv_revision LIMIT 1) AS state
    LEFT JOIN raftgres_kv_history AS change
        ON change.revision BETWEEN $3 AND $4
       AND change.key >= $1 AND ($2::bytea IS NULL OR change.key < $2)
    LEFT JOIN LATERAL (
        SELECT replaced.* FROM raftgres_kv_history AS replaced
        WHERE $5 AND replaced.revision = change.prev_revision AND replaced.key = change.key
          AND replaced.value IS NOT NULL
          AND (replaced.revision, replaced.sub) < (change.revision, change.sub)
        LIMIT 1) AS previous ON true
    ORDER BY change.revision, change.sub";

fn wire_event(event: Event, previous: Option<KeyValue>) -> mvccpb::Event {
    use mvccpb::event::EventType;
    let (kind, kv) = match event.kv {
        Some(kv) => (EventType::Put, super::convert::key_value(kv)),
        None => (
            EventType::Delete,
            mvccpb::KeyValue {
                key: event.key,
                mod_revision: event.revision,
                ..mvccpb::KeyValue::default()
            },
        ),
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: previous.map(super::convert::key_value),
    }
}

fn compacted(
    shared: &Shared<KvStateMachine>,
    watch_id: i64,
    revisions: Revisions,
    compact_revision: i64,
) -> etcd::WatchResponse {
    etcd::WatchResponse {
        header: header(shared, revisions.current),
        watch_id,
        canceled: true,
        compact_revision,
        cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
        ..etcd::WatchResponse::default()
    }
}
