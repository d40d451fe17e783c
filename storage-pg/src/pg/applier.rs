//! [`PgApplier`]: a second connection for applying committed entries that
//! no log write carries (a node applies the others inside its log writes,
//! on the log connection), so that such an apply runs beside the log
//! write in flight. It holds its own session-level advisory lock: one
//! applier per database.

use super::apply::{self, ApplyOptions, ApplyTransaction, BegunApply, OpeningApply};
use super::session::{OpenMode, Session, SessionRole};
use super::PgStoreConfig;
use crate::connector::PgConnector;
use crate::error::StoreError;
use crate::store::LogBounds;

/// The apply connection of a node. Runs the same start-up checks as
/// [`super::PgStore`] (durability, schema, identity) and reconnects the same
/// way. Snapshots are installed through the store, not here.
pub struct PgApplier {
    config: PgStoreConfig,
    /// Built once from `config.conninfo`.
    connector: PgConnector,
    session: Option<Session>,
    /// Only `applied` and `snapshot` are used; they are refreshed from the
    /// database at the start of every apply transaction.
    bounds: LogBounds,
}

impl std::fmt::Debug for PgApplier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgApplier")
            .field("node_id", &self.config.node_id)
            .field("connected", &self.session.is_some())
            .field("applied", &self.bounds.applied)
            .finish()
    }
}

impl PgApplier {
    /// Connects and runs every start-up check; fails with
    /// [`StoreError::Locked`] when another applier uses the database.
    pub async fn open(config: PgStoreConfig) -> Result<PgApplier, StoreError> {
        config.validate()?;
        let connector = PgConnector::new(&config.conninfo)?;
        let (session, bounds) =
            Session::open(&connector, &config, OpenMode::First, SessionRole::Applier).await?;
        Ok(PgApplier {
            config,
            connector,
            session: Some(session),
            bounds,
        })
    }

    /// Starts a state machine transaction; see [`ApplyTransaction`].
    pub async fn begin_apply(
        &mut self,
        options: ApplyOptions,
    ) -> Result<ApplyTransaction<'_>, StoreError> {
        self.open_apply(options).await?.start().await
    }

    /// [`PgApplier::begin_apply`] with the first statements not yet sent:
    /// see [`OpeningApply`].
    pub async fn open_apply(
        &mut self,
        options: ApplyOptions,
    ) -> Result<OpeningApply<'_, 'static>, StoreError> {
        Ok(self.begin_ahead().await?.open(options))
    }

    /// Begins the next apply transaction before its batch is known (see
    /// [`BegunApply`]), reconnecting first if the connection was lost.
    pub async fn begin_ahead(&mut self) -> Result<BegunApply<'_>, StoreError> {
        if !self.session.as_ref().is_some_and(Session::is_usable) {
            self.session = None;
            let (session, bounds) = Session::open(
                &self.connector,
                &self.config,
                OpenMode::Reconnect,
                SessionRole::Applier,
            )
            .await?;
            self.session = Some(session);
            self.bounds = bounds;
        }
        let session = self.session.as_mut().expect("connected above");
        apply::begin_transaction(session, &mut self.bounds, apply::Connection::Applier).await
    }

    /// Releases the applier lock and closes the connection.
    pub async fn close(mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }

    /// The configuration the applier was opened with.
    pub fn config(&self) -> &PgStoreConfig {
        &self.config
    }
}
