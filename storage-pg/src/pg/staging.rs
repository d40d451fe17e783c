//! Snapshot transfers in the database: a leader streams a snapshot from a
//! *view* (a REPEATABLE READ, READ ONLY transaction on a connection of its
//! own, which sees the state machine, the sessions and the applied
//! position as of one instant), and a follower *stages* the chunks it
//! receives ([`PgStager`], its own connection and lock) until an install
//! ([`ApplyTransaction::staged_chunk`] and
//! [`ApplyTransaction::commit_snapshot`]) moves them into place and
//! empties the staging in one transaction.

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Transaction};

use super::apply::ApplyTransaction;
use super::session::{classify, OpenMode, Session, SessionRole};
use super::PgStoreConfig;
use crate::connector::PgConnector;
use crate::error::StoreError;
use crate::types::AppliedState;

/// A follower's snapshot transfer as staged: what the chunks make, and
/// how far they go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedHeader {
    /// The leader streaming it.
    pub leader_id: u64,
    /// The leader's view it comes from.
    pub view: u64,
    /// The snapshot's index.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The membership in force at `index`, encoded (not read here).
    pub membership: Vec<u8>,
    /// Chunks `0..next_seq` are staged.
    pub next_seq: u64,
    /// CRC-32 of the staged chunks' data, in order.
    pub running: u32,
    /// Every chunk is staged and the whole checksum matched.
    pub complete: bool,
}

const SELECT_STAGED: &str = "SELECT leader_id, transfer_view, snapshot_index, snapshot_term,
        membership, next_seq, running, complete
     FROM raftgres_snapshot_staged";

/// A row selected by [`SELECT_STAGED`].
fn header_of_row(row: &tokio_postgres::Row) -> StagedHeader {
    StagedHeader {
        leader_id: row.get::<_, i64>(0) as u64,
        view: row.get::<_, i64>(1) as u64,
        index: row.get::<_, i64>(2) as u64,
        term: row.get::<_, i64>(3) as u64,
        membership: row.get(4),
        next_seq: row.get::<_, i64>(5) as u64,
        running: row.get::<_, i64>(6) as u32,
        complete: row.get(7),
    }
}

/// The connection a follower stages snapshot chunks on. Holds its own
/// session-level lock: one stager per database.
pub struct PgStager {
    config: PgStoreConfig,
    connector: PgConnector,
    session: Option<Session>,
}

impl std::fmt::Debug for PgStager {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgStager")
            .field("node_id", &self.config.node_id)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

impl PgStager {
    /// Connects and runs the start-up checks every connection of a node
    /// runs (durability, schema, identity).
    pub async fn open(config: PgStoreConfig) -> Result<PgStager, StoreError> {
        config.validate()?;
        let connector = PgConnector::new(&config.conninfo)?;
        let (session, _) =
            Session::open(&connector, &config, OpenMode::First, SessionRole::Stager).await?;
        Ok(PgStager {
            config,
            connector,
            session: Some(session),
        })
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if !self.session.as_ref().is_some_and(Session::is_usable) {
            self.session = None;
            let (session, _) = Session::open(
                &self.connector,
                &self.config,
                OpenMode::Reconnect,
                SessionRole::Stager,
            )
            .await?;
            self.session = Some(session);
        }
        Ok(&mut self.session.as_mut().expect("connected above").client)
    }

    /// The staged transfer, if any.
    pub async fn load(&mut self) -> Result<Option<StagedHeader>, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt(SELECT_STAGED, &[]).await;
        let row = self.check("reading the staged snapshot", row)?;
        Ok(row.as_ref().map(header_of_row))
    }

