//! Proves that connections honour libpq's `sslmode` and `sslrootcert`
//! against real Postgres servers: one serving TLS with a certificate for
//! `localhost` signed by a CA made here (rcgen), one without TLS.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use raftgres_devcluster::postgres::PgInstanceTls;
use raftgres_devcluster::testing::{ScratchInstance, TestDatabase};
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgConnector, PgStore, PgStoreConfig,
    SslMode, StoreError,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A server and the files a client needs to trust it (or not).
struct Server {
    scratch: ScratchInstance,
    /// The CA that signed the server's certificate.
    ca_path: PathBuf,
    /// A CA that signed nothing the server presents.
    other_ca_path: PathBuf,
}

impl Server {
    /// A conninfo for database `postgres` that resolves `host` to
    /// 127.0.0.1, so that any host name can be tried without DNS.
    fn conninfo(&self, host: &str, tls_keys: &str) -> String {
        self.conninfo_for(host, "postgres", tls_keys)
    }

    fn conninfo_for(&self, host: &str, database: &str, tls_keys: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname={database} {tls_keys}",
            self.scratch.instance().port()
        )
    }

    fn ca(&self) -> String {
        self.ca_path.display().to_string()
    }

    fn other_ca(&self) -> String {
        self.other_ca_path.display().to_string()
    }
}

/// A self-signed CA: its certificate and key.
fn certificate_authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).expect("CA certificate"), key)
}

fn start_server(with_tls: bool) -> Server {
    let (ca, ca_key) = certificate_authority("raftgres test CA");
    let (other_ca, _) = certificate_authority("raftgres unrelated CA");
    let scratch = if with_tls {
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let certificate = params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        ScratchInstance::start_with_tls(
            &[],
            PgInstanceTls {
                certificate_chain_pem: certificate.pem(),
                private_key_pem: server_key.serialize_pem(),
            },
        )
    } else {
        ScratchInstance::start(&[])
    }
    .expect("start postgres");
    let ca_path = scratch.directory().join("ca.crt");
    let other_ca_path = scratch.directory().join("other-ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&other_ca_path, other_ca.pem()).unwrap();
    Server {
        scratch,
        ca_path,
        other_ca_path,
    }
}

static TLS_SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());
static PLAIN_SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());

/// One server per kind shared by the tests that run at the same time in
/// this process, stopped when the last of them ends.
fn shared(slot: &Mutex<Weak<Server>>, with_tls: bool) -> Arc<Server> {
    let mut slot = slot.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(start_server(with_tls));
    *slot = Arc::downgrade(&server);
    server
}

fn tls_server() -> Arc<Server> {
    shared(&TLS_SERVER, true)
}

