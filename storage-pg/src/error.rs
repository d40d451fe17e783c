//! The one error type of the store. Callers act on [`StoreError::is_retriable`]:
//! a retriable error means "the database is unreachable right now, nothing
//! was acknowledged, try again"; everything else means a bug, a
//! misconfiguration or corruption, and the node must stop voting and
//! acknowledging.

use crate::types::HardState;

/// Errors of [`crate::LogStore`] implementations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server cannot be reached, restarted, or the connection dropped.
    /// The operation did not take effect (an append whose commit outcome was
    /// unknown has been resolved by reading back before this is returned, or
    /// the server could not be reached to resolve it; retrying the same
    /// append is safe because appends are idempotent). The store reconnects
    /// on the next operation.
    #[error("postgres is unavailable ({context}): {reason}")]
    Unavailable {
        /// What the store was doing.
        context: String,
        /// The underlying failure, as text.
        reason: String,
    },

    /// Another process holds this database's fencing lock.
    #[error(
        "database {database} is already in use by another raftgres node process (its session advisory lock is held by backend pid {holder_pid}); \
         stop the other node process or point this node at its own database"
    )]
    Locked {
        /// The database name.
        database: String,
        /// Backend pid of the holder, 0 when unknown.
        holder_pid: i32,
    },

    /// The database belongs to another cluster or node.
    #[error(
        "database belongs to cluster {stored_cluster_id:?} node {stored_node_id}, \
         but this store was opened as cluster {expected_cluster_id:?} node {expected_node_id}; \
         refusing to touch it"
    )]
    IdentityMismatch {
        /// Cluster id recorded in the database.
        stored_cluster_id: String,
        /// Node id recorded in the database.
        stored_node_id: u64,
        /// Cluster id in the store configuration.
        expected_cluster_id: String,
        /// Node id in the store configuration.
        expected_node_id: u64,
    },

    /// The database schema was written by a newer raftgres.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade raftgres"
    )]
    SchemaTooNew {
        /// Version recorded in `raftgres_schema_version`.
        found: i32,
        /// Highest version this code knows.
        supported: i32,
    },

    /// A server setting would lose acknowledged writes on a crash.
    #[error(
        "unsafe postgres setting {setting} = {value}: acknowledged log entries could be lost on a crash; \
         fix: {fix} (or set allow_unsafe_durability for throw-away benchmarks only)"
    )]
    UnsafeDurability {
        /// Setting name.
        setting: String,
        /// Current value.
        value: String,
        /// What to change.
        fix: String,
    },

    /// TLS to Postgres was refused: the server's certificate is not signed
    /// by a CA of `sslrootcert` or does not name the host (`verify-full`),
    /// or the server offers no TLS although the conninfo requires it. Not
    /// retriable: the certificates or the configuration must be fixed.
    #[error("TLS to postgres refused ({context}): {reason}")]
    Tls {
        /// What the store was doing, with the host and the sslmode.
        context: String,
        /// Why, with the file or host name involved.
        reason: String,
    },

    /// The store configuration is invalid.
    #[error("invalid store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// An append batch breaks the log rules; nothing was written.
    #[error("invalid append batch: {reason}")]
    InvalidBatch {
        /// Which rule was broken, with the indexes involved.
        reason: String,
    },

    /// The append would damage the log, so it was refused and nothing
    /// changed (neither entries nor hard state): it would delete or change
    /// an entry at or below the applied index, or store an entry whose term
    /// is above the hard state's term (after which the node could not
    /// restart). The database enforces both rules itself. Not retriable: the
    /// caller has a bug.
    #[error("append refused, nothing changed: {reason}")]
    AppendRefused {
        /// Which rule, with the indexes and terms involved.
        reason: String,
    },

    /// A read or compaction outside the range the log holds.
    #[error(
        "log range [{low}, {high_exclusive}) is outside the stored log (first index {first_index}, last index {last_index})"
    )]
    OutOfRange {
        /// Requested low index.
        low: u64,
        /// Requested exclusive high index.
        high_exclusive: u64,
        /// First index the log holds (snapshot index + 1).
        first_index: u64,
        /// Last index the log holds.
        last_index: u64,
    },

    /// The caller tried to move the term backwards or change a vote.
    #[error("hard state regression: stored {current:?}, requested {requested:?}")]
    HardStateRegression {
        /// The durable hard state.
        current: HardState,
        /// What the caller tried to save.
        requested: HardState,
    },

    /// The applied index or snapshot would move backwards.
    #[error("{what} would move backwards: stored index {current}, requested index {requested}")]
    Regression {
        /// `applied index` or `snapshot index`.
        what: &'static str,
        /// Stored index.
        current: u64,
        /// Requested index.
        requested: u64,
    },

    /// Stored data breaks an invariant (a gap in the log, an unknown entry
    /// kind, a guard in the database fired unexpectedly).
    #[error("storage is corrupt or inconsistent: {reason}")]
    Corrupt {
        /// What was found.
        reason: String,
    },

    /// Any other database error; not retriable.
    #[error("postgres error ({context}): {source}")]
    Database {
        /// What the store was doing.
        context: String,
        /// The error reported by tokio-postgres.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl StoreError {
    /// Maps an error from SQL run inside an apply transaction (a state
    /// machine's own statements): connection loss and server shutdown become
    /// the retriable [`StoreError::Unavailable`], anything else
    /// [`StoreError::Database`].
    pub fn from_postgres(context: &str, error: tokio_postgres::Error) -> StoreError {
        crate::pg::session::classify(context, error)
    }

    /// True when the operation may succeed if retried after the database is
    /// reachable again. Everything else must stop the node.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retriable() {
        let unavailable = StoreError::Unavailable {
            context: "append".into(),
            reason: "connection closed".into(),
        };
        assert!(unavailable.is_retriable());
        let invalid = StoreError::InvalidBatch {
            reason: "gap".into(),
        };
        assert!(!invalid.is_retriable());
        let too_new = StoreError::SchemaTooNew {
            found: 9,
            supported: 1,
        };
        assert!(!too_new.is_retriable());
        assert!(too_new.to_string().contains('9'));
    }
}
