//! The HTTP face: connections, authentication, the content rules of the platform's CSRF
//! filter, routing, and plain-text errors.

use super::error::Fault;
use super::faults::{FaultKind, FaultSpec};
use super::model::Kind;
use super::services::{Caller, Reply, Target};
use super::DevPlatform;
use crate::platform::names::fold;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Body = Full<Bytes>;

/// Service inputs are small JSON documents; anything bigger is a mistake or abuse.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for clients that keep a request open before dropping them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
const SESSION_COOKIE: &str = "JSESSIONID";

const LANDING_PAGE: &str =
    "<!DOCTYPE html>\n<html><head><title>ThingWorx development platform</title></head>\
<body><h1>scimgate development platform</h1>\
<p>A built-in stand-in for the ThingWorx REST services used for user and group provisioning \
(<code>/Thingworx/Resources/EntityServices</code>, <code>/Thingworx/Users</code>, \
<code>/Thingworx/Groups</code>, <code>/Thingworx/Resources/CurrentSessionInfo</code>).</p>\
</body></html>\n";
const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\
<body><h1>Not Found</h1><p>The requested resource is not available.</p></body></html>\n";
const BAD_REQUEST_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>400 Bad Request</title></head>\
<body><h1>Bad Request</h1><p>The request has no Host header.</p></body></html>\n";

pub(crate) async fn serve(
    platform: Arc<DevPlatform>,
    listener: TcpListener,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let abort = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually running out of file descriptors: pause rather than spin.
                    tracing::warn!(error = %e, "development platform: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        connections.spawn(connection(
            platform.clone(),
            stream,
            stop.clone(),
            abort.clone(),
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "development platform: dropping connections still open after the drain deadline"
        );
        abort.cancel();
        connections.wait().await;
    }
}

async fn connection(
    platform: Arc<DevPlatform>,
    stream: TcpStream,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    // Cancelled by a `reset` or `lost` fault: the connection is dropped without an answer.
    let drop_now = CancellationToken::new();
    let hang_up = HangUp {
        now: drop_now.clone(),
        reset: Arc::new(AtomicBool::new(false)),
    };
    let stream = FaultableStream {
        stream,
        reset: hang_up.reset.clone(),
    };
    let service = service_fn(move |req| {
        let platform = platform.clone();
        let hang_up = hang_up.clone();
        async move { Ok::<_, Infallible>(handle(platform, req, hang_up).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "development platform: connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = abort.cancelled() => return,
            _ = drop_now.cancelled() => return,
        }
    }
}

/// The platform's side of a connection. A `reset` fault turns its close into a TCP RST (linger
/// 0), as a crashed or firewalled platform sends; every other close stays an orderly FIN.
struct FaultableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for FaultableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // Best effort: without it the close is a FIN, still with no answer.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for FaultableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How a fault ends a connection without an answer: `reset` also asks for a TCP RST.
#[derive(Clone)]
struct HangUp {
    now: CancellationToken,
    reset: Arc<AtomicBool>,
}

async fn handle(
    platform: Arc<DevPlatform>,
    req: Request<Incoming>,
    hang_up: HangUp,
) -> Response<Body> {
    let method = req.method().clone();
    // The path only: a query string may carry a credential.
    let path = req.uri().path().to_string();
    let response = respond(platform, req, hang_up).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "development platform request");
    response
}

/// Where tests and `curl` set the fault spec; outside `/Thingworx`, so it is never counted.
const FAULTS_PATH: &str = "/_dev/faults";
/// The whole state as one JSON document in `state.json`'s shape, while the platform runs (the
/// file itself is written at a clean stop; between stops the journal holds the changes).
const STATE_PATH: &str = "/Thingworx/_dev/state";

async fn respond(
    platform: Arc<DevPlatform>,
    req: Request<Incoming>,
    hang_up: HangUp,
) -> Response<Body> {
    // The platform's own work counts within the emulated latency, as it does in a remote
    // platform's answer time.
    let answer_by = platform.latency_delay();
    let answer_by = (!answer_by.is_zero()).then(|| std::time::Instant::now() + answer_by);
    let (parts, body) = req.into_parts();
    // RFC 9112 §3.2, as Tomcat under the real platform enforces it: an HTTP/1.1 request without
    // `Host` is refused, so a client that forgets it fails here and not first in production.
    if parts.version == http::Version::HTTP_11 && !parts.headers.contains_key(http::header::HOST) {
        return page(StatusCode::BAD_REQUEST, BAD_REQUEST_PAGE);
    }
    let path = parts.uri.path();
    if path == FAULTS_PATH {
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes());
        return match tokio::task::spawn_blocking(move || fault_control(&platform, &parts, body))
            .await
        {
            Ok(response) => response,
            Err(_) => fault_response(&Fault::internal("The request failed")),
        };
    }
    if path == STATE_PATH {
        // Neither delayed nor faulted: it is an inspection of the platform, not a native call.
        return match tokio::task::spawn_blocking(move || state_document(&platform, &parts)).await {
            Ok(response) => response,
            Err(_) => fault_response(&Fault::internal("The request failed")),
        };
    }
    let reading = parts.method == Method::GET || parts.method == Method::HEAD;
    if reading && matches!(path, "/" | "/Thingworx" | "/Thingworx/") {
        return page(StatusCode::OK, LANDING_PAGE);
    }
    if path != "/Thingworx" && !path.starts_with("/Thingworx/") {
        return page(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(Fault::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {MAX_BODY_BYTES} bytes or could not be read"),
        )),
    };
    let injected = route(parts.uri.path()).ok().and_then(|r| {
        let (service, entity) = service_of(&r, &parts.method);
        let kind = platform.lock_faults().decide(&service)?;
        tracing::info!(fault = kind.as_str(), %service, %entity, "development platform: injected fault");
        Some((kind, service, entity))
    });
    let slow = platform.lock_faults().slow_delay();
    match injected {
        Some((FaultKind::Reset, ..)) => {
            emulate_latency(&platform, answer_by).await;
            hang_up.reset.store(true, Ordering::SeqCst);
            return hang_up_now(hang_up).await;
        }
        Some((FaultKind::Error500, service, entity)) => {
            emulate_latency(&platform, answer_by).await;
            return fault_response(&Fault::internal(format!(
                "Unable to Invoke Service {service} on {entity}"
            )));
        }
        _ => {}
    }
    // Password hashing and the fsync of every change block, so the work runs off the runtime.
    let working = platform.clone();
    let response = match tokio::task::spawn_blocking(move || process(&working, &parts, body)).await
    {
        Ok(response) => response,
        Err(_) => fault_response(&Fault::internal("The request failed")),
    };
    emulate_latency(&platform, answer_by).await;
    match injected {
        Some((FaultKind::Lost, ..)) => hang_up_now(hang_up).await,
        Some((FaultKind::Slow, ..)) => {
            tokio::time::sleep(slow).await;
            response
        }
        _ => response,
    }
}

