//! Fixtures for tests that need a real Postgres, here and in other crates.
//!
//! [`TestDatabase::create`] gives each test its own fresh database
//! (`CREATE DATABASE ... TEMPLATE template0`) and drops it afterwards. The
//! server is the one named by the `RAFTGRES_TEST_PG` environment variable
//! (a key/value conninfo, e.g. the line `raftgres-pg start` prints), or else
//! an instance this process starts lazily in a temporary directory and stops
//! when the last database using it is dropped. nextest runs each test in its
//! own process, so without the variable every test starts its own server.
//!
//! [`ScratchInstance`] is a private server in a temporary directory, for
//! tests that crash the server or need unusual settings and so must never
//! touch a shared one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use crate::postgres::{PgInstance, PgInstanceError, PgInstanceOptions, PgInstanceTls};
use raftgres_storage_pg::PgConnector;
use raftgres_storage_pg::PgStoreConfig;

/// The environment variable holding the conninfo of a shared test server.
pub const TEST_PG_ENV: &str = "RAFTGRES_TEST_PG";

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The lazily started per-process server, alive while any database uses it.
static PROCESS_INSTANCE: Mutex<Weak<ScratchInstance>> = Mutex::new(Weak::new());

/// A unique name within this machine: process id, sequence, clock.
fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{sequence}_{nanos:x}", std::process::id())
}

/// A Postgres server in a temporary directory; stopped and deleted on drop.
#[derive(Debug)]
pub struct ScratchInstance {
    instance: PgInstance,
    directory: PathBuf,
}

impl ScratchInstance {
    /// Starts a server with the raftgres defaults plus `settings`.
    pub fn start(settings: &[(&str, &str)]) -> Result<ScratchInstance, PgInstanceError> {
        ScratchInstance::start_with(settings, None)
    }

    /// Starts a server that also serves TLS with `tls`'s certificate.
    pub fn start_with_tls(
        settings: &[(&str, &str)],
        tls: PgInstanceTls,
    ) -> Result<ScratchInstance, PgInstanceError> {
        ScratchInstance::start_with(settings, Some(tls))
    }

    fn start_with(
        settings: &[(&str, &str)],
        tls: Option<PgInstanceTls>,
    ) -> Result<ScratchInstance, PgInstanceError> {
        let directory = std::env::temp_dir().join(unique_name("raftgres-pg"));
        std::fs::create_dir_all(&directory).map_err(|source| PgInstanceError::Io {
            context: format!("creating {}", directory.display()),
            source,
        })?;
        let mut options = PgInstanceOptions::new(directory.join("data"));
        options.settings = settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        options.tls = tls;
        match PgInstance::start(options) {
            Ok(instance) => Ok(ScratchInstance {
                instance,
                directory,
            }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&directory);
                Err(error)
            }
        }
    }

    /// The server.
    pub fn instance(&self) -> &PgInstance {
        &self.instance
    }

    /// The server, for kill and restart.
    pub fn instance_mut(&mut self) -> &mut PgInstance {
        &mut self.instance
    }

    /// The temporary directory holding the data directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

impl Drop for ScratchInstance {
    fn drop(&mut self) {
        if let Err(error) = self.instance.stop() {
            tracing::warn!(%error, "could not stop scratch postgres");
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A fresh database for one test; dropped (with `FORCE`) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    conninfo: String,
    admin_conninfo: String,
    /// Keeps the per-process server alive while this database exists.
    _server: Option<Arc<ScratchInstance>>,
}

impl TestDatabase {
    /// A new database on the `RAFTGRES_TEST_PG` server, or on this
    /// process's own server (started on first use; this blocks the calling
    /// thread for the few seconds initdb and start-up take).
    pub async fn create() -> Result<TestDatabase, PgInstanceError> {
        if let Ok(conninfo) = std::env::var(TEST_PG_ENV) {
            if !conninfo.trim().is_empty() {
                return TestDatabase::create_on(&conninfo, None).await;
            }
        }
        let server = {
            let mut shared = PROCESS_INSTANCE
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match shared.upgrade() {
                Some(server) => server,
                None => {
                    let server = Arc::new(ScratchInstance::start(&[])?);
                    *shared = Arc::downgrade(&server);
                    server
                }
            }
        };
        let admin_conninfo = server.instance().conninfo();
        TestDatabase::create_on(&admin_conninfo, Some(server)).await
    }

    /// A new database on the server `admin_conninfo` points at (a key/value
    /// conninfo of a role allowed to create databases).
    pub async fn create_on(
        admin_conninfo: &str,
        server: Option<Arc<ScratchInstance>>,
    ) -> Result<TestDatabase, PgInstanceError> {
        let name = unique_name("raftgres_test");
        let client = connect(admin_conninfo).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .await
            .map_err(|source| PgInstanceError::Client {
                context: format!("creating test database {name}"),
                source,
            })?;
        Ok(TestDatabase {
            conninfo: format!("{admin_conninfo} dbname={name}"),
            admin_conninfo: admin_conninfo.to_string(),
            name,
            _server: server,
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Conninfo for this database.
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// A store configuration for this database.
    pub fn store_config(&self, cluster_id: &str, node_id: u64) -> PgStoreConfig {
        PgStoreConfig::new(self.conninfo.clone(), cluster_id, node_id)
    }

    /// A plain client on this database, for assertions and tampering.
    pub async fn client(&self) -> Result<tokio_postgres::Client, PgInstanceError> {
        connect(&self.conninfo).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_conninfo = self.admin_conninfo.clone();
        let name = self.name.clone();
        // Drop cannot await, and may run inside a runtime: use a private
        // runtime on a private thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let client = connect(&admin_conninfo)
                    .await
                    .map_err(|error| error.to_string())?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            tracing::warn!(database = %self.name, "could not drop test database");
        }
    }
}

/// Bound on connecting to the test server: generous, because a 2-core
/// machine running a whole suite can be slow to fork a backend.
const TEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects (with the conninfo's TLS settings) and drives the connection on
/// the current runtime.
async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, PgInstanceError> {
    let context = "connecting to the test server";
    let connected = match PgConnector::new(conninfo) {
        Ok(connector) => {
            connector
                .connect(TEST_CONNECT_TIMEOUT, "raftgres-test")
                .await
        }
        Err(error) => Err(error),
    };
    let (client, _connection_task) = connected.map_err(|source| PgInstanceError::Connect {
        context: context.into(),
        source,
    })?;
    Ok(client)
}
