//! The one body type every response and upstream request uses, so streamed platform bodies and
//! the gateway's own short answers travel through the same server and client.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body already read in full, kept in the pieces it arrived in: gluing them into one buffer
/// would copy every byte once more, and the client writes the pieces in one vectored write.
pub struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    /// Reads the rest of `body`; trailers, if any, are dropped.
    pub async fn read<B>(body: B) -> Result<Chunks, B::Error>
    where
        B: http_body::Body<Data = Bytes>,
    {
        let mut body = std::pin::pin!(body);
        let mut chunks = std::collections::VecDeque::new();
        let mut remaining = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if !data.is_empty() {
                    remaining += data.len() as u64;
                    chunks.push_back(data);
                }
            }
        }
        Ok(Chunks { chunks, remaining })
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// What a [`Watched`] body reports while it is read.
pub trait BodyWatch {
    /// A data frame of `bytes` bytes went by.
    fn data(&mut self, _bytes: usize) {}
    /// The body was read to its end; called at most once.
    fn ended(&mut self);
    /// The body failed before its end.
    fn failed(&mut self) {}
}

/// A body that tells its watcher what happens to it. The end is reported as soon as the inner
/// body says it has ended: hyper stops polling a body at that point, so `None` may never come.
pub struct Watched<B, W> {
    inner: B,
    watch: W,
    ended: bool,
}

impl<B, W> Watched<B, W> {
    pub fn new(inner: B, watch: W) -> Self {
        Self {
            inner,
            watch,
            ended: false,
        }
    }

    fn end(&mut self)
    where
        W: BodyWatch,
    {
        if !self.ended {
            self.ended = true;
            self.watch.ended();
        }
    }
}

impl<B, W> http_body::Body for Watched<B, W>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: BodyWatch + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len();
                    self.watch.data(len);
                }
                if self.inner.is_end_stream() {
                    self.end();
                }
            }
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Err(_))) => self.watch.failed(),
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A short plain-text answer from the gateway itself.
pub fn text_response(status: http::StatusCode, text: &str) -> http::Response<Body> {
    let mut response = http::Response::new(full(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the request body ended early")]
    Incomplete,
    #[error("the request body stopped arriving for {0:?}")]
    Stalled(std::time::Duration),
}

/// Why a client's request body failed while it was being read or forwarded. The proxy finds it
/// in the upstream client's error chain to answer with the client's fault (4xx), not a 502.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the request body stopped arriving for {0:?}")]
    Stalled(std::time::Duration),
    #[error("the request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the request body is malformed or ended early: {0}")]
    Malformed(hyper::Error),
}

pin_project_lite::pin_project! {
    /// A client's request body that fails when no part of it arrives for `idle` (so a stalled
    /// client cannot hold a request, or a pooled upstream connection, forever) or when it grows
    /// past `limit`.
    pub struct ClientBody {
        inner: hyper::body::Incoming,
        #[pin]
        timer: tokio::time::Sleep,
        idle: std::time::Duration,
        last: tokio::time::Instant,
        limit: Option<u64>,
        seen: u64,
        failed: bool,
    }
}

impl ClientBody {
    pub fn new(
        inner: hyper::body::Incoming,
        idle: std::time::Duration,
        limit: Option<u64>,
    ) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            timer: tokio::time::sleep_until(now + idle),
            idle,
            last: now,
            limit,
            seen: 0,
            failed: false,
        }
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ClientBodyError>>> {
        use std::task::Poll;
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(limit) = *this.limit {
                        if *this.seen > limit {
                            *this.failed = true;
                            return Poll::Ready(Some(Err(ClientBodyError::TooLarge(limit))));
                        }
                    }
                }
                // Only the time is noted; the timer is moved when it fires, not per frame.
                *this.last = tokio::time::Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.failed = true;
                Poll::Ready(Some(Err(ClientBodyError::Malformed(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => loop {
                if std::future::Future::poll(this.timer.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = *this.last + *this.idle;
                if tokio::time::Instant::now() >= deadline {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(ClientBodyError::Stalled(*this.idle))));
                }
                this.timer.as_mut().reset(deadline);
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How much of an oversized body is still read (and discarded) before answering, so a client
/// that is busy sending gets the 413 instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a gateway-handled request body, refusing it once it passes `limit` bytes, whether the
/// size was declared up front or only found while reading a chunked body.
/// A body that stops arriving for `idle` is given up as [`BodyError::Stalled`].
pub async fn read_limited(
    body: hyper::body::Incoming,
    limit: u64,
    idle: std::time::Duration,
) -> Result<bytes::Bytes, BodyError> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit {
        drain(body).await;
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(ClientBody::new(body, idle, None));
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e {
            ClientBodyError::Stalled(d) => BodyError::Stalled(d),
            _ => BodyError::Incomplete,
        })?;
        if let Some(data) = frame.data_ref() {
            if collected.len() as u64 + data.len() as u64 > limit {
                drain(body).await;
                return Err(BodyError::TooLarge(limit));
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

async fn drain<B: http_body::Body<Data = Bytes>>(body: B) {
    let mut body = std::pin::pin!(body);
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[derive(Default)]
    struct Seen {
        bytes: usize,
        ended: usize,
        failed: usize,
    }

    impl BodyWatch for &mut Seen {
        fn data(&mut self, bytes: usize) {
            self.bytes += bytes;
        }
        fn ended(&mut self) {
            self.ended += 1;
        }
        fn failed(&mut self) {
            self.failed += 1;
        }
    }

    /// The end is reported with the last frame (hyper polls no further), once, and a failure is
    /// not an end.
    #[tokio::test]
    async fn a_watched_body_reports_its_bytes_and_its_end_once() {
        let mut seen = Seen::default();
        let mut body = Watched::new(full("twelve bytes"), &mut seen);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().map(|d| d.len()), Some(12));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        drop(body);
        assert_eq!((seen.bytes, seen.ended, seen.failed), (12, 1, 0));

        let mut seen = Seen::default();
        let pieces: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
            Err("cut off".into()),
        ];
        let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(pieces));
        let mut body = Watched::new(streamed, &mut seen);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!((seen.bytes, seen.ended, seen.failed), (3, 0, 1));
    }

    #[tokio::test]
    async fn chunks_keep_the_pieces_in_order_with_an_exact_length() {
        let pieces: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
            ["first ", "", "second ", "third"]
                .into_iter()
                .map(|p| Ok(http_body::Frame::data(Bytes::from(p))))
                .collect();
        let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(pieces));
        let chunks = match Chunks::read(streamed).await {
            Ok(c) => c,
            Err(never) => match never {},
        };
        assert_eq!(chunks.size_hint().exact(), Some(18));
        assert!(!chunks.is_end_stream());
        let mut pieces = Vec::new();
        let mut chunks = std::pin::pin!(chunks);
        while let Some(Ok(frame)) = chunks.frame().await {
            pieces.push(frame.into_data().unwrap_or_default());
        }
        assert_eq!(pieces, ["first ", "second ", "third"]);
        assert!(chunks.is_end_stream());
        assert_eq!(chunks.size_hint().exact(), Some(0));
    }
}