/// `--platform-latency`: a native call is answered no sooner than the emulated latency after
/// it arrived, on a timer (never a thread blocked per request).
async fn emulate_latency(platform: &DevPlatform, answer_by: Option<std::time::Instant>) {
    if let Some(answer_by) = answer_by {
        platform.wait_until(answer_by).await;
    }
}

/// Drops the connection without an answer; the response is never sent.
async fn hang_up_now(hang_up: HangUp) -> Response<Body> {
    hang_up.now.cancel();
    std::future::pending().await
}

/// The service name fault rules match (entity reads and deletes by verb count as the services
/// `GetEntity`, `GetEntities` and `DeleteEntity`), and the entity for the error text.
fn service_of(route: &Route, method: &Method) -> (String, String) {
    match route {
        Route::List(kind) => ("GetEntities".into(), format!("{kind:?}s")),
        Route::Entity(_, name) if *method == Method::DELETE => {
            ("DeleteEntity".into(), name.clone())
        }
        Route::Entity(_, name) => ("GetEntity".into(), name.clone()),
        Route::Vocabulary(name) => ("GetVocabulary".into(), name.clone()),
        Route::Service(target, service) => (
            service.clone(),
            match target {
                Target::EntityServices => "EntityServices".into(),
                Target::CurrentSessionInfo => "CurrentSessionInfo".into(),
                Target::Entity(_, name) | Target::ThingShape(name) => name.clone(),
            },
        ),
    }
}

