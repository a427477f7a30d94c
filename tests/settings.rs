//! Settings proven at non-default values that change the outcome: each test would fail if the
//! setting were ignored. The real binary (or the platform client) against local fakes that count
//! what reaches them — connection attempts, connections opened and closed, requests per
//! connection — on loopback only.

mod common;

use common::dev_env::ServedPlatform;
use common::*;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use scimgate::config::{self, Overrides};
use scimgate::platform::{NewGroup, NewUser, Platform, PlatformError, ThingWorx};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "scimgate-settings-token-0123456789";
const BASE2: &str = "/Thingworx/SCIMProvider/SCIM/v2";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A whole config with a plain listener; unlike `common::config_toml` it sets no
/// `connect_timeout`, so a test can set its own (or leave the default).
fn gateway_toml(upstream_url: &str, upstream_extra: &str, extra: &str) -> String {
    format!(
        "{}[upstream]\nurl = \"{upstream_url}\"\n{upstream_extra}\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n{extra}\n",
        plain_listener()
    )
}

// ---------------------------------------------------------------------------------------------
// A platform-side fake that tells connections apart
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ConnState {
    accepted: AtomicUsize,
    /// The connection number each request arrived on, in arrival order.
    served_by: Mutex<Vec<usize>>,
    /// Connections whose peer (the gateway) closed them, or that ended otherwise.
    closed: Mutex<Vec<usize>>,
}

/// A plain-HTTP upstream numbering its connections. `GET /slow?ms=N` answers after N ms; every
/// answer's body is the HTTP version the request arrived in. `h2_only`: it speaks only HTTP/2
/// (prior knowledge, h2c).
struct ConnUpstream {
    addr: SocketAddr,
    state: Arc<ConnState>,
    stop: CancellationToken,
}

impl Drop for ConnUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ConnUpstream {
    async fn start(h2_only: bool) -> ConnUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ConnState::default());
        let stop = CancellationToken::new();
        let (st, stop_accept) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop_accept.cancelled() => return,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let id = st.accepted.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let stop_conn = stop_accept.clone();
                tokio::spawn(async move {
                    let svc_state = st.clone();
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let st = svc_state.clone();
                        async move {
                            st.served_by.lock().unwrap().push(id);
                            let ms: u64 = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("ms="))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let version = format!("{:?}", req.version());
                            Ok::<_, Infallible>(hyper::Response::new(full(version)))
                        }
                    });
                    let io = TokioIo::new(tcp);
                    tokio::select! {
                        _ = async {
                            if h2_only {
                                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(io, svc)
                                    .await;
                            } else {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(io, svc)
                                    .await;
                            }
                        } => {}
                        _ = stop_conn.cancelled() => return,
                    }
                    st.closed.lock().unwrap().push(id);
                });
            }
        });
        ConnUpstream { addr, state, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Distinct connections that carried at least one request (the gateway's readiness probe
    /// opens bare TCP connections; those are not counted).
    fn request_conns(&self) -> BTreeSet<usize> {
        self.state
            .served_by
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    fn requests(&self) -> usize {
        self.state.served_by.lock().unwrap().len()
    }

    /// The connection the `n`-th request (0-based) arrived on.
    fn conn_of(&self, n: usize) -> usize {
        self.state.served_by.lock().unwrap()[n]
    }

    /// Connections that carried requests and have since been closed.
    fn closed_request_conns(&self) -> BTreeSet<usize> {
        let used = self.request_conns();
        self.state
            .closed
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|c| used.contains(c))
            .collect()
    }

    /// Waits (up to `within`) until at least `n` request-carrying connections are closed.
    async fn wait_closed(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.closed_request_conns().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closed_request_conns().len() >= n
    }
}

async fn get_ok(gw: &Gateway, path: &str) -> Resp {
    let r = http_get(gw.gateway_addr, path).await.unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

// ---------------------------------------------------------------------------------------------
// platform.retries
// ---------------------------------------------------------------------------------------------

/// A port that accepts TCP connections and drops them at once, counting them. Spoken to as
/// https, every attempt fails inside the connector (the TLS handshake never completes), which
/// is the "connection could not be made" case retries are for — and, unlike a refused port,
/// each attempt is visible here.
async fn dropping_port() -> (SocketAddr, Arc<AtomicUsize>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let (c, s) = (count.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = s.cancelled() => return,
            };
            if let Ok((tcp, _)) = accepted {
                // Counted before the close, so the client cannot see the failure first.
                c.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        }
    });
    (addr, count, stop)
}

