//! Proves that an append whose connection dies before the reply arrives is
//! resolved by reading back: reported as success when the transaction did
//! commit, and as a retriable failure (with nothing written) when it did
//! not. A small TCP proxy between the store and Postgres cuts the
//! connection at exactly the chosen moment.

use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgStore, StoreError,
};

const FORWARD: u8 = 0;
/// Drop the next request from the store before Postgres sees it.
const CUT_BEFORE_SERVER: u8 = 1;
/// Let Postgres execute the next request, then cut before the reply.
const CUT_AFTER_SERVER: u8 = 2;

async fn proxy_connection(client: TcpStream, server_port: u16, mode: Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut from_client = vec![0_u8; 1 << 16];
    let mut from_server = vec![0_u8; 1 << 16];
    let cut = |armed: u8| {
        mode.compare_exchange(armed, FORWARD, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    };
    // Returning drops both sockets: the store sees its connection close.
    loop {
        tokio::select! {
            read = client_read.read(&mut from_client) => {
                let Ok(count @ 1..) = read else { return };
                if cut(CUT_BEFORE_SERVER) {
                    return;
                }
                if server_write.write_all(&from_client[..count]).await.is_err() {
                    return;
                }
            }
            read = server_read.read(&mut from_server) => {
                let Ok(count @ 1..) = read else { return };
                if cut(CUT_AFTER_SERVER) {
                    return;
                }
                if client_write.write_all(&from_server[..count]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn start_proxy(server_port: u16, mode: Arc<AtomicU8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_connection(client, server_port, mode.clone()));
        }
    });
    port
}

fn batch(indexes: std::ops::RangeInclusive<u64>, term: u64) -> AppendBatch {
    AppendBatch {
        hard_state: Some(HardState {
            term,
            voted_for: Some(1),
        }),
        entries: indexes
            .map(|index| LogEntry {
                index,
                term,
                kind: EntryKind::Command,
                data: vec![7; 16],
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commit_outcome_is_resolved_by_reading_back() {
    let database = TestDatabase::create().await.unwrap();
    let server = tokio_postgres::Config::from_str(database.conninfo()).unwrap();
    let server_port = server.get_ports()[0];
    let mode = Arc::new(AtomicU8::new(FORWARD));
    let proxy_port = start_proxy(server_port, mode.clone()).await;
    let mut config = database.store_config("cluster", 1);
    // Written out rather than appended to: repeated host and port keys add
    // fallback hosts instead of replacing them.
    config.conninfo = format!(
        "host=127.0.0.1 port={proxy_port} user={} dbname={}",
        server.get_user().unwrap_or("postgres"),
        database.name()
    );
    if let Some(password) = server.get_password() {
        config.conninfo += &format!(" password={}", String::from_utf8_lossy(password));
    }
    config.reconnect_lock_wait_max = Duration::from_secs(5);
    let mut store = PgStore::open(config).await.unwrap();
    store.append(batch(1..=2, 1)).await.unwrap();

    // Committed, but the reply is lost: the store must report success.
    mode.store(CUT_AFTER_SERVER, Ordering::SeqCst);
    store.append(batch(3..=5, 2)).await.unwrap();
    assert_eq!(
        mode.load(Ordering::SeqCst),
        FORWARD,
        "the proxy did not cut"
    );
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.last_index(), 5);
    assert_eq!(loaded.hard_state.term, 2);

    // Never reached the server: a retriable failure, nothing written.
    mode.store(CUT_BEFORE_SERVER, Ordering::SeqCst);
    let error = store.append(batch(6..=8, 3)).await.unwrap_err();
    assert_eq!(
        mode.load(Ordering::SeqCst),
        FORWARD,
        "the proxy did not cut"
    );
    assert!(
        matches!(error, StoreError::Unavailable { .. }) && error.is_retriable(),
        "{error}"
    );
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.last_index(), 5);
    assert_eq!(loaded.hard_state.term, 2);

    // Retrying the same batch is safe.
    store.append(batch(6..=8, 3)).await.unwrap();
    assert_eq!(store.load().await.unwrap().last_index(), 8);
    store.close().await;
}
