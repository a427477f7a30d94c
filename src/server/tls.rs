//! TLS termination: certificates from files (reloaded when their content changes, noticed by
//! a file watcher or on SIGHUP) or generated for local development. The resolver swaps the
//! certificate for new handshakes only, so established connections are untouched by a reload.

use crate::config::TlsSource;
use crate::fsutil::{write_atomically, Access, ContentDigest};
use crate::pem::{self, certified_key_from_pem, PemError};
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The certificate and key files' bytes.
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemPair {
    fn read(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
        Ok(PemPair {
            cert: pem::read_file(cert)?,
            key: pem::read_file(key)?,
        })
    }

    fn digest(&self) -> ContentDigest {
        ContentDigest::of(&[Some(&self.cert), Some(&self.key)])
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(certified_key_from_pem(&self.cert, &self.key)?)
    }
}

#[cfg(test)]
fn load_files(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    PemPair::read(cert, key)?.certified_key()
}

#[derive(Debug)]
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingResolver {
    fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, next: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A listener's TLS setup: the acceptor plus, for file-based certificates, the reload task.
pub struct ListenerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
}

pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the listener's TLS. File-based certificates get a background reloader that listens for
/// SIGHUP and, with `watch`, watches the files' directories (which is what sees Kubernetes'
/// `..data` symlink swap).
pub fn setup(
    source: &TlsSource,
    reload: &broadcast::Sender<()>,
    watch: bool,
) -> Result<ListenerTls, TlsError> {
    let resolver = match source {
        TlsSource::SelfSigned { dir, names } => {
            let key = self_signed(dir, names)?;
            Arc::new(ReloadingResolver::new(key))
        }
        TlsSource::Files { cert, key } => {
            let pair = PemPair::read(cert, key)?;
            let resolver = Arc::new(ReloadingResolver::new(pair.certified_key()?));
            let reloader = CertReloader {
                cert: cert.clone(),
                key: key.clone(),
                resolver: resolver.clone(),
                applied: pair.digest(),
                last_failed: None,
            };
            spawn_reloader(reloader, reload.subscribe(), watch);
            resolver
        }
    };
    let config = server_config(resolver)?;
    Ok(ListenerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(config),
    })
}

pub const SELF_SIGNED_CERT_FILE: &str = "cert.pem";
pub const SELF_SIGNED_KEY_FILE: &str = "key.pem";

fn self_signed(dir: &Path, extra_names: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "scimgate self-signed");
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert_pem = cert.pem();
    let key_pem = key_pair.serialize_pem();

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let cert_path = dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = dir.join(SELF_SIGNED_KEY_FILE);
    write_file(&key_path, key_pem.as_bytes(), Access::OwnerOnly)?;
    write_file(&cert_path, cert_pem.as_bytes(), Access::Public)?;
    tracing::info!(
        cert_path = %cert_path.display(),
        key_path = %key_path.display(),
        "wrote self-signed certificate"
    );
    tracing::info!(
        "trust it for local calls with: curl --cacert {} https://localhost:<port>/",
        cert_path.display()
    );
    Ok(certified_key_from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )?)
}

fn write_file(path: &Path, contents: &[u8], access: Access) -> Result<(), TlsError> {
    write_atomically(path, contents, access).map_err(|source| TlsError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn spawn_reloader(mut reloader: CertReloader, mut sighup: broadcast::Receiver<()>, watch: bool) {
    // Any content-changing event in these directories may be the one (a `..data` swap names
    // neither file), and the content comparison makes a needless wake-up cost one read.
    let mut watch = if watch {
        let dirs = super::watch::parent_dirs(&[&reloader.cert, &reloader.key]);
        super::watch::Watch::start("certificates", &dirs, |_| true)
    } else {
        None
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                settled = super::watch::settled(&mut watch) => {
                    if settled.is_none() {
                        tracing::warn!("the certificate watcher stopped; reload with SIGHUP");
                        watch = None;
                        continue;
                    }
                }
                signal = sighup.recv() => {
                    if matches!(signal, Err(broadcast::error::RecvError::Closed)) { break; }
                }
            }
            reloader.reload();
        }
    });
}

/// Replaces a listener's certificate when, and only when, the files' content changed.
struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<ReloadingResolver>,
    /// The content the served certificate was built from.
    applied: ContentDigest,
    /// Content already refused, so that it is not refused (and counted) again.
    last_failed: Option<ContentDigest>,
}

impl CertReloader {
    fn reload(&mut self) {
        let metrics = crate::metrics::metrics();
        let pair = PemPair::read(&self.cert, &self.key);
        let digest = pair.as_ref().ok().map(PemPair::digest);
        if digest == Some(self.applied) {
            self.last_failed = None;
            return;
        }
        match pair.and_then(|p| p.certified_key()) {
            Ok(next) => {
                self.resolver.replace(next);
                self.applied = digest.unwrap_or(self.applied);
                self.last_failed = None;
                metrics.count("scimgate_certificate_reloads_total", &[("result", "ok")]);
                tracing::info!(cert_path = %self.cert.display(), "reloaded TLS certificate");
            }
            Err(e) => {
                // Unreadable files have no digest: each attempt counts, as each may be a new
                // problem.
                if digest.is_none() || digest != self.last_failed {
                    metrics.count(
                        "scimgate_certificate_reloads_total",
                        &[("result", "failed")],
                    );
                }
                self.last_failed = digest;
                tracing::warn!(
                    cert_path = %self.cert.display(),
                    error = %e,
                    "TLS certificate reload failed; keeping the current certificate"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (cert_a, _) = pair("a");
        let (_, key_b) = pair("b");
        assert!(matches!(
            certified_key_from_pem(cert_a.as_bytes(), key_b.as_bytes()),
            Err(PemError::KeyMismatch)
        ));
    }

    #[test]
    fn bad_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("a");
        let (cp, kp) = (dir.path().join("c"), dir.path().join("k"));
        std::fs::write(&cp, &cert).unwrap();
        std::fs::write(&kp, &key).unwrap();
        let initial = PemPair::read(&cp, &kp).unwrap();
        let resolver = Arc::new(ReloadingResolver::new(initial.certified_key().unwrap()));
        let mut reloader = CertReloader {
            cert: cp.clone(),
            key: kp.clone(),
            resolver: resolver.clone(),
            applied: initial.digest(),
            last_failed: None,
        };
        let before = resolver.current().cert.clone();
        std::fs::write(&cp, "garbage").unwrap();
        reloader.reload();
        assert_eq!(resolver.current().cert, before);
        let (cert2, key2) = pair("b");
        std::fs::write(&cp, &cert2).unwrap();
        std::fs::write(&kp, &key2).unwrap();
        reloader.reload();
        assert_ne!(resolver.current().cert, before);
    }

    #[test]
    fn self_signed_writes_a_usable_pair() {
        let _ = aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path(), &["gw.test".into()]).unwrap();
        load_files(
            &dir.path().join(SELF_SIGNED_CERT_FILE),
            &dir.path().join(SELF_SIGNED_KEY_FILE),
        )
        .unwrap();
    }
}
