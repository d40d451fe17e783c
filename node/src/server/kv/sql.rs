//! The KV state machine's tables and statements.

use std::sync::LazyLock;

use raftgres_storage_pg::Prepared;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::mvcc::{Event, KeyValue, Revision, Revisions, REVISION_INITIAL};

/// The tables. A database whose `raftgres_kv` predates revisions is
/// refused while it holds rows (their revisions cannot be made up the same
/// way on every replica) and replaced while it is empty.
///
/// A change in `raftgres_kv_history` names in `prev_revision` the revision
/// of the key's change before it when that one was a put (the version the
/// change replaced), and is 0 when the key had none or had been deleted.
/// Of the changes above the compaction point every replica holds the same
/// pointers; below it, where nothing reads them, a replica that imported
/// a snapshot may hold 0 where another points at a change compacted away.
/// Compacting finds the changes a newer one replaced through them, a read
/// at a past revision the version a later change replaced, a watch the
/// previous version of a changed key. [`UNLINKED`] marks a change whose
/// pointer is still to be worked out (`raftgres_kv_link_history()`).
pub(super) const SCHEMA: &str = "
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'raftgres_kv'
                     AND column_name = 'mod_index')
           AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'raftgres_kv'
                     AND column_name = 'mod_revision') THEN
            IF EXISTS (SELECT 1 FROM raftgres_kv) THEN
                RAISE EXCEPTION 'raftgres_kv holds rows written before the KV kept revisions; this version cannot give them revisions every replica agrees on: start the node on an empty database and let it catch up from the cluster';
            END IF;
            DROP TABLE raftgres_kv;
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS raftgres_kv (
        key bytea PRIMARY KEY,
        value bytea NOT NULL,
        mod_index bigint NOT NULL CHECK (mod_index > 0),
        create_revision bigint NOT NULL,
        mod_revision bigint NOT NULL,
        version bigint NOT NULL,
        lease bigint NOT NULL,
        CHECK (0 < create_revision AND create_revision <= mod_revision AND version > 0)
    );
    CREATE TABLE IF NOT EXISTS raftgres_kv_history (
        revision bigint NOT NULL,
        sub bigint NOT NULL,
        key bytea NOT NULL,
        value bytea,
        create_revision bigint NOT NULL,
        version bigint NOT NULL,
        lease bigint NOT NULL,
        prev_revision bigint NOT NULL DEFAULT -1,
        PRIMARY KEY (revision, sub)
    );
    -- The history is found by revision only, and a change points at the
    -- key's previous version, so that no index by key is kept up on every
    -- write. A table from before the pointers is linked once and loses
    -- that index, as is the history of a snapshot from a version before
    -- them; the changes still to link hold -1.
    ALTER TABLE raftgres_kv_history ADD COLUMN IF NOT EXISTS prev_revision bigint NOT NULL DEFAULT -1;
    CREATE OR REPLACE FUNCTION raftgres_kv_link_history() RETURNS void AS $link$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM raftgres_kv_history WHERE prev_revision < 0) THEN
            RETURN;
        END IF;
        UPDATE raftgres_kv_history AS change SET prev_revision = linked.previous
        FROM (SELECT revision, sub,
                     CASE WHEN lag(value IS NOT NULL, 1, false) OVER by_key
                          THEN lag(revision) OVER by_key ELSE 0 END AS previous
              FROM raftgres_kv_history
              WINDOW by_key AS (PARTITION BY key ORDER BY revision, sub)) AS linked
        WHERE change.revision = linked.revision AND change.sub = linked.sub
          AND change.prev_revision < 0;
    END
    $link$ LANGUAGE plpgsql;
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()
                   AND indexname = 'raftgres_kv_history_by_key') THEN
            PERFORM raftgres_kv_link_history();
            DROP INDEX raftgres_kv_history_by_key;
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS raftgres_kv_revision (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        revision bigint NOT NULL,
        compact_revision bigint NOT NULL,
        CHECK (0 <= compact_revision AND compact_revision <= revision)
    );
    INSERT INTO raftgres_kv_revision (revision, compact_revision)
        VALUES (1, 0) ON CONFLICT DO NOTHING;
    CREATE TABLE IF NOT EXISTS raftgres_leases (
        id bigint PRIMARY KEY CHECK (id > 0),
        ttl bigint NOT NULL CHECK (ttl > 0)
    );
    CREATE INDEX IF NOT EXISTS raftgres_kv_by_lease ON raftgres_kv (lease) WHERE lease <> 0";

