//! One service call on the wire: the concurrency bound, the one repeat a refused connection
//! allows, the size limit on answers, and the platform's status turned into a typed error.

use super::{Repeat, ThingWorx, MAX_ERROR_TEXT, MAX_RESPONSE_BYTES};
use crate::body::{empty, full, Body, BoxError};
use crate::platform::PlatformError;
use crate::proxy::UpstreamError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::{Duration, Instant};

impl ThingWorx {
    /// One logical call: waits for a slot under the concurrency bound, and repeats only
    /// `Repeat::Safe` calls, only when the connection could not be made.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        repeat: Repeat,
    ) -> Result<Bytes, PlatformError> {
        let body = match body {
            Some(v) => Some(Bytes::from(serde_json::to_vec(&v).map_err(|e| {
                PlatformError::Unexpected {
                    status: None,
                    message: format!("cannot encode the request: {e}"),
                }
            })?)),
            None => None,
        };
        let mut attempt = 0;
        loop {
            let outcome = {
                let _slot = self.limiter.acquire().await.map_err(|_| {
                    PlatformError::Unavailable("the platform client is shut down".into())
                })?;
                self.exchange(&method, path, body.clone()).await
            };
            match outcome {
                Err(Failure::Connect(message)) => {
                    if repeat == Repeat::Safe && attempt < self.retries {
                        let backoff = Duration::from_millis(100u64 << attempt.min(6));
                        tracing::debug!(%path, attempt, error = %message,
                            "platform connection failed; retrying");
                        tokio::time::sleep(backoff).await;
                        attempt += 1;
                        continue;
                    }
                    let e = PlatformError::Unavailable(message);
                    platform_call_result(Err(&e));
                    return Err(e);
                }
                Err(Failure::Other(e)) => {
                    platform_call_result(Err(&e));
                    return Err(e);
                }
                Ok((status, bytes)) => {
                    let result = classify(status, bytes);
                    platform_call_result(result.as_ref().map(|_| ()));
                    return result;
                }
            }
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let uri: Uri = path.parse().map_err(|_| {
            Failure::Other(PlatformError::Rejected(format!(
                "{path} is not a valid request path"
            )))
        })?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(self.credential.0.clone(), self.credential.1.clone())
            .header(header::ACCEPT, "application/json")
            .header("x-xsrf-token", "TWX-XSRF-TOKEN-VALUE");
        let request_body = match body {
            Some(bytes) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                full(bytes)
            }
            None => empty(),
        };
        let request = builder.body(request_body).map_err(|e| {
            Failure::Other(PlatformError::Unexpected {
                status: None,
                message: format!("cannot build the request: {e}"),
            })
        })?;

        let started = Instant::now();
        let exchange = async {
            let response = self.client.send(request).await.map_err(|e| match e {
                UpstreamError::Connect(message) => Failure::Connect(message),
                // Sent, perhaps carried out, but the connection broke before the answer.
                UpstreamError::Exchange(message) => {
                    Failure::Other(PlatformError::NoAnswer(message))
                }
                UpstreamError::BadTarget => Failure::Other(PlatformError::Rejected(format!(
                    "{path} is not a valid request path"
                ))),
            })?;
            let status = response.status();
            let bytes = read_answer(response.into_body()).await.map_err(|e| {
                Failure::Other(PlatformError::NoAnswer(format!(
                    "reading the platform's answer failed: {e}"
                )))
            })?;
            Ok((status, bytes))
        };
        let result = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Other(PlatformError::Timeout(self.timeout)))?;
        if let Ok((status, _)) = &result {
            tracing::debug!(%method, %path, status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64, "platform call");
        }
        result
    }
}

/// The answer's body, refused past `MAX_RESPONSE_BYTES`. An answer in one piece, the usual
/// case, is kept as it arrived rather than copied.
async fn read_answer(body: Body) -> Result<Bytes, BoxError> {
    let mut body = std::pin::pin!(body);
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            length += data.len();
            if length > MAX_RESPONSE_BYTES {
                return Err(format!("the answer is over {MAX_RESPONSE_BYTES} bytes").into());
            }
            pieces.push(data);
        }
    }
    Ok(match pieces.len() {
        1 => pieces.swap_remove(0),
        _ => Bytes::from(pieces.concat()),
    })
}

fn platform_call_result(result: Result<(), &PlatformError>) {
    let label = match result {
        Ok(()) => "ok",
        Err(PlatformError::NotFound(_)) => "not_found",
        Err(PlatformError::AlreadyExists(_)) => "already_exists",
        Err(PlatformError::Unauthorized { .. }) => "unauthorized",
        Err(PlatformError::Rejected(_)) => "rejected",
        Err(PlatformError::MissingProperties { .. }) => "missing_properties",
        Err(PlatformError::Unavailable(_)) => "unavailable",
        Err(PlatformError::Timeout(_)) => "timeout",
        Err(PlatformError::NoAnswer(_)) => "no_answer",
        Err(PlatformError::Unexpected { .. }) => "unexpected",
    };
    crate::metrics::metrics().count("scimgate_platform_calls_total", &[("result", label)]);
}

enum Failure {
    /// No connection was made, so nothing reached the platform.
    Connect(String),
    Other(PlatformError),
}

pub(super) fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Turns the platform's status into a typed error; the text is kept for the operator only.
/// ThingWorx 9.x/10.x answers any failed service call (a duplicate create, a missing member, a
/// refused password) with a bare 500 "Unable to Invoke Service <S> on <E>", so nothing here
/// reads the wording: a duplicate is found by reading before creating, a missing member by
/// reading before adding. 404 is a missing entity (or service) whatever the text says.
pub(super) fn classify(status: StatusCode, body: Bytes) -> Result<Bytes, PlatformError> {
    if status.is_success() {
        return Ok(body);
    }
    let message = platform_text(&body);
    Err(match status.as_u16() {
        401 | 403 => PlatformError::Unauthorized {
            status: status.as_u16(),
            message,
        },
        404 => PlatformError::NotFound(message),
        409 => PlatformError::AlreadyExists(message),
        400 => PlatformError::Rejected(message),
        502..=504 => PlatformError::Unavailable(format!("HTTP {}: {message}", status.as_u16())),
        other => PlatformError::Unexpected {
            status: Some(other),
            message,
        },
    })
}

fn platform_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > MAX_ERROR_TEXT {
        let cut: String = text.chars().take(MAX_ERROR_TEXT).collect();
        format!("{cut}…")
    } else if text.is_empty() {
        "(no message)".to_string()
    } else {
        text.to_string()
    }
}

pub(super) fn unexpected(what: &str, detail: impl std::fmt::Display) -> PlatformError {
    PlatformError::Unexpected {
        status: None,
        message: format!("{what}: {detail}"),
    }
}
