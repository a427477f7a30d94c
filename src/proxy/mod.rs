//! Pass-through to the platform: a pooled upstream client, header rewriting, streamed bodies in
//! both directions, and protocol upgrades (the platform's edge devices use WebSockets).

mod headers;
mod pool;

pub use headers::{is_trusted, ClientIdentity};

use crate::body::{text_response, Body, BoxError, ClientBody, ClientBodyError};
use crate::config::{UpstreamConfig, UpstreamScheme};
use crate::pem;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use rustls::crypto::aws_lc_rs;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

/// hyper-util's client: for an HTTPS or HTTP/2 platform, upgrades and the identity provider.
pub type HyperClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The pooled connections to the platform, shared by pass-through and the native REST client:
/// the gateway's own HTTP/1.1 pool for a plain-HTTP platform, hyper-util's client otherwise.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Option<Arc<pool::Http1Pool>>,
    client: HyperClient,
    /// Put before the target for hyper-util's client.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The platform's `Host`, parsed once: for a request sent through the pool, which writes the
    /// target as it is given, and for pass-through when the client's is not preserved.
    host: Option<HeaderValue>,
}

/// Why a request to the platform got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: nothing reached the platform.
    #[error("{0}")]
    Connect(String),
    /// The connection was made, so the request may have reached the platform.
    #[error("{0}")]
    Exchange(String),
    /// Nothing was sent: the target cannot be written as a URI.
    #[error("the request target is not a valid URI")]
    BadTarget,
}

impl UpstreamClient {
    /// Sends `req`, whose URI is the target's path and query, to the platform.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        if let Some(pool) = &self.pool {
            if let Some(host) = &self.host {
                req.headers_mut()
                    .entry(header::HOST)
                    .or_insert_with(|| host.clone());
            }
            return pool.send(req).await.map_err(|e| match e {
                pool::PoolError::Connect(e) => UpstreamError::Connect(error_chain(&*e)),
                pool::PoolError::Exchange(e) => UpstreamError::Exchange(error_chain(&e)),
            });
        }
        let mut uri = std::mem::take(req.uri_mut()).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(uri).map_err(|_| UpstreamError::BadTarget)?;
        match self.client.request(req).await {
            Ok(response) => Ok(response.map(|body| body.map_err(BoxError::from).boxed())),
            Err(e) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Err(e) => Err(UpstreamError::Exchange(error_chain(&e))),
        }
    }
}

/// An error with each of its causes, for the operator.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyBuildError {
    #[error("upstream TLS: {0}")]
    Pem(#[from] pem::PemError),
    #[error("upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a request could not be passed through. Turned into a response only by
/// [`ProxyError::into_response`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream exchange failed: {0}")]
    Failed(String),
    #[error("request cannot be forwarded: {0}")]
    BadRequest(&'static str),
    #[error("client request body: {0}")]
    ClientBody(#[from] ClientBodyError),
}

impl ProxyError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            ProxyError::Unreachable(_) => text_response(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: upstream unavailable",
            ),
            ProxyError::Failed(_) => text_response(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: upstream connection failed",
            ),
            ProxyError::Timeout(_) => text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Timeout: upstream did not answer in time",
            ),
            ProxyError::BadRequest(why) => {
                text_response(StatusCode::BAD_REQUEST, &format!("400 Bad Request: {why}"))
            }
            ProxyError::ClientBody(ClientBodyError::Stalled(_)) => text_response(
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout: the request body did not arrive in time",
            ),
            ProxyError::ClientBody(ClientBodyError::TooLarge(limit)) => text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("413 Content Too Large: the request body exceeds {limit} bytes"),
            ),
            ProxyError::ClientBody(ClientBodyError::Malformed(_)) => text_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request body is malformed or ended early",
            ),
        }
    }
}

/// Bodies of a declared length up to this are read whole before the upstream request starts,
/// as nginx does by default: sent in one write, they cost the upstream socket one segment
/// instead of one per TLS record, and a slow client never holds a pooled upstream connection.
/// Larger or unsized bodies stream.
const WHOLE_BODY_UP_TO: u64 = 64 * 1024;

