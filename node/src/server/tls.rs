//! TLS for the gRPC listener and for the connections between peers
//! (rustls, through tonic).
//!
//! Every node holds a certificate and key signed by the cluster's CA. The
//! certificate names the node with the DNS name `raftgres-node-<id>`
//! ([`node_name`]), next to the host names or addresses clients use to
//! reach it. Peers authenticate each other both ways:
//!
//! 1. A node connecting to peer 3 checks that the server's certificate
//!    chains to the CA and names `raftgres-node-3` (rustls, during the
//!    handshake).
//! 2. A node serving a peer RPC requires a client certificate that chains
//!    to the CA (rustls, during the handshake) and names the node the
//!    message says it comes from (the peer service, per RPC, with
//!    [`certificate_names_node`]). A client certificate signed by the same
//!    CA but naming no node, or another node, is refused.
//!
//! Clients present a certificate signed by the CA when
//! `require_client_certificate` is on (the default), so only holders of a
//! certificate can talk to the cluster at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::core::NodeId;

/// The `[tls]` table of a node's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// This node's certificate chain (PEM), leaf first. The leaf names
    /// `raftgres-node-<node_id>`.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) (PEM) that sign every node's and client's
    /// certificate.
    pub ca: PathBuf,
    /// Refuse clients that present no certificate signed by `ca`. Peers
    /// must always present one, whatever this says.
    #[serde(default = "require_client_certificate_default")]
    pub require_client_certificate: bool,
}

fn require_client_certificate_default() -> bool {
    true
}

/// Why TLS material was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read TLS file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why. Not a `#[source]`: the message carries it, and an error
        /// chain printed in full would repeat it.
        reason: std::io::Error,
    },
    /// A file holds no usable PEM block of the expected kind.
    #[error("TLS file {path} holds no {what}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("TLS key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate does not name this node, or is not signed by the CA.
    #[error("TLS certificate {path} cannot serve node {node}: {reason}")]
    WrongCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The node it should name.
        node: NodeId,
        /// Why it cannot.
        reason: String,
    },
}

/// The DNS name a node's certificate carries to prove which node it is.
pub fn node_name(node: NodeId) -> String {
    format!("raftgres-node-{node}")
}

/// Whether a DER certificate names `node` (its subject alternative names
/// hold [`node_name`]). The chain itself was verified during the handshake.
pub fn certificate_names_node(certificate: &[u8], node: NodeId) -> bool {
    let certificate = CertificateDer::from(certificate);
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(&certificate) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(node)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// A node's certificate, key and CA, read and checked once at start-up.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    certificate_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// Reads the files of `settings` and checks that they can serve `node`:
    /// the key belongs to the certificate, the certificate names the node
    /// and is signed by the CA.
    pub fn load(settings: &TlsSettings, node: NodeId) -> Result<TlsMaterial, TlsError> {
        let certificate_pem = read(&settings.cert)?;
        let key_pem = read(&settings.key)?;
        let ca_pem = read(&settings.ca)?;
        let chain = certificates(&settings.cert, &certificate_pem)?;
        let authorities = certificates(&settings.ca, &ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Invalid {
            path: settings.key.clone(),
            what: "private key",
            reason: error.to_string(),
        })?;
        check_key_matches(settings, &chain, key.clone_key())?;
        let roots = root_store(settings, &authorities)?;
        check_signed_for_node(settings, &chain, roots.clone(), node)?;
        let server_config = server_config(settings, chain, key, roots)?;
        Ok(TlsMaterial {
            certificate_pem,
            key_pem,
            ca_pem,
            server_config,
        })
    }

    /// The listener's configuration: this node's identity, client
    /// certificates checked against the CA (required, or optional when
    /// `require_client_certificate` is off), HTTP/2 only.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// The configuration for connecting to `peer`: this node's identity
    /// as client certificate, and a server certificate that must chain to
    /// the CA and name the peer.
    pub fn peer_client_config(&self, peer: NodeId) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(self.identity())
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(node_name(peer))
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.certificate_pem, &self.key_pem)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|reason| TlsError::Read {
        path: path.to_path_buf(),
        reason,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no CERTIFICATE block found".into()));
    }
    Ok(certificates)
}

fn check_key_matches(
    settings: &TlsSettings,
    chain: &[CertificateDer<'static>],
    key: PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::Invalid {
            path: settings.key.clone(),
            what: "usable private key",
            reason: error.to_string(),
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: settings.cert.clone(),
        key: settings.key.clone(),
    })
}

fn root_store(
    settings: &TlsSettings,
    authorities: &[CertificateDer<'static>],
) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for authority in authorities {
        roots
            .add(authority.clone())
            .map_err(|error| TlsError::Invalid {
                path: settings.ca.clone(),
                what: "usable CA certificate",
                reason: error.to_string(),
            })?;
    }
    Ok(Arc::new(roots))
}

