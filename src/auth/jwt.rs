//! JWT bearer tokens checked locally against a provider's JWKS.
//!
//! `jsonwebtoken` (its aws-lc-rs backend, the one crypto stack) verifies the signature and the
//! registered claims: `exp` (required), `nbf`, `iss` (required, the provider's), `aud`
//! (required, one of the configured audiences), each with `leeway`, and refuses those of the
//! wrong JSON type; it also refuses an algorithm outside the [`Validation`]'s list or a key of
//! another family, and RSA keys under 2048 bits (aws-lc-rs' `RSA_*_2048_8192_*` verifiers).
//!
//! The gateway's stricter rules that the library cannot express are applied around it:
//! - the algorithm comes from the provider's allow-list only, and the key from the configured
//!   JWKS only: the library is handed the key, so `jku`, `x5u`, `jwk` and `x5c` headers are
//!   never followed; keys of another family than the algorithm are not even tried;
//! - `crit` is refused outright (the library accepts `crit: ["b64"]`);
//! - `iat` must be a number and not later than now plus `leeway` (the library ignores `iat`);
//! - `iss` must be a string (the library also accepts an array that holds the issuer);
//! - RSA keys under 2048 bits and EC keys off P-256 are dropped when the JWKS is loaded, so a
//!   weak key is never a candidate (besides the library's own refusal);
//! - HMAC only with a configured `hs_secret`: an HMAC key is built from that secret and from
//!   nothing else (`oct` keys in a JWKS are ignored);
//! - `required_claims` and `admin_scopes` are the gateway's own checks on the verified claims.

use super::{AuthError, HttpClient, Principal};
use crate::config::{JwtAlgorithm, JwtProviderConfig};
use base64::Engine;
use dashmap::DashMap;
use http_body_util::{BodyExt, Limited};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Tokens remembered as verified. Identity providers reuse one token for up to an hour, so a
/// few thousand entries cover every client; when full the memory starts over.
const MAX_VERIFIED: usize = 4096;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 7518 §3.3 asks for 2048 bits at least; shorter moduli are factorable in practice.
const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone)]
struct Key {
    kid: Option<String>,
    decoding: DecodingKey,
}

/// A token split and decoded, not yet trusted.
pub struct Unverified {
    header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// The compact form, as the library reads it.
    compact: String,
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// Splits a compact JWS and decodes its header and claims, which choose the provider and are
/// pre-checked before the library sees the token; anything else is not a JWT.
pub fn decode(token: &str) -> Result<Unverified, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, _] = parts.as_slice() else {
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
    Ok(Unverified {
        header,
        claims,
        compact: token.to_string(),
    })
}

fn library_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
    }
}

/// The library's checks for one allowed algorithm: exactly that algorithm (so a key of another
/// family is refused), and `exp`, `iss`, `aud` required and checked.
fn validation(alg: JwtAlgorithm, config: &JwtProviderConfig) -> Validation {
    let mut v = Validation::new(library_algorithm(alg));
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Whole seconds: the library counts in seconds, and rounding down is the stricter way.
    v.leeway = config.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_issuer(&[config.issuer.as_str()]);
    v.set_audience(&config.audiences);
    v
}

