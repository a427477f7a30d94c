//! Pass-through's own pool of HTTP/1.1 connections to a plain-HTTP platform.
//!
//! hyper-util's general client did, per request, a pool-key hash and clone, a URI clone and
//! origin-form rewrite, a boxed future, and for a response whose body was still arriving, a
//! spawned task to put the connection back: together about 7% of the gateway's CPU on a small
//! keep-alive request. Pass-through needs none of its generality (one origin, HTTP/1.1, no
//! proxy, no ALPN), so it keeps a stack of hyper's own connection handles instead. The platform
//! client, upgrades, HTTPS and HTTP/2 platforms still use hyper-util's client.
//!
//! The rules are hyper-util's: the most recently used idle connection is taken first; at most
//! `max_idle` are kept, the rest closed; an idle one is closed after `idle_timeout`; a request
//! that a reused connection refused before sending it (the platform closed it meanwhile) is sent
//! again on another connection; a request that may have reached the platform never is.

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
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // An idle connection whose last response was just read may not have been told yet
            // that it is free; one the platform closed fails here, before anything is sent.
            // A fresh connection that fails here goes on to the send, which says why.
            if sender.ready().await.is_err() && reused {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.give_back_after(sender, response)),
                Err(mut refused) => match refused.take_message() {
                    // Never sent: safe to send again, but only if this connection was an old
                    // one (a fresh one failing says the platform refuses, not that it closed).
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Exchange(refused.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, PoolError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let stream = connector
            .call(self.origin.clone())
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
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
                .position(|e| e.since.elapsed() < self.idle_timeout && !e.sender.is_closed())
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
