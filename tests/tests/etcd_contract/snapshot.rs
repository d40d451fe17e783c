//! The snapshot round trip: the product's state exported page by page
//! from one database and imported into another gives the same three
//! tables.

use prost::Message as _;
use raftgres::server::state_machine::{ImportError, ImportPage};
use raftgres::server::{KvStateMachine, StateMachine};
use raftgres_devcluster::testing::TestDatabase;
use raftgres_proto::v1 as wire;
use tokio_postgres::IsolationLevel;

use crate::product::read_state;
use crate::State;

/// Bytes per exported page: small, so that the state takes many pages and
/// both the current rows and the history are cut across pages.
const PAGE_BYTES_MAX: usize = 200;

/// How the export was cut.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    pub(crate) pages: usize,
    pub(crate) with_rows: usize,
    pub(crate) with_history: usize,
}

/// Exports `source`'s state in pages inside one REPEATABLE READ
/// transaction, checks every page and tampered ones with `validate_page`,
/// imports the pages into a fresh database (twice: the second import
/// replaces what the first left; then a third time without the history's
/// pointers, as a version before them exported it), and returns the
/// imported tables, which must equal `source`'s (`read_state` checks the
/// pointers).
pub(crate) async fn round_trip(source: &TestDatabase, what: &str) -> (State, Pages) {
    let mut source_client = source.client().await.expect("a client");
    let exported = read_state(&source_client, 0).await;
    let pages = export(&mut source_client).await;
    let cut = check_pages(&pages, what);
    let target = TestDatabase::create().await.expect("a test database");
    let mut target_client = target.client().await.expect("a client");
    KvStateMachine
        .migrate(&target_client)
        .await
        .expect("the KV tables");
    let unlinked = without_pointers(&pages);
    for (attempt, pages) in [
        ("into the fresh database", &pages),
        ("over the imported state", &pages),
        ("without the history's pointers", &unlinked),
    ] {
        import(&mut target_client, pages).await;
        let imported = read_state(&target_client, 0).await;
        assert_eq!(
            exported, imported,
            "{what}: the exported (left) and imported (right) tables differ after the import {attempt}"
        );
    }
    check_tampered_import(&mut target_client, &pages, &exported, what).await;
    (exported, cut)
}

/// `pages` with no change naming the put it replaced.
fn without_pointers(pages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    pages
        .iter()
        .map(|data| {
            let mut page = wire::KvSnapshotPage::decode(data.as_slice()).expect("a KvSnapshotPage");
            for change in &mut page.history {
                change.prev_revision = None;
            }
            page.encode_to_vec()
        })
        .collect()
}

async fn export(client: &mut tokio_postgres::Client) -> Vec<Vec<u8>> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .expect("a REPEATABLE READ transaction");
    let mut pages = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = KvStateMachine
            .export_page(&transaction, after.as_deref(), PAGE_BYTES_MAX)
            .await
            .expect("a page");
        pages.push(page.data);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    transaction.commit().await.expect("the export's end");
    pages
}

/// Every page passes `validate_page`; a page with its rows or its history
/// reversed does not.
fn check_pages(pages: &[Vec<u8>], what: &str) -> Pages {
    let mut cut = Pages {
        pages: pages.len(),
        ..Pages::default()
    };
    let mut tampered = Vec::new();
    for (number, data) in pages.iter().enumerate() {
        if let Err(error) = KvStateMachine.validate_page(data) {
            panic!("{what}: exported page {number} is refused: {error}");
        }
        let page = wire::KvSnapshotPage::decode(data.as_slice()).expect("a KvSnapshotPage");
        assert_eq!(
            page.revisions.is_some(),
            number == 0,
            "{what}: the revisions travel on the first page only"
        );
        cut.with_rows += usize::from(!page.rows.is_empty());
        cut.with_history += usize::from(!page.history.is_empty());
        if page.rows.len() > 1 {
            let mut reversed = page.clone();
            reversed.rows.reverse();
            tampered.push(("rows", reversed.encode_to_vec()));
        }
        if let Some(change) = page.history.first() {
            let mut pointing_ahead = page.clone();
            pointing_ahead.history[0].prev_revision = Some(change.revision + 1);
            tampered.push(("pointer", pointing_ahead.encode_to_vec()));
        }
        if page.history.len() > 1 {
            let mut reversed = page;
            reversed.history.reverse();
            tampered.push(("history", reversed.encode_to_vec()));
        }
    }
    assert!(
        ["rows", "history", "pointer"]
            .iter()
            .all(|wanted| tampered.iter().any(|(part, _)| part == wanted)),
        "{what}: no page holds two rows and none two changes: {cut:?}"
    );
    for (part, data) in &tampered {
        assert!(
            KvStateMachine.validate_page(data).is_err(),
            "{what}: a page with its {part} out of order (a pointer: ahead of its change) is accepted"
        );
    }
    cut
}

async fn import(client: &mut tokio_postgres::Client, pages: &[Vec<u8>]) {
    let transaction = client.transaction().await.expect("a transaction");
    for (number, data) in pages.iter().enumerate() {
        let page = ImportPage {
            data,
            first: number == 0,
            last: number + 1 == pages.len(),
        };
        KvStateMachine
            .import_page(&transaction, page)
            .await
            .unwrap_or_else(|error| panic!("importing page {number}: {error}"));
    }
    transaction.commit().await.expect("the import's commit");
}

/// A first page with its rows out of order is refused by `import_page`
/// itself, and the state stays as it was.
async fn check_tampered_import(
    client: &mut tokio_postgres::Client,
    pages: &[Vec<u8>],
    before: &State,
    what: &str,
) {
    let mut first = wire::KvSnapshotPage::decode(pages[0].as_slice()).expect("a KvSnapshotPage");
    if first.rows.len() < 2 {
        return;
    }
    first.rows.reverse();
    let data = first.encode_to_vec();
    let transaction = client.transaction().await.expect("a transaction");
    let page = ImportPage {
        data: &data,
        first: true,
        last: pages.len() == 1,
    };
    let refused = KvStateMachine.import_page(&transaction, page).await;
    assert!(
        matches!(refused, Err(ImportError::Invalid(_))),
        "{what}: a first page with its rows out of order is imported: {refused:?}"
    );
    transaction.rollback().await.expect("the rollback");
    assert_eq!(
        &read_state(client, 0).await,
        before,
        "{what}: a refused import changed the tables"
    );
}