/// Writes a batch's changes in one statement: deletes, upserts, history,
/// revisions, and the compaction when the compaction point moved (of each
/// key's changes at or below it, all but the last, and that one too when
/// it is a delete below it: as `MvccStore` compacts).
pub(super) const WRITE_FUNCTION: &str = "
    DROP FUNCTION IF EXISTS raftgres_kv_write(
        bytea[], bytea[], bytea[], bigint[], bigint[], bigint[], bigint[], bigint[],
        bigint[], bigint[], bytea[], bytea[], bigint[], bigint[], bigint[],
        bigint, bigint, bigint, bigint[], bigint[], bigint[]);
    CREATE OR REPLACE FUNCTION raftgres_kv_write(
        deleted_keys bytea[],
        keys bytea[], kv_values bytea[], mod_indexes bigint[], create_revisions bigint[],
        mod_revisions bigint[], versions bigint[], leases bigint[],
        event_revisions bigint[], event_subs bigint[], event_keys bytea[], event_values bytea[],
        event_create_revisions bigint[], event_versions bigint[], event_leases bigint[],
        event_prev_revisions bigint[],
        new_revision bigint, new_compact_revision bigint, old_compact_revision bigint,
        granted_leases bigint[], granted_ttls bigint[], revoked_leases bigint[])
    RETURNS void AS $$
    BEGIN
        DELETE FROM raftgres_leases WHERE id = ANY(revoked_leases);
        INSERT INTO raftgres_leases (id, ttl) SELECT * FROM unnest(granted_leases, granted_ttls);
        DELETE FROM raftgres_kv WHERE key = ANY(deleted_keys);
        INSERT INTO raftgres_kv
            (key, value, mod_index, create_revision, mod_revision, version, lease)
        SELECT * FROM unnest(keys, kv_values, mod_indexes, create_revisions, mod_revisions,
                             versions, leases)
        ON CONFLICT (key) DO UPDATE SET
            value = EXCLUDED.value, mod_index = EXCLUDED.mod_index,
            create_revision = EXCLUDED.create_revision, mod_revision = EXCLUDED.mod_revision,
            version = EXCLUDED.version, lease = EXCLUDED.lease;
        INSERT INTO raftgres_kv_history
            (revision, sub, key, value, create_revision, version, lease, prev_revision)
        SELECT * FROM unnest(event_revisions, event_subs, event_keys, event_values,
                             event_create_revisions, event_versions, event_leases,
                             event_prev_revisions);
        UPDATE raftgres_kv_revision
        SET revision = new_revision, compact_revision = new_compact_revision;
        IF new_compact_revision > old_compact_revision THEN
            -- Every put replaced by a change at or below the new point: the
            -- puts that the changes since the old point replaced (those the
            -- older changes replaced are gone already)...
            DELETE FROM raftgres_kv_history AS old
            USING raftgres_kv_history AS newer
            WHERE newer.revision > old_compact_revision
              AND newer.revision <= new_compact_revision AND newer.prev_revision > 0
              AND old.revision = newer.prev_revision AND old.key = newer.key
              AND old.value IS NOT NULL;
            -- ...then the deletes below it (those below the old point are
            -- gone already), which the first statement follows.
            DELETE FROM raftgres_kv_history
            WHERE revision >= old_compact_revision AND revision < new_compact_revision
              AND value IS NULL;
        END IF;
    END
    $$ LANGUAGE plpgsql";

