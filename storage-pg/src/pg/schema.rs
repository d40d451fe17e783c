//! Versioned schema migrations, applied at open in one transaction under a
//! transaction-level advisory lock, and recorded in `raftgres_schema_version`.
//!
//! Every table is prefixed `raftgres_` so a state machine's own tables can
//! live in the same database. The guard rails live in the database too: a
//! trigger keeps the term from decreasing and a vote from changing within a
//! term, `raftgres_check_append` refuses an append that would leave a gap,
//! and `raftgres_append` (since version 2) refuses one that would change
//! applied entries or store a term above the hard state's, so that a bug in
//! this code or in the consensus core cannot silently corrupt the log.

use tokio_postgres::Client;

use super::session::{classify, ADVISORY_LOCK_CLASS, MIGRATION_LOCK_OBJECT};
use crate::error::StoreError;

/// The newest schema version this code knows.
pub const SCHEMA_VERSION_SUPPORTED: i32 = 6;

/// SQLSTATE raised by `raftgres_check_append` when an append leaves a gap.
pub(crate) const SQLSTATE_APPEND_GAP: &str = "RG001";

/// SQLSTATE raised by the hard state trigger.
pub(crate) const SQLSTATE_HARD_STATE_REGRESSION: &str = "RG002";

/// SQLSTATE raised by `raftgres_append` (version 2) when an append would
/// damage the log: change or delete applied entries, or store an entry
/// whose term is above the hard state's.
pub(crate) const SQLSTATE_APPEND_REFUSED: &str = "RG003";

/// `(version, sql)`, in order. Never edit a released migration; add one.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, MIGRATION_1),
    (2, MIGRATION_2),
    (3, MIGRATION_3),
    (4, MIGRATION_4),
    (5, MIGRATION_5),
    (6, MIGRATION_6),
];

const MIGRATION_1: &str = r#"
CREATE TABLE raftgres_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cluster_id text NOT NULL,
    node_id bigint NOT NULL CHECK (node_id >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE raftgres_hard_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    term bigint NOT NULL CHECK (term >= 0),
    voted_for bigint CHECK (voted_for >= 0)
);
INSERT INTO raftgres_hard_state (term, voted_for) VALUES (0, NULL);

CREATE TABLE raftgres_log (
    log_index bigint PRIMARY KEY CHECK (log_index > 0),
    term bigint NOT NULL CHECK (term >= 0),
    kind smallint NOT NULL CHECK (kind IN (1, 2, 3)),
    data bytea NOT NULL
);

CREATE TABLE raftgres_snapshot (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    snapshot_index bigint NOT NULL CHECK (snapshot_index >= 0),
    snapshot_term bigint NOT NULL CHECK (snapshot_term >= 0)
);
INSERT INTO raftgres_snapshot (snapshot_index, snapshot_term) VALUES (0, 0);

CREATE TABLE raftgres_applied (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    applied_index bigint NOT NULL CHECK (applied_index >= 0),
    applied_term bigint NOT NULL CHECK (applied_term >= 0)
);
INSERT INTO raftgres_applied (applied_index, applied_term) VALUES (0, 0);

CREATE FUNCTION raftgres_hard_state_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.term < OLD.term THEN
        RAISE EXCEPTION 'raftgres: term would decrease from % to %', OLD.term, NEW.term
            USING ERRCODE = 'RG002';
    END IF;
    IF NEW.term = OLD.term AND OLD.voted_for IS NOT NULL
            AND NEW.voted_for IS DISTINCT FROM OLD.voted_for THEN
        RAISE EXCEPTION 'raftgres: vote in term % would change from % to %',
            OLD.term, OLD.voted_for, NEW.voted_for
            USING ERRCODE = 'RG002';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER raftgres_hard_state_guard
    BEFORE UPDATE ON raftgres_hard_state
    FOR EACH ROW EXECUTE FUNCTION raftgres_hard_state_guard();

