//! Listeners, connections and the process lifecycle: bind, accept under a connection cap,
//! terminate TLS, serve HTTP/1.1 and HTTP/2, and drain on SIGTERM/SIGINT.

pub mod tls;
pub mod watch;

use crate::activity::{Activity, TrackedIo};
use crate::admin::{self, Health};
use crate::auth::Authenticator;
use crate::config::{Config, Limits, UpstreamConfig};
use crate::gateway::{Connection, Gateway};
use crate::platform::ThingWorx;
use crate::provisioning::audit::Audit;
use crate::provisioning::policy::Policy;
use crate::provisioning::Provisioner;
use crate::proxy::{Proxy, ProxyBuildError};
use crate::router::Router;
use crate::scim::{ScimService, ScimState};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {address}: {source}")]
    Tls {
        address: SocketAddr,
        source: tls::TlsError,
    },
    #[error(transparent)]
    Upstream(#[from] ProxyBuildError),
    #[error(transparent)]
    Platform(crate::platform::BadCredentials),
    #[error(transparent)]
    Auth(crate::auth::AuthBuildError),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

struct Listener {
    socket: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hsts: Option<http::HeaderValue>,
}

/// Runs the gateway until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), ServerError> {
    Bound::bind(config).await?.serve().await
}

/// A gateway whose sockets are open (so their addresses are known) but not yet serving.
pub struct Bound {
    config: Config,
    listeners: Vec<(Listener, SocketAddr)>,
    admin_socket: TcpListener,
    admin_address: SocketAddr,
    reload_tx: broadcast::Sender<()>,
    signals: Signals,
    reload_config: Option<ConfigLoader>,
}

/// What every gateway generation shares: readiness, the tunnel tracker, the SCIM switch.
struct Parts {
    health: Arc<Health>,
    tunnels: TaskTracker,
    scim_state: Arc<ScimState>,
}

/// The gateway serving new requests; a reload swaps it whole, so a request sees one
/// configuration from start to end and a failed reload changes nothing.
pub struct GatewayHolder {
    current: std::sync::RwLock<Arc<Gateway>>,
}

impl GatewayHolder {
    fn new(gateway: Gateway) -> Self {
        Self {
            current: std::sync::RwLock::new(Arc::new(gateway)),
        }
    }

    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn replace(&self, next: Gateway) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
    }
}

/// Builds every per-configuration part of the gateway. `previous` lends what should survive a
/// reload unchanged: the authenticator (its loaded keys and caches) when its settings did not
/// change, and the provisioning policy the new one is compared with.
async fn build_gateway(
    config: &Config,
    parts: &Parts,
    previous: Option<(&Gateway, &Config)>,
) -> Result<Gateway, ServerError> {
    let proxy = {
        let health = parts.health.clone();
        Proxy::new(
            config.upstream.clone(),
            config.trusted_proxies.clone(),
            config.allowed_upgrades.clone(),
            parts.tunnels.clone(),
            Box::new(move || health.mark_upstream_seen()),
        )?
        .with_body_limits(
            config.limits.body_read_timeout,
            config.limits.max_passthrough_body_bytes,
        )
    };
    let provisioner = match &config.platform {
        Some(platform) => {
            let client = ThingWorx::new(proxy.client().clone(), &config.upstream, platform)
                .map_err(ServerError::Platform)?;
            let audit =
                Audit::open(config.provisioning.audit_log.as_deref()).map_err(|source| {
                    ServerError::Audit {
                        path: config
                            .provisioning
                            .audit_log
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        source,
                    }
                })?;
            // Start from the running policy so the swap below sees what changed (and ends
            // sessions when configured to).
            let start = previous
                .map(|(_, old)| old.provisioning.clone())
                .unwrap_or_else(|| config.provisioning.clone());
            // How this platform looks names up and reads user extensions is asked once, on
            // the first call that needs it (not at start: the gateway sends nothing to the
            // platform before a SCIM request asks it to), and logged.
            let client = Arc::new(client);
            let provisioner = Provisioner::new(client, Policy::new(start), audit)
                .with_member_concurrency(platform.max_concurrency);
            if previous.is_some() {
                match provisioner
                    .replace_policy(Policy::new(config.provisioning.clone()))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(users = n, "ended sessions after the provisioning change")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ending sessions after the provisioning change failed")
                    }
                }
            }
            Some(Arc::new(provisioner))
        }
        None => None,
    };
    let authenticator = match previous {
        Some((gateway, old)) if old.auth == config.auth => gateway.authenticator().clone(),
        _ => Arc::new(Authenticator::start(&config.auth).map_err(ServerError::Auth)?),
    };
    parts.scim_state.set_enabled(config.scim.enabled);
    let scim = ScimService::new(
        &config.scim_base_path,
        config.scim.clone(),
        parts.scim_state.clone(),
        authenticator.clone(),
        provisioner,
        config.limits.max_body_bytes,
    )
    .with_body_read_timeout(config.limits.body_read_timeout);
    Ok(Gateway::new(
        Router::new(&config.scim_base_path),
        proxy,
        scim,
        config.trusted_proxies.clone(),
        authenticator,
        crate::framing::FramingLimits {
            max_header_bytes: config.limits.max_header_bytes,
            max_request_line_bytes: config.limits.max_request_line_bytes,
        },
    ))
}