fn server_config(
    settings: &TlsSettings,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let invalid = |what: &'static str, path: &Path, error: String| TlsError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: error,
    };
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = if settings.require_client_certificate {
        verifier
    } else {
        verifier.allow_unauthenticated()
    }
    .build()
    .map_err(|error| invalid("usable CA certificate", &settings.ca, error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("usable certificate", &settings.cert, error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| invalid("usable certificate", &settings.cert, error.to_string()))?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The leaf must name the node and chain to the CA: a node started with
/// another node's certificate, or one from another CA, stops here rather
/// than failing every handshake later.
fn check_signed_for_node(
    settings: &TlsSettings,
    chain: &[CertificateDer<'static>],
    roots: Arc<rustls::RootCertStore>,
    node: NodeId,
) -> Result<(), TlsError> {
    let wrong = |reason: String| TlsError::WrongCertificate {
        path: settings.cert.clone(),
        node,
        reason,
    };
    if !certificate_names_node(&chain[0], node) {
        return Err(wrong(format!(
            "its subject alternative names do not include the DNS name {}",
            node_name(node)
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|error| wrong(error.to_string()))?;
    let name = ServerName::try_from(node_name(node)).map_err(|error| wrong(error.to_string()))?;
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|error| {
            wrong(format!(
                "not valid under the CA {}: {error}",
                settings.ca.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) struct TestAuthority {
        certificate: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl TestAuthority {
        fn new() -> TestAuthority {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            let certificate = params.self_signed(&key).unwrap();
            TestAuthority { certificate, key }
        }

        fn issue(&self, names: &[&str]) -> (String, String) {
            let params = rcgen::CertificateParams::new(
                names
                    .iter()
                    .map(|name| name.to_string())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let certificate = params
                .signed_by(&key, &self.certificate, &self.key)
                .unwrap();
            (certificate.pem(), key.serialize_pem())
        }
    }

    fn write_files(
        directory: &Path,
        authority: &TestAuthority,
        certificate: &str,
        key: &str,
    ) -> TlsSettings {
        std::fs::create_dir_all(directory).unwrap();
        let settings = TlsSettings {
            cert: directory.join("node.pem"),
            key: directory.join("node.key"),
            ca: directory.join("ca.pem"),
            require_client_certificate: true,
        };
        std::fs::write(&settings.cert, certificate).unwrap();
        std::fs::write(&settings.key, key).unwrap();
        std::fs::write(&settings.ca, authority.certificate.pem()).unwrap();
        settings
    }

    /// A test's own directory, removed when the test ends.
    struct TestDir(PathBuf);

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn directory(name: &str) -> TestDir {
        TestDir(
            std::env::temp_dir().join(format!("raftgres-tls-test-{}-{name}", std::process::id())),
        )
    }

    #[test]
    fn a_certificate_naming_the_node_and_signed_by_the_ca_loads() {
        let authority = TestAuthority::new();
        let (certificate, key) = authority.issue(&["raftgres-node-2", "127.0.0.1"]);
        let dir = directory("good");
        let settings = write_files(&dir.0, &authority, &certificate, &key);
        TlsMaterial::load(&settings, NodeId(2)).unwrap();
    }

    #[test]
    fn another_nodes_certificate_is_refused_naming_the_file() {
        let authority = TestAuthority::new();
        let (certificate, key) = authority.issue(&["raftgres-node-3"]);
        let dir = directory("other-node");
        let settings = write_files(&dir.0, &authority, &certificate, &key);
        let error = TlsMaterial::load(&settings, NodeId(2))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("raftgres-node-2") && error.contains("node.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let authority = TestAuthority::new();
        let (certificate, _) = authority.issue(&["raftgres-node-2"]);
        let (_, other_key) = authority.issue(&["raftgres-node-2"]);
        let dir = directory("mismatch");
        let settings = write_files(&dir.0, &authority, &certificate, &other_key);
        let error = TlsMaterial::load(&settings, NodeId(2))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("node.key")
                && error.contains("node.pem")
                && error.contains("does not belong"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let authority = TestAuthority::new();
        let stranger = TestAuthority::new();
        let (certificate, key) = stranger.issue(&["raftgres-node-2"]);
        let dir = directory("other-ca");
        let settings = write_files(&dir.0, &authority, &certificate, &key);
        let error = TlsMaterial::load(&settings, NodeId(2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not valid under the CA"), "{error}");
    }

    #[test]
    fn unreadable_and_garbage_files_are_named() {
        let authority = TestAuthority::new();
        let (certificate, key) = authority.issue(&["raftgres-node-2"]);
        let dir = directory("garbage");
        let settings = write_files(&dir.0, &authority, &certificate, &key);
        std::fs::write(&settings.key, "not a key").unwrap();
        let error = TlsMaterial::load(&settings, NodeId(2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("node.key"), "{error}");
        std::fs::remove_file(&settings.cert).unwrap();
        let error = TlsMaterial::load(&settings, NodeId(2))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot read TLS file") && error.contains("node.pem"),
            "{error}"
        );
    }

    #[test]
    fn only_a_certificate_naming_the_node_proves_it() {
        let authority = TestAuthority::new();
        let (certificate, _) = authority.issue(&["raftgres-node-1", "localhost"]);
        let der = CertificateDer::from_pem_slice(certificate.as_bytes()).unwrap();
        assert!(certificate_names_node(&der, NodeId(1)));
        assert!(!certificate_names_node(&der, NodeId(2)));
        assert!(!certificate_names_node(&der, NodeId(11)));
        assert!(!certificate_names_node(b"garbage", NodeId(1)));
    }
}