/// What the proxy learnt about a forwarded request, for the access log.
pub struct Forwarded {
    pub response: Response<Body>,
    pub upstream_time: Duration,
}

pub struct Proxy {
    /// Pass-through's connections: its own HTTP/1.1 pool for a plain-HTTP platform spoken to
    /// in HTTP/1.1, hyper-util's client otherwise. The native REST client shares them.
    client: UpstreamClient,
    /// Upgrades can only ride HTTP/1.1, so they never share the pool with HTTP/2 connections.
    upgrade_client: HyperClient,
    upstream: UpstreamConfig,
    trusted: Vec<IpNet>,
    /// Lower-cased `proxy.allowed_upgrades`.
    allowed_upgrades: Vec<String>,
    tunnels: TaskTracker,
    on_upstream_answer: Box<dyn Fn() + Send + Sync>,
    body_read_timeout: Duration,
    max_body_bytes: Option<u64>,
}

impl Proxy {
    /// `tunnels` tracks upgraded connections so shutdown can wait for them.
    pub fn new(
        upstream: UpstreamConfig,
        trusted: Vec<IpNet>,
        allowed_upgrades: Vec<String>,
        tunnels: TaskTracker,
        on_upstream_answer: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Self, ProxyBuildError> {
        let client = build_upstream_client(&upstream)?;
        let upgrade_client = build_client(&upstream, client_tls_config(&upstream)?, true);
        Ok(Self {
            client,
            upgrade_client,
            upstream,
            trusted,
            allowed_upgrades,
            tunnels,
            on_upstream_answer,
            body_read_timeout: Duration::from_secs(30),
            max_body_bytes: None,
        })
    }

    /// How long a client's request body may stop arriving, and how large it may be (`None`:
    /// any size), before the upstream request is abandoned.
    pub fn with_body_limits(mut self, read_timeout: Duration, max_bytes: Option<u64>) -> Self {
        self.body_read_timeout = read_timeout;
        self.max_body_bytes = max_bytes;
        self
    }

    /// The pooled client, for gateway components that call the platform themselves.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &ClientIdentity,
        scheme: &'static str,
    ) -> Result<Forwarded, ProxyError> {
        // Past a 101 the connection is a raw tunnel the router never sees again, so a switch is
        // relayed only where it cannot be abused: a GET, for a protocol the operator allowed.
        // Anything else goes on as an ordinary request, its Upgrade removed with the hop-by-hop
        // headers below.
        let upgrade = (req.version() == Version::HTTP_11 && req.method() == http::Method::GET)
            .then(|| headers::requested_upgrade(req.headers(), &self.allowed_upgrades))
            .flatten();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        if let Some(limit) = self.max_body_bytes {
            // Before the body is touched: polling it is what sends `100 Continue`.
            if http_body::Body::size_hint(&body).lower() > limit {
                return Err(ProxyError::ClientBody(ClientBodyError::TooLarge(limit)));
            }
        }
        // `:authority` (HTTP/2) or the absolute-form target is the URI's authority; framing
        // checks made sure a Host header beside it agrees.
        let client_host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => parts
                .headers
                .get(header::HOST)
                .filter(|h| h.to_str().is_ok())
                .cloned(),
        };