/// The reload side of the serving loop: the configuration the running gateway was built from,
/// and the last refusal, so that a reload happens once per change.
struct Reloader {
    load: ConfigLoader,
    running: Config,
    /// The last file refused (its problems as reported) or configuration that failed to build:
    /// seeing the same again is not a new reload attempt to count.
    last_refused: Option<String>,
    last_failed: Option<Config>,
}

/// What started a reload, for its log line.
#[derive(Clone, Copy)]
enum Trigger {
    Signal,
    Watcher,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Watcher => "file change",
        }
    }
}

impl Reloader {
    /// Re-reads the configuration. Unchanged (same file bytes, same named PEM files, same
    /// resolved values) it changes and counts nothing; a valid change replaces the running
    /// gateway whole; an invalid one changes nothing and every problem is logged.
    async fn reload(&mut self, trigger: Trigger, gateway: &GatewayHolder, parts: &Parts) {
        let metrics = crate::metrics::metrics();
        let next = match (self.load)() {
            Ok(c) => c,
            Err(e) => {
                let problems = e.to_string();
                if self.last_refused.as_deref() != Some(problems.as_str()) {
                    metrics.count("scimgate_reloads_total", &[("result", "refused")]);
                }
                tracing::warn!(trigger = trigger.as_str(), error = %e,
                    "configuration reload refused; the running configuration stays");
                self.last_refused = Some(problems);
                return;
            }
        };
        self.last_refused = None;
        if next == self.running {
            tracing::info!(
                trigger = trigger.as_str(),
                "configuration unchanged; nothing reloaded"
            );
            return;
        }
        let running = &self.running;
        let listeners_changed = next.listeners.len() != running.listeners.len()
            || next
                .listeners
                .iter()
                .zip(&running.listeners)
                .any(|(a, b)| a.address != b.address || a.tls != b.tls);
        if listeners_changed || next.admin_address != running.admin_address {
            tracing::warn!(
                "listener addresses or TLS settings changed: they take effect after a restart"
            );
        }
        if next.reload != running.reload {
            tracing::warn!("reload.watch changed: it takes effect after a restart");
        }
        let current = gateway.current();
        match build_gateway(&next, parts, Some((&current, running))).await {
            Ok(built) => {
                gateway.replace(built);
                self.running = next;
                self.last_failed = None;
                metrics.count("scimgate_reloads_total", &[("result", "ok")]);
                tracing::info!(trigger = trigger.as_str(), "configuration reloaded");
            }
            Err(e) => {
                if self.last_failed.as_ref() != Some(&next) {
                    metrics.count("scimgate_reloads_total", &[("result", "failed")]);
                }
                self.last_failed = Some(next);
                tracing::warn!(trigger = trigger.as_str(), error = %e,
                    "configuration reload failed; the running configuration stays");
            }
        }
    }
}

