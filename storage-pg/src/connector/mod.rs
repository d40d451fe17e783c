//! [`PgConnector`]: every connection raftgres opens to Postgres, with TLS
//! as libpq's `sslmode` and `sslrootcert` ask for.
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it, else plain | like `require` |
//! | `require` | always; fails if the server has no TLS | chain checked against `sslrootcert` when given, else not checked |
//! | `verify-ca` | always | chain checked against `sslrootcert` (required) |
//! | `verify-full` | always | chain and host name checked (`sslrootcert` required) |
//!
//! `require` without `sslrootcert` encrypts without checking who answers,
//! as libpq does: it protects against eavesdropping, not against a man in
//! the middle. `prefer` falls back to plain text only when the server says
//! it has no TLS; a handshake that fails (for example a certificate not
//! signed by `sslrootcert`) is an error, never a silent downgrade. The root
//! file is read once, when the connector is built, so a missing or invalid
//! file is reported before any connection is attempted.

mod conninfo;
mod tls;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::error::StoreError;
use crate::pg::session::classify;

/// How much TLS a connection demands; libpq's `sslmode` values, except
/// `allow` (plain text first), which raftgres does not offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, plain text otherwise.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is checked only when `sslrootcert` is
    /// given.
    Require,
    /// TLS, with a certificate chain leading to `sslrootcert`.
    VerifyCa,
    /// TLS, with a certificate chain leading to `sslrootcert` that names the
    /// host connected to.
    VerifyFull,
}

impl SslMode {
    /// The conninfo spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(text: &str) -> Result<SslMode, String> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err("sslmode=allow is not supported; use disable or prefer".into()),
            other => Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How often TCP keepalives probe an idle connection, so that a server that
/// vanished without closing the socket is noticed within about a minute.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);

/// Opens connections for one conninfo. Build it once (this reads and checks
/// `sslrootcert`) and connect as often as needed; cloning is cheap.
#[derive(Clone)]
pub struct PgConnector {
    /// The conninfo without `sslmode` and `sslrootcert`, with tokio-postgres'
    /// own `sslmode` set to the nearest value it knows.
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    tls: tls::MakeRustlsConnect,
    /// `host:port database name`, for error messages.
    target: String,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it may hold a password.
        formatter
            .debug_struct("PgConnector")
            .field("target", &self.target)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl PgConnector {
    /// Parses a libpq key/value or URL conninfo, including `sslmode`
    /// (see [`SslMode`]) and `sslrootcert=PATH` (a PEM file of CA
    /// certificates). Fails with [`StoreError::InvalidConfig`] on a malformed
    /// conninfo, a mode that needs `sslrootcert` without it, or a root file
    /// that cannot be read or holds no valid certificate (the message names
    /// the file).
    pub fn new(conninfo: &str) -> Result<PgConnector, StoreError> {
        let invalid = |reason: String| StoreError::InvalidConfig {
            reason: format!("conninfo is not valid: {reason}"),
        };
        let split = conninfo::split_tls_keys(conninfo).map_err(invalid)?;
        let ssl_mode = match &split.ssl_mode {
            Some(text) => text.parse::<SslMode>().map_err(invalid)?,
            None => SslMode::default(),
        };
        let mut config = tokio_postgres::Config::from_str(&split.rest)
            .map_err(|error| invalid(error_chain(&error)))?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let root_certificate_path = match ssl_mode {
            // libpq does not look at the root file when TLS is off.
            SslMode::Disable => None,
            _ => split.ssl_root_certificate.clone(),
        };
        let roots = match &root_certificate_path {
            Some(path) if path == "system" => {
                return Err(invalid(
                    "sslrootcert=system is not supported; name a PEM file of CA certificates"
                        .into(),
                ))
            }
            Some(path) => Some(tls::load_root_certificates(Path::new(path)).map_err(invalid)?),
            None => None,
        };
        let verification = match (ssl_mode, &roots) {
            (SslMode::VerifyFull, _) => tls::Verification::ChainAndHostName,
            (SslMode::VerifyCa, _) | (_, Some(_)) => tls::Verification::Chain,
            _ => tls::Verification::EncryptOnly,
        };
        if verification != tls::Verification::EncryptOnly && roots.is_none() {
            return Err(invalid(format!(
                "sslmode={ssl_mode} needs sslrootcert=PATH (a PEM file of the CA certificates that sign the server's certificate)"
            )));
        }
        let client_config = tls::client_config(verification, roots).map_err(invalid)?;
        let target = describe_target(&config);
        Ok(PgConnector {
            config,
            ssl_mode,
            tls: tls::MakeRustlsConnect::new(client_config, root_certificate_path),
            target,
        })
    }

    /// The TLS mode the conninfo asked for.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// `host:port database NAME` of the first host, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Opens one connection and spawns the task that drives it on the
    /// current runtime; the task ends when the client is dropped.
    /// `connect_timeout` bounds the whole start-up, TLS handshake included;
    /// `application_name` shows in `pg_stat_activity`. Connection failures
    /// are the retriable [`StoreError::Unavailable`]; a refused TLS
    /// handshake (untrusted certificate, wrong host name, no TLS on the
    /// server under `require`) is [`StoreError::Tls`], which is not.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
        application_name: &str,
    ) -> Result<(Client, JoinHandle<()>), StoreError> {
        let mut config = self.config.clone();
        config
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVES_IDLE)
            .application_name(application_name);
        let context = format!("connecting to {} (sslmode={})", self.target, self.ssl_mode);
        // connect_timeout bounds only the TCP connect; the outer timeout also
        // bounds a server that accepts the socket but never answers.
        let connect = config.connect(self.tls.clone());
        let (client, connection) = match tokio::time::timeout(connect_timeout, connect).await {
            Err(_) => {
                return Err(StoreError::Unavailable {
                    context,
                    reason: format!("no answer within connect_timeout {connect_timeout:?}"),
                })
            }
            Ok(Err(error)) => return Err(connect_error(context, error)),
            Ok(Ok(pair)) => pair,
        };
        let connection_task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres connection ended");
            }
        });
        Ok((client, connection_task))
    }
}

