//! The development token issuer of `scimgate dev`: an ES256 signing key kept in the data
//! directory, its JWKS served on a local port, and `scimgate token` minting tokens with it, so
//! a newcomer exercises the same JWT path as Entra ID uses.

use crate::fsutil::{write_atomically, Access};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "scimgate-dev";
pub const AUDIENCE: &str = "scimgate";
pub const ADMIN_SCOPE: &str = "scim";
pub const KEY_FILE: &str = "issuer.p8";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} does not hold a usable signing key; delete it to make a new one")]
    BadKey(String),
    #[error("no randomness available for a signing key")]
    Random,
    #[error("no signing key in {0}: start `scimgate dev --data-dir {0}` first")]
    Missing(String),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    /// Loads the key from `dir`, creating it on first use when `create` is set.
    pub fn open(dir: &Path, create: bool) -> Result<Self, IssuerError> {
        let path = dir.join(KEY_FILE);
        let io = |source| IssuerError::Io {
            path: path.display().to_string(),
            source,
        };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| IssuerError::Random)?;
                write_atomically(&path, doc.as_ref(), Access::OwnerOnly).map_err(io)?;
                doc.as_ref().to_vec()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IssuerError::Missing(dir.display().to_string()))
            }
            Err(e) => return Err(io(e)),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| IssuerError::BadKey(path.display().to_string()))?;
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let kid = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self { key, kid })
    }

    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        let (x, y) = if point.len() == 65 {
            (&point[1..33], &point[33..65])
        } else {
            (&point[0..0], &point[0..0])
        };
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": self.kid, "x": b64(x), "y": b64(y),
        }]})
    }

    pub fn mint(
        &self,
        subject: &str,
        scope: &str,
        lifetime: Duration,
    ) -> Result<String, IssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "scp": scope,
            "iat": now, "nbf": now, "exp": now + lifetime.as_secs(),
        });
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| IssuerError::Random)?;
        Ok(format!("{signed}.{}", b64(signature.as_ref())))
    }
}

/// Serves the JWKS at `/jwks.json` on `listener` until the process ends.
pub async fn serve_jwks(listener: tokio::net::TcpListener, jwks: Value) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let body = jwks.to_string();
    while let Ok((stream, _)) = listener.accept().await {
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let mut response = if req.uri().path() == "/jwks.json" {
                        http::Response::new(crate::body::full(body))
                    } else {
                        let mut r = http::Response::new(crate::body::full("not found\n"));
                        *r.status_mut() = http::StatusCode::NOT_FOUND;
                        r
                    };
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_have_three_parts_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = Issuer::open(dir.path(), true).unwrap();
        let b = Issuer::open(dir.path(), false).unwrap();
        assert_eq!(a.kid, b.kid);
        let token = a.mint("dev", ADMIN_SCOPE, Duration::from_secs(60)).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(a.jwks()["keys"][0]["kid"], json!(a.kid));
        assert!(matches!(
            Issuer::open(tempfile::tempdir().unwrap().path(), false),
            Err(IssuerError::Missing(_))
        ));
    }
}
