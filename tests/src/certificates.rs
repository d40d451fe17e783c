//! Certificates made in the test (rcgen), in the file layout that
//! [`raftgres_devcluster::cluster::DevTls`] reads: `ca.pem`; `node-N.pem` and `node-N.key`
//! naming `raftgres-node-N` and the loopback address; `client.pem` and
//! `client.key`, a client certificate naming no node.

use std::path::{Path, PathBuf};

use raftgres_devcluster::cluster::DevTls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A certificate authority that lives only in the test.
pub struct TestAuthority {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate and its PEM key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub certificate_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl Issued {
    /// This certificate as a gRPC client identity.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.certificate_pem, &self.key_pem)
    }
}

impl TestAuthority {
    /// A new self-signed CA.
    pub fn new(name: &str) -> TestAuthority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        TestAuthority { certificate, key }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by
    /// this CA.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("certificate params");
        let key = rcgen::KeyPair::generate().expect("a key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a signed certificate");
        Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A certificate for node `id`, as a real node's: `raftgres-node-<id>`
    /// and the loopback address clients dial.
    pub fn issue_node(&self, id: u64) -> Issued {
        self.issue(&[&format!("raftgres-node-{id}"), "127.0.0.1", "localhost"])
    }

    /// A client TLS configuration trusting this CA and presenting
    /// `identity` (none: no client certificate).
    pub fn client_config(&self, identity: Option<&Issued>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pem()))
            .domain_name("127.0.0.1");
        match identity {
            Some(issued) => config.identity(issued.identity()),
            None => config,
        }
    }
}

/// Writes a CA, `nodes` node certificates and a client certificate into
/// `dir` for a TLS dev cluster; returns the authority (to issue more) and
/// the cluster's TLS options.
pub fn write_cluster_certificates(
    dir: &Path,
    nodes: u64,
    require_client_certificate: bool,
) -> (TestAuthority, DevTls) {
    std::fs::create_dir_all(dir).expect("creating the certificate directory");
    let authority = TestAuthority::new("raftgres test CA");
    write(dir.join("ca.pem"), &authority.pem());
    for id in 1..=nodes {
        let issued = authority.issue_node(id);
        write(dir.join(format!("node-{id}.pem")), &issued.certificate_pem);
        write(dir.join(format!("node-{id}.key")), &issued.key_pem);
    }
    let client = authority.issue(&["raftgres-test-client"]);
    write(dir.join("client.pem"), &client.certificate_pem);
    write(dir.join("client.key"), &client.key_pem);
    let tls = DevTls {
        dir: dir.to_path_buf(),
        require_client_certificate,
    };
    (authority, tls)
}

fn write(path: PathBuf, text: &str) {
    std::fs::write(&path, text)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}