-- Called inside an append transaction after the conflicting suffix is
-- deleted and before the new entries are inserted.
CREATE FUNCTION raftgres_check_append(first_index bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    previous_index bigint;
BEGIN
    SELECT coalesce(max(log_index), (SELECT snapshot_index FROM raftgres_snapshot))
        INTO previous_index FROM raftgres_log;
    IF first_index <> previous_index + 1 THEN
        RAISE EXCEPTION 'raftgres: append at index % does not follow the last stored index %',
            first_index, previous_index
            USING ERRCODE = 'RG001';
    END IF;
END
$$;

-- One append, atomically: as a single statement in autocommit mode it is
-- its own transaction, so an append costs one message and one round trip.
-- The hard state row is only rewritten when it changes.
CREATE FUNCTION raftgres_append(
    first_index bigint,
    indexes bigint[],
    terms bigint[],
    kinds smallint[],
    data bytea[],
    save_hard_state boolean,
    hard_state_term bigint,
    hard_state_voted_for bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint := 0;
BEGIN
    IF save_hard_state THEN
        UPDATE raftgres_hard_state
            SET term = hard_state_term, voted_for = hard_state_voted_for
            WHERE (term, voted_for) IS DISTINCT FROM (hard_state_term, hard_state_voted_for);
    END IF;
    IF first_index IS NOT NULL THEN
        DELETE FROM raftgres_log WHERE log_index >= first_index;
        PERFORM raftgres_check_append(first_index);
        INSERT INTO raftgres_log (log_index, term, kind, data)
            SELECT * FROM unnest(indexes, terms, kinds, data);
        GET DIAGNOSTICS inserted = ROW_COUNT;
    END IF;
    RETURN inserted;
END
$$;
"#;

/// `raftgres_append` refuses, before writing anything, an append that
/// would damage the log:
///
/// - one that deletes or changes an entry at or below the applied index
///   (rewriting an applied entry with an identical one is harmless and
///   allowed, so a repeated append stays idempotent);
/// - one that stores an entry whose term is above the hard state's term
///   as it stands after the same call: a node cannot restart from such a
///   log.
///
/// The applied index is read as committed when the append starts, without
/// locking the row, so that appends never wait for an apply transaction of
/// the apply connection; a concurrent apply reaching into the replaced
/// suffix would need the core both to apply uncommitted entries and to
/// truncate committed ones.
const MIGRATION_2: &str = r#"
CREATE OR REPLACE FUNCTION raftgres_append(
    first_index bigint,
    indexes bigint[],
    terms bigint[],
    kinds smallint[],
    data bytea[],
    save_hard_state boolean,
    hard_state_term bigint,
    hard_state_voted_for bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint := 0;
    stored_term bigint;
    highest_term bigint;
    applied bigint;
    last_index bigint;
    changed_index bigint;
BEGIN
    IF save_hard_state THEN
        UPDATE raftgres_hard_state
            SET term = hard_state_term, voted_for = hard_state_voted_for
            WHERE (term, voted_for) IS DISTINCT FROM (hard_state_term, hard_state_voted_for);
    END IF;
    IF first_index IS NOT NULL THEN
        -- Reads the hard state as this call left it.
        SELECT term INTO stored_term FROM raftgres_hard_state;
        SELECT max(entry_term) INTO highest_term FROM unnest(terms) AS entry_term;
        IF highest_term > stored_term THEN
            RAISE EXCEPTION 'raftgres: append refused: an entry has term %, above the hard state term %; a node could not restart from this log',
                highest_term, stored_term
                USING ERRCODE = 'RG003';
        END IF;
        SELECT applied_index INTO applied FROM raftgres_applied;
        IF first_index <= applied THEN
            SELECT max(entry_index) INTO last_index FROM unnest(indexes) AS entry_index;
            IF last_index < applied THEN
                RAISE EXCEPTION 'raftgres: append refused: entries % to % would replace the log from index %, deleting applied entries up to the applied index %',
                    first_index, last_index, first_index, applied
                    USING ERRCODE = 'RG003';
            END IF;
            SELECT incoming.log_index INTO changed_index
                FROM unnest(indexes, terms, kinds, data) AS incoming(log_index, term, kind, data)
                LEFT JOIN raftgres_log stored ON stored.log_index = incoming.log_index
                WHERE incoming.log_index <= applied
                  AND (stored.log_index IS NULL
                       OR (stored.term, stored.kind, stored.data)
                          IS DISTINCT FROM (incoming.term, incoming.kind, incoming.data))
                ORDER BY incoming.log_index
                LIMIT 1;
            IF changed_index IS NOT NULL THEN
                RAISE EXCEPTION 'raftgres: append refused: it would change the entry at index %, at or below the applied index %',
                    changed_index, applied
                    USING ERRCODE = 'RG003';
            END IF;
        END IF;
        DELETE FROM raftgres_log WHERE log_index >= first_index;
        PERFORM raftgres_check_append(first_index);
        INSERT INTO raftgres_log (log_index, term, kind, data)
            SELECT * FROM unnest(indexes, terms, kinds, data);
        GET DIAGNOSTICS inserted = ROW_COUNT;
    END IF;
    RETURN inserted;
END
$$;
"#;

/// Version 3: the cluster's membership in force at the snapshot index, an
/// encoded `raftgres.v1.Membership` the store carries without reading it
/// (NULL until the node stores its bootstrap membership or a compaction
/// or an installed snapshot sets one). Membership entries after it are
/// log rows of kind 3.
const MIGRATION_3: &str = r#"
ALTER TABLE raftgres_snapshot ADD COLUMN IF NOT EXISTS membership bytea;
"#;

/// Version 4: the staging of a snapshot a follower receives in chunks: the
/// transfer (one row) and its chunks, emptied by the install that uses
/// them.
const MIGRATION_4: &str = r#"
CREATE TABLE raftgres_snapshot_staged (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    leader_id bigint NOT NULL CHECK (leader_id > 0),
    transfer_view bigint NOT NULL,
    snapshot_index bigint NOT NULL CHECK (snapshot_index > 0),
    snapshot_term bigint NOT NULL CHECK (snapshot_term > 0),
    membership bytea NOT NULL,
    next_seq bigint NOT NULL CHECK (next_seq >= 0),
    running bigint NOT NULL CHECK (running >= 0),
    complete boolean NOT NULL
);

CREATE TABLE raftgres_snapshot_chunks (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    data bytea NOT NULL
);
"#;

/// Version 5: staged snapshot chunks are stored uncompressed (rows of a
/// state machine rarely compress, and trying costs the follower's CPU).
const MIGRATION_5: &str = r#"
ALTER TABLE raftgres_snapshot_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
"#;

/// Version 6: `raftgres_append` as in version 2, but the conflicting
/// suffix is deleted only when there is one.
const MIGRATION_6: &str = r#"
CREATE OR REPLACE FUNCTION raftgres_append(
    first_index bigint,
    indexes bigint[],
    terms bigint[],
    kinds smallint[],
    data bytea[],
    save_hard_state boolean,
    hard_state_term bigint,
    hard_state_voted_for bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint := 0;
    stored_term bigint;
    highest_term bigint;
    applied bigint;
    last_index bigint;
    changed_index bigint;
    last_stored bigint;
BEGIN
    IF save_hard_state THEN
        UPDATE raftgres_hard_state
            SET term = hard_state_term, voted_for = hard_state_voted_for
            WHERE (term, voted_for) IS DISTINCT FROM (hard_state_term, hard_state_voted_for);
    END IF;
    IF first_index IS NOT NULL THEN
        -- Reads the hard state as this call left it.
        SELECT term INTO stored_term FROM raftgres_hard_state;
        SELECT max(entry_term) INTO highest_term FROM unnest(terms) AS entry_term;
        IF highest_term > stored_term THEN
            RAISE EXCEPTION 'raftgres: append refused: an entry has term %, above the hard state term %; a node could not restart from this log',
                highest_term, stored_term
                USING ERRCODE = 'RG003';
        END IF;
        SELECT applied_index INTO applied FROM raftgres_applied;
        IF first_index <= applied THEN
            SELECT max(entry_index) INTO last_index FROM unnest(indexes) AS entry_index;
            IF last_index < applied THEN
                RAISE EXCEPTION 'raftgres: append refused: entries % to % would replace the log from index %, deleting applied entries up to the applied index %',
                    first_index, last_index, first_index, applied
                    USING ERRCODE = 'RG003';
            END IF;
            SELECT incoming.log_index INTO changed_index
                FROM unnest(indexes, terms, kinds, data) AS incoming(log_index, term, kind, data)
                LEFT JOIN raftgres_log stored ON stored.log_index = incoming.log_index
                WHERE incoming.log_index <= applied
                  AND (stored.log_index IS NULL
                       OR (stored.term, stored.kind, stored.data)
                          IS DISTINCT FROM (incoming.term, incoming.kind, incoming.data))
                ORDER BY incoming.log_index
                LIMIT 1;
            IF changed_index IS NOT NULL THEN
                RAISE EXCEPTION 'raftgres: append refused: it would change the entry at index %, at or below the applied index %',
                    changed_index, applied
                    USING ERRCODE = 'RG003';
            END IF;
        END IF;
        -- Only a conflicting suffix is deleted. Issued on every append,
        -- the DELETE was planned anew each time (its custom plan, with the
        -- planner probing the end of the log's index, always looked
        -- cheaper than a generic one): 2.7 % of Postgres' CPU at 256
        -- clients. The last index is one backward index probe.
        SELECT max(log_index) INTO last_stored FROM raftgres_log;
        IF first_index <= last_stored THEN
            DELETE FROM raftgres_log WHERE log_index >= first_index;
        END IF;
        PERFORM raftgres_check_append(first_index);
        INSERT INTO raftgres_log (log_index, term, kind, data)
            SELECT * FROM unnest(indexes, terms, kinds, data);
        GET DIAGNOSTICS inserted = ROW_COUNT;
    END IF;
    RETURN inserted;
END
$$;
"#;

/// Brings the schema up to [`SCHEMA_VERSION_SUPPORTED`], or refuses a
/// database written by newer code. Idempotent.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let context = "migrating the schema";
    let map = |error| classify(context, error);
    let transaction = client.transaction().await.map_err(map)?;
    // The transaction-level lock serialises concurrent migrators (for
    // example a node and an inspection tool) and is released at commit.
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&ADVISORY_LOCK_CLASS, &MIGRATION_LOCK_OBJECT],
        )
        .await
        .map_err(map)?;
    let exists: bool = transaction
        .query_one(
            "SELECT to_regclass('raftgres_schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(map)?
        .get(0);
    if !exists {
        transaction
            .batch_execute(
                "CREATE TABLE raftgres_schema_version (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(map)?;
    }
    let found: i32 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM raftgres_schema_version",
            &[],
        )
        .await
        .map_err(map)?
        .get(0);
    if found > SCHEMA_VERSION_SUPPORTED {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION_SUPPORTED,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        tracing::info!(version, "applying raftgres schema migration");
        transaction.batch_execute(sql).await.map_err(map)?;
        transaction
            .execute(
                "INSERT INTO raftgres_schema_version (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(map)?;
    }
    transaction.commit().await.map_err(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_supported_version() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(version, _)| *version).collect();
        let expected: Vec<i32> = (1..=SCHEMA_VERSION_SUPPORTED).collect();
        assert_eq!(versions, expected);
        assert!(MIGRATION_1.contains(SQLSTATE_APPEND_GAP));
        assert!(MIGRATION_1.contains(SQLSTATE_HARD_STATE_REGRESSION));
        assert!(MIGRATION_2.contains(SQLSTATE_APPEND_REFUSED));
        assert!(MIGRATION_3.contains("IF NOT EXISTS membership bytea"));
        assert!(MIGRATION_4.contains("CREATE TABLE raftgres_snapshot_chunks"));
        assert!(MIGRATION_5.contains("SET STORAGE EXTERNAL"));
        // The gap guard stays in the replaced functions.
        assert!(MIGRATION_2.contains("PERFORM raftgres_check_append(first_index)"));
        assert!(MIGRATION_6.contains(SQLSTATE_APPEND_REFUSED));
        assert!(MIGRATION_6.contains("PERFORM raftgres_check_append(first_index)"));
    }
}