/// Watches the configuration file's directory, and its real location's when the file is a
/// symlink (editors and Kubernetes replace files rather than write them in place; Kubernetes
/// swaps a `..data` symlink).
fn watch_config(path: &std::path::Path) -> Option<watch::Watch> {
    let mut names = vec![path.file_name()?.to_os_string()];
    if let Some(real) = std::fs::canonicalize(path)
        .ok()
        .and_then(|r| r.file_name().map(|n| n.to_os_string()))
    {
        names.push(real);
    }
    let dirs = watch::parent_dirs(&[path]);
    watch::Watch::start("configuration", &dirs, move |p| {
        p.file_name().is_some_and(|n| {
            names.iter().any(|want| want == n) || n.to_string_lossy().starts_with("..")
        })
    })
}

/// Reads the configuration again (from the file it came from) for a reload.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Bound {
    /// Sets up TLS and binds every listener. Signal handlers are installed first, so a SIGTERM
    /// that arrives while starting is not lost.
    pub async fn bind(config: Config) -> Result<Bound, ServerError> {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = Signals {
            term: signal(SignalKind::terminate()).map_err(ServerError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(ServerError::Signal)?,
            hup: signal(SignalKind::hangup()).map_err(ServerError::Signal)?,
        };
        let (reload_tx, _) = broadcast::channel::<()>(4);

        let mut listeners = Vec::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(source) => Some(
                    tls::setup(source, &reload_tx, config.reload.watch)
                        .map_err(|source| ServerError::Tls {
                            address: l.address,
                            source,
                        })?
                        .acceptor,
                ),
                None => None,
            };
            let bind_error = |source| ServerError::Bind {
                address: l.address,
                source,
            };
            let socket = TcpListener::bind(l.address).await.map_err(bind_error)?;
            let address = socket.local_addr().map_err(bind_error)?;
            listeners.push((
                Listener {
                    socket,
                    tls,
                    hsts: l.hsts.clone(),
                },
                address,
            ));
        }
        let admin_bind_error = |source| ServerError::Bind {
            address: config.admin_address,
            source,
        };
        let admin_socket = TcpListener::bind(config.admin_address)
            .await
            .map_err(admin_bind_error)?;
        let admin_address = admin_socket.local_addr().map_err(admin_bind_error)?;
        Ok(Bound {
            config,
            listeners,
            admin_socket,
            admin_address,
            reload_tx,
            signals,
            reload_config: None,
        })
    }

    pub fn gateway_addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a)| *a).collect()
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Lets SIGHUP (and a change of the configuration file) re-read the whole configuration;
    /// without it SIGHUP reloads the TLS certificates only.
    pub fn with_reload(mut self, load: ConfigLoader) -> Self {
        self.reload_config = Some(load);
        self
    }

    /// Serves until SIGTERM or SIGINT, then drains and returns.
    pub async fn serve(self) -> Result<(), ServerError> {
        let Bound {
            config,
            listeners,
            admin_socket,
            admin_address,
            reload_tx,
            mut signals,
            reload_config,
        } = self;
        let health = Arc::new(Health::default());
        let connections = TaskTracker::new();
        let tunnels = TaskTracker::new();

        let scim_state = ScimState::new(config.scim.enabled, config.scim.auto_start);
        let parts = Parts {
            health: health.clone(),
            tunnels: tunnels.clone(),
            scim_state: scim_state.clone(),
        };
        let gateway = Arc::new(GatewayHolder::new(
            build_gateway(&config, &parts, None).await?,
        ));
        {
            let gateway = gateway.clone();
            health.set_keys_check(Box::new(move || {
                gateway.current().authenticator().keys_loaded()
            }));
        }
        let mut config_watch = match (&reload_config, config.source.as_deref()) {
            (Some(_), Some(path)) if config.reload.watch => watch_config(path),
            _ => None,
        };
        let mut reloader = reload_config.map(|load| Reloader {
            load,
            running: config.clone(),
            last_refused: None,
            last_failed: None,
        });

        let stop_accepting = CancellationToken::new();
        let drain = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let connection_slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let limits = Arc::new(config.limits.clone());

        let mut accept_loops = Vec::new();
        for (listener, address) in listeners {
            tracing::info!(
                listener = "gateway",
                address = %address,
                tls = listener.tls.is_some(),
                "listening"
            );
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                AcceptContext {
                    gateway: gateway.clone(),
                    limits: limits.clone(),
                    slots: connection_slots.clone(),
                    connections: connections.clone(),
                    stop_accepting: stop_accepting.clone(),
                    drain: drain.clone(),
                },
            )));
        }
        tracing::info!(listener = "admin", address = %admin_address, tls = false, "listening");
        let admin_task = tokio::spawn(admin::serve(
            admin_socket,
            health.clone(),
            scim_state,
            stop_admin.clone(),
        ));
        health.mark_listeners_bound();
        tokio::spawn(probe_upstream(
            config.upstream.clone(),
            health.clone(),
            stop_accepting.clone(),
        ));

        let signal_name = loop {
            tokio::select! {
                _ = signals.term.recv() => break "SIGTERM",
                _ = signals.int.recv() => break "SIGINT",
                _ = signals.hup.recv() => {
                    // `scimgate dev` has no configuration file to re-read: only certificates.
                    if reloader.is_some() {
                        tracing::info!("SIGHUP: reloading TLS certificates and the configuration");
                    } else {
                        tracing::info!("SIGHUP: reloading TLS certificates");
                    }
                    let _ = reload_tx.send(());
                    if let Some(r) = &mut reloader {
                        r.reload(Trigger::Signal, &gateway, &parts).await;
                    }
                }
                settled = watch::settled(&mut config_watch) => match (settled, &mut reloader) {
                    (Some(()), Some(r)) => r.reload(Trigger::Watcher, &gateway, &parts).await,
                    (None, _) => {
                        tracing::warn!("the configuration watcher stopped; reload with SIGHUP");
                        config_watch = None;
                    }
                    (Some(()), None) => {}
                },
            }
        };

        health.start_draining();
        tracing::info!(
            signal = signal_name,
            deadline_s = config.drain_deadline.as_secs_f64(),
            "draining: not ready, no new connections, finishing in-flight requests"
        );
        stop_accepting.cancel();
        for task in accept_loops {
            let _ = task.await;
        }
        drain.cancel();
        connections.close();
        tunnels.close();
        let drained = tokio::time::timeout(config.drain_deadline, async {
            connections.wait().await;
            tunnels.wait().await;
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("drained; exiting"),
            Err(_) => tracing::warn!(
                open_connections = connections.len(),
                open_tunnels = tunnels.len(),
                "drain deadline reached; closing what is left"
            ),
        }
        stop_admin.cancel();
        let _ = admin_task.await;
        Ok(())
    }
}