/// How [`PUT_BATCH_FUNCTION`] sees a batch of puts of `keys` (in batch
/// order): each put's rank among its key's puts (from 1), the (1-based)
/// position of its key's first put and of its key's put before it (0 for
/// the first), and whether it is its key's last.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PutRanks {
    pub(super) ranks: Vec<i64>,
    pub(super) firsts: Vec<i64>,
    pub(super) previous: Vec<i64>,
    pub(super) lasts: Vec<bool>,
}

impl PutRanks {
    pub(super) fn of(keys: &[&[u8]]) -> PutRanks {
        // key -> (puts so far, position of the first, slot of the latest)
        let mut seen: std::collections::HashMap<&[u8], (i64, i64, usize)> =
            std::collections::HashMap::with_capacity(keys.len());
        let mut ranks = PutRanks {
            ranks: Vec::with_capacity(keys.len()),
            firsts: Vec::with_capacity(keys.len()),
            previous: Vec::with_capacity(keys.len()),
            lasts: vec![true; keys.len()],
        };
        for (slot, key) in keys.iter().enumerate() {
            let position = slot as i64 + 1;
            let entry = seen.entry(key).or_insert((0, position, slot));
            if entry.0 > 0 {
                ranks.lasts[entry.2] = false;
                ranks.previous.push(entry.2 as i64 + 1);
            } else {
                ranks.previous.push(0);
            }
            entry.0 += 1;
            entry.2 = slot;
            ranks.ranks.push(entry.0);
            ranks.firsts.push(entry.1);
        }
        ranks
    }
}

/// `prev_revision` of a change whose pointer is still to be worked out.
pub(super) const UNLINKED: i64 = -1;

pub(super) const SELECT_REVISIONS: &str =
    "SELECT revision, compact_revision FROM raftgres_kv_revision";

