//! The SCIM client both protocol suites drive the gateway with; each suite adds the calls and
//! assertions of its own protocol version.

use super::Gateway;
use base64::Engine;
use http::{HeaderMap, Method, Request};
use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// One SCIM answer: status, headers and the body parsed as JSON (`Null` when it is not JSON).
pub struct ScimResp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl fmt::Display for ScimResp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

impl ScimResp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {self}"))
            .to_string()
    }
}

/// A SCIM client speaking HTTP/1.1 over TLS to the gateway.
pub struct Scim {
    pub addr: SocketAddr,
    pub host: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// Sent as `Accept` when a request names none.
    pub default_accept: Option<&'static str>,
    /// Requests sent so far: each gets an access line (see `Gateway::wait_access_lines`).
    sent: std::sync::atomic::AtomicUsize,
}

impl Scim {
    /// A client of `gateway`'s first listener, trusting its self-signed certificate.
    pub fn of(gateway: &Gateway, default_accept: Option<&'static str>) -> Scim {
        let ca = std::fs::read(gateway.dir.join("tls").join("cert.pem"))
            .unwrap_or_else(|e| panic!("the gateway's self-signed certificate: {e}"));
        Scim {
            addr: gateway.gateway_addr,
            host: format!("localhost:{}", gateway.gateway_addr.port()),
            tls: super::client_config(&ca, &[b"http/1.1"]),
            default_accept,
            sent: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many requests this client has sent.
    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `scheme://host` as the gateway should report it in `Location`.
    pub fn origin(&self) -> String {
        format!("https://{}", self.host)
    }

    /// A request to an absolute path with the given headers (and the default `Accept`).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> ScimResp {
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", &self.host);
        if let Some(accept) = self.default_accept {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
            {
                builder = builder.header("accept", accept);
            }
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = match body {
            Some(b) => super::full(b),
            None => super::empty(),
        };
        let req = builder.body(body).unwrap();
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let resp = super::send_tls(self.addr, "gw.test", self.tls.clone(), req)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = resp.text();
        ScimResp {
            status: resp.status.as_u16(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers: resp.headers,
            text,
        }
    }
}

/// Where each protocol version is served: the platform's own SCIM paths.
pub const BASE1: &str = "/Thingworx/SCIMProvider/SCIM";
pub const BASE2: &str = "/Thingworx/SCIMProvider/SCIM/v2";

/// The SCIM version a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn base(self) -> &'static str {
        match self {
            Version::V1 => BASE1,
            Version::V2 => BASE2,
        }
    }

    /// The media type that version's clients send and accept.
    pub fn media_type(self) -> &'static str {
        match self {
            Version::V1 => "application/json",
            Version::V2 => "application/scim+json",
        }
    }
}

impl Scim {
    /// A call as an identity provider makes it: `authorization`, the version's media type as
    /// `accept` and `content-type` unless `extra` names them, then `extra`; `rel` is relative to
    /// the version's base path.
    pub async fn call_as(
        &self,
        authorization: &str,
        version: Version,
        method: &str,
        rel: &str,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> ScimResp {
        let named = |name: &str| extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        let mut headers = vec![("authorization", authorization)];
        for name in ["accept", "content-type"] {
            if !named(name) {
                headers.push((name, version.media_type()));
            }
        }
        headers.extend_from_slice(extra);
        self.send(
            method,
            &format!("{}{rel}", version.base()),
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }
}

/// Percent-encodes everything but letters and digits, for filters in query strings.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The id the gateway derives, computed independently: base64url (no padding) of the
/// lower-cased platform name.
pub fn id_of(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.to_lowercase())
}

/// A group's id: `g.` before the user-id encoding, so users and groups never share an id.
#[allow(dead_code)]
pub fn group_id_of(name: &str) -> String {
    format!("g.{}", id_of(name))
}
