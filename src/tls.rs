//! TLS for RTMPS and HTTPS: one certificate (chain + key, PEM files named by `[tls]`), served by
//! both TLS listeners and reloaded without a restart when the files change.
//!
//! Where it sits: `app.rs` loads the certificate once at start (a bad file fails the start),
//! builds one rustls `ServerConfig` per listener around the same [`ReloadingCert`] resolver, and
//! spawns [`watch`], which polls the files' metadata every `tls.reload_interval`. A change is
//! loaded and, if the chain parses, the key parses and the key matches the leaf certificate's
//! public key, swapped in atomically: handshakes that start afterwards get the new certificate,
//! connections already up keep theirs. A file that fails to load is logged at WARN and the old
//! certificate stays; the next change of either file is tried again (an operator who writes the
//! certificate first and the key second passes through one mismatched state, which is skipped).
//!
//! Ciphers and versions are rustls' defaults with the `ring` provider: TLS 1.2 and 1.3 only,
//! AEAD suites with forward secrecy (no CBC, no RSA key exchange, no SSLv3/TLS 1.0/1.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::metrics;

/// Why a certificate or key could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a PEM certificate chain: {reason}")]
    Chain { path: PathBuf, reason: String },
    #[error("{path}: no certificate in the file")]
    EmptyChain { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{key}: the key does not belong to the certificate in {cert}: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

/// The crypto provider of every TLS listener: rustls' `ring` provider (aws-lc-rs would need
/// cmake and a C toolchain at build time; ring is already built for the HTTP client).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load and check a certificate chain and its private key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read { path: cert.into(), source })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read { path: key.into(), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Chain { path: cert.into(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::EmptyChain { path: cert.into() });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Key { path: key.into(), reason: e.to_string() })?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert.into(),
        key: key.into(),
        reason: e.to_string(),
    })?;
    // `from_der` lets an "unknown" consistency pass; the leaf must at least parse.
    certified.end_entity_cert().map_err(|e| TlsError::Chain { path: cert.into(), reason: e.to_string() })?;
    Ok(certified)
}

/// The certificate every TLS handshake is answered with, swappable while listeners run.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl ReloadingCert {
    /// Load the files once; an error here fails the server's start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let first = load(cert_path, key_path)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        }))
    }

    /// Try the files again: swap on success, keep the old certificate on failure.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// A rustls server config answering with this certificate and offering `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The files' change stamp (modification times and lengths); `None` if either is missing.
    fn stamp(&self) -> Option<Stamp> {
        let one = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
        Some((one(&self.cert_path)?, one(&self.key_path)?))
    }
}

type Stamp = ((Option<SystemTime>, u64), (Option<SystemTime>, u64));

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Poll the certificate and key files every `interval` until `shutdown`, reloading on change.
pub async fn watch(cert: Arc<ReloadingCert>, interval: Duration, shutdown: CancellationToken) {
    let mut seen = cert.stamp();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = cert.stamp();
        if now.is_none() || now == seen {
            // Missing (mid-replacement, or removed): keep serving the loaded certificate.
            continue;
        }
        seen = now;
        let cert2 = cert.clone();
        // File reads and signature-key parsing are blocking work.
        match tokio::task::spawn_blocking(move || cert2.reload()).await {
            Ok(Ok(())) => {
                metrics().tls_reloads.with_label_values(&["ok"]).inc();
                info!(cert = %cert.cert_path.display(), "TLS certificate reloaded");
            }
            Ok(Err(e)) => {
                metrics().tls_reloads.with_label_values(&["error"]).inc();
                warn!(error = %e, "TLS certificate not reloaded; still serving the previous one");
            }
            Err(e) => {
                metrics().tls_reloads.with_label_values(&["error"]).inc();
                warn!(error = %e, "TLS certificate reload task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_garbage_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = load(&cert, &key).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem either").unwrap();
        let e = load(&cert, &key).unwrap_err();
        assert!(matches!(e, TlsError::EmptyChain { .. }), "{e}");
    }
}
