//! PEM decoding shared by the listener certificates, the upstream CA bundle and the upstream
//! client identity, so each reports a malformed file the same way. The parsing itself is
//! `rustls-pki-types`' `PemObject` (rustls-pemfile is unmaintained, RUSTSEC-2025-0134).

use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not valid PEM: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what} holds no certificate (expected a -----BEGIN CERTIFICATE----- block)")]
    NoCertificate { what: String },
    #[error("{what} holds no private key (expected PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey { what: String },
    #[error("the private key cannot be used: {0}")]
    Key(rustls::Error),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(what, &e))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// The first PKCS#8, PKCS#1 or SEC1 key in the file.
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => PemError::NoKey {
            what: what.to_string(),
        },
        e => malformed(what, &e),
    })
}

/// A certificate chain and its private key as rustls serves them, refused when they do not belong
/// together.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, PemError> {
    let certs = certificates(cert_pem, "the certificate file")?;
    let key = private_key(key_pem, "the key file")?;
    let signing_key = aws_lc_rs::sign::any_supported_type(&key).map_err(PemError::Key)?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        // Some key types can't report their public key; rustls then can't tell, and neither can we.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(_) => Err(PemError::KeyMismatch),
    }
}

fn malformed(what: &str, e: &pem::Error) -> PemError {
    PemError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        assert!(matches!(
            certificates(b"not pem at all", "x"),
            Err(PemError::NoCertificate { .. })
        ));
        assert!(matches!(
            private_key(b"not pem at all", "x"),
            Err(PemError::NoKey { .. })
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates(broken, "x"),
            Err(PemError::Malformed { .. })
        ));
        let unterminated = b"-----BEGIN PRIVATE KEY-----\nMIIB\n";
        assert!(private_key(unterminated, "x").is_err());
        assert!(matches!(
            private_key(&[0xff, 0xfe, 0x00, 0x80], "x"),
            Err(PemError::NoKey { .. })
        ));
    }

    #[test]
    fn generated_pair_round_trips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(certificates(cert.pem().as_bytes(), "c").unwrap().len(), 1);
        private_key(key.serialize_pem().as_bytes(), "k").unwrap();
    }
}