/// `POST /_dev/faults` (a JSON [`FaultSpec`]) replaces the spec, `DELETE` clears it, `GET`
/// shows it; each answers with what was counted (`calls`, `faults`) under the spec it ends or
/// shows. Only an administrator's credentials may change faults.
fn fault_control(
    platform: &DevPlatform,
    parts: &Parts,
    body: Result<Bytes, Box<dyn std::error::Error + Send + Sync>>,
) -> Response<Body> {
    let caller = match authenticate(platform, &parts.headers) {
        Ok((caller, _)) => caller,
        Err(fault) => return fault_response(&fault),
    };
    if !platform.read(|s| s.is_admin(&caller.key)) {
        return fault_response(&Fault::forbidden("Not authorized"));
    }
    let counts = match parts.method {
        Method::GET => {
            let faults = platform.lock_faults();
            let spec = serde_json::to_value(faults.spec()).unwrap_or(Value::Null);
            let counts = faults.counts();
            return json_response(
                &serde_json::json!({"calls": counts.calls, "faults": counts.faults, "spec": spec}),
            );
        }
        Method::DELETE => platform.set_faults(FaultSpec::default()),
        Method::POST => {
            let Ok(bytes) = body else {
                return fault_response(&Fault::bad_request("The fault spec could not be read"));
            };
            match serde_json::from_slice::<FaultSpec>(&bytes) {
                Ok(spec) => platform.set_faults(spec),
                Err(e) => {
                    return fault_response(&Fault::bad_request(format!("Invalid fault spec: {e}")))
                }
            }
        }
        _ => {
            return fault_response(&Fault::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ))
        }
    };
    json_response(&serde_json::json!({"calls": counts.calls, "faults": counts.faults}))
}

/// `GET /Thingworx/_dev/state`: for administrators only, as the data directory is.
fn state_document(platform: &DevPlatform, parts: &Parts) -> Response<Body> {
    if query_has_app_key(parts.uri.query()) {
        return fault_response(&Fault::new(
            StatusCode::UNAUTHORIZED,
            "ApplicationKey Is Not Allowed As A URL Parameter",
        ));
    }
    let caller = match authenticate(platform, &parts.headers) {
        Ok((caller, _)) => caller,
        Err(fault) => return fault_response(&fault),
    };
    if !platform.read(|s| s.is_admin(&caller.key)) {
        return fault_response(&Fault::forbidden("Not authorized"));
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return fault_response(&Fault::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        ));
    }
    match platform.read(|s| s.to_json()) {
        Ok(bytes) => json_bytes_response(bytes),
        Err(_) => fault_response(&Fault::internal("The state could not be encoded")),
    }
}

