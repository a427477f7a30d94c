//! Shared harness for the integration tests: a real upstream HTTP/1.1 server, a gateway process
//! started from a TOML config, HTTP/1, HTTP/2 and TLS clients, and a few small parsers.
#![allow(dead_code)]

pub mod dev_env;
pub mod native;
pub mod scim;
pub mod scripted_platform;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub const CHUNK: usize = 64 * 1024;
pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

fn base_pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// Chunk number `k` of the deterministic test data: the base pattern with `k` stamped at the
/// front, so that a duplicated or dropped chunk changes the checksum.
pub fn data_chunk(k: u64, len: usize) -> Bytes {
    let mut b = BytesMut::from(&base_pattern()[..len]);
    let stamp = k.to_le_bytes();
    let n = stamp.len().min(len);
    b[..n].copy_from_slice(&stamp[..n]);
    b.freeze()
}

/// A lazily generated stream of `total` bytes of test data, in 64 KiB chunks.
pub fn data_stream(total: u64) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold((0u64, total), |(k, left)| async move {
        if left == 0 {
            return None;
        }
        let len = (left as usize).min(CHUNK);
        Some((data_chunk(k, len), (k + 1, left - len as u64)))
    })
}

/// A request body streaming `total` bytes of test data, never holding more than one chunk.
pub fn data_body(total: u64) -> Body {
    BodyExt::boxed(StreamBody::new(
        data_stream(total).map(|b| Ok::<_, BoxError>(Frame::data(b))),
    ))
}

/// Order-sensitive FNV-1a over a byte stream, plus its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub hash: u64,
    pub len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.hash;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.hash = h;
        self.len += data.len() as u64;
    }

    /// The checksum of `total` bytes of [`data_stream`].
    pub fn of_test_data(total: u64) -> Checksum {
        let mut c = Checksum::default();
        let (mut k, mut left) = (0u64, total);
        while left > 0 {
            let len = (left as usize).min(CHUNK);
            c.update(&data_chunk(k, len));
            k += 1;
            left -= len as u64;
        }
        c
    }
}

