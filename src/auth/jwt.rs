//! JWT bearer tokens checked locally against a provider's JWKS. The algorithm comes from the
//! provider's allow-list and must agree with the key's type; the key comes from the configured
//! JWKS only (`jku`, `x5u`, `jwk`, `x5c` headers are never followed).

use super::{AuthError, HttpClient, Principal};
use crate::config::{JwtAlgorithm, JwtProviderConfig};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Signatures remembered as verified. Identity providers reuse one token for up to an hour, so a
/// few thousand entries cover every client; when full the memory starts over.
const MAX_VERIFIED: usize = 4096;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    EcP256 { point: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Key {
    kid: Option<String>,
    material: KeyMaterial,
}

/// A token split and decoded, not yet trusted.
pub struct Unverified {
    header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signed: String,
    signature: Vec<u8>,
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// Splits a compact JWS into its parts; anything else is not a JWT.
pub fn decode(token: &str) -> Result<Unverified, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(AuthError::Invalid("not a JWT".into()));
    };
    let object = |bytes: Option<Vec<u8>>, what: &str| -> Result<Map<String, Value>, AuthError> {
        bytes
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .ok_or_else(|| AuthError::Invalid(format!("the JWT {what} is not base64url JSON")))
    };
    let header = object(b64(h), "header")?;
    let claims = object(b64(p), "payload")?;
    let signature =
        b64(s).ok_or_else(|| AuthError::Invalid("the JWT signature is not base64url".into()))?;
    Ok(Unverified {
        header,
        claims,
        signed: format!("{h}.{p}"),
        signature,
    })
}

pub struct JwtProvider {
    config: JwtProviderConfig,
    client: HttpClient,
    keys: RwLock<Arc<Vec<Key>>>,
    loaded: AtomicBool,
    /// Held by whoever fetches; the value is when the last fetch finished (millis since start).
    fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
    /// Bumped whenever the key set is replaced, so a remembered signature is only trusted while
    /// the keys that verified it are still the ones served.
    key_generation: AtomicU64,
    /// SHA-256 of tokens whose signature verified, with the key generation that verified them.
    /// Only the signature is remembered: expiry, audience and scope are checked on every call.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], u64>>,
}