        // The client's path and query are kept as they arrived (no second parse); only the
        // scheme and authority become the upstream's.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        let pool = self.client.pool.as_ref().filter(|_| upgrade.is_none());
        if pool.is_some() {
            // The pool writes the target as it is: origin-form, as HTTP/1.1 asks of a client
            // that is not talking to a proxy.
            uri.scheme = None;
            uri.authority = None;
        } else {
            uri.scheme = Some(self.client.scheme.clone());
            uri.authority = Some(self.client.authority.clone());
        }
        parts.uri = Uri::from_parts(uri)
            .map_err(|_| ProxyError::BadRequest("the request target is not a valid path"))?;
        parts.version = Version::HTTP_11;

        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(
            &mut parts.headers,
            &headers::ClientFacts {
                client,
                scheme,
                host: client_host.as_ref(),
            },
            is_trusted(client.ip(), &self.trusted),
        );
        let host = if self.upstream.preserve_host {
            client_host.or_else(|| self.client.host.clone())
        } else {
            self.client.host.clone()
        };
        if let Some(host) = host {
            parts.headers.insert(header::HOST, host);
        }
        if let Some(protocols) = &upgrade {
            headers::set_upgrade(&mut parts.headers, protocols);
        }

        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = if http_body::Body::is_end_stream(&body) {
            // Nothing to read: a body with no state, which boxes without an allocation.
            crate::body::empty()
        } else {
            let body = ClientBody::new(body, self.body_read_timeout, self.max_body_bytes);
            match declared {
                Some(len) if len > 0 && len <= WHOLE_BODY_UP_TO && upgrade.is_none() => {
                    // Read before any upstream connection is taken, so the whole read is
                    // bounded by `request_timeout` too, as waiting for the platform is.
                    let limit = self.upstream.request_timeout;
                    match tokio::time::timeout(limit, crate::body::Chunks::read(body)).await {
                        Err(_) => return Err(ClientBodyError::Stalled(limit).into()),
                        Ok(read) => read?.map_err(|never| match never {}).boxed(),
                    }
                }
                _ => body.map_err(BoxError::from).boxed(),
            }
        };
        let upstream_req = Request::from_parts(parts, body);
        let started = Instant::now();
        let exchange = async {
            match pool {
                Some(pool) => pool.send(upstream_req).await.map_err(|e| match e {
                    pool::PoolError::Connect(e) => classify(&*e, true),
                    pool::PoolError::Exchange(e) => classify(&e, false),
                }),
                None => {
                    let client = if upgrade.is_some() {
                        &self.upgrade_client
                    } else {
                        &self.client.client
                    };
                    match client.request(upstream_req).await {
                        Ok(response) => {
                            Ok(response.map(|body| body.map_err(BoxError::from).boxed()))
                        }
                        Err(e) => Err(classify(&e, e.is_connect())),
                    }
                }
            }
        };
        let mut response = match tokio::time::timeout(self.upstream.request_timeout, exchange).await
        {
            Err(_) => return Err(ProxyError::Timeout(self.upstream.request_timeout)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(r)) => r,
        };
        let upstream_time = started.elapsed();
        (self.on_upstream_answer)();

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(asked)) = (client_upgrade, upgrade) else {
                // A 101 nobody asked for cannot be relayed meaningfully.
                return Err(ProxyError::Failed(
                    "upstream switched protocols without an upgrade request".into(),
                ));
            };
            if !headers::upgrade_answered(response.headers(), &asked) {
                return Err(ProxyError::Failed(
                    "upstream switched to a protocol that was not asked for".into(),
                ));
            }
            let protocol = response.headers().get(header::UPGRADE).cloned();
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.tunnels.spawn(async move {
                tunnel(client_upgrade, upstream_upgrade).await;
            });
            let (mut parts, _) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = protocol {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol);
            }
            return Ok(Forwarded {
                response: Response::from_parts(parts, crate::body::empty()),
                upstream_time,
            });
        }

        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let body =
            if parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED {
                // These never have a body; a length beside one makes an HTTP/2 response malformed
                // (RFC 9113 §8.1.1), so neither reaches the client.
                parts.headers.remove(header::CONTENT_LENGTH);
                crate::body::empty()
            } else {
                body
            };
        Ok(Forwarded {
            response: Response::from_parts(parts, body),
            upstream_time,
        })
    }
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            tracing::debug!(
                bytes_up = up,
                bytes_down = down,
                "upgraded connection closed"
            )
        }
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
    }
}

/// The forwarded headers' view of a connection's client, made once when it connects.
pub fn client_identity(peer: SocketAddr) -> ClientIdentity {
    ClientIdentity::new(canonical_ip(peer.ip()))
}

