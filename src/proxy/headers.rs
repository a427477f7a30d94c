//! Header rules for pass-through: what is hop-by-hop, and what the upstream is told about the
//! client. Inbound `X-Forwarded-*`/`Forwarded` are believed only from trusted proxies; from
//! anyone else they are replaced, because the platform may base decisions on them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Only meaningful with an h2c upgrade, which is never relayed; a client that does not name it
/// in `Connection` must not get it through either.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies conventionally drop;
/// `Connection` first.
fn fixed_hop_by_hop() -> [&'static HeaderName; 10] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &HTTP2_SETTINGS,
    ]
}

/// The protocols the request asks to switch to that `allowed` (lower-case) permits, in the
/// client's order; `None` when it asks for none of them. A token is matched whole or by its
/// name without `/version`.
pub fn requested_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<Vec<String>> {
    if !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let permitted: Vec<String> = list_tokens(headers, &header::UPGRADE)
        .filter(|t| upgrade_allowed(t, allowed))
        .map(str::to_owned)
        .collect();
    (!permitted.is_empty()).then_some(permitted)
}

fn upgrade_allowed(token: &str, allowed: &[String]) -> bool {
    let name = token.split('/').next().unwrap_or(token);
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(token) || a.eq_ignore_ascii_case(name))
}

/// Whether a 101's `Upgrade` names one of the protocols that were asked for. Anything else
/// means the platform switched to a protocol the gateway did not agree to relay.
pub fn upgrade_answered(headers: &HeaderMap, asked: &[String]) -> bool {
    let mut answered = list_tokens(headers, &header::UPGRADE);
    match (answered.next(), answered.next()) {
        (Some(protocol), None) => asked.iter().any(|a| a.eq_ignore_ascii_case(protocol)),
        _ => false,
    }
}

fn list_tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    list_tokens(headers, &header::CONNECTION)
}

/// Removes hop-by-hop headers, including any the sender named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name present instead of a removal per hop-by-hop name, and no copies:
    // most messages carry none or only `Connection`, and this runs twice per pass-through
    // request.
    let fixed = fixed_hop_by_hop();
    let mut present = [false; 10];
    for name in headers.keys() {
        if let Some(i) = fixed.iter().position(|f| *f == name) {
            present[i] = true;
        }
    }
    if present[0] {
        // `Connection` (first in the list): the names it lists go too. Fixed ones are removed
        // below anyway, so only other names are parsed (and copied).
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !fixed.iter().any(|f| f.as_str().eq_ignore_ascii_case(t)))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in fixed.iter().zip(present) {
        if present {
            headers.remove(*name);
        }
    }
}

