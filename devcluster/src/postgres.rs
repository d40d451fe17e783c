//! Throw-away local PostgreSQL servers for tests, benchmarks and the dev
//! cluster (`raftgres dev up`, `make run`).
//!
//! A [`PgInstance`] owns a running postmaster on `127.0.0.1`. Starting one
//! initialises the data directory when it is empty (so a dev cluster keeps
//! its data across restarts), writes the raftgres settings into
//! `raftgres.conf` inside the data directory (included from
//! `postgresql.conf`), starts the server with `pg_ctl`, and waits until it
//! answers `SELECT 1`. Dropping the instance stops the server. With
//! [`PgInstanceOptions::tls`] the server also serves TLS: the certificate
//! and key are written into the data directory (mode 0600, owned by the
//! server user, as Postgres demands) and `ssl = on` is set.
//!
//! An instance may instead listen on another address inside a network
//! namespace ([`PgInstanceOptions::network_namespace`]), as a Postgres on
//! another host would: the multi-host test runs one per namespace.
//!
//! Postgres refuses to run as root, so when this process is root every
//! Postgres program runs as the `postgres` OS user through `runuser`, and
//! the data directory is handed to that user.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use raftgres_storage_pg::PgConnector;

/// Host every instance listens on unless told another.
pub const HOST: &str = "127.0.0.1";

/// The OS user that runs Postgres when this process is root.
const SERVER_OS_USER: &str = "postgres";

/// Name of the settings file written into the data directory.
const SETTINGS_FILE: &str = "raftgres.conf";

/// Name of the server log written into the data directory.
const LOG_FILE: &str = "raftgres-server.log";

/// Names of the server's certificate chain and private key, written into
/// the data directory when the instance runs with TLS.
const CERTIFICATE_FILE: &str = "server.crt";
const PRIVATE_KEY_FILE: &str = "server.key";

/// Bound on one readiness probe's connection; the probe repeats until the
/// start timeout.
const READINESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of server log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// Errors starting or controlling an instance.
#[derive(Debug, thiserror::Error)]
pub enum PgInstanceError {
    /// No directory with `initdb`, `pg_ctl` and `pg_isready` was found.
    #[error(
        "postgres binaries (initdb, pg_ctl, pg_isready) not found in PATH, `pg_config --bindir` or /usr/lib/postgresql/*/bin; \
         install PostgreSQL or set RAFTGRES_PG_BIN_DIR"
    )]
    BinariesNotFound,
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Postgres program exited with failure.
    #[error("{command} failed ({status}): {output}\n--- server log tail ---\n{log_tail}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stdout and stderr.
        output: String,
        /// The end of the server log, if any.
        log_tail: String,
    },
    /// The server did not accept queries in time.
    #[error(
        "postgres on {host}:{port} did not accept queries within {timeout:?}: {last_error}\n--- server log tail ---\n{log_tail}"
    )]
    StartTimeout {
        /// Address the server was started on.
        host: String,
        /// Port the server was started on.
        port: u16,
        /// The configured timeout.
        timeout: Duration,
        /// The last readiness probe failure.
        last_error: String,
        /// The end of the server log.
        log_tail: String,
    },
    /// Connecting to the instance failed (used by [`crate::testing`]).
    #[error("{context}: {source}")]
    Connect {
        /// What was being done.
        context: String,
        /// The connector's error.
        #[source]
        source: raftgres_storage_pg::StoreError,
    },
    /// A query against the instance failed (used by [`crate::testing`]).
    #[error("{context}: {source}")]
    Client {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// How to start an instance.
#[derive(Clone, Debug)]
pub struct PgInstanceOptions {
    /// The cluster's data directory; created and initialised when empty.
    pub data_dir: PathBuf,
    /// Port on `host`; a free one (on 127.0.0.1) is picked when `None`.
    pub port: Option<u16>,
    /// Address the server listens on and clients dial: [`HOST`] unless
    /// it runs in a network namespace of its own.
    pub host: String,
    /// Run every Postgres program inside this network namespace (`ip netns
    /// exec`, which needs root). This process may have no route into it,
    /// so readiness is then judged by `pg_isready` alone, run inside.
    pub network_namespace: Option<String>,
    /// Extra `postgresql.conf` settings written after the raftgres defaults
    /// (so they win). Tests use this to start a server with `fsync = off`.
    pub settings: Vec<(String, String)>,
    /// How long to wait for the server to accept queries.
    pub start_timeout: Duration,
    /// Directory with the Postgres programs; discovered when `None`.
    pub bin_dir: Option<PathBuf>,
    /// Serve TLS with this certificate (`ssl = on`); plain text only when
    /// `None`.
    pub tls: Option<PgInstanceTls>,
}

/// The certificate a TLS-serving instance presents.
#[derive(Clone)]
pub struct PgInstanceTls {
    /// PEM: the server's certificate, then any intermediate CA certificates.
    pub certificate_chain_pem: String,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

impl std::fmt::Debug for PgInstanceTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        formatter
            .debug_struct("PgInstanceTls")
            .field("certificate_chain_pem", &self.certificate_chain_pem)
            .finish_non_exhaustive()
    }
}

