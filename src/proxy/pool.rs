//! The gateway's own pool of HTTP/1.1 connections to a plain-HTTP platform, shared by
//! pass-through and the native REST client.
//!
//! hyper-util's general client did, per request, a pool-key hash and clone, a URI clone and
//! origin-form rewrite, a boxed future, and for a response whose body was still arriving, a
//! spawned task to put the connection back: together about 7% of the gateway's CPU on a small
//! keep-alive request. Pass-through needs none of its generality (one origin, HTTP/1.1, no
//! proxy, no ALPN), so it keeps a stack of hyper's own connection handles instead. The native
//! REST client's calls go through it too (about 7% of a SCIM read's CPU was hyper-util's).
//! Upgrades, HTTPS and HTTP/2 platforms still use hyper-util's client.
//!
//! The rules are hyper-util's: the most recently used idle connection is taken first; at most
//! `max_idle` are kept, the rest closed; an idle one is closed after `idle_timeout`; a request
//! that a reused connection refused before sending it (the platform closed it meanwhile) is sent
//! again on another connection. Beyond hyper-util, as nginx does with its kept-alive upstream
//! connections: an idempotent request without a body that a reused connection lost before any
//! answer (the platform closed it just as it was sent) is sent once more on a new connection;
//! RFC 9110 §9.2.2 allows exactly that retry. Anything else that may have reached the platform
//! is never sent twice.

use crate::body::{Body, BodyWatch, BoxError, Watched};
use http::{Request, Response, Uri};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tower_service::Service;

/// Why a request got no response from the pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be opened: the request never left the gateway.
    #[error("connect: {0}")]
    Connect(BoxError),
    /// The exchange failed on an open connection.
    #[error("{0}")]
    Exchange(#[from] hyper::Error),
}

pub struct Http1Pool {
    connector: HttpConnector,
    /// `http://authority/`, what the connector connects to.
    origin: Uri,
    /// Oldest first; requests take from the back.
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    reaper_started: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    /// Still open, and idle for less than `idle_timeout`.
    fn is_live(&self, idle_timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < idle_timeout
    }
}

