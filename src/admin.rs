//! The admin listener: liveness and readiness for orchestrators, kept off the gateway's
//! listeners so a probe never competes with (or is mistaken for) platform traffic.

use crate::body::{full, Body};
use crate::scim::ScimState;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What readiness is made of. Each flag only ever moves one way, so plain atomics suffice.
#[derive(Default)]
pub struct Health {
    listeners_bound: AtomicBool,
    upstream_seen: AtomicBool,
    draining: AtomicBool,
    /// Whether every JWT provider has its signing keys; set once at start.
    keys_loaded: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Health {
    pub fn mark_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    pub fn mark_upstream_seen(&self) {
        self.upstream_seen.store(true, Ordering::SeqCst);
    }

    pub fn upstream_seen(&self) -> bool {
        self.upstream_seen.load(Ordering::SeqCst)
    }

    pub fn set_keys_check(&self, check: Box<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.keys_loaded.set(check);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn checks(&self) -> [(&'static str, bool); 4] {
        [
            (
                "listeners_bound",
                self.listeners_bound.load(Ordering::SeqCst),
            ),
            (
                "upstream_reached",
                self.upstream_seen.load(Ordering::SeqCst),
            ),
            ("not_draining", !self.draining.load(Ordering::SeqCst)),
            (
                "keys_loaded",
                self.keys_loaded.get().is_none_or(|check| check()),
            ),
        ]
    }

    pub fn is_ready(&self) -> bool {
        self.checks().iter().all(|(_, ok)| *ok)
    }
}

pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    scim: Arc<ScimState>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let health = health.clone();
        let scim = scim.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let health = health.clone();
                let scim = scim.clone();
                async move { Ok::<_, Infallible>(answer(&req, &health, &scim)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn answer(req: &Request<Incoming>, health: &Health, scim: &ScimState) -> Response<Body> {
    if req.uri().path().starts_with("/scim/") {
        return scim_control(req, scim);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::metrics().render(),
        ),
        "/readyz" => {
            let checks = health.checks();
            let ready = checks.iter().all(|(_, ok)| *ok);
            let fields: Vec<String> = checks
                .iter()
                .map(|(name, ok)| format!("\"{name}\":{ok}"))
                .collect();
            let body = format!("{{\"ready\":{ready},{}}}\n", fields.join(","));
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// The SCIM subsystem's start/stop switch, like the platform's Composer button: stopping
/// answers 503 to identity providers without touching the configuration.
fn scim_control(req: &Request<Incoming>, scim: &ScimState) -> Response<Body> {
    let status_body = |scim: &ScimState| {
        format!(
            "{{\"enabled\":{},\"started\":{}}}\n",
            scim.enabled(),
            scim.started()
        )
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/scim/status") => respond(StatusCode::OK, "application/json", status_body(scim)),
        ("POST", path @ ("/scim/start" | "/scim/stop")) => {
            let start = path == "/scim/start";
            if scim.set_started(start) {
                tracing::info!(
                    started = start,
                    "SCIM subsystem switched by the admin listener"
                );
                respond(StatusCode::OK, "application/json", status_body(scim))
            } else {
                respond(
                    StatusCode::CONFLICT,
                    "text/plain",
                    "SCIM is disabled in the configuration (scim.enabled = false)\n".into(),
                )
            }
        }
        (_, "/scim/status" | "/scim/start" | "/scim/stop") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET /scim/status, POST /scim/start or POST /scim/stop\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_check() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.mark_listeners_bound();
        assert!(!h.is_ready());
        h.mark_upstream_seen();
        assert!(h.is_ready());
        h.start_draining();
        assert!(!h.is_ready());
    }
}
