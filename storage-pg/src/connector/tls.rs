//! The rustls side of a Postgres connection: the root certificates, the
//! three ways to check a server's certificate, and the glue that lets
//! tokio-postgres run its handshake through tokio-rustls.
//!
//! Only the ring crypto provider is used, and it is passed explicitly rather
//! than installed process-wide, so this works whatever provider other crates
//! of the process picked.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Nothing: the connection is encrypted but a man in the middle is not
    /// detected (libpq's `require` without a root certificate). The
    /// handshake signature is still checked against the presented key.
    EncryptOnly,
    /// The chain must lead to a root of `sslrootcert`; any host name.
    Chain,
    /// The chain, and the certificate must name the host connected to.
    ChainAndHostName,
}

/// Reads the PEM file named by `sslrootcert`; every error names the file.
pub(crate) fn load_root_certificates(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read sslrootcert {shown}: {error}"))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("sslrootcert {shown} is not a valid PEM file: {error}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "sslrootcert {shown} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)"
        ));
    }
    let mut roots = RootCertStore::empty();
    for (position, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            format!(
                "sslrootcert {shown}: certificate {} is not a usable CA certificate: {error}",
                position + 1
            )
        })?;
    }
    Ok(roots)
}

/// The rustls client configuration for one conninfo. `roots` is required
/// for every verification but [`Verification::EncryptOnly`].
pub(crate) fn client_config(
    verification: Verification,
    roots: Option<RootCertStore>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS protocol versions: {error}"))?;
    let roots = match (verification, roots) {
        (Verification::EncryptOnly, _) => None,
        (_, Some(roots)) => Some(Arc::new(roots)),
        (_, None) => return Err("certificate verification needs sslrootcert".into()),
    };
    let mut config = match (verification, roots) {
        (Verification::ChainAndHostName, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (_, roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainVerifier { roots, algorithms }))
            .with_no_client_auth(),
    };
    // Postgres 17 requires this ALPN name for direct TLS negotiation; older
    // servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// Checks the chain against `roots` but not the host name (`verify-ca`), or
/// nothing at all when `roots` is `None` (`require` without a root
/// certificate). Handshake signatures are always checked, so the server
/// must hold the key of the certificate it presents.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server refused to prove who it is, or proved to be someone else:
/// distinct from an I/O error so that it is not mistaken for a retriable
/// network failure.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct TlsRefused {
    reason: String,
}

/// tokio-postgres' [`MakeTlsConnect`] over tokio-rustls.
#[derive(Clone)]
pub(crate) struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    /// Quoted in certificate errors so that the message says which file.
    root_certificate_path: Option<String>,
}

impl MakeRustlsConnect {
    pub(crate) fn new(config: Arc<ClientConfig>, root_certificate_path: Option<String>) -> Self {
        MakeRustlsConnect {
            config,
            root_certificate_path,
        }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsRefused;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsRefused> {
        // Called for every host even when TLS is disabled, so an unusable
        // name is reported only if a handshake is attempted.
        Ok(RustlsConnect {
            config: self.config.clone(),
            host: host.to_string(),
            server_name: ServerName::try_from(host.to_string()).ok(),
            root_certificate_path: self.root_certificate_path.clone(),
        })
    }
}

/// One handshake with one host.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    host: String,
    server_name: Option<ServerName<'static>>,
    root_certificate_path: Option<String>,
}

type HandshakeFuture<S> = Pin<
    Box<
        dyn Future<Output = Result<RustlsStream<S>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = HandshakeFuture<S>;

    fn connect(self, stream: S) -> HandshakeFuture<S> {
        Box::pin(async move {
            let Some(server_name) = self.server_name.clone() else {
                return Err(TlsRefused {
                    reason: format!(
                        "host {:?} is neither a DNS name nor an IP address, so TLS cannot check it",
                        self.host
                    ),
                }
                .into());
            };
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            match connector.connect(server_name, stream).await {
                Ok(stream) => Ok(RustlsStream(stream)),
                Err(error) => Err(self.handshake_error(error)),
            }
        })
    }
}

impl RustlsConnect {
    /// A rustls error inside the I/O error is a refusal (untrusted
    /// certificate, wrong name, no common protocol); anything else is the
    /// network and stays an I/O error, which callers treat as retriable.
    fn handshake_error(&self, error: io::Error) -> Box<dyn std::error::Error + Send + Sync> {
        let Some(tls_error) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Box::new(error);
        };
        let hint = match tls_error {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                match &self.root_certificate_path {
                    Some(path) => format!(" (the server's certificate is not signed by a CA in sslrootcert {path})"),
                    None => String::new(),
                }
            }
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            ) => format!(
                " (the server's certificate does not name host {:?}; sslmode=verify-full checks the name)",
                self.host
            ),
            _ => String::new(),
        };
        Box::new(TlsRefused {
            reason: format!("{tls_error}{hint}"),
        })
    }
}

/// An established TLS session with the server.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: computing it needs the hash
    /// algorithm of the certificate's signature, which would mean parsing
    /// X.509 here. SCRAM then runs without channel binding, as with libpq's
    /// `channel_binding=prefer` against a server that does not offer it;
    /// `channel_binding=require` in the conninfo fails to connect.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("raftgres-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let error = load_root_certificates(Path::new("/nonexistent/root.crt")).unwrap_err();
        assert!(error.contains("/nonexistent/root.crt"), "{error}");
    }

    #[test]
    fn a_root_file_without_certificates_is_named() {
        let path = temporary_file("empty.crt", b"not a certificate\n");
        let error = load_root_certificates(&path).unwrap_err();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("no PEM certificate"), "{error}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_root_file_with_a_broken_certificate_is_named() {
        let path = temporary_file(
            "broken.crt",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let error = load_root_certificates(&path).unwrap_err();
        assert!(error.contains(&path.display().to_string()), "{error}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn verification_without_roots_is_refused() {
        assert!(client_config(Verification::Chain, None).is_err());
        assert!(client_config(Verification::ChainAndHostName, None).is_err());
        assert!(client_config(Verification::EncryptOnly, None).is_ok());
    }
}