impl Http1Pool {
    pub fn new(
        connector: HttpConnector,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            connector,
            origin,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            reaper_started: AtomicBool::new(false),
        })
    }

    // A panic while holding the lock leaves at worst a connection too many or too few.
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req` (origin-form target, `Host` set) and returns the response, whose body gives
    /// the connection back to the pool once it has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, PoolError> {
        let mut may_replay = true;
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // Copied before the send takes the request; only a reused connection can have been
            // closed by the platform under it, and only once per request.
            let replay = (reused && may_replay)
                .then(|| replayable_copy(&req))
                .flatten();
            // An idle connection whose last response was just read may not have been told yet
            // that it is free; one the platform closed fails here, before anything is sent.
            // A fresh connection that fails here goes on to the send, which says why.
            if sender.ready().await.is_err() && reused {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.give_back_after(sender, response)),
                Err(mut refused) => match (refused.take_message(), replay) {
                    // Never sent: safe to send again, but only if this connection was an old
                    // one (a fresh one failing says the platform refuses, not that it closed).
                    (Some(unsent), _) if reused => req = unsent,
                    (None, Some(copy)) if lost_before_any_answer(refused.error()) => {
                        tracing::debug!(
                            error = %refused.error(),
                            "a kept-alive platform connection closed under a request; sending it again"
                        );
                        may_replay = false;
                        req = copy;
                    }
                    _ => return Err(PoolError::Exchange(refused.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        while let Some(entry) = idle.pop_back() {
            if entry.is_live(self.idle_timeout) {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, PoolError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(Box::new(e)))?;
        let stream = connector
            .call(self.origin.clone())
            .await
            .map_err(|e| PoolError::Connect(Box::new(e)))?;
        let (sender, connection) = http1::Builder::new().handshake(stream).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn give_back_after(
        self: &Arc<Self>,
        sender: SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let body = if body.is_end_stream() {
            self.give_back(sender);
            http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(body, BoxError::from))
        } else {
            http_body_util::BodyExt::boxed(Watched::new(
                body,
                GiveBack {
                    sender: Some(sender),
                    pool: Arc::downgrade(self),
                },
            ))
        };
        Response::from_parts(parts, body)
    }

    fn give_back(self: &Arc<Self>, sender: SendRequest<Body>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.idle();
            if idle.len() >= self.max_idle {
                // Full: this one is closed (dropped after the lock), as hyper-util's pool does.
                drop(idle);
                drop(sender);
                return;
            }
            idle.push_back(Idle { sender, since: now });
        }
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            self.start_reaper();
        }
    }

    /// Closes connections that idled past `idle_timeout`, also when no request comes to notice.
    fn start_reaper(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_expired();
            }
        });
    }

    fn close_expired(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.idle();
            let keep = idle
                .iter()
                .position(|e| e.is_live(self.idle_timeout))
                .unwrap_or(idle.len());
            // Oldest first, so everything before the first live one has expired or closed; a
            // closed one further up is skipped when it is taken.
            idle.drain(..keep).collect()
        };
        // Dropped outside the lock: dropping a handle closes its connection.
        drop(expired);
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

/// A copy of `req` to send again if its connection is lost before any answer: only for an
/// idempotent method (RFC 9110 §9.2.2) and a request without a body, since a body already read
/// cannot be read again.
fn replayable_copy(req: &Request<Body>) -> Option<Request<Body>> {
    if !req.method().is_idempotent() || !HttpBody::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The connection ended before any of the answer arrived: closed or reset by the platform.
fn lost_before_any_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// Gives a response's connection back once its body has been read to the end. A body dropped
/// before that keeps it from the pool: hyper closes it, since the rest of the body is still on it.
struct GiveBack {
    sender: Option<SendRequest<Body>>,
    pool: Weak<Http1Pool>,
}

impl BodyWatch for GiveBack {
    fn ended(&mut self) {
        if let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) {
            pool.give_back(sender);
        }
    }

    fn failed(&mut self) {
        self.sender = None;
    }
}

/// The pass-through tests' scripted platform, shared rather than written twice.
#[cfg(test)]
#[path = "../../tests/common/scripted_platform.rs"]
mod scripted_platform;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    use super::scripted_platform::{scripted_platform, Answer};

    /// How the test platform treats each connection after answering.
    #[derive(Clone, Copy)]
    enum After {
        /// Keeps it open for more requests.
        KeepOpen,
        /// Closes it right after one answer, without saying so (no `Connection: close`), as a
        /// platform whose keep-alive timer fires just then does.
        CloseSilently,
    }

    /// A platform answering every request with `body`; counts the connections it accepted.
    async fn platform(after: After, body: &'static str) -> (Uri, Arc<AtomicUsize>) {
        let (addr, accepted) = scripted_platform(move |_, _| Answer {
            bytes: format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            close: matches!(after, After::CloseSilently),
        })
        .await;
        (format!("http://{addr}/").parse().unwrap(), accepted)
    }

    fn pool_for(origin: Uri, max_idle: usize) -> Arc<Http1Pool> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http1Pool::new(connector, origin, max_idle, Duration::from_secs(60))
    }

    fn get(origin: &Uri) -> Request<Body> {
        Request::get("/x")
            .header(http::header::HOST, origin.authority().unwrap().as_str())
            .body(crate::body::empty())
            .unwrap()
    }

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_read_response_gives_its_connection_back_for_the_next_request() {
        let (origin, accepted) = platform(After::KeepOpen, "hello").await;
        let pool = pool_for(origin.clone(), 4);
        for _ in 0..5 {
            let response = pool.send(get(&origin)).await.unwrap();
            assert_eq!(text(response).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_does_not_give_its_connection_back() {
        let (origin, accepted) = platform(After::KeepOpen, "a body nobody reads").await;
        let pool = pool_for(origin.clone(), 4);
        let response = pool.send(get(&origin)).await.unwrap();
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        let response = pool.send(get(&origin)).await.unwrap();
        assert_eq!(text(response).await, "a body nobody reads");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// The platform closing an idle connection must not fail the next request: it goes out on
    /// a new connection, whether or not the pool has noticed the close yet.
    #[tokio::test]
    async fn a_connection_the_platform_closed_is_not_an_error() {
        let (origin, accepted) = platform(After::CloseSilently, "fresh").await;
        let pool = pool_for(origin.clone(), 4);
        for round in 0..20 {
            let response = pool
                .send(get(&origin))
                .await
                .unwrap_or_else(|e| panic!("request {round}: {e}"));
            assert_eq!(text(response).await, "fresh");
            if round % 2 == 0 {
                // Half the time the close has been seen before the next request; half not.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    /// A platform that lets a kept-alive connection go just as a request arrives (it reads the
    /// request and closes without answering, once per target): an idempotent request without a
    /// body is sent again on a new connection; a POST is not, and neither is a request whose
    /// connection was new (the platform refusing it is not a stale connection).
    #[tokio::test]
    async fn a_request_lost_on_a_kept_alive_connection_is_resent_only_when_safe() {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let (addr, accepted) = scripted_platform(move |method, target| {
            let mut log = log.lock().unwrap();
            log.push(format!("{method} {target}"));
            let first_time = log.iter().filter(|l| l.ends_with(target)).count() == 1;
            if target.starts_with("/lost") && first_time {
                Answer {
                    bytes: String::new(),
                    close: true,
                }
            } else {
                Answer {
                    bytes: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
                    close: false,
                }
            }
        })
        .await;
        let origin: Uri = format!("http://{addr}/").parse().unwrap();
        let pool = pool_for(origin.clone(), 4);
        let send = |method: http::Method, path: &str| {
            pool.send(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header(http::header::HOST, origin.authority().unwrap().as_str())
                    .body(crate::body::empty())
                    .unwrap(),
            )
        };

        // A new connection lost: not resent.
        assert!(send(http::Method::GET, "/lost-new").await.is_err());
        // Warm a connection, then lose a GET on it: resent on a new one.
        assert_eq!(
            text(send(http::Method::GET, "/warm").await.unwrap()).await,
            "ok"
        );
        assert_eq!(
            text(send(http::Method::GET, "/lost-get").await.unwrap()).await,
            "ok"
        );
        // A POST lost the same way is not resent: it may have been applied.
        assert!(send(http::Method::POST, "/lost-post").await.is_err());

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "GET /lost-new",
                "GET /warm",
                "GET /lost-get",
                "GET /lost-get",
                "POST /lost-post"
            ]
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_platform_is_a_connect_error() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", dead.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(dead);
        let pool = pool_for(origin.clone(), 4);
        assert!(matches!(
            pool.send(get(&origin)).await,
            Err(PoolError::Connect(_))
        ));
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let (origin, accepted) = platform(After::KeepOpen, "x").await;
        let pool = pool_for(origin.clone(), 2);
        let responses = futures_util::future::join_all((0..4).map(|_| pool.send(get(&origin))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        for response in responses {
            assert_eq!(text(response).await, "x");
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (origin, accepted) = platform(After::KeepOpen, "x").await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let pool = Http1Pool::new(connector, origin.clone(), 4, Duration::from_millis(100));
        let response = pool.send(get(&origin)).await.unwrap();
        assert_eq!(text(response).await, "x");
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.idle_count(), 0, "the reaper closed it");
        let response = pool.send(get(&origin)).await.unwrap();
        assert_eq!(text(response).await, "x");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
