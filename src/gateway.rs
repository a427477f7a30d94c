//! Handling of one request on a gateway listener: classify it, hand it to whoever answers, and
//! write its access-log line when the response body is finished (so bytes and duration are true).

use crate::body::{text_response, Body, BoxError};
use crate::proxy::Proxy;
use crate::router::{Route, Router};
use crate::server::activity::{Activity, InFlight};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub struct Gateway {
    router: Router,
    proxy: Proxy,
    max_body_bytes: u64,
}

/// Facts about the connection a request arrived on.
#[derive(Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    pub activity: Arc<Activity>,
}

impl Gateway {
    pub fn new(router: Router, proxy: Proxy, max_body_bytes: u64) -> Self {
        Self {
            router,
            proxy,
            max_body_bytes,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: &Connection) -> Response<Body> {
        let in_flight = conn.activity.begin_request();
        let started = Instant::now();
        let route = self.router.classify(req.uri().path());
        let mut line = AccessLine {
            method: req.method().to_string(),
            target: loggable_target(req.uri()),
            version: req.version(),
            client: conn.peer,
            route,
            status: 0,
            bytes: 0,
            started,
            upstream_time: None,
            finished: false,
            _in_flight: in_flight,
        };
        let response = match route {
            Route::PassThrough => match self.proxy.forward(req, conn.peer, conn.scheme).await {
                Ok(forwarded) => {
                    line.upstream_time = Some(forwarded.upstream_time);
                    forwarded.response
                }
                Err(e) => {
                    tracing::warn!(error = %e, target = %line.target, "pass-through failed");
                    e.into_response()
                }
            },
            Route::Scim => self.scim(req).await,
        };
        line.status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        // hyper never polls a body that is already at its end.
        line.finished = body.is_end_stream();
        let body = LoggedBody { inner: body, line }.boxed();
        Response::from_parts(parts, body)
    }

    /// The SCIM service plugs in here; until then the paths are claimed (never passed through
    /// to the platform's own SCIM servlet) and answered plainly, after the body limit that the
    /// SCIM service will rely on.
    async fn scim(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err(too_large) = read_limited(req.into_body(), self.max_body_bytes).await {
            return too_large;
        }
        text_response(
            StatusCode::NOT_IMPLEMENTED,
            "501 Not Implemented: SCIM is not served by this gateway version yet",
        )
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }
}

/// How much of an oversized body is still read (and discarded) before answering 413, so a client
/// that is busy sending gets the answer instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const OVERSIZE_DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads a gateway-handled request body, refusing it with 413 once it passes `limit` bytes,
/// whether the size was declared up front or only found while reading a chunked body.
async fn read_limited(body: Incoming, limit: u64) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        let mut response = text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Payload Too Large: the request body exceeds limits.max_body_bytes",
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        response
    };
    let mut body = body;
    if body.size_hint().lower() > limit {
        drain(body).await;
        return Err(too_large());
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client went away mid-body; nobody is left to read an answer.
            return Err(text_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: incomplete body",
            ));
        };
        if let Some(data) = frame.data_ref() {
            if collected.len() as u64 + data.len() as u64 > limit {
                drain(body).await;
                return Err(too_large());
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, async {
        let mut discarded = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
            if discarded > OVERSIZE_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
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
    method: String,
    target: String,
    version: http::Version,
    client: SocketAddr,
    route: Route,
    status: u16,
    bytes: u64,
    started: Instant,
    upstream_time: Option<Duration>,
    finished: bool,
    /// Held until the response is fully sent, so idle detection knows a request is running.
    _in_flight: InFlight,
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        tracing::info!(
            target: "scimgate::access",
            method = %self.method,
            path = %self.target,
            version = ?self.version,
            status = self.status,
            bytes = self.bytes,
            duration_ms = millis(self.started.elapsed()),
            upstream_ms = self.upstream_time.map(millis),
            client = %self.client.ip(),
            route = self.route.as_str(),
            complete = self.finished,
            "access"
        );
    }
}

/// Milliseconds to the microsecond: precise enough for latency, short enough to read.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

struct LoggedBody {
    inner: Body,
    line: AccessLine,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.line.bytes += data.len() as u64;
                }
                // hyper stops polling once the body reports its end, so `None` may never come.
                if self.inner.is_end_stream() {
                    self.line.finished = true;
                }
            }
            Poll::Ready(None) => self.line.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