/// Applies a batch of plain puts (no lease, keeping neither value nor
/// lease; a key may come more than once) in one statement, as
/// [`crate::mvcc::apply`] applies them one after the other: the put at
/// (1-based) `position` gets revision `before + position`; the key's
/// create revision (kept, or for a new key the revision of its first put
/// in the batch, at `firsts`), its version plus `ranks` (1 for the key's
/// first put in the batch, 2 for its second...), no lease, and a change
/// in the history that points at the version it replaced (the key's row,
/// or its put at `previous` in the batch). The key's row is written once,
/// from the put that is `lasts`. Answers the store's revisions before the
/// batch on every row, and each put's key's row from before the batch
/// (NULL when it had none), in batch order, from which the caller makes
/// the answers. The caller ranks the puts ([`PutRanks`]): a window over
/// the keys in the statement cost 13 % more CPU per call for 64 distinct
/// keys (`pgbench`).
pub(super) const PUT_BATCH_FUNCTION: &str = "
    DROP FUNCTION IF EXISTS raftgres_kv_put_batch(bytea[], bytea[], bigint[]);
    DROP FUNCTION IF EXISTS raftgres_kv_put_batch(
        bytea[], bytea[], bigint[], bigint[], bigint[], boolean[]);
    CREATE OR REPLACE FUNCTION raftgres_kv_put_batch(
        keys bytea[], kv_values bytea[], mod_indexes bigint[], ranks bigint[],
        firsts bigint[], previous bigint[], lasts boolean[])
    RETURNS TABLE (revision_before bigint, compact_revision bigint, key bytea, value bytea,
                   create_revision bigint, mod_revision bigint, version bigint, lease bigint)
    AS $$
    #variable_conflict use_column
    DECLARE
        before bigint;
        compacted bigint;
    BEGIN
        UPDATE raftgres_kv_revision SET revision = revision + cardinality(keys)
        RETURNING raftgres_kv_revision.revision - cardinality(keys),
                  raftgres_kv_revision.compact_revision
        INTO before, compacted;
        RETURN QUERY
        WITH input AS (
                 SELECT * FROM unnest(keys, kv_values, mod_indexes, ranks, firsts, previous,
                                      lasts)
                     WITH ORDINALITY
                     AS batch(key, value, mod_index, rank, first, previous, last, position)),
             -- One index probe per key (at its first put). As a plain
             -- join, the plan the connection made on its first call, while
             -- the table was small, hashes the whole table on every later
             -- call.
             prior AS (
                 SELECT kv.* FROM input CROSS JOIN LATERAL (
                     SELECT * FROM raftgres_kv AS one WHERE one.key = input.key OFFSET 0) AS kv
                 WHERE input.rank = 1),
             written AS (
                 SELECT input.key, input.value, input.mod_index, input.last,
                        coalesce(prior.create_revision, before + input.first)
                            AS create_revision,
                        before + input.position AS mod_revision,
                        coalesce(prior.version, 0) + input.rank AS version,
                        CASE WHEN input.rank = 1 THEN coalesce(prior.mod_revision, 0)
                             ELSE before + input.previous END AS prev_revision
                 FROM input LEFT JOIN prior USING (key)),
             upsert AS (
                 INSERT INTO raftgres_kv
                     (key, value, mod_index, create_revision, mod_revision, version, lease)
                 SELECT key, value, mod_index, create_revision, mod_revision, version, 0
                 FROM written WHERE last
                 ON CONFLICT (key) DO UPDATE SET
                     value = EXCLUDED.value, mod_index = EXCLUDED.mod_index,
                     create_revision = EXCLUDED.create_revision,
                     mod_revision = EXCLUDED.mod_revision, version = EXCLUDED.version,
                     lease = EXCLUDED.lease),
             history AS (
                 INSERT INTO raftgres_kv_history
                     (revision, sub, key, value, create_revision, version, lease, prev_revision)
                 SELECT mod_revision, 0, key, value, create_revision, version, 0, prev_revision
                 FROM written)
        SELECT before, compacted, prior.key, prior.value, prior.create_revision,
               prior.mod_revision, prior.version, prior.lease
        FROM input LEFT JOIN prior USING (key) ORDER BY input.position;
    END
    $$ LANGUAGE plpgsql
    -- Left to choose, the plan cache keeps planning the statement afresh
    -- for every call (its custom plans look cheaper than the generic one):
    -- 0.2 ms of a single put's 0.5. The generic plan is as fast for 64 keys.
    SET plan_cache_mode = force_generic_plan";

/// Reads what a batch needs in one statement whose plans each connection
/// makes once: a first row of kind 0 with the revisions (current as
/// `create_revision`, compaction point as `mod_revision`); rows of kind 1,
/// the current rows in the bounded ranges `[lows[i], highs[i])`, from
/// `unbounded_from` on (when not NULL) and attached to the leases `revoked`
/// (a row found twice comes twice), as [`key_value`] reads them, then
/// `mod_index`; and rows of kind 2, the leases among `lease_ids` (`lease`
/// the id, `version` the TTL).
pub(super) const PREFETCH_FUNCTION: &str = "
    CREATE OR REPLACE FUNCTION raftgres_kv_prefetch(
        lows bytea[], highs bytea[], unbounded_from bytea, revoked bigint[], lease_ids bigint[])
    RETURNS TABLE (kind smallint, key bytea, value bytea, create_revision bigint,
                   mod_revision bigint, version bigint, lease bigint, mod_index bigint) AS $$
    #variable_conflict use_column
    BEGIN
        RETURN QUERY
        SELECT 0::smallint, NULL::bytea, NULL::bytea, revision, compact_revision,
               NULL::bigint, NULL::bigint, NULL::bigint
        FROM raftgres_kv_revision;
        -- One index range scan per wanted range. As a plain join, the
        -- generic plan the function settles on after a few calls guesses
        -- ten ranges of a ninth of the table each and scans the whole
        -- table for every range: 1.5 s for 3,000 keys of a 10,000-key
        -- table instead of 10 ms. OFFSET 0 keeps the subquery from being
        -- flattened into that join.
        RETURN QUERY
        SELECT 1::smallint, kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version,
               kv.lease, kv.mod_index
        FROM unnest(lows, highs) AS wanted(low, high)
        CROSS JOIN LATERAL (
            SELECT * FROM raftgres_kv AS one
            WHERE one.key >= wanted.low AND one.key < wanted.high OFFSET 0) AS kv;
        IF unbounded_from IS NOT NULL THEN
            RETURN QUERY
            SELECT 1::smallint, kv.key, kv.value, kv.create_revision, kv.mod_revision,
                   kv.version, kv.lease, kv.mod_index
            FROM raftgres_kv AS kv WHERE kv.key >= unbounded_from;
        END IF;
        IF cardinality(revoked) > 0 THEN
            RETURN QUERY
            SELECT 1::smallint, kv.key, kv.value, kv.create_revision, kv.mod_revision,
                   kv.version, kv.lease, kv.mod_index
            FROM raftgres_kv AS kv WHERE kv.lease = ANY(revoked) AND kv.lease <> 0;
        END IF;
        IF cardinality(lease_ids) > 0 THEN
            RETURN QUERY
            SELECT 2::smallint, NULL::bytea, NULL::bytea, NULL::bigint, NULL::bigint,
                   leases.ttl, leases.id, NULL::bigint
            FROM raftgres_leases AS leases WHERE leases.id = ANY(lease_ids);
        END IF;
    END
    $$ LANGUAGE plpgsql";

