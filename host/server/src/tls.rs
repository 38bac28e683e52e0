//! TLS for the server's listeners (`--tls-cert`/`--tls-key`): a certificate chain and its
//! private key read from PEM files into rustls server configurations (ring as the crypto
//! provider), one per protocol so that ALPN offers what the listener speaks: `http/1.1`
//! for the REST and metrics listeners, `h2` for gRPC. The accept loop (`lib.rs`) completes
//! the handshake within the header read timeout, on the connection's own task.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tensorlet_host::{Error, ErrorKind, Result};

/// A server certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct Tls {
    http1: tokio_rustls::TlsAcceptor,
    http2: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// The certificates of the PEM file at `path` (at least one): a server's chain, or the
/// roots a client trusts. Every failure names the file and what was expected.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("TLS file `{}`: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::invalid_input(format!(
                "`{}` is not a PEM certificate file ({e})",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::invalid_input(format!(
            "`{}` holds no certificate; expected PEM `-----BEGIN CERTIFICATE-----` blocks",
            path.display()
        )));
    }
    Ok(certs)
}

impl Tls {
    /// Reads the PEM certificate chain at `cert` (the server's certificate first) and the
    /// PEM private key at `key` (PKCS#8, PKCS#1 or SEC1), checking that they belong
    /// together. Every failure names the file and what was expected.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                Error::new(ErrorKind::Io, format!("TLS file `{}`: {e}", path.display()))
            })
        };
        let chain = read_certificates(cert)?;
        let key_pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            Error::invalid_input(format!(
                "`{}` holds no PEM private key ({e}); expected PKCS#8, PKCS#1 or SEC1",
                key.display()
            ))
        })?;
        let config = |alpn: &[u8]| -> Result<tokio_rustls::TlsAcceptor> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::internal(format!("TLS protocol versions: {e}")))?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key_der.clone_key())
                .map_err(|e| {
                    Error::invalid_input(format!(
                        "the key `{}` does not fit the certificate `{}`: {e}",
                        key.display(),
                        cert.display()
                    ))
                })?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Tls {
            http1: config(b"http/1.1")?,
            http2: config(b"h2")?,
        })
    }

    /// The acceptor of a listener speaking HTTP/2 (`h2`) or else HTTP/1.1.
    pub(crate) fn acceptor(&self, http2: bool) -> tokio_rustls::TlsAcceptor {
        if http2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        }
    }
}