/// Reads a body to its end without keeping it, returning its checksum.
pub async fn checksum_body(mut body: Incoming) -> Result<Checksum, hyper::Error> {
    let mut c = Checksum::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            c.update(&data);
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct UpstreamState {
    count: AtomicUsize,
    /// Path and query of every request received, in arrival order.
    uris: Mutex<Vec<String>>,
    tls_failures: AtomicUsize,
}

/// A real hyper HTTP/1.1 server on 127.0.0.1:0 playing the platform behind the gateway.
pub struct TestUpstream {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        TestUpstream::start_with(None).await
    }

    /// An HTTPS upstream serving `cert_pem`/`key_pem` (ALPN http/1.1); when `client_ca_pem` is
    /// given, a client certificate chaining to it is required.
    pub async fn start_tls(
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> TestUpstream {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let mut cfg = match client_ca_pem {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from_pem(ca.as_bytes())),
                    provider(),
                )
                .build()
                .unwrap();
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .unwrap()
            }
            None => builder
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestUpstream::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let st = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc_state = st.clone();
                    let svc = service_fn(move |req| upstream_handle(svc_state.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                st.tls_failures.fetch_add(1, Ordering::SeqCst);
                                return;
                            };
                            let _ = http
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        TestUpstream {
            addr,
            scheme,
            state,
            task,
        }
    }

    /// TLS handshakes that failed (HTTPS upstream only).
    pub fn tls_failures(&self) -> usize {
        self.state.tls_failures.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    pub fn uris(&self) -> Vec<String> {
        self.state.uris.lock().unwrap().clone()
    }

    pub fn saw_path_prefix(&self, prefix: &str) -> bool {
        self.uris().iter().any(|u| u.starts_with(prefix))
    }

    /// Waits (up to `within`) until a request whose URI starts with `prefix` has arrived.
    pub async fn wait_for(&self, prefix: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.saw_path_prefix(prefix) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.saw_path_prefix(prefix)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on which nothing listens, and nothing can start to while the test process runs:
/// the port stays bound to a socket that never listens, so a connection is refused. (A port
/// bound and released could be taken by another test's server meanwhile.)
pub async fn dead_addr() -> SocketAddr {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    HELD.lock().unwrap().push(socket);
    addr
}

fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

fn text_response(status: u16, text: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header("x-test-upstream", "1")
        .body(full(text.into()))
        .unwrap()
}

async fn upstream_handle(
    st: Arc<UpstreamState>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    st.count.fetch_add(1, Ordering::SeqCst);
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    st.uris.lock().unwrap().push(uri);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match (method, path.as_str()) {
        (Method::GET, "/hello") => text_response(200, "hello"),
        (Method::POST, "/echo") => {
            let body = req.into_body().map_err(BoxError::from).boxed();
            Response::builder()
                .status(200)
                .header("x-test-upstream", "1")
                .body(body)
                .unwrap()
        }
        (Method::POST, "/sink") => {
            let mut n: u64 = 0;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(d) = f.into_data() {
                            n += d.len() as u64;
                        }
                    }
                    Err(_) => return Ok(text_response(400, "body error")),
                }
            }
            text_response(200, n.to_string())
        }
        (Method::GET, "/source") => {
            let n: u64 = query_param(req.uri(), "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = StreamBody::new(data_stream(n).map(|b| Ok::<_, BoxError>(Frame::data(b))));
            Response::builder()
                .status(200)
                .header("x-test-upstream", "1")
                .body(BodyExt::boxed(body))
                .unwrap()
        }
        (Method::GET, "/headers") => {
            let mut out = String::new();
            out.push_str(&format!("@method: {}\n", req.method()));
            out.push_str(&format!("@uri: {}\n", req.uri()));
            out.push_str(&format!("@version: {:?}\n", req.version()));
            for name in req.headers().keys() {
                let values: Vec<String> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                out.push_str(&format!("{}: {}\n", name.as_str(), values.join(", ")));
            }
            text_response(200, out)
        }
        (Method::GET, "/slow") => {
            let ms: u64 = query_param(req.uri(), "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text_response(200, "slow done")
        }
        (Method::GET, "/hop") => Response::builder()
            .status(200)
            .header("keep-alive", "timeout=5")
            .header("connection", "keep-alive, x-secret-hop")
            .header("x-secret-hop", "1")
            .header("x-normal", "1")
            .header("x-test-upstream", "1")
            .body(full("hop"))
            .unwrap(),
        (Method::GET, "/ws") => {
            let is_ws = req
                .headers()
                .get("upgrade")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let key = req.headers().get("sec-websocket-key").cloned();
            match (is_ws, key) {
                (true, Some(key)) => {
                    let accept = derive_accept_key(key.as_bytes());
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(upgraded) = on_upgrade.await else {
                            return;
                        };
                        let mut ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            None,
                        )
                        .await;
                        while let Some(Ok(msg)) = ws.next().await {
                            if msg.is_text() || msg.is_binary() {
                                if ws.send(msg).await.is_err() {
                                    break;
                                }
                            } else if msg.is_close() {
                                break;
                            }
                        }
                    });
                    Response::builder()
                        .status(101)
                        .header("upgrade", "websocket")
                        .header("connection", "Upgrade")
                        .header("sec-websocket-accept", accept)
                        .body(empty())
                        .unwrap()
                }
                _ => text_response(400, "not a websocket request"),
            }
        }
        (_, p) => text_response(404, format!("upstream 404 {p}")),
    };
    Ok(resp)
}

/// Parses the `/headers` dump: `name: value` lines plus `@method`, `@uri`, `@version`.
pub fn parse_header_dump(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------------------------

pub fn plain_listener() -> String {
    "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n".to_string()
}

/// A self-signed TLS listener writing its pair into `dir` (may use the `@DIR@` placeholder).
pub fn self_signed_listener(dir: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ self_signed = true, self_signed_dir = \"{dir}\", names = [\"gw.test\"] }}\n\n"
    )
}

pub fn file_tls_listener(cert: &Path, key: &Path) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n",
        cert.display(),
        key.display()
    )
}

