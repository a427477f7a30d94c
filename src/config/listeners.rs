//! The `[[listener]]` sections: addresses, TLS (files or generated), HSTS, and the upgrades a
//! listener passes through.

use super::{is_tchar, raw, ListenerConfig, TlsSource, Validator};

impl Validator<'_> {
    /// Upgrade tokens are protocol names (RFC 9110 §7.8), optionally with `/version`; anything
    /// else could never match a client's token and is a typo worth reporting.
    pub(super) fn allowed_upgrades(&mut self, raw: Option<Vec<String>>) -> Vec<String> {
        let Some(raw) = raw else {
            return vec!["websocket".to_string()];
        };
        let mut out = Vec::new();
        for (i, token) in raw.iter().enumerate() {
            let valid = !token.is_empty()
                && token.split('/').count() <= 2
                && token
                    .split('/')
                    .all(|part| !part.is_empty() && part.bytes().all(is_tchar));
            if !valid {
                self.problem(
                    format!("proxy.allowed_upgrades[{i}]"),
                    format!("{token:?} is not an upgrade protocol token"),
                    "write a protocol name such as \"websocket\"",
                );
            } else if token.eq_ignore_ascii_case("h2c") {
                self.problem(
                    format!("proxy.allowed_upgrades[{i}]"),
                    "h2c cannot be relayed: an HTTP/2 connection to the platform would bypass the gateway's routing of every later request on it",
                    "remove it; clients reach the gateway over HTTP/2 with TLS (ALPN h2) instead",
                );
            } else {
                out.push(token.to_ascii_lowercase());
            }
        }
        out
    }

    pub(super) fn listeners(&mut self, raw: Vec<raw::RawListener>) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.problem(
                "listeners",
                "no listener is configured",
                "add a [[listeners]] table with an address, e.g. address = \"0.0.0.0:8443\"",
            );
        }
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let name = format!("listeners[{i}]");
            let address = match l.address.as_deref() {
                Some(a) => self.socket_addr(&format!("{name}.address"), a),
                None => {
                    self.problem(
                        format!("{name}.address"),
                        "is missing",
                        "add address = \"0.0.0.0:8443\"",
                    );
                    None
                }
            };
            let has_tls = l.tls.is_some();
            let tls = l.tls.and_then(|t| self.tls(&format!("{name}.tls"), t));
            let hsts = l
                .hsts
                .and_then(|h| self.hsts(&format!("{name}.hsts"), h, has_tls));
            if let Some(address) = address {
                if address.port() != 0 && out.iter().any(|o: &ListenerConfig| o.address == address)
                {
                    self.problem(
                        format!("{name}.address"),
                        format!("{address} is used by an earlier listener"),
                        "give every listener its own address",
                    );
                }
                out.push(ListenerConfig { address, tls, hsts });
            }
        }
        out
    }

    fn hsts(&mut self, name: &str, h: raw::RawHsts, has_tls: bool) -> Option<http::HeaderValue> {
        if !has_tls {
            // Browsers ignore the header over plain HTTP; set on one it would only mislead.
            self.problem(
                name,
                "is set on a listener without tls",
                "remove hsts from this listener, or give it a tls table",
            );
            return None;
        }
        let Some(max_age) = h.max_age else {
            self.problem(
                format!("{name}.max_age"),
                "is missing",
                "add max_age = 31536000 (seconds; one year)",
            );
            return None;
        };
        let max_age = self.count(&format!("{name}.max_age"), Some(max_age), 0, (0, i64::MAX));
        let mut value = format!("max-age={max_age}");
        if h.include_subdomains.unwrap_or(false) {
            value.push_str("; includeSubDomains");
        }
        http::HeaderValue::from_str(&value).ok()
    }

    fn tls(&mut self, name: &str, t: raw::RawTls) -> Option<TlsSource> {
        if t.self_signed {
            if t.cert.is_some() || t.key.is_some() {
                self.problem(
                    name,
                    "both self_signed = true and cert/key are set",
                    "remove cert and key to generate a certificate, or remove self_signed to use the files",
                );
                return None;
            }
            for (i, n) in t.names.iter().enumerate() {
                if n.is_empty() || n.contains(char::is_whitespace) {
                    self.problem(
                        format!("{name}.names[{i}]"),
                        format!("{n:?} is not a DNS name or IP address"),
                        "write a host name such as \"gateway.example.com\"",
                    );
                }
            }
            let dir = match t.self_signed_dir {
                Some(d) => self.path(&d),
                None => std::env::temp_dir().join("scimgate-selfsigned"),
            };
            return Some(TlsSource::SelfSigned {
                dir,
                names: t.names,
            });
        }
        if t.self_signed_dir.is_some() || !t.names.is_empty() {
            self.problem(
                name,
                "self_signed_dir and names only apply to a generated certificate",
                "set self_signed = true, or remove them",
            );
        }
        match (t.cert, t.key) {
            (Some(cert), Some(key)) => {
                let cert = self.path(&cert);
                let key = self.path(&key);
                let cert_pem = self.readable_file(&format!("{name}.cert"), &cert);
                let key_pem = self.readable_file(&format!("{name}.key"), &key);
                if let (Some(c), Some(k)) = (cert_pem, key_pem) {
                    if let Err(e) = crate::pem::certified_key_from_pem(&c, &k) {
                        self.problem(
                            format!("{name}.cert"),
                            e.to_string(),
                            "give a PEM certificate chain and the private key that matches it",
                        );
                    }
                }
                Some(TlsSource::Files { cert, key })
            }
            _ => {
                self.problem(
                    name,
                    "needs both cert and key, or self_signed = true",
                    "add cert = \"/path/tls.crt\" and key = \"/path/tls.key\", or self_signed = true",
                );
                None
            }
        }
    }
}