/// A row selected as `key, value, create_revision, mod_revision, version,
/// lease`.
pub(crate) fn key_value(row: &tokio_postgres::Row) -> KeyValue {
    key_value_at(row, 0)
}

/// The same columns, from column `first` on.
pub(super) fn key_value_at(row: &tokio_postgres::Row, first: usize) -> KeyValue {
    KeyValue {
        key: row.get(first),
        value: row.get(first + 1),
        create_revision: row.get(first + 2),
        mod_revision: row.get(first + 3),
        version: row.get(first + 4),
        lease: row.get(first + 5),
    }
}

/// Writes the final state of every key a batch changed (`None`: deleted),
/// with the log index of its last change, the batch's events (each with
/// the revision of the put it replaced, 0 for none) and the new revisions.
pub(super) async fn write<'a>(
    transaction: &Prepared<'_, Transaction<'_>>,
    rows: impl Iterator<Item = (&'a [u8], Option<(&'a KeyValue, u64)>)>,
    events: &[(Event, Revision)],
    revisions: Revisions,
    before: Revisions,
    leases: &std::collections::BTreeMap<i64, Option<i64>>,
) -> Result<(), tokio_postgres::Error> {
    debug_assert!(revisions.current >= REVISION_INITIAL);
    let mut deleted: Vec<&[u8]> = Vec::new();
    let mut kept = Columns::default();
    for (key, row) in rows {
        match row {
            None => deleted.push(key),
            Some((kv, mod_index)) => kept.push(kv, mod_index),
        }
    }
    let mut history = EventColumns::default();
    for (event, replaced) in events {
        history.push(event, *replaced);
    }
    // Every changed lease is deleted, and the granted ones inserted again.
    let changed_leases: Vec<i64> = leases.keys().copied().collect();
    let (granted_leases, granted_ttls): (Vec<i64>, Vec<i64>) = leases
        .iter()
        .filter_map(|(id, ttl)| ttl.map(|ttl| (*id, ttl)))
        .unzip();
    transaction
        .query_prepared(
            "SELECT raftgres_kv_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
            &[
                Type::BYTEA_ARRAY,
                Type::BYTEA_ARRAY,
                Type::BYTEA_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::BYTEA_ARRAY,
                Type::BYTEA_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
                Type::INT8_ARRAY,
            ],
            &[
                &deleted,
                &kept.keys,
                &kept.values,
                &kept.mod_indexes,
                &kept.create_revisions,
                &kept.mod_revisions,
                &kept.versions,
                &kept.leases,
                &history.revisions,
                &history.subs,
                &history.keys,
                &history.values,
                &history.create_revisions,
                &history.versions,
                &history.leases,
                &history.replaced,
                &revisions.current,
                &revisions.compacted,
                &before.compacted,
                &granted_leases,
                &granted_ttls,
                &changed_leases,
            ],
        )
        .await?;
    Ok(())
}