/// A whole config: `listeners` (TOML for the `[[listeners]]`), the upstream URL plus extra keys
/// for `[upstream]`, an admin listener on 127.0.0.1:0, JSON logs, then `extra` tables.
pub fn config_toml(
    listeners: &str,
    upstream_url: &str,
    upstream_extra: &str,
    extra: &str,
) -> String {
    format!(
        "{listeners}[upstream]\nurl = \"{upstream_url}\"\nconnect_timeout = \"2s\"\n{upstream_extra}\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------------------------

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scimgate")
}

/// `scimgate dev` on ephemeral loopback ports with JSON logs and no inherited `RUST_LOG`;
/// the caller chooses where its output goes.
pub fn dev_command(data_dir: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--platform-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// A running `scimgate serve`. Killed on drop; its logs are printed if the test panicked.
pub struct Gateway {
    _dir: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub gateway_addrs: Vec<SocketAddr>,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub pid: u32,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

fn capture(stream: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&line).into_owned());
        }
    });
}

impl Gateway {
    /// Starts the gateway with `toml` in a fresh temp dir; `@DIR@` in `toml` becomes that dir.
    pub async fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Gateway::start_inner(Some(dir), path, toml, &[]).await
    }

    /// Same, with extra environment variables for the process.
    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Gateway::start_inner(Some(dir), path, toml, env).await
    }

    /// Same, with the config (and `@DIR@`) in an existing directory the caller keeps.
    pub async fn start_in(dir: &Path, toml: &str) -> Gateway {
        Gateway::start_inner(None, dir.to_path_buf(), toml, &[]).await
    }

    async fn start_inner(
        keep: Option<tempfile::TempDir>,
        dir: PathBuf,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let toml = toml.replace("@DIR@", &dir.display().to_string());
        let config_path = dir.join("scimgate.toml");
        std::fs::write(&config_path, &toml).unwrap();
        let expected_gateways = toml.matches("[[listeners]]").count();

        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("SCIMGATE_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        capture(child.stderr.take().unwrap(), stderr.clone());
        capture(child.stdout.take().unwrap(), stdout.clone());

        let deadline = Instant::now() + Duration::from_secs(30);
        let (gateway_addrs, admin_addr) = loop {
            let mut gws = Vec::new();
            let mut admin = None;
            for line in stderr.lock().unwrap().iter() {
                let Some(j) = parse_json(line) else { continue };
                if j.str_field("message").as_deref() != Some("listening") {
                    continue;
                }
                let Some(addr) = j
                    .str_field("address")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                else {
                    continue;
                };
                match j.str_field("listener").as_deref() {
                    Some("gateway") => gws.push(addr),
                    Some("admin") => admin = Some(addr),
                    _ => {}
                }
            }
            if let (true, Some(admin)) = (gws.len() >= expected_gateways, admin) {
                break (gws, admin);
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "scimgate exited with {status} before listening\nconfig:\n{toml}\nstderr:\n{}\nstdout:\n{}",
                    stderr.lock().unwrap().join("\n"),
                    stdout.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "scimgate did not announce its listeners within 30 s\nconfig:\n{toml}\nstderr:\n{}\nstdout:\n{}",
                    stderr.lock().unwrap().join("\n"),
                    stdout.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };

        Gateway {
            _dir: keep,
            dir,
            config_path,
            gateway_addr: gateway_addrs[0],
            gateway_addrs,
            admin_addr,
            pid,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            stderr,
            stdout,
        }
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stderr and stdout line so far.
    pub fn all_output(&self) -> Vec<String> {
        let mut v = self.logs();
        v.extend(self.stdout.lock().unwrap().iter().cloned());
        v
    }

    /// The stderr lines that parse as JSON objects.
    pub fn json_logs(&self) -> Vec<Json> {
        self.logs().iter().filter_map(|l| parse_json(l)).collect()
    }

    /// Waits (up to `within`) for a JSON log line matching `pred`.
    pub async fn wait_log(&self, within: Duration, pred: impl Fn(&Json) -> bool) -> Option<Json> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(j) = self.json_logs().into_iter().find(|j| pred(j)) {
                return Some(j);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (up to `within`) until at least `n` access lines are written. What a request logs
    /// while it is handled comes before its access line, so once a request's line is out,
    /// nothing it logs is still to come: check for absent lines only after this.
    pub async fn wait_access_lines(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let written = self
                .json_logs()
                .iter()
                .filter(|j| j.message() == "access")
                .count();
            if written >= n {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_none() {
            *exit = self.child.lock().unwrap().try_wait().unwrap();
        }
        *exit
    }

    /// Waits (up to `within`) for the process to exit.
    pub async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn host_header(&self) -> String {
        format!("127.0.0.1:{}", self.gateway_addr.port())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            std::thread::sleep(Duration::from_millis(100));
            eprintln!("----- scimgate (pid {}) stderr -----", self.pid);
            for l in self.stderr.lock().map(|v| v.clone()).unwrap_or_default() {
                eprintln!("{l}");
            }
            eprintln!("----- scimgate stdout -----");
            for l in self.stdout.lock().map(|v| v.clone()).unwrap_or_default() {
                eprintln!("{l}");
            }
            eprintln!("----- end -----");
        }
    }
}

/// Runs `scimgate check --config <toml written to a temp file>`.
pub fn run_check(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let toml = toml.replace("@DIR@", &dir.path().display().to_string());
    let path = dir.path().join("scimgate.toml");
    std::fs::write(&path, toml).unwrap();
    Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("SCIMGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------------

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn roots_from_pem(pem: &[u8]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "no certificate in PEM");
    roots
}

pub fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

/// A client config trusting `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &[u8], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots_from_pem(ca_pem))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn_list(alpn);
    Arc::new(cfg)
}

/// A client config trusting `ca_pem`, limited to the given TLS versions.
pub fn client_config_versions(
    ca_pem: &[u8],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots_from_pem(ca_pem))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn_list(alpn);
    Arc::new(cfg)
}

/// Accepts any server certificate (signatures still checked): for looking at what is served.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn insecure_client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let p = provider();
    let mut cfg = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(p)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn_list(alpn);
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// What a TLS handshake with the gateway showed.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub leaf_der: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
}

pub fn tls_info(stream: &TlsStream<TcpStream>) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    TlsInfo {
        leaf_der: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default(),
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        version: conn.protocol_version(),
    }
}

