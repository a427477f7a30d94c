//! Handling of one request on a gateway listener: classify it, hand it to whoever answers, and
//! write its access-log line when the response body is finished (so bytes and duration are true).

use crate::activity::{Activity, InFlight};
use crate::body::Body;
use crate::framing::{self, FramingError, FramingLimits};
use crate::proxy::Proxy;
use crate::router::{Route, Router};
use crate::scim::{RequestInfo, ScimService};
use http::{Request, Response};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Gateway {
    router: Router,
    proxy: Proxy,
    scim: ScimService,
    trusted_proxies: Vec<ipnet::IpNet>,
    authenticator: Arc<crate::auth::Authenticator>,
    framing: FramingLimits,
}

/// Facts about the connection a request arrived on.
#[derive(Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's IP address as text, written once per connection rather than per access line.
    pub peer_ip: Arc<str>,
    /// The client as pass-through's forwarded headers name it.
    pub forwarded_as: Arc<crate::proxy::ClientIdentity>,
    pub scheme: &'static str,
    pub activity: Arc<Activity>,
    /// `Strict-Transport-Security` for every answer on this (TLS) listener.
    pub hsts: Option<http::HeaderValue>,
}

impl Gateway {
    pub fn new(
        router: Router,
        proxy: Proxy,
        scim: ScimService,
        trusted_proxies: Vec<ipnet::IpNet>,
        authenticator: Arc<crate::auth::Authenticator>,
        framing: FramingLimits,
    ) -> Self {
        Self {
            router,
            proxy,
            scim,
            trusted_proxies,
            authenticator,
            framing,
        }
    }

    pub fn authenticator(&self) -> &Arc<crate::auth::Authenticator> {
        &self.authenticator
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: &Connection) -> Response<Body> {
        let in_flight = conn.activity.begin_request();
        let started = Instant::now();
        let route = self.router.classify(req.uri().path());
        let mut line = AccessLine {
            method: req.method().clone(),
            target: loggable_target(req.uri()),
            version: req.version(),
            client: conn.peer_ip.clone(),
            route,
            status: 0,
            bytes: 0,
            started,
            upstream_time: None,
            finished: false,
            _in_flight: in_flight,
        };
        let response = if let Err(e) = framing::check(&req, &self.framing) {
            self.refuse(e, route, req.uri().path())
        } else if framing::is_asterisk(&req) {
            // `OPTIONS *` asks about the server, not a resource: the gateway answers it.
            let mut r = Response::new(crate::body::empty());
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static(framing::ALLOWED_METHODS),
            );
            r
        } else {
            match route {
                Route::PassThrough => match self
                    .proxy
                    .forward(req, &conn.forwarded_as, conn.scheme)
                    .await
                {
                    Ok(forwarded) => {
                        line.upstream_time = Some(forwarded.upstream_time);
                        forwarded.response
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, target = %line.target, "pass-through failed");
                        e.into_response()
                    }
                },
                Route::Scim => {
                    let info = RequestInfo {
                        client: conn.peer.ip(),
                        origin: self.origin(&req, conn),
                    };
                    // Boxed so the SCIM state machine is not part of every pass-through
                    // request's future, which is allocated and moved once per request.
                    Box::pin(self.scim.handle(req, info)).await
                }
                Route::Ambiguous => {
                    tracing::info!(target = %line.target, "ambiguous path under the SCIM provider refused");
                    self.scim.refuse_ambiguous(req.uri().path())
                }
            }
        };
        line.status = response.status().as_u16();
        let (mut parts, body) = response.into_parts();
        if let Some(hsts) = &conn.hsts {
            // The gateway's policy wins over one the platform sent: it owns the TLS name.
            parts
                .headers
                .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        // hyper never polls a body that is already at its end.
        line.finished = body.is_end_stream();
        let body = crate::body::Watched::new(body, line).boxed();
        Response::from_parts(parts, body)
    }

    /// The one place a framing refusal becomes a response: SCIM-shaped under the SCIM path.
    fn refuse(&self, e: FramingError, route: Route, path: &str) -> Response<Body> {
        tracing::debug!(error = %e, "request refused before routing");
        let status = e.status();
        let mut response = match route {
            Route::Scim | Route::Ambiguous => self.scim.refuse(
                path,
                crate::scim::error::ScimError::new(status, e.to_string()),
            ),
            Route::PassThrough => crate::body::text_response(
                status,
                &format!(
                    "{} {}: {e}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
            ),
        };
        if e == FramingError::Connect {
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static(framing::ALLOWED_METHODS),
            );
        }
        response
    }

    /// The origin (`scheme://host`) the client used, for SCIM `Location` headers. Forwarded
    /// headers are believed only from trusted proxies, like everywhere else.
    fn origin(&self, req: &Request<Incoming>, conn: &Connection) -> String {
        let trusted = crate::proxy::is_trusted(conn.peer.ip(), &self.trusted_proxies);
        let first = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let scheme = trusted
            .then(|| first("x-forwarded-proto"))
            .flatten()
            .filter(|s| s == "http" || s == "https")
            .unwrap_or_else(|| conn.scheme.to_string());
        let host = trusted
            .then(|| first("x-forwarded-host"))
            .flatten()
            // `:authority` (HTTP/2) is the URI's authority and wins over a Host header.
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .or_else(|| first("host"))
            .filter(|h| h.parse::<http::uri::Authority>().is_ok())
            .unwrap_or_else(|| "localhost".to_string());
        format!("{scheme}://{host}")
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }
}

