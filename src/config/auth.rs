//! The `[auth]` section: how SCIM clients authenticate (static bearer token, HTTP Basic, JWT
//! providers, token introspection).

use super::secret::Secret;
use super::{raw, AuthConfig, IntrospectionConfig, JwtAlgorithm, JwtProviderConfig, Validator};
use std::net::IpAddr;
use std::time::Duration;

impl Validator<'_> {
    /// An IdP endpoint: https, except on loopback where a local test or development issuer runs.
    pub(super) fn idp_url(&mut self, setting: &str, url: &str) -> Option<http::Uri> {
        let fix = "use an https:// URL (http:// only for 127.0.0.1, ::1 or localhost)";
        let Ok(uri) = url.parse::<http::Uri>() else {
            self.problem(setting, format!("{url:?} is not a URL"), fix);
            return None;
        };
        let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        match uri.scheme_str() {
            Some("https") if !host.is_empty() => Some(uri),
            Some("http") if loopback => Some(uri),
            _ => {
                self.problem(setting, format!("{url:?} is not an https URL"), fix);
                None
            }
        }
    }

    pub(super) fn auth(&mut self, a: raw::RawAuth, scim_token: Option<Secret>) -> AuthConfig {
        let own_token = a.bearer_token.as_deref().and_then(|spec| {
            let token = self.secret("auth.bearer_token", spec)?;
            if token.expose().len() < 16 {
                self.problem(
                    "auth.bearer_token",
                    "is shorter than 16 characters",
                    "use a long random token, e.g. `openssl rand -base64 32`",
                );
                return None;
            }
            Some(token)
        });
        if own_token.is_some() && scim_token.is_some() {
            self.problem(
                "auth.bearer_token",
                "is set together with scim.bearer_token",
                "keep one of the two",
            );
        }
        let basic = a.basic.and_then(|b| match (b.username, b.password) {
            (Some(u), Some(p)) if !u.is_empty() && !u.contains(':') => {
                Some((u, self.secret("auth.basic.password", &p)?))
            }
            _ => {
                self.problem(
                    "auth.basic",
                    "needs a username (without ':') and a password",
                    "set username and password (password may be env:NAME or file:/path)",
                );
                None
            }
        });
        let mut jwt = Vec::new();
        for (i, j) in a.jwt.into_iter().enumerate() {
            let name = format!("auth.jwt[{i}]");
            let issuer = j.issuer.filter(|s| !s.is_empty());
            if issuer.is_none() {
                self.problem(
                    format!("{name}.issuer"),
                    "is missing",
                    "set the issuer the tokens carry in `iss` (Entra: https://sts.windows.net/<tenant>/)",
                );
            }
            if j.audiences.is_empty() {
                self.problem(
                    format!("{name}.audiences"),
                    "is empty: tokens for any application would be accepted",
                    "list the audience(s) the tokens carry in `aud` (the platform's authScimOAuthClientId)",
                );
            }
            let hs_secret = j
                .hs_secret
                .as_deref()
                .and_then(|s| self.secret(&format!("{name}.hs_secret"), s));
            let mut algorithms = Vec::new();
            for alg in j.algorithms.unwrap_or_default() {
                match JwtAlgorithm::parse(&alg) {
                    Some(a) => algorithms.push(a),
                    None => self.problem(
                        format!("{name}.algorithms"),
                        format!("{alg:?} is not a supported algorithm"),
                        "use RS256, PS256, ES256, or HS256/HS384/HS512 with hs_secret",
                    ),
                }
            }
            if algorithms.is_empty() {
                algorithms = if hs_secret.is_some() {
                    vec![JwtAlgorithm::HS256]
                } else {
                    vec![
                        JwtAlgorithm::RS256,
                        JwtAlgorithm::PS256,
                        JwtAlgorithm::ES256,
                    ]
                };
            }
            // A shared secret makes the provider an HMAC one and nothing else, so a public key
            // can never be used as an HMAC secret (algorithm confusion).
            let all_hmac = algorithms.iter().all(|a| a.is_hmac());
            let any_hmac = algorithms.iter().any(|a| a.is_hmac());
            if (hs_secret.is_some() && !all_hmac) || (hs_secret.is_none() && any_hmac) {
                self.problem(
                    format!("{name}.algorithms"),
                    "mixes HMAC and public-key algorithms, or lists HS* without hs_secret",
                    "with hs_secret use only HS256/HS384/HS512; without it only RS256/PS256/ES256",
                );
            }
            let jwks_url = match (&j.jwks_url, &hs_secret) {
                (Some(u), _) => self.idp_url(&format!("{name}.jwks_url"), u),
                (None, Some(_)) => None,
                (None, None) => {
                    self.problem(
                        format!("{name}.jwks_url"),
                        "is missing",
                        "set the IdP's JWKS URL (Entra: https://login.microsoftonline.com/common/discovery/keys)",
                    );
                    None
                }
            };
            let leeway = self.duration(
                &format!("{name}.leeway"),
                j.leeway.as_deref(),
                Duration::from_secs(60),
            );
            let refresh_interval = self.duration(
                &format!("{name}.refresh_interval"),
                j.refresh_interval.as_deref(),
                Duration::from_secs(3600),
            );
            let min_refetch_interval = self.duration(
                &format!("{name}.min_refetch_interval"),
                j.min_refetch_interval.as_deref(),
                Duration::from_secs(10),
            );
            if let Some(issuer) = issuer {
                jwt.push(JwtProviderConfig {
                    issuer,
                    audiences: j.audiences,
                    jwks_url,
                    algorithms,
                    leeway,
                    required_claims: j.required_claims.into_iter().collect(),
                    admin_scopes: j.admin_scopes,
                    hs_secret,
                    refresh_interval,
                    min_refetch_interval,
                });
            }
        }
        let introspection = a.introspection.and_then(|i| {
            let endpoint = match i.endpoint.as_deref() {
                Some(e) => self.idp_url("auth.introspection.endpoint", e),
                None => {
                    self.problem(
                        "auth.introspection.endpoint",
                        "is missing",
                        "set the introspection URL (PingFederate: https://<pf>/as/introspect.oauth2)",
                    );
                    None
                }
            };
            let client_secret = match i.client_secret.as_deref() {
                Some(s) => self.secret("auth.introspection.client_secret", s),
                None => {
                    self.problem(
                        "auth.introspection.client_secret",
                        "is missing",
                        "set the secret of the client the gateway introspects with",
                    );
                    None
                }
            };
            let client_id = i.client_id.filter(|c| !c.is_empty());
            if client_id.is_none() {
                self.problem(
                    "auth.introspection.client_id",
                    "is missing",
                    "set the client id the gateway introspects with",
                );
            }
            let cache_max = self.duration(
                "auth.introspection.cache_max",
                i.cache_max.as_deref(),
                Duration::from_secs(300),
            );
            let negative_cache = self.duration(
                "auth.introspection.negative_cache",
                i.negative_cache.as_deref(),
                Duration::from_secs(5),
            );
            Some(IntrospectionConfig {
                endpoint: endpoint?,
                client_id: client_id?,
                client_secret: client_secret?,
                client_ids: i.client_ids,
                audiences: i.audiences,
                admin_scopes: i.admin_scopes,
                cache_max,
                negative_cache,
            })
        });
        let max_failures_per_minute = self.count(
            "auth.max_failures_per_minute",
            a.max_failures_per_minute,
            10,
            (1, 100_000),
        ) as u32;
        let ca_bundle = a.ca_bundle.map(|p| self.path(&p));
        AuthConfig {
            bearer_token: own_token.or(scim_token),
            basic,
            jwt,
            introspection,
            max_failures_per_minute,
            ca_bundle,
        }
    }
}
