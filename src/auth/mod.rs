//! Credentials on SCIM requests → an authenticated caller, or a refusal. Methods: JWTs checked
//! against a JWKS, opaque tokens by introspection, a static bearer token, HTTP Basic — each only
//! when configured. Pass-through traffic is never authenticated here: the platform does that.

pub mod introspection;
pub mod jwt;

use crate::config::{AuthConfig, Secret};
use dashmap::DashMap;
use http::{header, HeaderMap};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, crate::body::Body>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials were presented")]
    Missing,
    #[error("{0}")]
    InvalidRequest(String),
    /// More than one `Authorization` header: answered 400, as RFC 6750 §3.1 asks for a
    /// malformed request, whatever the first one holds.
    #[error("more than one Authorization header was sent")]
    DuplicateCredentials,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    InsufficientScope(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("no SCIM credentials are configured (set scim.bearer_token or an [auth] method)")]
    NotConfigured,
}

impl AuthError {
    /// A bounded reason for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::InvalidRequest(_) | AuthError::DuplicateCredentials => "invalid_request",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::InsufficientScope(_) => "insufficient_scope",
            AuthError::Unavailable(_) => "unavailable",
            AuthError::NotConfigured => "not_configured",
        }
    }

    /// The RFC 6750 challenge to send with the refusal.
    pub fn challenge(&self) -> Option<String> {
        let with = |error: &str, description: &str| {
            let description = description.replace(['"', '\\'], "'");
            Some(format!(
                "Bearer realm=\"scimgate\", error=\"{error}\", error_description=\"{description}\""
            ))
        };
        match self {
            AuthError::Missing => Some("Bearer realm=\"scimgate\"".to_string()),
            AuthError::InvalidRequest(d) => with("invalid_request", d),
            AuthError::DuplicateCredentials => with("invalid_request", &self.to_string()),
            AuthError::Invalid(d) => with("invalid_token", d),
            AuthError::NotConfigured => with("invalid_token", &self.to_string()),
            AuthError::InsufficientScope(d) => with("insufficient_scope", d),
            AuthError::Unavailable(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthBuildError {
    #[error("auth.ca_bundle: {0}")]
    Pem(#[from] crate::pem::PemError),
    #[error("auth TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("auth client: {0}")]
    Client(#[from] crate::proxy::ProxyBuildError),
}

/// An authentication method SCIM clients may use, as discovery documents describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// OAuth 2.0 access tokens: JWTs from a configured issuer, or tokens checked by
    /// introspection.
    OAuthBearer,
    /// The one static token of `scim.bearer_token` (or `auth.bearer_token`).
    StaticBearer,
    HttpBasic,
}

/// Who the credentials belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
}

pub struct Authenticator {
    bearer_token: Option<Secret>,
    basic: Option<(String, Secret)>,
    jwt: Vec<Arc<jwt::JwtProvider>>,
    introspection: Option<introspection::Introspector>,
    throttle: Throttle,
}

impl Authenticator {
    /// Builds the authenticator and starts loading JWKS key sets in the background.
    pub fn start(config: &AuthConfig) -> Result<Self, AuthBuildError> {
        let needs_client = !config.jwt.is_empty() || config.introspection.is_some();
        let client = if needs_client {
            Some(idp_client(config.ca_bundle.as_deref())?)
        } else {
            None
        };
        let jwt: Vec<Arc<jwt::JwtProvider>> = match &client {
            Some(c) => config
                .jwt
                .iter()
                .map(|j| jwt::JwtProvider::new(j.clone(), c.clone()))
                .collect(),
            None => Vec::new(),
        };
        for provider in &jwt {
            provider.spawn_refresh();
        }
        let introspection = match (&config.introspection, &client) {
            (Some(i), Some(c)) => Some(introspection::Introspector::new(i.clone(), c.clone())),
            _ => None,
        };
        Ok(Self {
            bearer_token: config.bearer_token.clone(),
            basic: config.basic.clone(),
            jwt,
            introspection,
            throttle: Throttle::new(config.max_failures_per_minute),
        })
    }

    /// The methods configured, OAuth first: discovery lists these and nothing else, so a client
    /// reading `/ServiceProviderConfig` learns what will actually be accepted.
    pub fn schemes(&self) -> Vec<Scheme> {
        let mut out = Vec::new();
        if !self.jwt.is_empty() || self.introspection.is_some() {
            out.push(Scheme::OAuthBearer);
        }
        if self.bearer_token.is_some() {
            out.push(Scheme::StaticBearer);
        }
        if self.basic.is_some() {
            out.push(Scheme::HttpBasic);
        }
        out
    }

    /// For readiness: every JWT provider has a key set.
    pub fn keys_loaded(&self) -> bool {
        self.jwt.iter().all(|p| p.keys_loaded())
    }

    /// Checks the request's credentials. Refusals from a client that keeps failing are slowed
    /// down before they are answered.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
    ) -> Result<Principal, AuthError> {
        let result = self.check(headers, query).await;
        match &result {
            Err(AuthError::Unavailable(_)) | Ok(_) => {}
            Err(_) => {
                if let Some(delay) = self.throttle.failure(client) {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        result
    }

    async fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if self.bearer_token.is_none()
            && self.basic.is_none()
            && self.jwt.is_empty()
            && self.introspection.is_none()
        {
            return Err(AuthError::NotConfigured);
        }
        if query.is_some_and(|q| {
            q.split('&').any(|p| {
                p.split('=')
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case("access_token"))
            })
        }) {
            return Err(AuthError::InvalidRequest(
                "tokens are accepted in the Authorization header only".into(),
            ));
        }
        // A proxy or servlet in front of or behind the gateway may pick another one of several
        // than the one checked here.
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(AuthError::DuplicateCredentials);
        }
        let value = match headers.get(header::AUTHORIZATION) {
            None => return Err(AuthError::Missing),
            Some(v) => v
                .to_str()
                .map_err(|_| AuthError::InvalidRequest("malformed Authorization header".into()))?
                .trim(),
        };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            return self.check_basic(credentials);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::InvalidRequest(format!(
                "the {scheme} authorization scheme is not accepted"
            )));
        }
        if credentials.is_empty() {
            return Err(AuthError::InvalidRequest(
                "the bearer token is empty".into(),
            ));
        }
        if let Some(expected) = &self.bearer_token {
            if constant_time_eq(credentials.as_bytes(), expected.expose().as_bytes()) {
                return Ok(Principal {
                    name: "static-bearer".into(),
                });
            }
        }
        if credentials.split('.').count() == 3 && !self.jwt.is_empty() {
            let token = jwt::decode(credentials)?;
            let iss = token
                .claims
                .get("iss")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            if let Some(provider) = self.jwt.iter().find(|p| p.issuer() == iss) {
                return provider.verify(token).await;
            }
            if self.introspection.is_none() {
                return Err(AuthError::Invalid(
                    "the token's issuer is not trusted".into(),
                ));
            }
        }
        match &self.introspection {
            Some(i) => i.check(credentials).await,
            None => Err(AuthError::Invalid("the bearer token is not valid".into())),
        }
    }

    fn check_basic(&self, credentials: &str) -> Result<Principal, AuthError> {
        use base64::Engine;
        let Some((user, password)) = &self.basic else {
            return Err(AuthError::InvalidRequest(
                "Basic authentication is not enabled".into(),
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AuthError::InvalidRequest("malformed Basic credentials".into()))?;
        let (u, p) = decoded.split_once(':').unwrap_or((&decoded, ""));
        // Both compared, always, so timing does not tell which one was wrong.
        let user_ok = constant_time_eq(u.as_bytes(), user.as_bytes());
        let password_ok = constant_time_eq(p.as_bytes(), password.expose().as_bytes());
        if user_ok && password_ok {
            Ok(Principal {
                name: format!("basic:{user}"),
            })
        } else {
            Err(AuthError::Invalid("wrong user name or password".into()))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hashing first makes the comparison constant-time in the length too.
    let ha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a);
    let hb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    aws_lc_rs::constant_time::verify_slices_are_equal(ha.as_ref(), hb.as_ref()).is_ok()
}

/// A client for the identity provider's endpoints (JWKS, introspection): system roots, or the
/// CAs in `auth.ca_bundle`.
fn idp_client(ca_bundle: Option<&std::path::Path>) -> Result<HttpClient, AuthBuildError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            let pem = crate::pem::read_file(path)?;
            for cert in crate::pem::certificates(&pem, "auth.ca_bundle")? {
                roots.add(cert)?;
            }
        }
        None => {
            let (_, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(crate::proxy::client_with_roots(
        roots,
        Duration::from_secs(5),
    )?)
}

/// Slows refusals down for a client that keeps failing: after `max_per_minute` failures in a
/// minute each further refusal waits longer (up to 5 s), so guessing is slow while a correct
/// request is never delayed.
struct Throttle {
    max_per_minute: u32,
    /// Written by every refused request: sharded, so failures from different clients rarely
    /// wait on each other.
    clients: DashMap<IpAddr, (Instant, u32)>,
}

impl Throttle {
    fn new(max_per_minute: u32) -> Self {
        Self {
            max_per_minute,
            clients: DashMap::new(),
        }
    }

    fn failure(&self, client: IpAddr) -> Option<Duration> {
        self.failure_at(client, Instant::now())
    }

    /// The delay for a failure at `now`; time is a parameter so the schedule can be checked
    /// without waiting for it.
    fn failure_at(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        // Before taking the entry: `retain` locks every shard, and would deadlock on the
        // shard an entry guard holds.
        if self.clients.len() > 10_000 {
            self.clients
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let failures = {
            let mut entry = self.clients.entry(client).or_insert((now, 0));
            if now.duration_since(entry.0) >= Duration::from_secs(60) {
                *entry = (now, 0);
            }
            entry.1 += 1;
            entry.1
        };
        let over = failures
            .checked_sub(self.max_per_minute)
            .filter(|n| *n > 0)?;
        if over == 1 {
            tracing::warn!(client = %client, "slowing down repeated authentication failures");
        }
        Some(Duration::from_millis(100u64 << over.min(6)).min(Duration::from_secs(5)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, basic: Option<(&str, &str)>) -> Authenticator {
        Authenticator {
            bearer_token: token.map(Secret::new),
            basic: basic.map(|(u, p)| (u.to_string(), Secret::new(p))),
            jwt: Vec::new(),
            introspection: None,
            throttle: Throttle::new(10),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn static_bearer_and_basic() {
        let a = auth(Some("0123456789abcdef-token"), Some(("pf", "pw")));
        assert!(a
            .check(&headers("Bearer 0123456789abcdef-token"), None)
            .await
            .is_ok());
        assert!(a
            .check(&headers("bearer 0123456789abcdef-token"), None)
            .await
            .is_ok());
        assert!(matches!(
            a.check(&headers("Bearer wrong"), None).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.check(&headers("Bearer "), None).await,
            Err(AuthError::InvalidRequest(_))
        ));
        assert_eq!(
            a.check(&HeaderMap::new(), None).await,
            Err(AuthError::Missing)
        );
        assert!(a.check(&headers("Basic cGY6cHc="), None).await.is_ok());
        assert!(a.check(&headers("Basic cGY6eA=="), None).await.is_err());
        assert!(matches!(
            a.check(
                &headers("Bearer 0123456789abcdef-token"),
                Some("access_token=x")
            )
            .await,
            Err(AuthError::InvalidRequest(_))
        ));
        let none = auth(None, None);
        assert_eq!(
            none.check(&headers("Bearer x"), None).await,
            Err(AuthError::NotConfigured)
        );
    }

    #[test]
    fn throttle_starts_after_the_allowance() {
        let t = Throttle::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.failure(ip), None);
        assert_eq!(t.failure(ip), None);
        let first = t.failure(ip).unwrap();
        let second = t.failure(ip).unwrap();
        assert!(second > first);
        assert_eq!(t.failure("10.0.0.2".parse().unwrap()), None);
    }

    /// "Ever slower refusals": past the allowance each failure in the minute waits longer than
    /// the one before, up to the 5 s ceiling; each client has its own count, and a new minute
    /// starts the count again.
    #[test]
    fn throttle_delays_grow_per_client_and_reset_after_a_minute() {
        let t = Throttle::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);

        for i in 0..3 {
            assert_eq!(t.failure_at(a, at(i)), None, "failure {} is allowed", i + 1);
        }
        let delays: Vec<Duration> = (3..12)
            .map(|i| t.failure_at(a, at(i * 100)).expect("past the allowance"))
            .collect();
        let growing = delays
            .iter()
            .take_while(|d| **d < Duration::from_secs(5))
            .count();
        assert!(
            growing >= 4,
            "at least four growing delays before the cap: {delays:?}"
        );
        assert!(
            delays[..=growing.min(delays.len() - 1)]
                .windows(2)
                .all(|w| w[0] < w[1]),
            "each delay longer than the last until the cap: {delays:?}"
        );
        assert!(
            delays[growing..]
                .iter()
                .all(|d| *d == Duration::from_secs(5)),
            "then held at the 5 s ceiling: {delays:?}"
        );

        // Another client in the same minute starts from its own allowance...
        for i in 0..3 {
            assert_eq!(
                t.failure_at(b, at(2000 + i)),
                None,
                "client b, failure {}",
                i + 1
            );
        }
        assert_eq!(t.failure_at(b, at(2100)), Some(delays[0]));
        // ...and a's count is untouched by b's.
        assert_eq!(t.failure_at(a, at(2200)), Some(Duration::from_secs(5)));

        // A minute after a's window opened, its count starts again.
        let later = start + Duration::from_secs(60);
        for i in 0..3 {
            assert_eq!(t.failure_at(a, later + Duration::from_millis(i)), None);
        }
        assert_eq!(
            t.failure_at(a, later + Duration::from_millis(10)),
            Some(delays[0])
        );
    }
}