#[derive(Default)]
struct Columns<'a> {
    keys: Vec<&'a [u8]>,
    values: Vec<&'a [u8]>,
    mod_indexes: Vec<i64>,
    create_revisions: Vec<i64>,
    mod_revisions: Vec<i64>,
    versions: Vec<i64>,
    leases: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, kv: &'a KeyValue, mod_index: u64) {
        self.keys.push(&kv.key);
        self.values.push(&kv.value);
        self.mod_indexes.push(mod_index as i64);
        self.create_revisions.push(kv.create_revision);
        self.mod_revisions.push(kv.mod_revision);
        self.versions.push(kv.version);
        self.leases.push(kv.lease);
    }
}

#[derive(Default)]
struct EventColumns<'a> {
    revisions: Vec<i64>,
    subs: Vec<i64>,
    keys: Vec<&'a [u8]>,
    values: Vec<Option<&'a [u8]>>,
    create_revisions: Vec<i64>,
    versions: Vec<i64>,
    leases: Vec<i64>,
    replaced: Vec<i64>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, event: &'a Event, replaced: Revision) {
        self.replaced.push(replaced);
        self.revisions.push(event.revision);
        self.subs.push(event.sub);
        self.keys.push(&event.key);
        self.values
            .push(event.kv.as_ref().map(|kv| kv.value.as_slice()));
        let kv = event.kv.as_ref();
        self.create_revisions
            .push(kv.map_or(0, |kv| kv.create_revision));
        self.versions.push(kv.map_or(0, |kv| kv.version));
        self.leases.push(kv.map_or(0, |kv| kv.lease));
    }
}

/// [`SELECT_RANGE_AT`]'s answer for the most frequent read, one key at
/// the current revision (`$1` the key, `$2` the rows wanted, NULL: all):
/// the same columns from two index probes, without the history, the
/// function call or the sort. Prepared once per connection: 56 us of the
/// server's CPU per read against 95 through [`range_at_function`]
/// (pgbench, 10,000 keys).
pub(super) const SELECT_CURRENT_KEY: &str = "
    SELECT kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease,
           (SELECT applied_index FROM raftgres_applied) AS applied_index,
           state.revision, state.compact_revision,
           (SELECT count(*) FROM raftgres_kv AS counted WHERE counted.key = $1) AS total
    FROM (SELECT revision, compact_revision FROM raftgres_kv_revision LIMIT 1) AS state
    LEFT JOIN LATERAL (
        SELECT * FROM raftgres_kv AS one WHERE one.key = $1 LIMIT $2) AS kv ON true";

/// A range read with an end: a call of [`range_at_function`], whose plans
/// are made once per session; prepared once per connection.
pub(super) const SELECT_RANGE_AT_BOUNDED: &str =
    "SELECT * FROM raftgres_kv_range_at($1, $2, $3, $4)";

/// A range read without an end, or at a past revision: [`SELECT_RANGE_AT`]
/// with its end conditions made into `column < $2` (`bounded`) or
/// `$2::bytea IS NULL` (see [`with_range_end`]), sent as text and planned
/// for each read. A plan made once (Postgres' generic plan) scanned and
/// sorted the whole table for a range without an end where a plan for the
/// read walks the index (15.8 ms against 0.98 for a read of 11 keys), and
/// scanned the whole history for a read at a past revision where a plan
/// for the revision reads the changes made since by the history's index
/// (0.4 ms against 100 for a key read 100 revisions back in a history of
/// 1.6 million changes).
pub(super) fn select_range_at_planned(bounded: bool) -> &'static str {
    static BOUNDED: LazyLock<String> = LazyLock::new(|| with_range_end(SELECT_RANGE_AT, true));
    static UNBOUNDED: LazyLock<String> = LazyLock::new(|| with_range_end(SELECT_RANGE_AT, false));
    if bounded {
        &BOUNDED
    } else {
        &UNBOUNDED
    }
}