/// `::ffff:10.0.0.1` is an IPv4 client on a dual-stack socket; CIDR rules are written for IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What went wrong in an upstream exchange, from the error and its sources; `connect` says the
/// request never left the gateway because no connection could be opened.
fn classify(e: &(dyn std::error::Error + 'static), connect: bool) -> ProxyError {
    let mut detail = e.to_string();
    let mut timed_out = false;
    let mut source = e.source();
    while let Some(s) = source {
        // The client's own body failed (stalled, too large, malformed): the client's fault.
        if let Some(body) = s.downcast_ref::<ClientBodyError>() {
            return ProxyError::ClientBody(match body {
                ClientBodyError::Stalled(d) => ClientBodyError::Stalled(*d),
                ClientBodyError::TooLarge(l) => ClientBodyError::TooLarge(*l),
                ClientBodyError::Malformed(_) => {
                    return ProxyError::BadRequest("the request body is malformed or ended early")
                }
            });
        }
        timed_out |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    timed_out |= e
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    if connect {
        // hyper-util words its own connect_timeout as tokio's "deadline has elapsed"; name it,
        // so an operator reading the log knows the platform never answered the connect.
        if timed_out {
            ProxyError::Unreachable(format!("connect timed out: {detail}"))
        } else {
            ProxyError::Unreachable(detail)
        }
    } else {
        ProxyError::Failed(detail)
    }
}

fn client_tls_config(upstream: &UpstreamConfig) -> Result<rustls::ClientConfig, ProxyBuildError> {
    let mut roots = rustls::RootCertStore::empty();
    match &upstream.ca_bundle {
        Some(path) => {
            let pem_bytes = pem::read_file(path)?;
            for cert in pem::certificates(&pem_bytes, "upstream.ca_bundle")? {
                roots.add(cert)?;
            }
        }
        None if upstream.scheme == UpstreamScheme::Https => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "could not load some system CA certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found; set upstream.ca_bundle");
            }
        }
        None => {}
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match &upstream.client_identity {
        Some(identity) => {
            let cert_pem = pem::read_file(&identity.cert)?;
            let certs = pem::certificates(&cert_pem, "upstream.client_cert")?;
            let key = pem::private_key(identity.key.expose().as_bytes(), "upstream.client_key")?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// A client trusting `roots`, for the identity provider's endpoints.
pub fn client_with_roots(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
) -> Result<HyperClient, ProxyBuildError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector(tls, connect_timeout, false)))
}

/// A pooled client to the configured upstream (HTTP/1.1 and, where offered, HTTP/2).
pub fn build_upstream_client(upstream: &UpstreamConfig) -> Result<UpstreamClient, ProxyBuildError> {
    let client = build_client(upstream, client_tls_config(upstream)?, false);
    let scheme = match upstream.scheme {
        UpstreamScheme::Https => http::uri::Scheme::HTTPS,
        UpstreamScheme::Http => http::uri::Scheme::HTTP,
    };
    let pool = if upstream.scheme == UpstreamScheme::Http && !upstream.http2_prior_knowledge {
        // The authority was validated with the configuration, so this builds; if it ever did
        // not, hyper-util's client would carry the requests as it does for https.
        http::uri::Builder::new()
            .scheme(scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .ok()
            .map(|origin| {
                pool::Http1Pool::new(
                    tcp_connector(upstream.connect_timeout),
                    origin,
                    upstream.pool_max_idle_per_host,
                    upstream.pool_idle_timeout,
                )
            })
    } else {
        None
    };
    Ok(UpstreamClient {
        pool,
        client,
        scheme,
        authority: upstream.authority.clone(),
        host: HeaderValue::from_str(upstream.authority.as_str()).ok(),
    })
}

fn build_client(
    upstream: &UpstreamConfig,
    tls: rustls::ClientConfig,
    http1_only: bool,
) -> HyperClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(upstream.pool_max_idle_per_host)
        .pool_idle_timeout(upstream.pool_idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(upstream.http2_prior_knowledge && !http1_only)
        .build(connector(tls, upstream.connect_timeout, http1_only))
}

/// TCP with no Nagle delay and keep-alive probes.
fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// TCP (no Nagle delay, keep-alive probes) with TLS where the URL says https.
fn connector(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    http1_only: bool,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = tcp_connector(connect_timeout);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if http1_only {
        builder.enable_http1().wrap_connector(http)
    } else {
        builder.enable_http1().enable_http2().wrap_connector(http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_unwrapped() {
        assert_eq!(
            canonical_ip("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }
}