impl PgInstanceOptions {
    /// Defaults for a data directory: free port, no extra settings, 60 s
    /// start timeout (initdb and first start on a busy 2-core machine).
    pub fn new(data_dir: impl Into<PathBuf>) -> PgInstanceOptions {
        PgInstanceOptions {
            data_dir: data_dir.into(),
            port: None,
            host: HOST.to_string(),
            network_namespace: None,
            settings: Vec::new(),
            start_timeout: Duration::from_secs(60),
            bin_dir: None,
            tls: None,
        }
    }
}

/// A running local Postgres server; stopped on drop unless detached.
#[derive(Debug)]
pub struct PgInstance {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    host: String,
    port: u16,
    network_namespace: Option<String>,
    start_timeout: Duration,
    run_as_server_user: bool,
    running: bool,
    stop_on_drop: bool,
}

impl PgInstance {
    /// Initialises `options.data_dir` if needed, starts the server and waits
    /// until it answers `SELECT 1`.
    pub fn start(options: PgInstanceOptions) -> Result<PgInstance, PgInstanceError> {
        let bin_dir = match options.bin_dir.clone() {
            Some(bin_dir) => bin_dir,
            None => find_bin_dir().ok_or(PgInstanceError::BinariesNotFound)?,
        };
        let data_dir = absolute(&options.data_dir)?;
        let mut instance = PgInstance {
            bin_dir,
            data_dir,
            host: options.host.clone(),
            port: 0,
            network_namespace: options.network_namespace.clone(),
            start_timeout: options.start_timeout,
            run_as_server_user: running_as_root(),
            running: false,
            stop_on_drop: true,
        };
        instance.initialise_if_empty()?;
        // An automatically picked port can be taken by someone else between
        // probing and binding, so retry with a fresh one a few times.
        let attempts = if options.port.is_some() { 1 } else { 3 };
        let mut last_error = None;
        for _ in 0..attempts {
            instance.port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            instance.write_settings(&options.settings, options.tls.as_ref())?;
            match instance.start_server() {
                Ok(()) => return Ok(instance),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `host=HOST port=P user=postgres dbname=postgres`.
    pub fn conninfo(&self) -> String {
        self.conninfo_for("postgres")
    }

    /// The conninfo for another database on this server.
    pub fn conninfo_for(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.host, self.port
        )
    }

    /// The address it listens on (`127.0.0.1` unless told another).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (`pg_ctl stop -m fast`, then `immediate` if that
    /// fails). Stopping a stopped instance does nothing.
    pub fn stop(&mut self) -> Result<(), PgInstanceError> {
        if !self.running {
            return Ok(());
        }
        let fast = self.run_pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"]);
        if fast.is_err() {
            tracing::warn!(data_dir = %self.data_dir.display(), "fast shutdown failed, trying immediate");
            self.run_pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"])?;
        }
        self.running = false;
        Ok(())
    }

    /// Kills the postmaster with SIGKILL, as a crash would; the backends
    /// notice and exit. Use [`PgInstance::start_again`] to recover.
    pub fn kill(&mut self) -> Result<(), PgInstanceError> {
        let pid = self.postmaster_pid()?;
        let output = run(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        if !output.status.success() {
            return Err(self.command_failed("kill -KILL", &output));
        }
        self.running = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts a stopped or killed instance again on the same data directory
    /// and port. After a kill the old backends may still hold shared memory
    /// for a moment, so start attempts repeat until the start timeout.
    pub fn start_again(&mut self) -> Result<(), PgInstanceError> {
        if self.running {
            return Ok(());
        }
        let deadline = Instant::now() + self.start_timeout;
        loop {
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Stops and starts the server.
    pub fn restart(&mut self) -> Result<(), PgInstanceError> {
        self.stop()?;
        self.start_again()
    }

    /// Leaves the server running after this value is dropped (used by
    /// `raftgres-pg start`); stop it later with [`PgInstance::stop_data_dir`].
    pub fn detach(mut self) {
        self.stop_on_drop = false;
    }

    /// Stops whatever server runs on `data_dir` (used by `raftgres-pg stop`).
    pub fn stop_data_dir(data_dir: &Path) -> Result<(), PgInstanceError> {
        let bin_dir = find_bin_dir().ok_or(PgInstanceError::BinariesNotFound)?;
        let mut instance = PgInstance {
            bin_dir,
            data_dir: absolute(data_dir)?,
            host: HOST.to_string(),
            port: 0,
            network_namespace: None,
            start_timeout: Duration::from_secs(60),
            run_as_server_user: running_as_root(),
            running: true,
            stop_on_drop: false,
        };
        instance.stop()
    }

    /// The last `lines` lines of the server log.
    pub fn server_log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.data_dir.join(LOG_FILE)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn initialise_if_empty(&self) -> Result<(), PgInstanceError> {
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        fs::create_dir_all(&self.data_dir).map_err(|source| PgInstanceError::Io {
            context: format!("creating {}", self.data_dir.display()),
            source,
        })?;
        set_mode(&self.data_dir, 0o700)?;
        self.give_to_server_user(&self.data_dir)?;
        // --no-sync: these are throw-away or dev clusters; the server itself
        // always runs with fsync on, so everything written after initdb is
        // durable, and skipping initdb's final sync saves seconds per test.
        let mut command = self.command("initdb");
        command.arg("-D").arg(&self.data_dir).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let output = run(&mut command)?;
        if !output.status.success() {
            return Err(self.command_failed("initdb", &output));
        }
        let include = format!("\ninclude_if_exists = '{SETTINGS_FILE}'\n");
        let config_path = self.data_dir.join("postgresql.conf");
        let mut config =
            fs::read_to_string(&config_path).map_err(|source| PgInstanceError::Io {
                context: format!("reading {}", config_path.display()),
                source,
            })?;
        config.push_str(&include);
        write_file(&config_path, &config)
    }

    fn write_settings(
        &self,
        extra: &[(String, String)],
        tls: Option<&PgInstanceTls>,
    ) -> Result<(), PgInstanceError> {
        let socket_dir = self.data_dir.display().to_string().replace('\'', "''");
        let mut text = format!(
            "# Written by raftgres PgInstance at every start.\n\
             port = {}\n\
             listen_addresses = '{}'\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n",
            self.port, self.host
        );
        if let Some(tls) = tls {
            self.write_tls_files(tls)?;
            text.push_str(&format!(
                "ssl = on\nssl_cert_file = '{CERTIFICATE_FILE}'\nssl_key_file = '{PRIVATE_KEY_FILE}'\n"
            ));
        }
        for (name, value) in extra {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let path = self.data_dir.join(SETTINGS_FILE);
        write_file(&path, &text)?;
        self.give_to_server_user(&path)?;
        self.trust_own_address()
    }

    /// initdb trusts connections from loopback only; a server listening on
    /// another address (its own host's, in a network namespace) also trusts
    /// connections from that address: the node on the same host.
    fn trust_own_address(&self) -> Result<(), PgInstanceError> {
        if self.host == HOST {
            return Ok(());
        }
        let path = self.data_dir.join("pg_hba.conf");
        let mut rules = fs::read_to_string(&path).map_err(|source| PgInstanceError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        let rule = format!("host all all {}/32 trust", self.host);
        if rules.lines().any(|line| line.trim() == rule) {
            return Ok(());
        }
        rules.push_str(&format!(
            "\n# Added by raftgres PgInstance: the server's own address.\n{rule}\n"
        ));
        write_file(&path, &rules)?;
        self.give_to_server_user(&path)
    }

    /// Postgres refuses a private key that others can read: both files are
    /// written with mode 0600 and handed to the server user.
    fn write_tls_files(&self, tls: &PgInstanceTls) -> Result<(), PgInstanceError> {
        for (name, contents) in [
            (CERTIFICATE_FILE, &tls.certificate_chain_pem),
            (PRIVATE_KEY_FILE, &tls.private_key_pem),
        ] {
            let path = self.data_dir.join(name);
            write_file(&path, contents)?;
            set_mode(&path, 0o600)?;
            self.give_to_server_user(&path)?;
        }
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), PgInstanceError> {
        let timeout_seconds = self.start_timeout.as_secs().max(1).to_string();
        let log = self.data_dir.join(LOG_FILE);
        let log = log.to_string_lossy();
        self.run_pg_ctl(&["-l", &log, "-w", "-t", &timeout_seconds, "start"])?;
        self.running = true;
        self.wait_until_ready()
    }

    fn wait_until_ready(&self) -> Result<(), PgInstanceError> {
        let deadline = Instant::now() + self.start_timeout;
        let port = self.port.to_string();
        loop {
            let ready = run(self
                .command("pg_isready")
                .args(["-q", "-h", &self.host, "-p", &port]))?;
            let last_error = if ready.status.success() && self.network_namespace.is_some() {
                // No route from here into the namespace: pg_isready, run
                // inside it, has seen the server accept connections.
                return Ok(());
            } else if ready.status.success() {
                match select_one(&self.conninfo()) {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                }
            } else {
                format!("pg_isready: {}", ready.status)
            };
            if Instant::now() >= deadline {
                return Err(PgInstanceError::StartTimeout {
                    host: self.host.clone(),
                    port: self.port,
                    timeout: self.start_timeout,
                    last_error,
                    log_tail: self.server_log_tail(LOG_TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run_pg_ctl(&self, arguments: &[&str]) -> Result<(), PgInstanceError> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data_dir).args(arguments);
        let output = run(&mut command)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(self.command_failed(&format!("pg_ctl {}", arguments.join(" ")), &output))
        }
    }

    fn postmaster_pid(&self) -> Result<u32, PgInstanceError> {
        let path = self.data_dir.join("postmaster.pid");
        let text = fs::read_to_string(&path).map_err(|source| PgInstanceError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| PgInstanceError::Io {
                context: format!("parsing {}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no pid on line 1"),
            })
    }

    /// A command for a Postgres program, run as the server user when root
    /// and inside the instance's network namespace if it has one.
    fn command(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        let mut words: Vec<std::ffi::OsString> = Vec::new();
        if let Some(namespace) = &self.network_namespace {
            words.extend(["ip", "netns", "exec", namespace.as_str()].map(Into::into));
        }
        if self.run_as_server_user {
            words.extend(["runuser", "-u", SERVER_OS_USER, "--"].map(Into::into));
        }
        words.push(path.into_os_string());
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        // The server user may not be allowed into our working directory.
        command.current_dir("/");
        command
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), PgInstanceError> {
        if !self.run_as_server_user {
            return Ok(());
        }
        let output = run(Command::new("chown")
            .arg(format!("{SERVER_OS_USER}:"))
            .arg(path))?;
        if !output.status.success() {
            return Err(self.command_failed("chown", &output));
        }
        Ok(())
    }

    fn command_failed(&self, command: &str, output: &Output) -> PgInstanceError {
        PgInstanceError::CommandFailed {
            command: command.to_string(),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            log_tail: self.server_log_tail(LOG_TAIL_LINES),
        }
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        if self.stop_on_drop {
            if let Err(error) = self.stop() {
                tracing::warn!(%error, data_dir = %self.data_dir.display(), "could not stop postgres");
            }
        }
    }
}

/// Finds the Postgres programs: `RAFTGRES_PG_BIN_DIR`, PATH,
/// `pg_config --bindir`, then the highest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_programs = |dir: &Path| {
        ["initdb", "pg_ctl", "pg_isready"]
            .iter()
            .all(|name| dir.join(name).is_file())
    };
    let from_env = std::env::var_os("RAFTGRES_PG_BIN_DIR").map(PathBuf::from);
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    from_env
        .into_iter()
        .chain(from_path)
        .chain(from_pg_config)
        .chain(versioned.into_iter().rev().map(|(_, dir)| dir))
        .find(|dir| has_programs(dir))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, PgInstanceError> {
    let listener = TcpListener::bind((HOST, 0)).map_err(|source| PgInstanceError::Io {
        context: "probing for a free port".into(),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| PgInstanceError::Io {
            context: "probing for a free port".into(),
            source,
        })?
        .port();
    Ok(port)
}

/// Effective uid 0, read from /proc so that no unsafe libc call is needed.
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            let effective = line.split_whitespace().nth(2)?;
            Some(effective == "0")
        })
        .unwrap_or(false)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
}

fn run(command: &mut Command) -> Result<Output, PgInstanceError> {
    command.output().map_err(|source| PgInstanceError::Io {
        context: format!("running {:?}", command.get_program()),
        source,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, PgInstanceError> {
    std::path::absolute(path).map_err(|source| PgInstanceError::Io {
        context: format!("resolving {}", path.display()),
        source,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), PgInstanceError> {
    fs::write(path, text).map_err(|source| PgInstanceError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PgInstanceError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        PgInstanceError::Io {
            context: format!("setting permissions of {}", path.display()),
            source,
        }
    })
}

/// Runs `SELECT 1` on a private runtime in its own thread, so this works
/// from synchronous code and from inside an async runtime alike.
fn select_one(conninfo: &str) -> Result<(), String> {
    let conninfo = conninfo.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            let connector = PgConnector::new(&conninfo).map_err(|error| error.to_string())?;
            let (client, connection) = connector
                .connect(READINESS_CONNECT_TIMEOUT, "raftgres-pg-instance")
                .await
                .map_err(|error| error.to_string())?;
            let result = client.simple_query("SELECT 1").await;
            drop(client);
            let _ = connection.await;
            result.map(|_| ()).map_err(|error| error.to_string())
        })
    })
    .join()
    .map_err(|_| "readiness probe panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_postgres_programs() {
        let bin_dir = find_bin_dir().expect("postgres installed");
        assert!(bin_dir.join("pg_ctl").is_file());
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert!(port > 0);
        TcpListener::bind((HOST, port)).expect("port is free");
    }
}
