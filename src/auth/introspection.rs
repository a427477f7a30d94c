//! Opaque tokens checked by RFC 7662 introspection (PingFederate's `checkTokenEndpointUrl`).
//! Positive answers are cached by a hash of the token for at most the token's remaining life;
//! an unreachable endpoint refuses (503), never accepts.

use super::jwt::has_scope;
use super::{AuthError, HttpClient, Principal};
use crate::config::IntrospectionConfig;
use base64::Engine;
use dashmap::DashMap;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER_BYTES: usize = 256 * 1024;
const MAX_CACHE_ENTRIES: usize = 10_000;

type TokenHash = [u8; 32];

struct Cached {
    until: Instant,
    verdict: Result<Principal, AuthError>,
}

pub struct Introspector {
    config: IntrospectionConfig,
    client: HttpClient,
    /// Read and written by every introspected request at once: sharded, so requests for
    /// different tokens rarely wait on each other. No guard is held across an `.await`.
    cache: DashMap<TokenHash, Cached>,
}

fn hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `application/x-www-form-urlencoded`: unreserved characters stay as they are, so ordinary
/// client ids and secrets arrive unchanged even at servers that do not decode them.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'*');

fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, FORM).to_string()
}

impl Introspector {
    pub fn new(config: IntrospectionConfig, client: HttpClient) -> Self {
        Self {
            config,
            client,
            cache: DashMap::new(),
        }
    }

    fn cached(&self, key: &TokenHash) -> Option<Result<Principal, AuthError>> {
        self.cache
            .get(key)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.verdict.clone())
    }

    fn remember(&self, key: TokenHash, verdict: &Result<Principal, AuthError>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        // Bounded as before: when full, expired answers go first, then everything.
        if self.cache.len() >= MAX_CACHE_ENTRIES {
            let now = Instant::now();
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= MAX_CACHE_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(
            key,
            Cached {
                until: Instant::now() + ttl,
                verdict: verdict.clone(),
            },
        );
    }

    pub async fn check(&self, token: &str) -> Result<Principal, AuthError> {
        let key = hash(token);
        if let Some(verdict) = self.cached(&key) {
            return verdict;
        }
        let answer = self.ask(token).await?;
        let (verdict, ttl) = self.judge(&answer);
        self.remember(key, &verdict, ttl);
        verdict
    }

    async fn ask(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        // RFC 6749 §2.3.1: client credentials are form-encoded before Basic encoding.
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.config.client_id),
            form_encode(self.config.client_secret.expose())
        ));
        let mut auth =
            http::HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|_| {
                AuthError::Unavailable("introspection credentials are not valid".into())
            })?;
        auth.set_sensitive(true);
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = http::Request::post(self.config.endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, auth)
            .body(crate::body::full(body))
            .map_err(|e| AuthError::Unavailable(format!("cannot build the request: {e}")))?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("answered HTTP {}", response.status()));
            }
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(o)) => Ok(o),
                _ => Err("answered something that is not a JSON object".to_string()),
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        answer.map_err(|e| {
            tracing::warn!(error = %e, "token introspection failed");
            AuthError::Unavailable(format!("token introspection {e}"))
        })
    }

    /// The verdict on an introspection answer and how long it may be remembered.
    fn judge(&self, answer: &Map<String, Value>) -> (Result<Principal, AuthError>, Duration) {
        let negative = self.config.negative_cache;
        let refuse = |why: &str| (Err(AuthError::Invalid(why.to_string())), negative);
        if answer.get("active") != Some(&Value::Bool(true)) {
            return refuse("the token is not active");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let remaining = match answer.get("exp").and_then(Value::as_f64) {
            Some(exp) if exp <= now => return refuse("the token has expired"),
            Some(exp) => Duration::from_secs_f64(exp - now),
            None => self.config.cache_max,
        };
        let client_id = answer.get("client_id").and_then(Value::as_str);
        if !self.config.client_ids.is_empty()
            && !client_id.is_some_and(|c| self.config.client_ids.iter().any(|x| x == c))
        {
            return refuse("the token was issued to another client");
        }
        if !self.config.audiences.is_empty() {
            let ok = match answer.get("aud") {
                Some(Value::String(a)) => self.config.audiences.contains(a),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.config.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return refuse("wrong audience");
            }
        }
        let ttl = remaining.min(self.config.cache_max);
        if !self.config.admin_scopes.is_empty() && !has_scope(answer, &self.config.admin_scopes) {
            return (
                Err(AuthError::InsufficientScope(
                    "the token lacks the administrator scope".into(),
                )),
                ttl,
            );
        }
        let name = ["sub", "client_id", "username"]
            .iter()
            .find_map(|c| answer.get(*c).and_then(Value::as_str))
            .unwrap_or("unknown");
        (
            Ok(Principal {
                name: format!("introspected:{name}"),
            }),
            ttl,
        )
    }
}