/// `raftgres_kv_range_at(low, high, revision_at, rows_max)`: what
/// [`SELECT_RANGE_AT`] answers for a range with an end, with the plans
/// made once per session (Postgres' generic plan, forced: left to choose,
/// it planned every call afresh). Planning the statement was most of a
/// read's cost: about 450 us of the server's CPU per single-key read as
/// text, 93 us through this function (pgbench on a 10,000-key table).
/// Only reads of the current revision are made through it (see
/// [`select_range_at_planned`]).
pub(super) fn range_at_function() -> String {
    let mut query = with_range_end(SELECT_RANGE_AT, true);
    for (parameter, name) in [
        ("$1", "low"),
        ("$2", "high"),
        ("$3", "revision_at"),
        ("$4", "rows_max"),
    ] {
        query = query.replace(parameter, name);
    }
    format!(
        "CREATE OR REPLACE FUNCTION raftgres_kv_range_at(
             low bytea, high bytea, revision_at bigint, rows_max bigint)
         RETURNS TABLE (key bytea, value bytea, create_revision bigint, mod_revision bigint,
                        version bigint, lease bigint, applied_index bigint, revision bigint,
                        compact_revision bigint, total bigint)
         AS $$
         #variable_conflict use_column
         BEGIN
             RETURN QUERY {query};
         END
         $$ LANGUAGE plpgsql STABLE
         SET plan_cache_mode = force_generic_plan"
    )
}

/// `sql` with its end conditions `($2::bytea IS NULL OR column < $2)`
/// made into `column < $2` (`bounded`) or `$2::bytea IS NULL`: a plan made
/// once for every call (Postgres' generic plan) cannot fold the NULL test
/// away, and with it scans from the start of the range to the end of the
/// table.
pub(crate) fn with_range_end(sql: &str, bounded: bool) -> String {
    const START: &str = "($2::bytea IS NULL OR ";
    const END: &str = " < $2)";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(START) {
        out.push_str(&rest[..start]);
        let after = &rest[start + START.len()..];
        let end = after.find(END).expect("a range condition ends with < $2)");
        let column = &after[..end];
        if bounded {
            out.push_str(&format!("{column} < $2"));
        } else {
            out.push_str("$2::bytea IS NULL");
        }
        rest = &after[end + END.len()..];
    }
    out.push_str(rest);
    out
}

