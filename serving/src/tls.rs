//! TLS on the serving port: rustls (with ring's cryptography), the certificate chain and its key
//! read from PEM files, HTTP/1.1 offered by ALPN.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A server configuration from the PEM certificate chain in `cert` (the server's first) and the
/// PEM private key in `key`.
///
/// # Errors
///
/// When a file cannot be read, holds no certificate or key, or the key does not fit the
/// certificate.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("the certificate file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the certificate file {} holds no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("the key file {}: {e}", key.display()))?;
    // ring keeps the build light (aws-lc-rs, rustls' default, is a long C build); rustls 0.23.48
    // deprecates ring's provider only because it offers no post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and its key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
