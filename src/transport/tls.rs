//! rustls configuration with the `ring` provider (built explicitly, so a second provider
//! pulled in by some dependency can never make rustls panic at setup).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{ClientAuth, TlsConfig};

/// A TLS setup problem, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// The process-wide crypto provider: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File { path: path.to_path_buf(), message };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("contains no certificate".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: format!("not a PEM private key: {e}"),
    })
}

/// Root store from a CA file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The server config for a listener with the given ALPN protocols.
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with_versions(tls, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`server_config`] restricted to the given protocol versions (QUIC: TLS 1.3 only).
pub fn server_config_with_versions(
    tls: &TlsConfig,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match tls.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        mode => {
            let roots = Arc::new(load_roots(&tls.client_ca)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let v = if mode == ClientAuth::Optional { v.allow_unauthenticated() } else { v };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(load_certs(&tls.cert)?, load_key(&tls.key)?)
        .map_err(|e| TlsError::File { path: tls.key.clone(), message: e.to_string() })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The subject common name of a (verified) client certificate.
pub fn cert_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed.subject().iter_common_name().next()?.as_str().ok().map(str::to_string)
}