    /// Stages `chunks` (`(seq, data)`) and records `header`, in one
    /// synchronous transaction; `restart` first deletes every chunk staged
    /// before. Staging a chunk again replaces it, so a retry after an
    /// unknown outcome is harmless.
    pub async fn stage(
        &mut self,
        header: &StagedHeader,
        restart: bool,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let result = async {
            let transaction = client.transaction().await?;
            if restart {
                transaction
                    .batch_execute("TRUNCATE raftgres_snapshot_chunks")
                    .await?;
            }
            let seqs: Vec<i64> = chunks.iter().map(|(seq, _)| *seq as i64).collect();
            let data: Vec<&[u8]> = chunks.iter().map(|(_, data)| data.as_slice()).collect();
            transaction
                .execute(
                    "INSERT INTO raftgres_snapshot_chunks (seq, data)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[])
                     ON CONFLICT (seq) DO UPDATE SET data = EXCLUDED.data",
                    &[&seqs, &data],
                )
                .await?;
            transaction
                .execute(
                    "INSERT INTO raftgres_snapshot_staged (leader_id, transfer_view,
                         snapshot_index, snapshot_term, membership, next_seq, running, complete)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (singleton) DO UPDATE SET leader_id = EXCLUDED.leader_id,
                         transfer_view = EXCLUDED.transfer_view,
                         snapshot_index = EXCLUDED.snapshot_index,
                         snapshot_term = EXCLUDED.snapshot_term,
                         membership = EXCLUDED.membership, next_seq = EXCLUDED.next_seq,
                         running = EXCLUDED.running, complete = EXCLUDED.complete",
                    &[
                        &(header.leader_id as i64),
                        &(header.view as i64),
                        &(header.index as i64),
                        &(header.term as i64),
                        &header.membership,
                        &(header.next_seq as i64),
                        &i64::from(header.running),
                        &header.complete,
                    ],
                )
                .await?;
            transaction.commit().await
        }
        .await;
        self.check("staging snapshot chunks", result)
    }

    fn check<T>(
        &mut self,
        context: &str,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        result.map_err(|error| {
            let error = classify(context, error);
            if error.is_retriable() {
                self.session = None;
            }
            error
        })
    }

    /// Releases the stager lock and closes the connection.
    pub async fn close(mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }
}

/// A connection for one view: begin a REPEATABLE READ, READ ONLY
/// transaction on it ([`Client::build_transaction`]) and read the applied
/// position with [`applied_in`]. No lock: a view changes nothing.
pub async fn connect_view(config: &PgStoreConfig) -> Result<(Client, JoinHandle<()>), StoreError> {
    let connector = PgConnector::new(&config.conninfo)?;
    let name = format!("raftgres-node-{}-view", config.node_id);
    let (client, task) = connector.connect(config.connect_timeout, &name).await?;
    client
        .batch_execute("SET jit = off")
        .await
        .map_err(|error| classify("configuring a view's session", error))?;
    Ok((client, task))
}

/// The applied position `transaction` sees.
pub async fn applied_in(transaction: &Transaction<'_>) -> Result<AppliedState, StoreError> {
    let row = transaction
        .query_one(
            "SELECT applied_index, applied_term FROM raftgres_applied",
            &[],
        )
        .await
        .map_err(|error| classify("reading the applied position", error))?;
    Ok(AppliedState {
        index: row.get::<_, i64>(0) as u64,
        term: row.get::<_, i64>(1) as u64,
    })
}

impl ApplyTransaction<'_> {
    /// The staged transfer, read in this transaction.
    pub async fn staged_header(&self) -> Result<Option<StagedHeader>, StoreError> {
        let row = self
            .transaction()
            .query_opt(SELECT_STAGED, &[])
            .await
            .map_err(|error| classify("reading the staged snapshot", error))?;
        Ok(row.as_ref().map(header_of_row))
    }

    /// The staged chunk `seq`, read in this transaction.
    pub async fn staged_chunk(&self, seq: u64) -> Result<Vec<u8>, StoreError> {
        let row = self
            .transaction()
            .query_opt(
                "SELECT data FROM raftgres_snapshot_chunks WHERE seq = $1",
                &[&(seq as i64)],
            )
            .await
            .map_err(|error| classify("reading a staged snapshot chunk", error))?;
        row.map(|row| row.get(0))
            .ok_or_else(|| StoreError::Corrupt {
                reason: format!("staged snapshot chunk {seq} is missing"),
            })
    }
}