fn process(platform: &DevPlatform, parts: &Parts, body: Result<Bytes, Fault>) -> Response<Body> {
    if query_has_app_key(parts.uri.query()) {
        return fault_response(&Fault::new(
            StatusCode::UNAUTHORIZED,
            "ApplicationKey Is Not Allowed As A URL Parameter",
        ));
    }
    let (caller, new_session) = match authenticate(platform, &parts.headers) {
        Ok(found) => found,
        Err(fault) => return fault_response(&fault),
    };
    let mut response = match serve_request(platform, parts, body, &caller) {
        Ok(Reply::Nothing) => empty_response(),
        Ok(Reply::Json(value)) => json_response(&value),
        Err(fault) => fault_response(&fault),
    };
    if let Some(id) = new_session {
        let cookie = format!("{SESSION_COOKIE}={id}; Path=/Thingworx; HttpOnly");
        if let Ok(mut value) = HeaderValue::from_str(&cookie) {
            value.set_sensitive(true);
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn serve_request(
    platform: &DevPlatform,
    parts: &Parts,
    body: Result<Bytes, Fault>,
    caller: &Caller,
) -> Result<Reply, Fault> {
    let writes = matches!(parts.method, Method::POST | Method::PUT | Method::DELETE);
    if writes && !content_type_allowed(&parts.headers) {
        return Err(Fault::forbidden("Invalid content type"));
    }
    if !accepts_json(&parts.headers) {
        return Err(Fault::new(
            StatusCode::NOT_ACCEPTABLE,
            "Not acceptable: this platform answers with application/json",
        ));
    }
    let route = route(parts.uri.path())?;
    let method = &parts.method;
    let reading = *method == Method::GET || *method == Method::HEAD;
    let allowed = match &route {
        Route::List(_) | Route::Vocabulary(_) => reading,
        Route::Entity(..) => reading || *method == Method::DELETE,
        Route::Service(..) => *method == Method::POST,
    };
    if !allowed {
        return Err(Fault::new(
            StatusCode::METHOD_NOT_ALLOWED,
            match route {
                Route::Service(..) => "Services are invoked with POST",
                _ => "Method not allowed",
            },
        ));
    }
    let open_to_all = matches!(&route,
        Route::Service(Target::CurrentSessionInfo, service) if service == "GetCurrentUser");
    if !open_to_all && !platform.read(|s| s.is_admin(&caller.key)) {
        return Err(Fault::forbidden("Not authorized"));
    }
    let params = if writes {
        parse_params(&body?)?
    } else {
        Map::new()
    };
    match &route {
        Route::List(kind) => Ok(platform.list(*kind, max_items_query(parts.uri.query()))),
        Route::Vocabulary(name) => platform.vocabulary(name),
        Route::Entity(kind, name) if reading => platform.entity(*kind, name),
        Route::Entity(kind, name) => platform.delete_entity(*kind, name),
        Route::Service(target, service) => platform.invoke(caller, target, service, &params),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    List(Kind),
    Entity(Kind, String),
    /// A model tag vocabulary, `/Thingworx/ModelTags/<name>`.
    Vocabulary(String),
    Service(Target, String),
}

fn decode(segment: &str) -> Result<String, Fault> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Fault::bad_request("The request path is not valid UTF-8"))
}

fn collection(name: &str) -> Option<Kind> {
    match name {
        "Users" => Some(Kind::User),
        "Groups" => Some(Kind::Group),
        _ => None,
    }
}

/// Maps a path under `/Thingworx` to what it names; entity names are percent-decoded.
fn route(path: &str) -> Result<Route, Fault> {
    let not_found = || Fault::not_found("Not found");
    let rest = path.strip_prefix("/Thingworx").ok_or_else(not_found)?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    match segments.as_slice() {
        [c] => collection(c).map(Route::List).ok_or_else(not_found),
        ["ModelTags", vocabulary] => Ok(Route::Vocabulary(decode(vocabulary)?)),
        [c, entity] => {
            let kind = collection(c).ok_or_else(not_found)?;
            Ok(Route::Entity(kind, decode(entity)?))
        }
        [c, entity, "Services", service] => {
            let service = decode(service)?;
            if let Some(kind) = collection(c) {
                return Ok(Route::Service(
                    Target::Entity(kind, decode(entity)?),
                    service,
                ));
            }
            if *c == "ThingShapes" {
                return Ok(Route::Service(Target::ThingShape(decode(entity)?), service));
            }
            if *c != "Resources" {
                return Err(not_found());
            }
            match decode(entity)?.as_str() {
                "EntityServices" => Ok(Route::Service(Target::EntityServices, service)),
                "CurrentSessionInfo" => Ok(Route::Service(Target::CurrentSessionInfo, service)),
                other => Err(Fault::not_found(format!(
                    "Resource [{other}] does not exist"
                ))),
            }
        }
        _ => Err(not_found()),
    }
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
}

fn query_has_app_key(query: Option<&str>) -> bool {
    query_pairs(query).any(|(name, _)| name.eq_ignore_ascii_case("appKey"))
}

fn max_items_query(query: Option<&str>) -> Option<usize> {
    query_pairs(query)
        .find(|(name, _)| name == "maxItems")
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// The media types the platform's CSRF filter admits for requests that change things.
fn content_type_allowed(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| {
            matches!(
                essence.as_str(),
                "application/json" | "application/xml" | "text/xml"
            )
        })
}

fn accepts_json(headers: &HeaderMap) -> bool {
    let ranges: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|r| !r.is_empty())
        .collect();
    ranges.is_empty()
        || ranges
            .iter()
            .any(|r| matches!(r.as_str(), "*/*" | "application/*" | "application/json"))
}

fn parse_params(body: &Bytes) -> Result<Map<String, Value>, Fault> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Fault::new(
            StatusCode::NOT_ACCEPTABLE,
            "The request body must be a JSON object",
        )),
    }
}

fn session_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name.trim() == SESSION_COOKIE).then(|| value.trim())
        })
        .collect()
}

fn unauthorized(message: &str) -> Fault {
    Fault::new(StatusCode::UNAUTHORIZED, message)
}

fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Who is calling, and the id of a session opened by this request (to be sent as a cookie).
fn authenticate(
    platform: &DevPlatform,
    headers: &HeaderMap,
) -> Result<(Caller, Option<String>), Fault> {
    let cookies = session_cookies(headers);
    if let Some(key) = headers.get("appkey") {
        let caller = platform
            .read(|s| {
                s.app_key_user(key.as_bytes()).map(|u| Caller {
                    name: u.name.clone(),
                    key: fold(&u.name),
                })
            })
            .ok_or_else(|| unauthorized("Authentication failed: invalid application key"))?;
        let wants_session = headers
            .get("x-thingworx-session")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let session = if wants_session {
            platform.session_for(&caller.key, &cookies)?
        } else {
            None
        };
        return Ok((caller, session));
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let refused = || unauthorized("Authentication failed: invalid user name or password");
        let (user, password) = basic_credentials(value).ok_or_else(refused)?;
        let stored = platform.read(|s| {
            s.user(&user)
                .ok()
                .filter(|u| u.enabled)
                .and_then(|u| u.password.clone())
        });
        let verified = match &stored {
            Some(hash) => hash.verify(&password),
            None => {
                platform.decoy.verify(&password);
                false
            }
        };
        if !verified {
            return Err(refused());
        }
        // Looked up again: the user may have been disabled while the hash was being checked.
        let caller = platform
            .read(|s| {
                s.user(&user).ok().filter(|u| u.enabled).map(|u| Caller {
                    name: u.name.clone(),
                    key: fold(&u.name),
                })
            })
            .ok_or_else(refused)?;
        let session = platform.session_for(&caller.key, &cookies)?;
        return Ok((caller, session));
    }
    for id in cookies {
        let Some(user_key) = platform.lock_sessions().touch(id) else {
            continue;
        };
        // A session outlives DisableUser, as on the real platform: only TerminateUserSessions
        // (or deleting the user) ends it. New logins of a disabled user are refused above.
        let caller = platform.read(|s| {
            s.user_by_key(&user_key).map(|u| Caller {
                name: u.name.clone(),
                key: user_key.clone(),
            })
        });
        if let Some(caller) = caller {
            return Ok((caller, None));
        }
    }
    Err(unauthorized("Authentication required"))
}

impl DevPlatform {
    /// Keeps a session the request presents for the same user, or opens a new one and returns
    /// its id.
    fn session_for(&self, user_key: &str, cookies: &[&str]) -> Result<Option<String>, Fault> {
        let mut sessions = self.lock_sessions();
        for id in cookies {
            if sessions.owner(id).as_deref() == Some(user_key) && sessions.touch(id).is_some() {
                return Ok(None);
            }
        }
        let id = crate::random::token()
            .map_err(|_| Fault::internal("No secure random numbers available"))?;
        sessions.create(id.clone(), user_key);
        Ok(Some(id))
    }
}

fn page(status: StatusCode, html: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(html.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn empty_response() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

fn json_response(value: &Value) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes_response(bytes),
        Err(_) => fault_response(&Fault::internal("The result could not be encoded")),
    }
}

fn json_bytes_response(bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn fault_response(fault: &Fault) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(fault.message.clone())));
    *response.status_mut() = fault.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if fault.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ThingWorx\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_entity_names() {
        assert_eq!(route("/Thingworx/Users"), Ok(Route::List(Kind::User)));
        assert_eq!(route("/Thingworx/Groups/"), Ok(Route::List(Kind::Group)));
        assert_eq!(
            route("/Thingworx/Users/J%C3%B6rg%20M%40x.com"),
            Ok(Route::Entity(Kind::User, "Jörg M@x.com".into()))
        );
        assert_eq!(
            route("/Thingworx/Groups/50%25%20off/Services/AddMember"),
            Ok(Route::Service(
                Target::Entity(Kind::Group, "50% off".into()),
                "AddMember".into()
            ))
        );
        assert_eq!(
            route("/Thingworx/Resources/EntityServices/Services/CreateUser"),
            Ok(Route::Service(Target::EntityServices, "CreateUser".into()))
        );
        for missing in [
            "/Thingworx",
            "/Thingworx/Things/x",
            "/Thingworx/Resources/Nope/Services/X",
            "/Thingworx/Users/x/Properties/y",
        ] {
            assert_eq!(
                route(missing).unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        assert_eq!(
            route("/Thingworx/Users/%FF").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn header_rules() {
        let mut h = HeaderMap::new();
        assert!(accepts_json(&h));
        assert!(!content_type_allowed(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.9"),
        );
        assert!(accepts_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        assert!(!accepts_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(content_type_allowed(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(!content_type_allowed(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; JSESSIONID=xyz"),
        );
        assert_eq!(session_cookies(&h), vec!["xyz"]);
        assert!(query_has_app_key(Some("x=1&APPKEY=abc")));
        assert!(!query_has_app_key(Some("maxItems=3")));
        assert_eq!(max_items_query(Some("maxItems=3")), Some(3));
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let value =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("jdoe:pa:ss"))).unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("jdoe".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
    }
}
