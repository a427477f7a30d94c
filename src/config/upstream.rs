//! The `[upstream]` section: the platform's URL, its CA bundle and client identity, and the
//! connection pool.

use super::secret::SecretSource;
use super::{raw, ClientIdentity, UpstreamConfig, UpstreamScheme, Validator};
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn upstream(&mut self, raw: Option<raw::RawUpstream>) -> Option<UpstreamConfig> {
        let Some(u) = raw else {
            self.problem(
                "upstream",
                "is missing",
                "add an [upstream] table with url = \"http://platform:8080\" (or pass --upstream)",
            );
            return None;
        };
        let target = match u.url.as_deref() {
            None => {
                self.problem(
                    "upstream.url",
                    "is missing",
                    "add url = \"http://platform:8080\" (or pass --upstream)",
                );
                None
            }
            Some(url) => self.upstream_url(url),
        };

        let ca_bundle = u.ca_bundle.map(|p| self.path(&p));
        if let Some(ca) = &ca_bundle {
            if let Some(pem) = self.readable_file("upstream.ca_bundle", ca) {
                if let Err(e) = crate::pem::certificates(&pem, "upstream.ca_bundle") {
                    self.problem(
                        "upstream.ca_bundle",
                        e.to_string(),
                        "give a PEM file of the CA certificates that sign the platform's certificate",
                    );
                }
            }
        }
        let client_identity = match (u.client_cert, u.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.path(&cert);
                let cert_pem = self.readable_file("upstream.client_cert", &cert);
                match SecretSource::parse(&key).resolve() {
                    Err(msg) => {
                        self.problem(
                            "upstream.client_key",
                            msg,
                            "give the key's PEM as file:/path, env:NAME or inline",
                        );
                        None
                    }
                    Ok(key) => {
                        if let Some(c) = cert_pem {
                            if let Err(e) =
                                crate::pem::certified_key_from_pem(&c, key.expose().as_bytes())
                            {
                                self.problem(
                                    "upstream.client_cert",
                                    e.to_string(),
                                    "give a PEM certificate and the private key that matches it",
                                );
                            }
                        }
                        Some(ClientIdentity { cert, key })
                    }
                }
            }
            _ => {
                self.problem(
                    "upstream.client_cert",
                    "client_cert and client_key must be given together",
                    "set both, or neither",
                );
                None
            }
        };
        if client_identity.is_some() && matches!(&target, Some((UpstreamScheme::Http, _))) {
            self.problem(
                "upstream.client_cert",
                "a client certificate is only sent over https",
                "use an https:// upstream url, or remove client_cert and client_key",
            );
        }
        let connect_timeout = self.duration(
            "upstream.connect_timeout",
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let request_timeout = self.duration(
            "upstream.request_timeout",
            u.request_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let pool_idle_timeout = self.duration(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout.as_deref(),
            Duration::from_secs(90),
        );
        let pool_max_idle_per_host = self.count(
            "upstream.pool_max_idle_per_host",
            u.pool_max_idle_per_host,
            32,
            (0, 10_000),
        ) as usize;
        let (scheme, authority) = target?;
        Some(UpstreamConfig {
            scheme,
            authority,
            ca_bundle,
            client_identity,
            connect_timeout,
            request_timeout,
            pool_max_idle_per_host,
            pool_idle_timeout,
            http2_prior_knowledge: u.http2_prior_knowledge.unwrap_or(false),
            preserve_host: u.preserve_host.unwrap_or(false),
        })
    }

    fn upstream_url(&mut self, url: &str) -> Option<(UpstreamScheme, http::uri::Authority)> {
        const FIX: &str = "write it as \"http://host:port\" or \"https://host:port\"";
        let uri = match url.parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => {
                self.problem("upstream.url", format!("{url:?} is not a URL: {e}"), FIX);
                return None;
            }
        };
        let scheme = match uri.scheme_str() {
            Some("http") => UpstreamScheme::Http,
            Some("https") => UpstreamScheme::Https,
            Some(other) => {
                self.problem(
                    "upstream.url",
                    format!("scheme {other:?} is not supported"),
                    FIX,
                );
                return None;
            }
            None => {
                self.problem("upstream.url", format!("{url:?} has no scheme"), FIX);
                return None;
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            self.problem("upstream.url", format!("{url:?} has no host"), FIX);
            return None;
        };
        if authority.as_str().contains('@') {
            self.problem(
                "upstream.url",
                "credentials in the URL are not supported",
                "remove user:password@ from the URL",
            );
            return None;
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            self.problem(
                "upstream.url",
                format!("{url:?} has a path or query; requests keep their own path"),
                FIX,
            );
            return None;
        }
        Some((scheme, authority))
    }
}