/// A TLS refusal becomes [`StoreError::Tls`]; everything else is classified
/// like any other client error.
fn connect_error(context: String, error: tokio_postgres::Error) -> StoreError {
    let source = std::error::Error::source(&error);
    let refused_by_us = source.is_some_and(|source| source.is::<tls::TlsRefused>());
    // tokio-postgres reports "server does not support TLS" (under require)
    // as a TLS error with a plain message as its source.
    let refused_by_tokio_postgres = error
        .to_string()
        .starts_with("error performing TLS handshake")
        && !source.is_some_and(|source| source.is::<std::io::Error>());
    if refused_by_us || refused_by_tokio_postgres {
        return StoreError::Tls {
            context,
            reason: error_chain(&error),
        };
    }
    classify(&context, error)
}

/// An error and its causes, `outer: inner: innermost`: tokio-postgres'
/// errors print only their kind ("error performing TLS handshake") and keep
/// the useful part in the source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port} database {database}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_reason(result: Result<PgConnector, StoreError>) -> String {
        match result {
            Err(StoreError::InvalidConfig { reason }) => reason,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn ssl_modes_parse_as_libpq_spells_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
        assert!("allow".parse::<SslMode>().unwrap_err().contains("allow"));
        assert!("verify_full".parse::<SslMode>().is_err());
    }

    #[test]
    fn prefer_is_the_default_and_other_keys_pass_through() {
        let connector =
            PgConnector::new("host=db.example port=6543 dbname=node1 user=raft").unwrap();
        assert_eq!(connector.ssl_mode(), SslMode::Prefer);
        assert_eq!(connector.target(), "db.example:6543 database node1");
        let connector = PgConnector::new("host=db dbname=x sslmode=require").unwrap();
        assert_eq!(connector.ssl_mode(), SslMode::Require);
        assert_eq!(
            connector.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let reason = invalid_reason(PgConnector::new(&format!("host=db sslmode={mode}")));
            assert!(reason.contains("sslrootcert"), "{reason}");
        }
    }

    #[test]
    fn a_missing_root_certificate_is_named_before_connecting() {
        let reason = invalid_reason(PgConnector::new(
            "host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
        ));
        assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
        // With require the file is used too (as libpq does), so it must exist.
        let reason = invalid_reason(PgConnector::new(
            "host=db sslmode=require sslrootcert=/nonexistent/ca.pem",
        ));
        assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
    }

    #[test]
    fn disable_ignores_the_root_certificate() {
        let connector =
            PgConnector::new("host=db sslmode=disable sslrootcert=/nonexistent/ca.pem").unwrap();
        assert_eq!(connector.ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        assert!(invalid_reason(PgConnector::new("host=db sslmode=allow")).contains("allow"));
        assert!(invalid_reason(PgConnector::new("host=db colour=blue")).contains("colour"));
        assert!(invalid_reason(PgConnector::new("host=db sslrootcert=system")).contains("system"));
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let connector = PgConnector::new("host=db password=hunter2").unwrap();
        assert!(!format!("{connector:?}").contains("hunter2"));
    }
}