/// The library's refusal in words for the log and the `error_description`; never the token,
/// nor the library's own message (serde errors quote the input).
fn refusal(kind: &ErrorKind) -> AuthError {
    let why = match kind {
        ErrorKind::InvalidSignature => "bad signature".to_string(),
        ErrorKind::ExpiredSignature => "the token has expired".to_string(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_string(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_string(),
        ErrorKind::InvalidAudience => "wrong audience".to_string(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("{c} is not of the right type"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            "the algorithm does not match the key".to_string()
        }
        _ => "the token is malformed".to_string(),
    };
    AuthError::Invalid(why)
}

/// What trying the candidate keys came to.
enum Outcome {
    Verified,
    /// No candidate key verified the signature.
    NoKeyVerified,
    /// A key verified the signature and the library refused the claims (or the token).
    Refused(AuthError),
}

/// A token whose signature and claims passed, remembered by its digest.
struct Remembered {
    /// The key generation that verified it: keys replaced since make the memory stale.
    generation: u64,
    exp: u64,
    principal: Principal,
}

pub struct JwtProvider {
    config: JwtProviderConfig,
    client: HttpClient,
    keys: RwLock<Arc<Vec<Key>>>,
    /// The library's checks, one per allowed algorithm, built once.
    validations: Vec<(JwtAlgorithm, Validation)>,
    /// The HMAC key, from `hs_secret` only.
    hs_key: Option<DecodingKey>,
    loaded: AtomicBool,
    /// Held by whoever fetches; the value is when the last fetch finished.
    fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
    /// Bumped whenever the key set is replaced, so a remembered token is only trusted while
    /// the keys that verified it are still the ones served.
    key_generation: AtomicU64,
    /// SHA-256 of tokens that passed every check, with the key generation that verified them.
    /// Everything checked depends on the token's bytes and this provider's configuration
    /// (a new configuration builds a new provider) except time, and of the time checks only
    /// `exp` can turn from pass to fail (`nbf` and `iat` only become more true): so a
    /// remembered token is accepted after checking its generation and `exp` again.
    verified: DashMap<[u8; 32], Remembered>,
}

impl JwtProvider {
    pub fn new(config: JwtProviderConfig, client: HttpClient) -> Arc<Self> {
        let needs_keys = config.jwks_url.is_some();
        let validations = config
            .algorithms
            .iter()
            .map(|alg| (*alg, validation(*alg, &config)))
            .collect();
        // An empty secret is refused by the library; then no HMAC token passes.
        let hs_key = config
            .hs_secret
            .as_ref()
            .and_then(|s| DecodingKey::from_secret(s.expose().as_bytes()).ok());
        Arc::new(Self {
            config,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            validations,
            hs_key,
            loaded: AtomicBool::new(!needs_keys),
            fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            key_generation: AtomicU64::new(0),
            verified: DashMap::new(),
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
        // The library refuses a missing or unknown alg too, but the allow-list is this
        // provider's, and it is checked before anything else is looked at.
        let alg_name = token
            .header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid("the JWT has no alg".into()))?;
        let (alg, validation) = JwtAlgorithm::parse(alg_name)
            .and_then(|a| self.validations.iter().find(|(v, _)| *v == a))
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {alg_name:?} is not accepted")))?;
        let alg = *alg;
        // The library accepts `crit: ["b64"]`; the gateway understands no extension at all.
        if token.header.contains_key("crit") {
            return Err(AuthError::Invalid(
                "critical JWT extensions are not supported".into(),
            ));
        }
        self.check_iat(&token.claims)?;
        // RFC 7519 §4.1.1: one StringOrURI. The library also takes an array holding the
        // issuer; the provider was chosen by this claim as a string.
        if token.claims.get("iss").is_some_and(|iss| !iss.is_string()) {
            return Err(AuthError::Invalid("iss is not a string".into()));
        }
        if alg.is_hmac() {
            let key = self
                .hs_key
                .as_ref()
                .ok_or_else(|| AuthError::Invalid("HMAC tokens are not accepted".into()))?;
            return match try_key(&token, key, validation) {
                Outcome::Verified => self.check_claims(&token.claims),
                Outcome::NoKeyVerified => Err(AuthError::Invalid("bad signature".into())),
                Outcome::Refused(e) => Err(e),
            };
        }
        let digest = digest(&token.compact);
        if let Some(principal) = self.remembered(&digest)? {
            return Ok(principal);
        }
        // Read before verifying: keys replaced meanwhile make what is remembered stale.
        let mut generation = self.key_generation.load(Ordering::SeqCst);
        let kid = token.header.get("kid").and_then(Value::as_str);
        match self.verify_with_keys(alg, kid, &token, validation) {
            Outcome::Verified => {}
            Outcome::Refused(e) => return Err(e),
            Outcome::NoKeyVerified => {
                let missed = Instant::now();
                let known = self
                    .current_keys()
                    .iter()
                    .any(|k| kid.is_some() && k.kid.as_deref() == kid);
                if known {
                    return Err(AuthError::Invalid("bad signature".into()));
                }
                self.refetch_after_miss(missed).await;
                generation = self.key_generation.load(Ordering::SeqCst);
                match self.verify_with_keys(alg, kid, &token, validation) {
                    Outcome::Verified => {}
                    Outcome::Refused(e) => return Err(e),
                    Outcome::NoKeyVerified => {
                        return Err(AuthError::Invalid("no key verifies the signature".into()))
                    }
                }
            }
        }
        let principal = self.check_claims(&token.claims)?;
        // The library accepted `exp` as a number (integer or float, rounded as it rounds).
        let exp = token
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .map_or(0, |e| e.round() as u64);
        self.remember(digest, generation, exp, principal.clone());
        Ok(principal)
    }

    /// The library does not look at `iat`. A token issued in the future was minted by a clock
    /// (or a forger) that cannot be trusted, and would otherwise outlive the lifetime its
    /// issuer meant to give it.
    fn check_iat(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let Some(iat) = claims.get("iat") else {
            return Ok(());
        };
        let iat = iat
            .as_f64()
            .ok_or_else(|| AuthError::Invalid("iat is not a number".into()))?;
        if iat > now_secs() as f64 + self.config.leeway.as_secs_f64() {
            return Err(AuthError::Invalid(
                "the token was issued in the future".into(),
            ));
        }
        Ok(())
    }

    /// A remembered token's verdict, if its keys are still served and it has not expired
    /// since (with the library's rule: expired once `exp` is more than `leeway` ago).
    fn remembered(&self, digest: &[u8; 32]) -> Result<Option<Principal>, AuthError> {
        let generation = self.key_generation.load(Ordering::SeqCst);
        let Some(entry) = self.verified.get(digest) else {
            return Ok(None);
        };
        if entry.generation != generation {
            return Ok(None);
        }
        if entry.exp.saturating_add(self.config.leeway.as_secs()) < now_secs() {
            drop(entry);
            self.verified.remove(digest);
            return Err(AuthError::Invalid("the token has expired".into()));
        }
        Ok(Some(entry.principal.clone()))
    }

    fn remember(&self, digest: [u8; 32], generation: u64, exp: u64, principal: Principal) {
        if self.verified.len() >= MAX_VERIFIED {
            self.verified.clear();
        }
        self.verified.insert(
            digest,
            Remembered {
                generation,
                exp,
                principal,
            },
        );
    }

    /// Tries the configured keys of the algorithm's family named by `kid` (all of that family
    /// when the token names none).
    fn verify_with_keys(
        &self,
        alg: JwtAlgorithm,
        kid: Option<&str>,
        token: &Unverified,
        validation: &Validation,
    ) -> Outcome {
        let family = library_algorithm(alg).family();
        let keys = self.current_keys();
        for key in keys
            .iter()
            .filter(|k| k.decoding.family() == family)
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        {
            match try_key(token, &key.decoding, validation) {
                Outcome::NoKeyVerified => continue,
                decided => return decided,
            }
        }
        Outcome::NoKeyVerified
    }

    /// The gateway's own checks on claims the library has verified.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One key through the library: signature, then the registered claims.
fn try_key(token: &Unverified, key: &DecodingKey, validation: &Validation) -> Outcome {
    // The library panics when no crypto provider is selected; the build selects exactly one
    // (aws_lc_rs), and this keeps a misbuilt binary refusing rather than panicking.
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        return Outcome::Refused(AuthError::Unavailable(
            "no JWT crypto provider is built in".into(),
        ));
    }
    match jsonwebtoken::decode::<serde::de::IgnoredAny>(&token.compact, key, validation) {
        Ok(_) => Outcome::Verified,
        Err(e) => match e.kind() {
            // Another key may still verify it.
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey => Outcome::NoKeyVerified,
            // The library counts a claim it cannot parse as missing; say which it was.
            ErrorKind::MissingRequiredClaim(c) if token.claims.contains_key(c) => {
                Outcome::Refused(AuthError::Invalid(format!("{c} is not of the right type")))
            }
            kind => Outcome::Refused(refusal(kind)),
        },
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

/// Bits in a big-endian modulus.
fn bit_length(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize)
}

/// The signing keys of a JWKS the gateway accepts: RSA of 2048 bits or more and EC P-256, with
/// no `use` or `use: sig`. Keys the library cannot read, and every other kind (`oct` above all:
/// HMAC keys come from `hs_secret` only), are skipped.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for item in items {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            continue;
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let usable = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_) => {
                DecodingKey::from_jwk(&jwk).ok()
            }
            _ => None,
        };
        let Some(decoding) = usable else { continue };
        let acceptable = match (&jwk.algorithm, decoding.kind()) {
            (AlgorithmParameters::RSA(_), DecodingKeyKind::RsaModulusExponent { n, .. }) => {
                let bits = bit_length(n);
                if bits < MIN_RSA_BITS {
                    tracing::warn!(kid = ?jwk.common.key_id, bits,
                        "JWKS: RSA key under 2048 bits ignored");
                }
                bits >= MIN_RSA_BITS
            }
            (AlgorithmParameters::EllipticCurve(p), DecodingKeyKind::SecretOrDer(point)) => {
                p.curve == EllipticCurve::P256 && point.len() == 65
            }
            _ => false,
        };
        if acceptable {
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                decoding,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_crypto_provider_is_built_in() {
        assert!(jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some());
    }

    const SECRET: &str = "an HMAC secret long enough for HS256 tokens";

    fn provider(algorithms: Vec<JwtAlgorithm>, hs_secret: Option<&str>) -> Arc<JwtProvider> {
        let config = JwtProviderConfig {
            issuer: "https://idp.test/".into(),
            audiences: vec!["api://scimgate".into()],
            jwks_url: None,
            algorithms,
            leeway: Duration::from_secs(60),
            required_claims: vec![("tid".into(), "t1".into())],
            admin_scopes: vec!["SCIM.Provision".into()],
            hs_secret: hs_secret.map(crate::config::Secret::new),
            refresh_interval: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(60),
        };
        let client =
            crate::proxy::client_with_roots(rustls::RootCertStore::empty(), Duration::from_secs(1))
                .unwrap();
        JwtProvider::new(config, client)
    }

    fn claims() -> Value {
        let now = now_secs();
        serde_json::json!({
            "iss": "https://idp.test/", "aud": "api://scimgate", "sub": "idp", "tid": "t1",
            "scp": "SCIM.Provision", "iat": now - 5, "nbf": now - 5, "exp": now + 600,
        })
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        c[key] = v;
        c
    }

    fn b64json(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// An HS256 token with exactly this header and these claims.
    fn hs256(header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64json(header), b64json(claims));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    async fn check(p: &JwtProvider, token: &str) -> Result<Principal, AuthError> {
        p.verify(decode(token)?).await
    }

    fn reason(r: Result<Principal, AuthError>) -> String {
        match r {
            Err(AuthError::Invalid(why)) => why,
            other => format!("not an invalid_token refusal: {other:?}"),
        }
    }

    /// Each rule refuses for its own reason, whether the library or the gateway keeps it.
    #[tokio::test]
    async fn every_rule_refuses_for_its_reason() {
        let p = provider(vec![JwtAlgorithm::HS256], Some(SECRET));
        let h = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let ok = check(&p, &hs256(&h, &claims())).await;
        assert_eq!(ok.map(|p| p.name), Ok("jwt:idp".to_string()));
        let now = now_secs();
        let cases: Vec<(Value, Value, &str)> = vec![
            (
                h.clone(),
                with(claims(), "exp", serde_json::json!((now + 600).to_string())),
                "exp is not of the right type",
            ),
            (
                h.clone(),
                with(claims(), "exp", serde_json::json!(now - 120)),
                "the token has expired",
            ),
            (
                h.clone(),
                with(claims(), "nbf", serde_json::json!(now + 300)),
                "the token is not valid yet",
            ),
            // CVE-2026-25537 (jsonwebtoken < 10.3): a claim of the wrong type was skipped.
            (
                h.clone(),
                with(claims(), "nbf", serde_json::json!((now + 300).to_string())),
                "nbf is not of the right type",
            ),
            (
                h.clone(),
                with(claims(), "aud", serde_json::json!(42)),
                "aud is not of the right type",
            ),
            (
                h.clone(),
                with(claims(), "aud", serde_json::json!("api://other")),
                "wrong audience",
            ),
            (
                h.clone(),
                with(claims(), "iss", serde_json::json!(["https://idp.test/"])),
                "iss is not a string",
            ),
            (
                h.clone(),
                with(claims(), "iss", serde_json::json!(7)),
                "iss is not a string",
            ),
            (
                h.clone(),
                with(claims(), "iat", serde_json::json!(now.to_string())),
                "iat is not a number",
            ),
            (
                h.clone(),
                with(claims(), "iat", serde_json::json!(now + 300)),
                "the token was issued in the future",
            ),
            (
                h.clone(),
                with(claims(), "tid", serde_json::json!("t2")),
                "claim tid does not match",
            ),
            (
                serde_json::json!({"alg": "HS256", "crit": ["b64"], "b64": true}),
                claims(),
                "critical JWT extensions are not supported",
            ),
            (
                serde_json::json!({"alg": "HS384"}),
                claims(),
                "algorithm \"HS384\" is not accepted",
            ),
            (
                serde_json::json!({"alg": "none"}),
                claims(),
                "algorithm \"none\" is not accepted",
            ),
        ];
        for (header, claims, want) in cases {
            let got = reason(check(&p, &hs256(&header, &claims)).await);
            assert_eq!(got, want, "header {header}, claims {claims}");
        }
        for missing in ["exp", "iss", "aud"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(missing);
            let got = reason(check(&p, &hs256(&h, &c)).await);
            assert_eq!(got, format!("the token has no {missing}"));
        }
        let signed = hs256(&h, &claims());
        let (input, _) = signed.rsplit_once('.').unwrap();
        let forged = format!("{input}.{}", b64json(&serde_json::json!("x")));
        assert_eq!(reason(check(&p, &forged).await), "bad signature");
    }

    /// HMAC only for a provider with `hs_secret`, even when its allow-list names HS256.
    #[tokio::test]
    async fn hmac_needs_a_configured_secret() {
        let p = provider(vec![JwtAlgorithm::HS256, JwtAlgorithm::RS256], None);
        let token = hs256(&serde_json::json!({"alg": "HS256"}), &claims());
        assert_eq!(
            reason(check(&p, &token).await),
            "HMAC tokens are not accepted"
        );
    }

    /// A remembered token is accepted again without its signature being checked, but only
    /// until it expires.
    #[test]
    fn remembered_tokens_expire() {
        let p = provider(vec![JwtAlgorithm::ES256], None);
        let principal = Principal {
            name: "jwt:x".into(),
        };
        let now = now_secs();
        p.remember([1; 32], 0, now + 10, principal.clone());
        p.remember([2; 32], 0, now - 61, principal.clone());
        p.remember([3; 32], 7, now + 10, principal.clone());
        assert_eq!(p.remembered(&[1; 32]), Ok(Some(principal)));
        assert_eq!(
            p.remembered(&[2; 32]),
            Err(AuthError::Invalid("the token has expired".into()))
        );
        assert_eq!(p.remembered(&[2; 32]), Ok(None));
        assert_eq!(p.remembered(&[3; 32]), Ok(None), "another key generation");
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0, 0]), 0);
    }

    #[test]
    fn weak_and_foreign_keys_are_not_loaded() {
        let b = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut n2048 = vec![0xc5u8; 256];
        n2048[255] |= 1;
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": b(&[0xc5u8; 128]), "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": b(b"secret")},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b(&n2048), "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": b(&[1u8; 48]), "y": b(&[2u8; 48])},
            {"kty": "RSA", "kid": "ok", "n": b(&n2048), "e": "AQAB"},
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("ok")]);
        assert!(parse_jwks(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}").is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