/// The path with the value of every query parameter that might carry a credential masked:
/// the platform accepts `?appKey=` and tokens in query strings.
fn loggable_target(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_sensitive(k) => format!("{k}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", masked.join("&"))
}

fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "key", "token", "secret", "pass", "auth", "code", "session", "sig", "cred",
    ]
    .iter()
    .any(|s| k.contains(s))
}

struct AccessLine {
    method: http::Method,
    target: String,
    version: http::Version,
    client: Arc<str>,
    route: Route,
    status: u16,
    bytes: u64,
    started: Instant,
    upstream_time: Option<Duration>,
    finished: bool,
    /// Held until the response is fully sent, so idle detection knows a request is running.
    _in_flight: InFlight,
}

/// The metrics of one answered request: run once per request, so the micro-benchmark
/// (`request_metrics` in benches/micro.rs) measures this very function.
pub fn record_request(route: Route, status: u16, elapsed: Duration, upstream: Option<Duration>) {
    crate::metrics::metrics().request(route, status, elapsed, upstream);
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        record_request(self.route, self.status, elapsed, self.upstream_time);
        crate::logging::access(&crate::logging::AccessRecord {
            method: self.method.as_str(),
            path: &self.target,
            version: version_name(self.version),
            status: self.status,
            bytes: self.bytes,
            duration_ms: millis(elapsed),
            upstream_ms: self.upstream_time.map(millis),
            client: &self.client,
            route: self.route.as_str(),
            complete: self.finished,
        });
    }
}

/// The protocol version as the access log has always written it (`http::Version`'s Debug).
fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Milliseconds to the microsecond: precise enough for latency, short enough to read.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The access line learns the bytes sent and whether the body ended from the body itself.
impl crate::body::BodyWatch for AccessLine {
    fn data(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    fn ended(&mut self) {
        self.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_named_as_before() {
        for v in [
            http::Version::HTTP_09,
            http::Version::HTTP_10,
            http::Version::HTTP_11,
            http::Version::HTTP_2,
            http::Version::HTTP_3,
        ] {
            assert_eq!(version_name(v), format!("{v:?}"));
        }
    }

    #[test]
    fn credentials_in_queries_are_masked() {
        let uri: http::Uri = "/Thingworx/Things/X?appKey=s3cret&x=1&access_token=t0k&flag"
            .parse()
            .unwrap();
        let logged = loggable_target(&uri);
        assert_eq!(
            logged,
            "/Thingworx/Things/X?appKey=REDACTED&x=1&access_token=REDACTED&flag"
        );
    }
}
