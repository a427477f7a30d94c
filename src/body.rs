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
}

/// How much of an oversized body is still read (and discarded) before answering, so a client
/// that is busy sending gets the 413 instead of a reset connection.
const OVERSIZE_DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a gateway-handled request body, refusing it once it passes `limit` bytes, whether the
/// size was declared up front or only found while reading a chunked body.
pub async fn read_limited(
    mut body: hyper::body::Incoming,
    limit: u64,
) -> Result<bytes::Bytes, BodyError> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit {
        drain(body).await;
        return Err(BodyError::TooLarge(limit));
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Incomplete)?;
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

async fn drain(mut body: hyper::body::Incoming) {
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