/// Restores the two headers an upgrade needs after [`strip_hop_by_hop`] removed them.
pub fn set_upgrade(headers: &mut HeaderMap, protocols: &[String]) {
    if let Ok(upgrade) = HeaderValue::from_str(&protocols.join(", ")) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// A connection's client as the forwarded headers name it, written once per connection.
pub struct ClientIdentity {
    ip: IpAddr,
    /// For `X-Forwarded-For`.
    ip_text: String,
    /// `ip_text` as a header value, shared by every request on the connection.
    ip_value: Option<HeaderValue>,
    /// For `Forwarded`'s `for=` (RFC 7239 §6: an IPv6 address is bracketed and quoted).
    node: String,
}

impl ClientIdentity {
    pub fn new(ip: IpAddr) -> Self {
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let ip_text = ip.to_string();
        Self {
            ip,
            ip_value: HeaderValue::from_str(&ip_text).ok(),
            ip_text,
            node,
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

pub struct ClientFacts<'a> {
    pub client: &'a ClientIdentity,
    /// Scheme the client used to reach the gateway.
    pub scheme: &'static str,
    /// Host the client asked for (Host header or `:authority`).
    pub host: Option<&'a HeaderValue>,
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

pub fn set_forwarded(headers: &mut HeaderMap, facts: &ClientFacts<'_>, trusted: bool) {
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let (prior_for, prior_forwarded, prior_proto, prior_host) = if trusted {
        (
            joined(headers, &X_FORWARDED_FOR),
            joined(headers, &header::FORWARDED),
            joined(headers, &X_FORWARDED_PROTO),
            joined(headers, &X_FORWARDED_HOST),
        )
    } else {
        (None, None, None, None)
    };
    for name in [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &header::FORWARDED,
    ] {
        headers.remove(name);
    }

    match (prior_for, &facts.client.ip_value) {
        (Some(prior), _) => insert(
            headers,
            &X_FORWARDED_FOR,
            &format!("{prior}, {}", facts.client.ip_text),
        ),
        (None, Some(ip)) => {
            headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        }
        (None, None) => {}
    }
    match prior_proto {
        Some(proto) => insert(headers, &X_FORWARDED_PROTO, &proto),
        None => {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(facts.scheme),
            );
        }
    }
    match (prior_host, facts.host) {
        (Some(prior), _) => insert(headers, &X_FORWARDED_HOST, &prior),
        (None, Some(host)) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        (None, None) => {}
    }

    let safe_host = facts
        .host
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_forwarded_safe(h));
    let mut forwarded = String::with_capacity(
        prior_forwarded.as_ref().map_or(0, |p| p.len() + 2)
            + 4
            + facts.client.node.len()
            + 7
            + facts.scheme.len()
            + safe_host.map_or(0, |h| h.len() + 8),
    );
    if let Some(prior) = &prior_forwarded {
        forwarded.push_str(prior);
        forwarded.push_str(", ");
    }
    forwarded.push_str("for=");
    forwarded.push_str(&facts.client.node);
    forwarded.push_str(";proto=");
    forwarded.push_str(facts.scheme);
    if let Some(host) = safe_host {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    // The text becomes the value's buffer as it is, without a copy.
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(header::FORWARDED, value);
    }
}

/// A host goes into a quoted-string; refuse anything that could break out of it.
fn is_forwarded_safe(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ClientFacts<'static> {
        static HOST: HeaderValue = HeaderValue::from_static("gw.example.com:8443");
        static CLIENT: std::sync::LazyLock<ClientIdentity> =
            std::sync::LazyLock::new(|| ClientIdentity::new("10.1.2.3".parse().unwrap()));
        ClientFacts {
            client: &CLIENT,
            scheme: "https",
            host: Some(&HOST),
        }
    }

    #[test]
    fn connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-drop-me".parse().unwrap());
        h.insert("x-drop-me", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn untrusted_client_cannot_spoof() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        set_forwarded(&mut h, &facts(), false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw.example.com:8443");
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;proto=https;host=\"gw.example.com:8443\""
        );
    }

    #[test]
    fn trusted_proxy_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.append("x-forwarded-for", "7.7.7.7".parse().unwrap());
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        set_forwarded(&mut h, &facts(), true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn every_hop_by_hop_header_and_every_value_goes() {
        let mut h = HeaderMap::new();
        h.append("connection", "keep-alive".parse().unwrap());
        h.append("connection", "X-Named, close".parse().unwrap());
        h.append("x-named", "1".parse().unwrap());
        h.append("x-named", "2".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        for name in [
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
        }
        h.insert("x-end-to-end", "kept".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", "b=2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<(&str, &str)> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-end-to-end", "kept")
            ]
        );
    }

    #[test]
    fn a_trusted_forwarded_chain_is_extended_and_an_unsafe_host_left_out() {
        let mut h = HeaderMap::new();
        h.append("forwarded", "for=1.1.1.1".parse().unwrap());
        h.append("forwarded", "for=2.2.2.2;proto=http".parse().unwrap());
        let evil = HeaderValue::from_static("evil\";by=x");
        let f = ClientFacts {
            host: Some(&evil),
            ..facts()
        };
        set_forwarded(&mut h, &f, true);
        assert_eq!(
            h["forwarded"],
            "for=1.1.1.1, for=2.2.2.2;proto=http, for=10.1.2.3;proto=https"
        );
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
    }

    #[test]
    fn an_ipv6_client_is_named_plainly_in_x_forwarded_for() {
        let client = ClientIdentity::new("2001:db8::7".parse().unwrap());
        let mut h = HeaderMap::new();
        let f = ClientFacts {
            client: &client,
            scheme: "https",
            host: Some(&HeaderValue::from_static("gw")),
        };
        set_forwarded(&mut h, &f, false);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::7]\";proto=https;host=\"gw\""
        );
    }

    #[test]
    fn ipv6_is_quoted_in_forwarded() {
        let mut h = HeaderMap::new();
        let client = ClientIdentity::new("::1".parse().unwrap());
        let f = ClientFacts {
            client: &client,
            scheme: "http",
            host: None,
        };
        set_forwarded(&mut h, &f, false);
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let allowed = ["websocket".to_string()];
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(requested_upgrade(&h, &allowed).is_none());
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(requested_upgrade(&h, &allowed).unwrap(), ["websocket"]);
    }

    #[test]
    fn only_allowed_upgrades_are_kept() {
        let allowed = ["websocket".to_string(), "foo".to_string()];
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        assert!(requested_upgrade(&h, &allowed).is_none());
        h.insert("upgrade", "h2c, WebSocket, foo/2".parse().unwrap());
        assert_eq!(
            requested_upgrade(&h, &allowed).unwrap(),
            ["WebSocket", "foo/2"]
        );
    }

    #[test]
    fn a_switch_must_name_what_was_asked() {
        let asked = ["WebSocket".to_string()];
        let answer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("upgrade", v.parse().unwrap());
            upgrade_answered(&h, &asked)
        };
        assert!(answer("websocket"));
        assert!(!answer("foo"));
        assert!(!answer("websocket, h2c"));
        assert!(!upgrade_answered(&HeaderMap::new(), &asked));
    }

    #[test]
    fn http2_settings_is_always_dropped() {
        let mut h = HeaderMap::new();
        h.insert("http2-settings", "AAMAAABkAAQAAP__".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