/// A raw TLS handshake accepting whatever certificate is served.
pub async fn tls_probe(
    addr: SocketAddr,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsInfo> {
    let stream = tls_connect(addr, server_name, insecure_client_config(alpn)).await?;
    Ok(tls_info(&stream))
}

/// The DER of every certificate in a PEM text.
pub fn pem_certs_der(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP clients
// ---------------------------------------------------------------------------------------------

/// A collected response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub async fn collect(resp: Response<Incoming>) -> Result<Resp, BoxError> {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Whether this response came from the test upstream.
    pub fn came_from_upstream(&self) -> bool {
        self.headers.contains_key("x-test-upstream")
    }
}

pub async fn h1_handshake<S>(
    io: S,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

pub async fn h2_handshake<S>(
    io: S,
) -> Result<hyper::client::conn::http2::SendRequest<Body>, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request with an explicit Host header (hyper's connection-level client sets none).
pub fn request(method: Method, host: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(body)
        .unwrap()
}

pub fn get(host: &str, path: &str) -> Request<Body> {
    request(Method::GET, host, path, empty())
}

/// Sends one request on a new plain HTTP/1.1 connection and collects the response.
pub async fn send_plain(addr: SocketAddr, req: Request<Body>) -> Result<Resp, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let mut sender = h1_handshake(tcp).await?;
    let resp = sender.send_request(req).await?;
    Resp::collect(resp).await
}

/// `GET path` on a new plain HTTP/1.1 connection, Host = the address.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<Resp, BoxError> {
    send_plain(addr, get(&addr.to_string(), path)).await
}

/// Sends one request on a new HTTP/1.1-over-TLS connection and collects the response.
pub async fn send_tls(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<ClientConfig>,
    req: Request<Body>,
) -> Result<Resp, BoxError> {
    let tls = tls_connect(addr, server_name, cfg).await?;
    let mut sender = h1_handshake(tls).await?;
    let resp = sender.send_request(req).await?;
    Resp::collect(resp).await
}

/// Polls `GET path` (plain) until the status is `want`, up to `within`. Returns every status seen.
pub async fn poll_status(
    addr: SocketAddr,
    path: &str,
    want: u16,
    within: Duration,
) -> (bool, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), http_get(addr, path)).await {
            Ok(Ok(r)) => {
                seen.push(r.status.as_u16().to_string());
                if r.status.as_u16() == want {
                    return (true, seen);
                }
            }
            Ok(Err(e)) => seen.push(format!("error: {e}")),
            Err(_) => seen.push("no answer within 5 s".to_string()),
        }
        if Instant::now() > deadline {
            return (false, seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal JSON (the log lines)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A field rendered as text: strings as they are, numbers and booleans printed.
    pub fn str_field(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Json::Str(s) => Some(s.clone()),
            Json::Num(n) if n.fract() == 0.0 => Some(format!("{}", *n as i64)),
            Json::Num(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Null => Some("null".to_string()),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        self.str_field("message").unwrap_or_default()
    }
}

pub fn parse_json(s: &str) -> Option<Json> {
    let chars: Vec<char> = s.trim().chars().collect();
    let mut i = 0;
    let v = json_value(&chars, &mut i)?;
    json_ws(&chars, &mut i);
    (i == chars.len()).then_some(v)
}

fn json_ws(c: &[char], i: &mut usize) {
    while *i < c.len() && c[*i].is_whitespace() {
        *i += 1;
    }
}

fn json_value(c: &[char], i: &mut usize) -> Option<Json> {
    json_ws(c, i);
    match *c.get(*i)? {
        '{' => {
            *i += 1;
            let mut fields = Vec::new();
            json_ws(c, i);
            if c.get(*i) == Some(&'}') {
                *i += 1;
                return Some(Json::Obj(fields));
            }
            loop {
                json_ws(c, i);
                let Json::Str(k) = json_string(c, i)? else {
                    return None;
                };
                json_ws(c, i);
                if c.get(*i) != Some(&':') {
                    return None;
                }
                *i += 1;
                let v = json_value(c, i)?;
                fields.push((k, v));
                json_ws(c, i);
                match c.get(*i)? {
                    ',' => *i += 1,
                    '}' => {
                        *i += 1;
                        return Some(Json::Obj(fields));
                    }
                    _ => return None,
                }
            }
        }
        '[' => {
            *i += 1;
            let mut items = Vec::new();
            json_ws(c, i);
            if c.get(*i) == Some(&']') {
                *i += 1;
                return Some(Json::Arr(items));
            }
            loop {
                items.push(json_value(c, i)?);
                json_ws(c, i);
                match c.get(*i)? {
                    ',' => *i += 1,
                    ']' => {
                        *i += 1;
                        return Some(Json::Arr(items));
                    }
                    _ => return None,
                }
            }
        }
        '"' => json_string(c, i),
        't' => json_lit(c, i, "true", Json::Bool(true)),
        'f' => json_lit(c, i, "false", Json::Bool(false)),
        'n' => json_lit(c, i, "null", Json::Null),
        _ => {
            let start = *i;
            while *i < c.len() && matches!(c[*i], '0'..='9' | '-' | '+' | '.' | 'e' | 'E') {
                *i += 1;
            }
            let s: String = c[start..*i].iter().collect();
            s.parse().ok().map(Json::Num)
        }
    }
}

fn json_lit(c: &[char], i: &mut usize, lit: &str, v: Json) -> Option<Json> {
    let end = *i + lit.len();
    if end <= c.len() && c[*i..end].iter().collect::<String>() == lit {
        *i = end;
        Some(v)
    } else {
        None
    }
}

fn json_string(c: &[char], i: &mut usize) -> Option<Json> {
    if c.get(*i) != Some(&'"') {
        return None;
    }
    *i += 1;
    let mut out = String::new();
    loop {
        let ch = *c.get(*i)?;
        *i += 1;
        match ch {
            '"' => return Some(Json::Str(out)),
            '\\' => {
                let e = *c.get(*i)?;
                *i += 1;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = c.get(*i..*i + 4)?.iter().collect();
                        *i += 4;
                        let mut code = u32::from_str_radix(&hex, 16).ok()?;
                        if (0xD800..0xDC00).contains(&code)
                            && c.get(*i) == Some(&'\\')
                            && c.get(*i + 1) == Some(&'u')
                        {
                            let hex2: String = c.get(*i + 2..*i + 6)?.iter().collect();
                            let low = u32::from_str_radix(&hex2, 16).ok()?;
                            *i += 6;
                            code = 0x10000
                                + ((code - 0xD800) << 10)
                                + (low.wrapping_sub(0xDC00) & 0x3FF);
                        }
                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                    }
                    other => out.push(other),
                }
            }
            other => out.push(other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A fresh self-signed certificate for `names` (IP strings become IP SANs).
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn self_signed_pair(names: &[&str]) -> CertPair {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    CertPair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}