fn plain_server() -> Arc<Server> {
    shared(&PLAIN_SERVER, false)
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, StoreError> {
    let connector = PgConnector::new(conninfo)?;
    let (client, _connection_task) = connector.connect(CONNECT_TIMEOUT, "tls-test").await?;
    Ok(client)
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query pg_stat_ssl")
        .get(0)
}

fn tls_reason(result: Result<tokio_postgres::Client, StoreError>) -> String {
    match result {
        Err(error @ StoreError::Tls { .. }) => {
            assert!(!error.is_retriable());
            error.to_string()
        }
        Err(other) => panic!("expected StoreError::Tls, got {other:?}"),
        Ok(_) => panic!("expected StoreError::Tls, but the connection succeeded"),
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_and_host_name_connects_encrypted() {
    let server = tls_server();
    let keys = format!("sslmode=verify-full sslrootcert={}", server.ca());
    let client = connect(&server.conninfo("localhost", &keys)).await.unwrap();
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn verify_full_with_another_ca_is_refused_naming_the_root_file() {
    let server = tls_server();
    let keys = format!("sslmode=verify-full sslrootcert={}", server.other_ca());
    let reason = tls_reason(connect(&server.conninfo("localhost", &keys)).await);
    assert!(reason.contains(&server.other_ca()), "{reason}");
    assert!(reason.contains("not signed by a CA"), "{reason}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name() {
    let server = tls_server();
    let keys = format!("sslmode=verify-full sslrootcert={}", server.ca());
    let reason = tls_reason(connect(&server.conninfo("db.example", &keys)).await);
    assert!(reason.contains("db.example"), "{reason}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let server = tls_server();
    let keys = format!("sslmode=verify-ca sslrootcert={}", server.ca());
    let client = connect(&server.conninfo("db.example", &keys))
        .await
        .unwrap();
    assert!(uses_tls(&client).await);
    let keys = format!("sslmode=verify-ca sslrootcert={}", server.other_ca());
    tls_reason(connect(&server.conninfo("db.example", &keys)).await);
}

#[tokio::test]
async fn require_without_a_root_certificate_connects_encrypted_without_checking() {
    let server = tls_server();
    // The certificate names localhost, not db.example, and no root is
    // given: require encrypts all the same, as libpq does.
    let client = connect(&server.conninfo("db.example", "sslmode=require"))
        .await
        .unwrap();
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn require_with_a_root_certificate_checks_the_chain() {
    let server = tls_server();
    let keys = format!("sslmode=require sslrootcert={}", server.other_ca());
    tls_reason(connect(&server.conninfo("localhost", &keys)).await);
}

#[tokio::test]
async fn prefer_is_the_default_and_encrypts_when_the_server_offers_tls() {
    let server = tls_server();
    let conninfo = server.conninfo("localhost", "");
    assert_eq!(
        PgConnector::new(&conninfo).unwrap().ssl_mode(),
        SslMode::Prefer
    );
    let client = connect(&conninfo).await.unwrap();
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn disable_connects_in_plain_text_to_a_tls_server() {
    let server = tls_server();
    let client = connect(&server.conninfo("localhost", "sslmode=disable"))
        .await
        .unwrap();
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    let server = plain_server();
    let reason = tls_reason(connect(&server.conninfo("localhost", "sslmode=require")).await);
    assert!(reason.contains("does not support TLS"), "{reason}");
    let keys = format!("sslmode=verify-full sslrootcert={}", server.ca());
    tls_reason(connect(&server.conninfo("localhost", &keys)).await);
}

#[tokio::test]
async fn prefer_falls_back_to_plain_text_when_the_server_has_no_tls() {
    let server = plain_server();
    let client = connect(&server.conninfo("localhost", "sslmode=prefer"))
        .await
        .unwrap();
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn a_missing_root_certificate_is_named_before_any_connection_attempt() {
    // Nothing listens on this port: an attempt to connect would fail with
    // Unavailable, not InvalidConfig.
    let port = raftgres_devcluster::postgres::free_port().unwrap();
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=postgres sslmode=verify-full sslrootcert=/nonexistent/raftgres-ca.crt"
    );
    let result = PgStore::open(PgStoreConfig::new(conninfo, "tls", 1)).await;
    match result {
        Err(StoreError::InvalidConfig { reason }) => {
            assert!(reason.contains("/nonexistent/raftgres-ca.crt"), "{reason}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_opened_through_tls_appends_and_loads() {
    let server = tls_server();
    let database = TestDatabase::create_on(&server.conninfo("localhost", ""), None)
        .await
        .unwrap();
    let keys = format!("sslmode=verify-full sslrootcert={}", server.ca());
    let conninfo = server.conninfo_for("localhost", database.name(), &keys);
    let mut store = PgStore::open(PgStoreConfig::new(conninfo, "tls", 1))
        .await
        .unwrap();
    let hard_state = HardState {
        term: 2,
        voted_for: Some(1),
    };
    let entries: Vec<LogEntry> = (1..=3)
        .map(|index| LogEntry {
            index,
            term: 2,
            kind: EntryKind::Command,
            data: vec![index as u8],
        })
        .collect();
    store
        .append(AppendBatch {
            hard_state: Some(hard_state),
            entries: entries.clone(),
        })
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.hard_state, hard_state);
    assert_eq!(loaded.entries, entries);
    let observer = connect(&server.conninfo_for("localhost", database.name(), ""))
        .await
        .unwrap();
    let store_uses_tls: bool = observer
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'raftgres-node-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(store_uses_tls);
    store.close().await;
}