/// A platform client as the gateway builds one, from configuration text.
fn platform_client(url: &str, platform_toml: &str) -> ThingWorx {
    scimgate::install_crypto_provider();
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{url}\"\n\
         connect_timeout = \"2s\"\n[platform]\napp_key = \"k\"\n{platform_toml}\n"
    );
    let config = config::parse(&text, std::path::Path::new("."), &Overrides::default()).unwrap();
    let client = scimgate::proxy::build_upstream_client(&config.upstream).unwrap();
    ThingWorx::new(client, &config.upstream, config.platform.as_ref().unwrap()).unwrap()
}

/// Runs `call`, checks it failed as unavailable, and returns how many connections it attempted.
async fn attempts<T: std::fmt::Debug>(
    what: &str,
    count: &AtomicUsize,
    call: impl std::future::Future<Output = Result<T, PlatformError>>,
) -> usize {
    let before = count.load(Ordering::SeqCst);
    let result = call.await;
    assert!(
        matches!(result, Err(PlatformError::Unavailable(_))),
        "{what}: expected Unavailable, got {result:?}"
    );
    count.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn platform_retries_repeat_reads_and_setters_never_creates_or_deletes() {
    let (addr, count, _stop) = dropping_port().await;
    let url = format!("https://127.0.0.1:{}", addr.port());

    let tw = platform_client(&url, "retries = 3");
    assert_eq!(attempts("get_user", &count, tw.get_user("jdoe")).await, 4);
    assert_eq!(attempts("list_users", &count, tw.list_users()).await, 4);
    assert_eq!(
        attempts(
            "set_user_description",
            &count,
            tw.set_user_description("jdoe", "x")
        )
        .await,
        4
    );
    assert_eq!(
        attempts("group_members", &count, tw.group_members("Team")).await,
        4
    );
    let new_user = NewUser {
        name: "jdoe".into(),
        ..Default::default()
    };
    assert_eq!(
        attempts("create_user", &count, tw.create_user(&new_user)).await,
        1,
        "a create may have been applied before the connection broke: never repeated"
    );
    assert_eq!(
        attempts("delete_user", &count, tw.delete_user("jdoe")).await,
        1
    );
    let new_group = NewGroup {
        name: "Team".into(),
        description: String::new(),
        project: None,
        tags: vec![],
    };
    assert_eq!(
        attempts("create_group", &count, tw.create_group(&new_group)).await,
        1
    );
    assert_eq!(
        attempts("delete_group", &count, tw.delete_group("Team")).await,
        1
    );

    let once = platform_client(&url, "retries = 0");
    assert_eq!(
        attempts("get_user, retries 0", &count, once.get_user("jdoe")).await,
        1
    );
    assert_eq!(
        attempts(
            "set_user_description, retries 0",
            &count,
            once.set_user_description("jdoe", "x")
        )
        .await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// upstream.connect_timeout
// ---------------------------------------------------------------------------------------------

/// A loopback address whose SYNs go unanswered: a listener with a backlog of 1 that never
/// accepts, its queue filled (Linux drops SYNs to a full accept queue, so a new connect hangs
/// instead of being refused). Returns the listener and the connections filling it; both must be
/// kept alive.
async fn black_hole() -> (SocketAddr, tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("filling the black hole's backlog: {e}"),
            // This connect hangs: the queue is full.
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the backlog of 1 never filled after 64 connections");
}

fn pass_through_failures(gw: &Gateway) -> Vec<String> {
    gw.json_logs()
        .iter()
        .filter(|j| j.message() == "pass-through failed")
        .map(|j| j.str_field("error").unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn connect_timeout_bounds_a_connect_to_a_black_hole() {
    let (hole, _listener, _held) = black_hole().await;
    let url = format!("http://{hole}");

    // connect_timeout well below request_timeout: the connect gives up first — 502, the log
    // naming the connect timeout.
    let gw = Gateway::start(&gateway_toml(
        &url,
        "connect_timeout = \"300ms\"\nrequest_timeout = \"3s\"",
        "",
    ))
    .await;
    let r = http_get(gw.gateway_addr, "/Thingworx/Things")
        .await
        .unwrap();
    assert_eq!(
        r.status,
        502,
        "black hole, connect_timeout 300ms: {}",
        r.text()
    );
    gw.wait_log(Duration::from_secs(5), |j| {
        j.message() == "pass-through failed"
    })
    .await
    .expect("no pass-through failure logged");
    let errors = pass_through_failures(&gw);
    assert!(
        errors
            .iter()
            .any(|e| e.to_lowercase().contains("connect timed out")),
        "the log should name a connect timeout: {errors:?}"
    );

    // The control: the default connect_timeout (5 s) outlasts the same request_timeout, so the
    // same black hole is still being connected to when the request times out (504).
    let gw = Gateway::start(&gateway_toml(&url, "request_timeout = \"3s\"", "")).await;
    let r = http_get(gw.gateway_addr, "/Thingworx/Things")
        .await
        .unwrap();
    assert_eq!(
        r.status,
        504,
        "black hole, default connect_timeout: {}",
        r.text()
    );
}

// ---------------------------------------------------------------------------------------------
// upstream.pool_max_idle_per_host, upstream.pool_idle_timeout
// ---------------------------------------------------------------------------------------------

/// `n` concurrent pass-through requests that each hold an upstream connection for a while.
async fn concurrent_wave(gw: &Gateway, n: usize) {
    let answers =
        futures_util::future::join_all((0..n).map(|_| http_get(gw.gateway_addr, "/slow?ms=400")))
            .await;
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    }
}

#[tokio::test]
async fn pool_max_idle_per_host_bounds_the_connections_kept() {
    for (max_idle, closed_after_wave, new_in_second_wave) in [(1usize, 3usize, 3usize), (4, 0, 0)] {
        let up = ConnUpstream::start(false).await;
        let gw = Gateway::start(&gateway_toml(
            &up.url(),
            &format!("pool_max_idle_per_host = {max_idle}"),
            "",
        ))
        .await;
        concurrent_wave(&gw, 4).await;
        assert_eq!(
            up.request_conns().len(),
            4,
            "4 overlapping requests need 4 upstream connections"
        );
        if closed_after_wave > 0 {
            assert!(
                up.wait_closed(closed_after_wave, Duration::from_secs(10)).await,
                "pool_max_idle_per_host = {max_idle}: {} of 4 idle connections closed, expected {closed_after_wave}",
                up.closed_request_conns().len()
            );
        }
        // Let the last connections settle in the pool before the next wave asks for them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        concurrent_wave(&gw, 4).await;
        assert_eq!(
            up.request_conns().len() - 4,
            new_in_second_wave,
            "pool_max_idle_per_host = {max_idle}: new upstream connections for the second wave \
             of 4 (requests per connection: {:?})",
            up.state.served_by.lock().unwrap()
        );
        // Each wave leaves 4 idle connections of which the pool keeps `max_idle`.
        if closed_after_wave > 0 {
            up.wait_closed(2 * closed_after_wave, Duration::from_secs(10))
                .await;
        }
        assert_eq!(
            up.closed_request_conns().len(),
            2 * closed_after_wave,
            "pool_max_idle_per_host = {max_idle}: connections closed by the gateway after two waves"
        );
    }
}

#[tokio::test]
async fn pool_idle_timeout_closes_idle_upstream_connections() {
    // 500 ms: reused after 100 ms, closed by the gateway after idling, the next request on a
    // new connection.
    let up = ConnUpstream::start(false).await;
    let gw = Gateway::start(&gateway_toml(
        &up.url(),
        "pool_idle_timeout = \"500ms\"",
        "",
    ))
    .await;
    get_ok(&gw, "/a").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    get_ok(&gw, "/b").await;
    assert_eq!(up.conn_of(1), up.conn_of(0), "reused after 100 ms idle");
    assert!(
        up.wait_closed(1, Duration::from_secs(10)).await,
        "pool_idle_timeout = 500ms: the idle upstream connection was never closed"
    );
    get_ok(&gw, "/c").await;
    assert_ne!(
        up.conn_of(2),
        up.conn_of(0),
        "a new connection after the idle one closed"
    );

    // The default (90 s): after the same 1.5 s of idling, the same connection.
    let up = ConnUpstream::start(false).await;
    let gw = Gateway::start(&gateway_toml(&up.url(), "", "")).await;
    get_ok(&gw, "/a").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    get_ok(&gw, "/b").await;
    assert_eq!(
        up.conn_of(1),
        up.conn_of(0),
        "default pool_idle_timeout: reused"
    );
    assert!(up.closed_request_conns().is_empty());
}

// ---------------------------------------------------------------------------------------------
// upstream.http2_prior_knowledge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http2_prior_knowledge_speaks_h2c_to_an_http2_only_upstream() {
    let up = ConnUpstream::start(true).await;
    let gw = Gateway::start(&gateway_toml(&up.url(), "http2_prior_knowledge = true", "")).await;
    for _ in 0..3 {
        let r = get_ok(&gw, "/Thingworx/Things").await;
        assert_eq!(r.text(), "HTTP/2.0");
    }
    assert_eq!(up.requests(), 3);
    assert_eq!(
        up.request_conns().len(),
        1,
        "one multiplexed h2c connection"
    );

    // Without it the gateway speaks HTTP/1.1, which this upstream does not understand.
    let up = ConnUpstream::start(true).await;
    let gw = Gateway::start(&gateway_toml(
        &up.url(),
        "http2_prior_knowledge = false",
        "",
    ))
    .await;
    let r = http_get(gw.gateway_addr, "/Thingworx/Things")
        .await
        .unwrap();
    assert_eq!(
        r.status,
        502,
        "HTTP/1.1 to an h2-only upstream: {}",
        r.text()
    );
    assert_eq!(up.requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// SCIM settings against the development platform
// ---------------------------------------------------------------------------------------------

/// The development platform with a gateway in front (static bearer token, plain listener).
struct Env {
    gw: Gateway,
    _platform: ServedPlatform,
}

/// `scim_extra`: more keys for `[scim]`; `extra`: more tables.
async fn scim_env(scim_extra: &str, extra: &str) -> Env {
    let platform = ServedPlatform::start().await;
    let gw = Gateway::start(&gateway_toml(
        &platform.url(),
        "connect_timeout = \"2s\"",
        &format!(
            "[platform]\napp_key = \"{}\"\n\n[scim]\nbearer_token = \"{TOKEN}\"\n{scim_extra}\n\n{extra}",
            platform.key
        ),
    ))
    .await;
    Env {
        gw,
        _platform: platform,
    }
}

struct Answer {
    status: u16,
    body: Value,
    text: String,
    content_type: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

impl Env {
    /// A SCIM 2.0 call with a raw body; `rel` is relative to the 2.0 base.
    async fn raw(&self, method: &str, rel: &str, body: Vec<u8>) -> Answer {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{BASE2}{rel}"))
            .header("host", self.gw.host_header())
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/scim+json")
            .header("content-type", "application/scim+json")
            .body(if body.is_empty() { empty() } else { full(body) })
            .unwrap();
        let r = send_plain(self.gw.gateway_addr, req).await.unwrap();
        let text = r.text();
        Answer {
            status: r.status.as_u16(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            content_type: r.header("content-type").unwrap_or_default(),
            text,
        }
    }

    async fn call(&self, method: &str, rel: &str, body: Option<Value>) -> Answer {
        self.raw(
            method,
            rel,
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        )
        .await
    }

    async fn create_user(&self, name: &str) -> String {
        let r = self
            .call(
                "POST",
                "/Users",
                Some(json!({"schemas": [USER], "userName": name, "active": true})),
            )
            .await;
        assert_eq!(r.status, 201, "create {name}: {r}");
        r.body["id"].as_str().unwrap().to_string()
    }
}

fn assert_scim_error(r: &Answer, status: u16, scim_type: Option<&str>, what: &str) {
    assert_eq!(r.status, status, "{what}: {r}");
    assert!(
        r.content_type.starts_with("application/scim+json"),
        "{what}: content-type {:?}: {r}",
        r.content_type
    );
    assert!(
        r.body["schemas"]
            .as_array()
            .is_some_and(|s| s.iter().any(|u| u == ERROR)),
        "{what}: not a SCIM 2.0 Error: {r}"
    );
    assert_eq!(r.body["status"], json!(status.to_string()), "{what}: {r}");
    if let Some(t) = scim_type {
        assert_eq!(r.body["scimType"], json!(t), "{what}: {r}");
    }
}

/// A User POST body of exactly `len` bytes (the `displayName` pads it).
fn user_body_of_len(name: &str, len: usize) -> Vec<u8> {
    let shell = json!({"schemas": [USER], "userName": name, "displayName": ""}).to_string();
    assert!(shell.len() <= len, "{len} is too short for a user body");
    let body =
        json!({"schemas": [USER], "userName": name, "displayName": "x".repeat(len - shell.len())})
            .to_string()
            .into_bytes();
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn max_body_bytes_refuses_one_byte_over_with_a_scim_413() {
    let env = scim_env("", "[limits]\nmax_body_bytes = 2048").await;
    let r = env
        .raw(
            "POST",
            "/Users",
            user_body_of_len("at.limit@corp.test", 2048),
        )
        .await;
    assert_eq!(r.status, 201, "2048 bytes with max_body_bytes = 2048: {r}");
    let r = env
        .raw(
            "POST",
            "/Users",
            user_body_of_len("over.limit@corp.test", 2049),
        )
        .await;
    assert_scim_error(&r, 413, None, "2049 bytes with max_body_bytes = 2048");
    // Nothing of the refused body reached the platform.
    let r = env
        .call(
            "GET",
            "/Users?filter=userName%20eq%20%22over.limit@corp.test%22",
            None,
        )
        .await;
    assert_eq!(r.body["totalResults"], json!(0), "{r}");
}

#[tokio::test]
async fn max_results_caps_an_unpaged_list_and_total_results_counts_all() {
    let env = scim_env("max_results = 3", "").await;
    for i in 0..5 {
        env.create_user(&format!("list.user{i}@corp.test")).await;
    }
    let r = env.call("GET", "/Users", None).await;
    assert_eq!(r.status, 200, "{r}");
    let resources = r.body["Resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3, "max_results = 3: {r}");
    assert_eq!(r.body["itemsPerPage"], json!(3), "{r}");
    let total = r.body["totalResults"].as_u64().unwrap();
    assert!(
        total >= 5,
        "totalResults counts every user, not the page: {r}"
    );
    // A client asking for more gets no more than max_results either.
    let r = env.call("GET", "/Users?count=10", None).await;
    assert_eq!(r.body["Resources"].as_array().unwrap().len(), 3, "{r}");
    let r = env.call("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(r.body["filter"]["maxResults"], json!(3), "{r}");
}

#[tokio::test]
async fn max_filter_candidates_refuses_expensive_filters_over_the_bound() {
    let env = scim_env("max_filter_candidates = 2", "").await;
    // A filter on anything but userName reads every candidate user.
    let filter = "/Users?filter=active%20eq%20true";
    env.create_user("cand.one@corp.test").await;
    env.create_user("cand.two@corp.test").await;
    let r = env.call("GET", filter, None).await;
    assert_eq!(
        r.status, 200,
        "2 candidates, max_filter_candidates = 2: {r}"
    );
    assert_eq!(r.body["totalResults"], json!(2), "{r}");
    env.create_user("cand.three@corp.test").await;
    let r = env.call("GET", filter, None).await;
    assert_scim_error(
        &r,
        400,
        Some("tooMany"),
        "3 candidates, max_filter_candidates = 2",
    );
    // A cheap filter (userName) reads only names: not bounded.
    let r = env
        .call("GET", "/Users?filter=userName%20sw%20%22cand.%22", None)
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(3), "{r}");
}

async fn group_patch(env: &Env) -> Answer {
    let member = env.create_user("patch.member@corp.test").await;
    let r = env
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "PatchTeam"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = env
        .call(
            "PATCH",
            &format!("/Groups/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": member}]}
            ]})),
        )
        .await;
    // Either way the change is made.
    let g = env.call("GET", &format!("/Groups/{id}"), None).await;
    assert_eq!(
        g.body["members"][0]["value"],
        json!(member),
        "the PATCH was applied: {g}"
    );
    r
}

#[tokio::test]
async fn group_patch_response_no_content_answers_204_without_a_body() {
    let env = scim_env("group_patch_response = \"no_content\"", "").await;
    let r = group_patch(&env).await;
    assert_eq!(r.status, 204, "{r}");
    assert!(r.text.is_empty(), "204 with a body: {r}");

    let env = scim_env("", "").await;
    let r = group_patch(&env).await;
    assert_eq!(r.status, 200, "default: {r}");
    assert_eq!(r.body["displayName"], json!("PatchTeam"), "{r}");
}

#[tokio::test]
async fn service_provider_config_bulk_limits_are_the_enforced_ones() {
    let env = scim_env("", "[limits]\nmax_body_bytes = 65536").await;
    let r = env.call("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(r.status, 200, "{r}");
    let bulk = &r.body["bulk"];
    assert_eq!(bulk["supported"], json!(true), "{r}");
    assert_eq!(
        bulk["maxPayloadSize"],
        json!(65536),
        "bulk.maxPayloadSize is limits.max_body_bytes: {r}"
    );
    let max_ops = bulk["maxOperations"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bulk.maxOperations: {r}")) as usize;
    assert!(max_ops > 0, "{r}");

    let op = |i: usize| {
        json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
               "data": {"schemas": [USER], "userName": format!("bulk{i}@corp.test")}})
    };
    // maxOperations + 1 operations: refused whole (RFC 7644 §3.7.4), nothing applied.
    let over =
        json!({"schemas": [BULK_REQUEST], "Operations": (0..=max_ops).map(op).collect::<Vec<_>>()});
    let r = env.call("POST", "/Bulk", Some(over)).await;
    assert_scim_error(&r, 413, None, "maxOperations + 1 operations");
    let r = env
        .call("GET", "/Users?filter=userName%20sw%20%22bulk%22", None)
        .await;
    assert_eq!(r.body["totalResults"], json!(0), "{r}");
    // Exactly maxOperations (small ones, well under the payload limit): accepted.
    let at =
        json!({"schemas": [BULK_REQUEST], "Operations": (0..max_ops).map(op).collect::<Vec<_>>()});
    assert!(at.to_string().len() < 65536);
    let r = env.call("POST", "/Bulk", Some(at)).await;
    assert_eq!(r.status, 200, "maxOperations operations: {r}");
    assert_eq!(
        r.body["Operations"].as_array().map(Vec::len),
        Some(max_ops),
        "{r}"
    );
}