struct AcceptContext {
    gateway: Arc<GatewayHolder>,
    limits: Arc<Limits>,
    slots: Arc<Semaphore>,
    connections: TaskTracker,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
}

async fn accept_loop(listener: Listener, ctx: AcceptContext) {
    loop {
        // At the cap, stop accepting: the kernel's backlog holds new clients instead of the
        // gateway taking on work it cannot serve.
        let permit = tokio::select! {
            permit = ctx.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = ctx.stop_accepting.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.stop_accepting.cancelled() => return,
        };
        let gateway = ctx.gateway.clone();
        let limits = ctx.limits.clone();
        let drain = ctx.drain.clone();
        let tls = listener.tls.clone();
        let hsts = listener.hsts.clone();
        ctx.connections.spawn(async move {
            let _permit = permit;
            crate::metrics::metrics().connection_opened();
            handle_stream(stream, peer, tls, hsts, gateway, limits, drain).await;
            crate::metrics::metrics().connection_closed();
        });
    }
}

async fn handle_stream(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hsts: Option<http::HeaderValue>,
    gateway: Arc<GatewayHolder>,
    limits: Arc<Limits>,
    drain: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    match tls {
        None => {
            let io = TrackedIo::new(stream, activity.clone());
            serve_http(
                io,
                Protocol::Detect,
                peer,
                "http",
                None,
                activity,
                gateway,
                &limits,
                drain,
            )
            .await;
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls_stream)) => {
                    let protocol = negotiated(&tls_stream);
                    let io = TrackedIo::new(tls_stream, activity.clone());
                    serve_http(
                        io, protocol, peer, "https", hsts, activity, gateway, &limits, drain,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Which HTTP a connection speaks. Over TLS, ALPN has already said (h2 needs ALPN; without it
/// the client speaks HTTP/1.1), so the connection is served by that protocol alone: no sniffing
/// of the first bytes and none of the other protocol's state, which an idle keep-alive
/// connection would otherwise carry. Plain connections may be HTTP/2 with prior knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Detect,
    Http1,
    Http2,
}

fn negotiated(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Protocol {
    match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

/// A served connection that can be asked to finish its in-flight requests and close.
trait GracefulConnection: std::future::Future<Output = Result<(), BoxedError>> {
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// Adapts hyper's connection futures, whose error types differ, to one trait.
struct Served<C>(std::pin::Pin<Box<C>>);

macro_rules! graceful_connection {
    ($conn:ty, $($bounds:tt)*) => {
        impl<$($bounds)*> std::future::Future for Served<$conn> {
            type Output = Result<(), BoxedError>;
            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Self::Output> {
                self.0.as_mut().poll(cx).map_err(Into::into)
            }
        }
        impl<$($bounds)*> GracefulConnection for Served<$conn> {
            fn close_gracefully(mut self: std::pin::Pin<&mut Self>) {
                self.0.as_mut().graceful_shutdown();
            }
        }
    };
}

type ServiceFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<hyper::Response<crate::body::Body>, Infallible>>
            + Send,
    >,
>;

/// The gateway as one connection's hyper service.
#[derive(Clone)]
struct Svc {
    gateway: Arc<GatewayHolder>,
    connection: Connection,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Svc {
    type Response = hyper::Response<crate::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let gateway = self.gateway.clone();
        let connection = self.connection.clone();
        // Each request takes the configuration current when it starts, start to end.
        Box::pin(async move { Ok(gateway.current().handle(req, &connection).await) })
    }
}

graceful_connection!(
    hyper::server::conn::http1::UpgradeableConnection<TokioIo<I>, Svc>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static
);
graceful_connection!(
    hyper::server::conn::http2::Connection<TokioIo<I>, Svc, TokioExecutor>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static
);
graceful_connection!(
    auto::UpgradeableConnection<'a, TokioIo<I>, Svc, TokioExecutor>,
    'a, I: AsyncRead + AsyncWrite + Unpin + Send + 'static
);

/// Read-buffer room above `limits.max_header_bytes`, so the exact check sees every head up to
/// the cap (and request lines past `max_request_line_bytes` get their 414) however the bytes
/// arrive.
const HEAD_SLACK_BYTES: usize = 16 * 1024;
/// HPACK counts 32 bytes per header beyond name and value (RFC 7541 §4.1); room for 128.
const H2_HEADER_OVERHEAD_BYTES: usize = 32 * 128;

#[allow(clippy::too_many_arguments)]
async fn serve_http<I>(
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    scheme: &'static str,
    hsts: Option<http::HeaderValue>,
    activity: Arc<Activity>,
    gateway: Arc<GatewayHolder>,
    limits: &Limits,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Connection {
        peer,
        peer_ip: peer.ip().to_string().into(),
        forwarded_as: Arc::new(crate::proxy::client_identity(peer)),
        scheme,
        activity: activity.clone(),
        hsts,
    };
    let service = Svc {
        gateway,
        connection,
    };
    let io = TokioIo::new(io);
    // hyper's buffer limit is not an exact header limit (a read may overshoot it), so it is
    // set above the cap and `framing::check` applies the exact one; past this, hyper answers
    // 431 itself.
    let head_buffer = limits.max_header_bytes + HEAD_SLACK_BYTES;
    // hyper's own builders and the detecting one's halves have the same setters but no common
    // type: one list each keeps the detected protocols configured like the negotiated ones.
    macro_rules! http1_settings {
        ($builder:expr) => {
            $builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(head_buffer)
                .keep_alive(true)
        };
    }
    macro_rules! http2_settings {
        ($builder:expr) => {
            $builder
                .timer(TokioTimer::new())
                .max_header_list_size(
                    (head_buffer + H2_HEADER_OVERHEAD_BYTES).min(u32::MAX as usize) as u32,
                )
                .keep_alive_interval(Some(Duration::from_secs(30)))
        };
    }
    match protocol {
        Protocol::Http1 => {
            let conn = http1_settings!(hyper::server::conn::http1::Builder::new())
                .serve_connection(io, service)
                .with_upgrades();
            drive(Served(Box::pin(conn)), peer, &activity, limits, drain).await
        }
        Protocol::Http2 => {
            let conn = http2_settings!(hyper::server::conn::http2::Builder::new(
                TokioExecutor::new()
            ))
            .serve_connection(io, service);
            drive(Served(Box::pin(conn)), peer, &activity, limits, drain).await
        }
        Protocol::Detect => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            http1_settings!(builder.http1());
            http2_settings!(builder.http2());
            let conn = builder.serve_connection_with_upgrades(io, service);
            drive(Served(Box::pin(conn)), peer, &activity, limits, drain).await
        }
    }
}

/// Serves a connection until it ends: a drain or an idle connection closes it gracefully.
async fn drive<C: GracefulConnection>(
    conn: C,
    peer: SocketAddr,
    activity: &Activity,
    limits: &Limits,
    drain: CancellationToken,
) {
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_check = idle_check_delay(activity, limits.idle_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().close_gracefully();
            }
            _ = tokio::time::sleep(idle_check), if !closing => {
                if activity.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    tracing::debug!(client = %peer, "closing idle connection");
                    closing = true;
                    conn.as_mut().close_gracefully();
                }
            }
        }
    }
}

/// When to look again: when the connection would reach the idle limit if nothing happens.
fn idle_check_delay(activity: &Activity, idle_timeout: Duration) -> Duration {
    match activity.idle_for() {
        Some(idle) => idle_timeout
            .saturating_sub(idle)
            .max(Duration::from_millis(100)),
        None => idle_timeout.max(Duration::from_millis(100)),
    }
}

/// Readiness needs the upstream reached once; until a request does that, keep knocking.
async fn probe_upstream(upstream: UpstreamConfig, health: Arc<Health>, stop: CancellationToken) {
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = upstream.port();
    let mut delay = Duration::from_millis(250);
    while !health.upstream_seen() {
        let attempt = tokio::time::timeout(
            upstream.connect_timeout,
            TcpStream::connect((host.as_str(), port)),
        );
        tokio::select! {
            result = attempt => {
                if let Ok(Ok(_)) = result {
                    health.mark_upstream_seen();
                    tracing::info!(upstream = %upstream.authority, "upstream reachable");
                    return;
                }
            }
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