impl JwtProvider {
    pub fn new(config: JwtProviderConfig, client: HttpClient) -> Arc<Self> {
        let needs_keys = config.jwks_url.is_some();
        Arc::new(Self {
            config,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            loaded: AtomicBool::new(!needs_keys),
            fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            key_generation: AtomicU64::new(0),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn keys_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Loads keys at start (retrying until the IdP answers) and refreshes them before they go
    /// stale; a failed refresh keeps the last good set.
    pub fn spawn_refresh(self: &Arc<Self>) {
        if self.config.jwks_url.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(250);
            loop {
                let ok = me.fetch_now().await;
                let wait = if ok {
                    retry = Duration::from_millis(250);
                    me.config.refresh_interval
                } else {
                    retry = (retry * 2).min(Duration::from_secs(30));
                    retry.min(me.config.refresh_interval)
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    fn current_keys(&self) -> Arc<Vec<Key>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    async fn fetch_now(&self) -> bool {
        let mut last = self.fetch.lock().await;
        let ok = self.fetch_locked().await;
        *last = Some(Instant::now());
        ok
    }

    async fn fetch_locked(&self) -> bool {
        let Some(url) = &self.config.jwks_url else {
            return false;
        };
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let request = http::Request::get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(crate::body::empty());
        let Ok(request) = request else { return false };
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let bytes = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            parse_jwks(&bytes)
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        match fetched {
            Ok(keys) => {
                let count = keys.len();
                match self.keys.write() {
                    Ok(mut k) => *k = Arc::new(keys),
                    Err(p) => *p.into_inner() = Arc::new(keys),
                }
                self.key_generation.fetch_add(1, Ordering::SeqCst);
                self.loaded.store(true, Ordering::SeqCst);
                crate::metrics::metrics()
                    .count("scimgate_jwks_refreshes_total", &[("result", "ok")]);
                tracing::info!(issuer = %self.config.issuer, keys = count, "JWKS loaded");
                true
            }
            Err(e) => {
                crate::metrics::metrics()
                    .count("scimgate_jwks_refreshes_total", &[("result", "failed")]);
                tracing::warn!(issuer = %self.config.issuer, url = %url, error = %e,
                    "JWKS fetch failed; keeping the last good key set");
                false
            }
        }
    }

    /// A token named a key we do not have: fetch once, unless a fetch finished since the miss
    /// (then its result is the answer) or one ran less than `min_refetch_interval` ago.
    async fn refetch_after_miss(&self, missed_at: Instant) {
        let mut last = self.fetch.lock().await;
        if let Some(t) = *last {
            if t >= missed_at || t.elapsed() < self.config.min_refetch_interval {
                return;
            }
        }
        self.fetch_locked().await;
        *last = Some(Instant::now());
    }

    pub async fn verify(&self, token: Unverified) -> Result<Principal, AuthError> {
        let alg_name = token
            .header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid("the JWT has no alg".into()))?;
        let alg = JwtAlgorithm::parse(alg_name)
            .filter(|a| self.config.algorithms.contains(a))
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {alg_name:?} is not accepted")))?;
        if token.header.contains_key("crit") {
            return Err(AuthError::Invalid(
                "critical JWT extensions are not supported".into(),
            ));
        }
        if alg.is_hmac() {
            let secret = self
                .config
                .hs_secret
                .as_ref()
                .ok_or_else(|| AuthError::Invalid("HMAC tokens are not accepted".into()))?;
            let algorithm = match alg {
                JwtAlgorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                JwtAlgorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                _ => aws_lc_rs::hmac::HMAC_SHA256,
            };
            let key = aws_lc_rs::hmac::Key::new(algorithm, secret.expose().as_bytes());
            aws_lc_rs::hmac::verify(&key, token.signed.as_bytes(), &token.signature)
                .map_err(|_| AuthError::Invalid("bad signature".into()))?;
        } else {
            let digest = Self::token_digest(&token);
            if !self.verified_before(&digest) {
                let generation = self.key_generation.load(Ordering::SeqCst);
                let kid = token.header.get("kid").and_then(Value::as_str);
                if !self.verify_with_keys(alg, kid, &token) {
                    let missed = Instant::now();
                    let known = self
                        .current_keys()
                        .iter()
                        .any(|k| kid.is_some() && k.kid.as_deref() == kid);
                    if !known {
                        self.refetch_after_miss(missed).await;
                        if !self.verify_with_keys(alg, kid, &token) {
                            return Err(AuthError::Invalid("no key verifies the signature".into()));
                        }
                    } else {
                        return Err(AuthError::Invalid("bad signature".into()));
                    }
                }
                // The generation read before verifying: keys replaced meanwhile make it stale.
                self.remember_verified(digest, generation);
            }
        }
        self.check_claims(&token.claims)
    }

    fn token_digest(token: &Unverified) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(token.signed.as_bytes());
        ctx.update(b".");
        ctx.update(&token.signature);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn verified_before(&self, digest: &[u8; 32]) -> bool {
        let generation = self.key_generation.load(Ordering::SeqCst);
        match self.verified.lock() {
            Ok(v) => v.get(digest) == Some(&generation),
            Err(_) => false,
        }
    }

    fn remember_verified(&self, digest: [u8; 32], generation: u64) {
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= MAX_VERIFIED {
                v.clear();
            }
            v.insert(digest, generation);
        }
    }

    fn verify_with_keys(&self, alg: JwtAlgorithm, kid: Option<&str>, token: &Unverified) -> bool {
        let keys = self.current_keys();
        keys.iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .any(|k| verify_signature(alg, &k.material, token.signed.as_bytes(), &token.signature))
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = self.config.leeway.as_secs_f64();
        let exp = claims
            .get("exp")
            .ok_or_else(|| AuthError::Invalid("the token has no exp".into()))?
            .as_f64()
            .ok_or_else(|| AuthError::Invalid("exp is not a number".into()))?;
        if now > exp + leeway {
            return Err(AuthError::Invalid("the token has expired".into()));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| AuthError::Invalid("nbf is not a number".into()))?;
            if now + leeway < nbf {
                return Err(AuthError::Invalid("the token is not valid yet".into()));
            }
        }
        // A token issued in the future was minted by a clock (or a forger) that cannot be
        // trusted, and would otherwise outlive the lifetime its issuer meant to give it.
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_f64()
                .ok_or_else(|| AuthError::Invalid("iat is not a number".into()))?;
            if iat > now + leeway {
                return Err(AuthError::Invalid(
                    "the token was issued in the future".into(),
                ));
            }
        }
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.config.issuer {
            return Err(AuthError::Invalid("wrong issuer".into()));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => self.config.audiences.iter().any(|x| x == a),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.config.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::Invalid("wrong audience".into()));
        }
        for (claim, expected) in &self.config.required_claims {
            if claims.get(claim).and_then(Value::as_str) != Some(expected.as_str()) {
                return Err(AuthError::Invalid(format!("claim {claim} does not match")));
            }
        }
        if !self.config.admin_scopes.is_empty() && !has_scope(claims, &self.config.admin_scopes) {
            return Err(AuthError::InsufficientScope(
                "the token lacks the administrator scope or role".into(),
            ));
        }
        let name = ["sub", "appid", "azp", "client_id"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or("unknown");
        Ok(Principal {
            name: format!("jwt:{name}"),
        })
    }
}

/// `scp`/`scope` (space-separated) or `roles` (array) holding one of `wanted`.
pub fn has_scope(claims: &Map<String, Value>, wanted: &[String]) -> bool {
    let mut held: Vec<&str> = Vec::new();
    for key in ["scp", "scope"] {
        match claims.get(key) {
            Some(Value::String(s)) => held.extend(s.split_whitespace()),
            Some(Value::Array(items)) => held.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    if let Some(Value::Array(roles)) = claims.get("roles") {
        held.extend(roles.iter().filter_map(Value::as_str));
    }
    wanted.iter().any(|w| held.contains(&w.as_str()))
}

fn verify_signature(alg: JwtAlgorithm, key: &KeyMaterial, message: &[u8], sig: &[u8]) -> bool {
    match (alg, key) {
        (JwtAlgorithm::RS256, KeyMaterial::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
            .is_ok(),
        (JwtAlgorithm::PS256, KeyMaterial::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PSS_2048_8192_SHA256, message, sig)
            .is_ok(),
        (JwtAlgorithm::ES256, KeyMaterial::EcP256 { point }) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, sig)
                .is_ok()
        }
        // An algorithm never verifies with a key of another type.
        _ => false,
    }
}

fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for item in items {
        let field = |name: &str| item.get(name).and_then(Value::as_str);
        if field("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let material = match field("kty") {
            Some("RSA") => match (field("n").and_then(b64), field("e").and_then(b64)) {
                (Some(n), Some(e)) => KeyMaterial::Rsa { n, e },
                _ => continue,
            },
            Some("EC") if field("crv") == Some("P-256") => {
                match (field("x").and_then(b64), field("y").and_then(b64)) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        KeyMaterial::EcP256 { point }
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        keys.push(Key {
            kid: field("kid").map(str::to_string),
            material,
        });
    }
    if keys.is_empty() {
        return Err("the key set holds no usable signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
impl JwtProvider {
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}