/// A range read at a revision, in one statement (one snapshot): the
/// applied index, the revisions, the revision read at, how many keys the
/// range holds there, and its rows as [`key_value`] reads them (NULL when
/// none), in key order, at most `$4` of them (NULL: all). `$1`, `$2`: the
/// range (`$2` NULL: unbounded); `$3`: the revision asked for (0 or less:
/// the current one); rows come only when it is readable (the caller tells
/// why not from the revisions).
pub(super) const SELECT_RANGE_AT: &str = "
    WITH state AS (
        -- Scalar subqueries of the one-row tables: a join of them would be
        -- planned for the rows an unanalyzed table is assumed to hold.
        SELECT (SELECT applied_index FROM raftgres_applied) AS applied_index,
               revisions.revision, revisions.compact_revision,
               CASE WHEN $3::bigint <= 0 THEN revisions.revision ELSE $3::bigint END AS at
        FROM (SELECT revision, compact_revision FROM raftgres_kv_revision LIMIT 1) AS revisions),
    -- The range at an earlier revision: each key changed since as its
    -- first later change found it (the put that change replaced; none for
    -- a key created or re-created by it), every other key as it is now.
    -- `$3 > 0` says again what `state.at < state.revision` implies, but as
    -- a condition on a parameter alone: the plan then skips the history
    -- for a read of the current revision. Without it a plan once read
    -- history before looking at the state, so a current read of a key cost
    -- a scan of its whole history.
    later AS (
        SELECT DISTINCT ON (change.key) change.key, change.prev_revision
        FROM raftgres_kv_history AS change, state
        WHERE $3::bigint > 0
          AND state.at < state.revision AND state.at >= state.compact_revision
          -- (`state.at` is $3 here: as a parameter, a plan made for the
          -- read reads the changes since by the index.)
          AND change.revision > $3::bigint
          AND change.key >= $1 AND ($2::bytea IS NULL OR change.key < $2)
        ORDER BY change.key, change.revision, change.sub),
    past AS (
        SELECT replaced.key, replaced.value, replaced.create_revision,
               replaced.revision AS mod_revision, replaced.version, replaced.lease
        FROM later JOIN raftgres_kv_history AS replaced
            ON replaced.revision = later.prev_revision AND replaced.key = later.key
        WHERE replaced.value IS NOT NULL
        UNION ALL
        SELECT kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
        FROM raftgres_kv AS kv, state
        WHERE $3::bigint > 0
          AND state.at < state.revision AND state.at >= state.compact_revision
          AND kv.mod_revision <= state.at
          AND kv.key >= $1 AND ($2::bytea IS NULL OR kv.key < $2)),
    found AS (
        (SELECT kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
         FROM raftgres_kv AS kv, state
         WHERE state.at = state.revision AND kv.key >= $1 AND ($2::bytea IS NULL OR kv.key < $2)
         ORDER BY kv.key LIMIT $4)
        UNION ALL
        (SELECT * FROM past ORDER BY key LIMIT $4)),
    counted AS (
        SELECT CASE WHEN state.at = state.revision THEN
                   (SELECT count(*) FROM raftgres_kv
                    WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2))
               ELSE (SELECT count(*) FROM past) END AS total
        FROM state)
    SELECT found.key, found.value, found.create_revision, found.mod_revision, found.version,
           found.lease, state.applied_index, state.revision, state.compact_revision, counted.total
    FROM state CROSS JOIN counted LEFT JOIN found ON true
    ORDER BY found.key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_statements_have_their_end_conditions_made_for_a_generic_plan() {
        let conditions = SELECT_RANGE_AT.matches("($2::bytea IS NULL OR ").count();
        assert_eq!(conditions, 4, "the range statement's end conditions");
        let bounded = with_range_end(SELECT_RANGE_AT, true);
        let unbounded = select_range_at_planned(false);
        assert_eq!(select_range_at_planned(true), bounded);
        for statement in [bounded.as_str(), unbounded] {
            assert!(!statement.contains("IS NULL OR"), "{statement}");
        }
        for column in ["change.key", "kv.key", "key"] {
            assert!(bounded.contains(&format!("AND {column} < $2")), "{column}");
        }
        assert_eq!(unbounded.matches("AND $2::bytea IS NULL").count(), 4);
        let function = range_at_function();
        assert!(
            !function.contains("$1") && !function.contains("$4"),
            "{function}"
        );
        assert!(function.contains("AND change.key < high"), "{function}");
        assert!(SELECT_RANGE_AT_BOUNDED.contains("raftgres_kv_range_at"));
    }

    #[test]
    fn puts_are_ranked_among_their_keys_puts() {
        let keys: [&[u8]; 6] = [b"a", b"b", b"a", b"c", b"a", b"b"];
        assert_eq!(
            PutRanks::of(&keys),
            PutRanks {
                ranks: vec![1, 1, 2, 1, 3, 2],
                firsts: vec![1, 2, 1, 4, 1, 2],
                previous: vec![0, 0, 1, 0, 3, 2],
                lasts: vec![false, false, false, true, true, true],
            }
        );
        assert_eq!(PutRanks::of(&[]), PutRanks::default());
    }
}
