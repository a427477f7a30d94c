//! Edges where a request could reach the platform, or be read by it, differently from how the
//! gateway read it: protocol upgrades, ambiguous spellings of the SCIM provider's path, several
//! `Authorization` headers, and SCIM writes whose body is not declared as JSON. Each rule has a
//! control that must still pass.
//!
//! The upgrade and path checks talk raw HTTP/1.1 over TCP on both sides, so that nothing between
//! the test and the gateway (or the gateway and the platform) normalises what is sent.

mod common;

use common::dev_env::{DevEnv, DevEnvSpec};
use common::scim::{enc, ScimResp};
use common::{config_toml, plain_listener, Gateway, TestUpstream};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "scimgate-hardening-token-0123456789";
const BASE: &str = "/Thingworx/SCIMProvider/SCIM";
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RawRequest {
    line: String,
    /// Lower-cased names; repeated headers joined with ", ".
    headers: HashMap<String, String>,
}

impl RawRequest {
    fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn came_from_upstream(&self) -> bool {
        self.headers.contains_key("x-test-upstream")
    }

    /// A SCIM error of the gateway's own: 1.1 or 2.0 shape, status `code`.
    fn is_scim_error(&self, code: u16) -> bool {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        self.status == code
            && !self.came_from_upstream()
            && (body["Errors"][0]["code"] == json!(code.to_string())
                || body["status"] == json!(code.to_string()))
    }
}

fn parse_head(head: &str) -> (String, HashMap<String, String>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v.trim());
                })
                .or_insert_with(|| v.trim().to_string());
        }
    }
    (first, headers)
}

/// One end of a raw HTTP/1.1 connection, with what was read past the last message.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The head of the next message, or `None` when the peer closed first.
    async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Some(head);
            }
            if !self.fill().await.ok()? {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await.ok()? {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            if !self.fill().await.ok()? {
                return None;
            }
        }
    }

    async fn body(&mut self, headers: &HashMap<String, String>) -> Option<Vec<u8>> {
        if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let size = usize::from_str_radix(self.line().await?.trim(), 16).ok()?;
                if size == 0 {
                    self.line().await?;
                    return Some(body);
                }
                body.extend(self.exact(size).await?);
                self.line().await?;
            }
        }
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.exact(len).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response; `Err` says what arrived instead of one.
    async fn response(&mut self) -> Result<RawResponse, String> {
        let read = async {
            let head = self.head().await.ok_or("the connection closed")?;
            let (line, headers) = parse_head(&head);
            let status = line
                .strip_prefix("HTTP/1.1 ")
                .and_then(|s| s.get(..3))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not a response: {head:?}"))?;
            let body = if status == 101 {
                Vec::new()
            } else {
                self.body(&headers).await.ok_or("the body was cut short")?
            };
            Ok(RawResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| Err("no response in time".into()))
    }

    async fn exchange(&mut self, request: &str) -> Result<RawResponse, String> {
        self.send(request.as_bytes()).await;
        self.response().await
    }
}

// ---------------------------------------------------------------------------------------------
// An upstream that switches protocols
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Switch {
    /// 101 to a request carrying `Upgrade`, naming this protocol (or the one asked for).
    WhenAsked(Option<&'static str>),
    /// 101 to every request, naming this protocol.
    Always(&'static str),
}

/// A raw upstream. After a 101 it answers every read with a 200 whose body is what it read and
/// which carries `x-test-upstream: tunnel`, so whatever crosses a tunnel is seen on both sides.
struct SwitchingUpstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SwitchingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SwitchingUpstream {
    async fn start(switch: Switch) -> SwitchingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<RawRequest>>> = Arc::default();
        let tunnelled: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (r, t) = (requests.clone(), tunnelled.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_switching(
                    Raw {
                        stream,
                        buf: Vec::new(),
                    },
                    switch,
                    r.clone(),
                    t.clone(),
                ));
            }
        });
        SwitchingUpstream {
            addr,
            requests,
            tunnelled,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn tunnelled(&self) -> String {
        String::from_utf8_lossy(&self.tunnelled.lock().unwrap()).into_owned()
    }
}

async fn serve_switching(
    mut conn: Raw,
    switch: Switch,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
) {
    loop {
        let Some(head) = conn.head().await else {
            return;
        };
        let (line, headers) = parse_head(&head);
        if conn.body(&headers).await.is_none() {
            return;
        }
        let asked = headers.get("upgrade").cloned();
        requests.lock().unwrap().push(RawRequest {
            line: line.clone(),
            headers,
        });
        let protocol = match (switch, asked) {
            (Switch::Always(p), _) => Some(p.to_string()),
            (Switch::WhenAsked(Some(p)), Some(_)) => Some(p.to_string()),
            (Switch::WhenAsked(None), Some(asked)) => Some(asked),
            (Switch::WhenAsked(_), None) => None,
        };
        match protocol {
            None => {
                let body = format!("upstream saw {line}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-test-upstream: 1\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Some(p) => {
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: {p}\r\n\r\n"
                );
                if conn.stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut pending = std::mem::take(&mut conn.buf);
                loop {
                    if pending.is_empty() {
                        let mut chunk = [0u8; 8192];
                        match conn.stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        }
                    }
                    tunnelled.lock().unwrap().extend_from_slice(&pending);
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nx-test-upstream: tunnel\r\ncontent-length: {}\r\n\r\n",
                        pending.len()
                    )
                    .into_bytes();
                    answer.append(&mut pending);
                    if conn.stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn gateway_before(upstream_url: &str, proxy: &str) -> Gateway {
    Gateway::start(&config_toml(
        &plain_listener(),
        upstream_url,
        "",
        &format!("[scim]\nbearer_token = \"{TOKEN}\"\n\n[proxy]\n{proxy}\n"),
    ))
    .await
}

/// A SCIM request with a forged `X-Forwarded-For`: if it reached the platform through a tunnel,
/// the platform would see both untouched.
const SCIM_PROBE: &str = "GET /Thingworx/SCIMProvider/SCIM/Users HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

/// After whatever came before on `conn`, the gateway still parses the connection itself: a SCIM
/// request gets the gateway's SCIM answer (401 without credentials) and crosses no tunnel.
async fn gateway_still_parses(conn: &mut Raw, upstream: &SwitchingUpstream, what: &str) {
    let r = conn.exchange(SCIM_PROBE).await;
    let r = r.unwrap_or_else(|e| panic!("{what}: the SCIM request after it: {e}"));
    assert!(
        r.is_scim_error(401),
        "{what}: the SCIM request after it was not answered by the gateway: {} {:?} {}",
        r.status,
        r.headers,
        r.text()
    );
    let tunnelled = upstream.tunnelled();
    assert!(
        tunnelled.is_empty(),
        "{what}: bytes crossed a tunnel to the platform: {tunnelled:?}"
    );
    assert!(
        !upstream
            .requests()
            .iter()
            .any(|r| r.path().contains("SCIMProvider")),
        "{what}: the platform saw a SCIM request"
    );
}

const H2C: &str = "GET /Thingworx/Things/X HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";

#[tokio::test]
async fn h2c_upgrade_is_forwarded_without_the_upgrade_and_opens_no_tunnel() {
    let upstream = SwitchingUpstream::start(Switch::WhenAsked(None)).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(H2C).await.unwrap();
    assert_eq!(r.status, 200, "h2c request: {} {}", r.status, r.text());
    assert!(r.came_from_upstream());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    for header in ["upgrade", "http2-settings"] {
        assert!(
            !seen[0].headers.contains_key(header),
            "the platform received {header}: {:?}",
            seen[0].headers
        );
    }
    assert!(
        !seen[0]
            .headers
            .get("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade")),
        "the platform received Connection: upgrade: {:?}",
        seen[0].headers
    );
    gateway_still_parses(&mut conn, &upstream, "after an h2c upgrade request").await;

    // HTTP2-Settings goes even when the client does not name it in Connection.
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn
        .exchange("GET /Thingworx/Things/Y HTTP/1.1\r\nHost: gw\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: 1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let last = upstream.requests().pop().unwrap();
    assert_eq!(last.path(), "/Thingworx/Things/Y");
    assert!(!last.headers.contains_key("http2-settings"), "{last:?}");
    assert_eq!(last.headers.get("x-kept").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_a_502_and_opens_no_tunnel() {
    let upstream = SwitchingUpstream::start(Switch::Always("h2c")).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(H2C).await.unwrap();
    assert_eq!(r.status, 502, "{} {}", r.status, r.text());
    assert!(!r.came_from_upstream());
    gateway_still_parses(&mut conn, &upstream, "after a 101 to an h2c request").await;

    // The same for a plain request the platform answers with a 101.
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn
        .exchange("GET /Thingworx/Things/X HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{} {}", r.status, r.text());
    gateway_still_parses(&mut conn, &upstream, "after a 101 to a plain request").await;
}

const WEBSOCKET: &str = "GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn a_switch_to_another_protocol_than_asked_is_a_502() {
    let upstream = SwitchingUpstream::start(Switch::WhenAsked(Some("foo"))).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(WEBSOCKET).await.unwrap();
    assert_eq!(r.status, 502, "{} {:?} {}", r.status, r.headers, r.text());
    assert!(!r.came_from_upstream());
    gateway_still_parses(&mut conn, &upstream, "after a 101 naming foo").await;

    // Control: the platform naming what was asked for (in its own case) gets the tunnel.
    let upstream = SwitchingUpstream::start(Switch::WhenAsked(Some("WebSocket"))).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(WEBSOCKET).await.unwrap();
    assert_eq!(r.status, 101, "{} {}", r.status, r.text());
    assert_eq!(r.header("upgrade"), Some("WebSocket"));
    let echoed = conn.exchange("frames").await.unwrap();
    assert_eq!(echoed.header("x-test-upstream"), Some("tunnel"));
    assert_eq!(echoed.text(), "frames");
}

#[tokio::test]
async fn upgrades_ride_only_get() {
    let upstream = SwitchingUpstream::start(Switch::WhenAsked(None)).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn
        .exchange("POST /Thingworx/Things/X/Services/Y HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "POST with Upgrade: {} {}",
        r.status,
        r.text()
    );
    assert!(r.came_from_upstream());
    let seen = upstream.requests().pop().unwrap();
    assert!(seen.line.starts_with("POST "), "{seen:?}");
    assert!(!seen.headers.contains_key("upgrade"), "{seen:?}");
    gateway_still_parses(&mut conn, &upstream, "after a POST with Upgrade").await;
}

#[tokio::test]
async fn a_configured_upgrade_token_is_relayed_and_others_are_not() {
    // Negative control first: by default `foo` is stripped and the request is an ordinary one.
    let upstream = SwitchingUpstream::start(Switch::WhenAsked(None)).await;
    let gw = gateway_before(&upstream.url(), "").await;
    let foo =
        "GET /Thingworx/Feed HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: FOO\r\n\r\n";
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(foo).await.unwrap();
    assert_eq!(r.status, 200, "foo by default: {} {}", r.status, r.text());
    assert!(!upstream.requests()[0].headers.contains_key("upgrade"));
    gateway_still_parses(&mut conn, &upstream, "after Upgrade: foo by default").await;
    drop(gw);

    let upstream = SwitchingUpstream::start(Switch::WhenAsked(None)).await;
    let gw = gateway_before(
        &upstream.url(),
        "allowed_upgrades = [\"websocket\", \"foo\"]",
    )
    .await;
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn.exchange(foo).await.unwrap();
    assert_eq!(r.status, 101, "foo when allowed: {} {}", r.status, r.text());
    assert_eq!(r.header("upgrade"), Some("FOO"));
    assert_eq!(
        upstream.requests()[0]
            .headers
            .get("upgrade")
            .map(String::as_str),
        Some("FOO")
    );
    let echoed = conn.exchange("raw bytes").await.unwrap();
    assert_eq!(echoed.text(), "raw bytes");
    // h2c stays out even when offered next to an allowed protocol.
    let mut conn = Raw::connect(gw.gateway_addr).await;
    let r = conn
        .exchange("GET /Thingworx/Feed HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: h2c, foo\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(
        upstream
            .requests()
            .pop()
            .unwrap()
            .headers
            .get("upgrade")
            .map(String::as_str),
        Some("foo")
    );
}

#[test]
fn h2c_cannot_be_allowed() {
    let toml = config_toml(
        &plain_listener(),
        "http://127.0.0.1:1",
        "",
        "[proxy]\nallowed_upgrades = [\"websocket\", \"H2C\"]\n",
    );
    let out = common::run_check(&toml);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("proxy.allowed_upgrades[1]"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Ambiguous paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ambiguous_spellings_of_the_scim_provider_are_refused() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_before(&upstream.url(), "").await;
    let ask = |path: &str| {
        let addr = gw.gateway_addr;
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
        async move { Raw::connect(addr).await.exchange(&request).await }
    };

    let mut findings = Vec::new();
    for path in [
        "/Thingworx./SCIMProvider/SCIM/Users",
        "/Thingworx/SCIMProvider./SCIM/Users",
        "/Thingworx/SCIMProvider%20/SCIM/Users",
        "/Thingworx/SCIMProvider/SCIM%20/Users",
        "/Thingworx/SCIMProvider/SCIM./Users",
        "/Thingworx/SCIMProvider%5CSCIM/Users",
        "/Thingworx/SCIMProvider%5cSCIM%5cUsers",
        "/Thingworx/SCIMProvider%252FSCIM/Users",
        "/Thingworx/SCIMProvider/%2553CIM/Users",
        "/Thingworx/SCIMProvider/%25253CIM/Users",
        "/Thingworx/Things/%252e%252e/SCIMProvider/SCIM/Users",
        "/thingworx/scimprovider/Other",
        "/Thingworx/SCIMPROVIDER/console",
        "/Thingworx/SCIMProvider;jsessionid=1",
        "/Thingworx/SCIMProvider//SCIMx",
        "/Thingworx/SCIMProvider/SCIM;x=%2F/../Users",
    ] {
        match ask(path).await {
            Ok(r) if r.is_scim_error(400) => {}
            Ok(r) => findings.push(format!(
                "{path}: {} {:?} {}",
                r.status,
                r.header("x-test-upstream"),
                r.text()
            )),
            Err(e) => findings.push(format!("{path}: {e}")),
        }
    }
    // Backslashes may already be refused by the HTTP parser; either way, a 400 that never
    // reaches the platform.
    for path in [
        "/Thingworx\\SCIMProvider\\SCIM\\Users",
        "/Thingworx/SCIMProvider\\SCIM/Users",
    ] {
        match ask(path).await {
            Ok(r) if r.status == 400 && !r.came_from_upstream() => {}
            Ok(r) => findings.push(format!("{path}: {} {}", r.status, r.text())),
            Err(e) => findings.push(format!("{path}: {e}")),
        }
    }
    assert!(findings.is_empty(), "not refused:\n{}", findings.join("\n"));
    assert!(
        !upstream
            .uris()
            .iter()
            .any(|u| u.to_lowercase().contains("scimprovider")),
        "the platform saw {:?}",
        upstream.uris()
    );

    // A 2.0-looking path gets the 2.0 error shape.
    let r = ask("/Thingworx/SCIMProvider/SCIM%20/v2/Users")
        .await
        .unwrap();
    assert!(r.is_scim_error(400), "{}", r.text());

    // Disguised but unambiguous forms stay the gateway's SCIM service (401 without a token).
    for path in [
        "/Thingworx/SCIMProvider/%53CIM/Users",
        "/thingworx/scimprovider/scim/Users",
        "/Thingworx/./SCIMProvider/SCIM/Users",
        "/Thingworx/Things/..;/SCIMProvider/SCIM/Users",
        "/Thingworx/SCIMProvider;jsessionid=1/SCIM/Users",
        "/Thingworx/%2e%2e/Thingworx/SCIMProvider/SCIM/Users",
    ] {
        let r = ask(path).await.unwrap();
        assert!(r.is_scim_error(401), "{path}: {} {}", r.status, r.text());
    }

    // Controls: ordinary platform paths, encoded spaces included, still pass through.
    for path in [
        "/Thingworx/Things/X/Services/Y",
        "/Thingworx/Composer/",
        "/Thingworx/Things/My%20Thing",
        "/Thingworx/Things/My%20Thing/Services/Do%20It",
        "/Thingworx/Things/Thing.",
        "/Thingworx/Things/X;jsessionid=1",
        "/Thingworx/SCIMProviderX/SCIM/Users",
        "/Thingworx/SCIMProvider/",
        "/Thingworx/SCIMProvider/SCIMx",
    ] {
        let r = ask(path).await.unwrap();
        assert!(
            r.came_from_upstream(),
            "{path} did not pass through: {} {}",
            r.status,
            r.text()
        );
        assert!(upstream.uris().iter().any(|u| u == path), "{path}");
    }
}

// ---------------------------------------------------------------------------------------------
// SCIM with a platform: credentials and content types
// ---------------------------------------------------------------------------------------------

type Env = DevEnv;

async fn scim_env() -> Env {
    let auth =
        format!("[scim]\nbearer_token = \"{TOKEN}\"\n\n[auth]\nmax_failures_per_minute = 1000\n");
    DevEnv::start(DevEnvSpec {
        auth: Some(&auth),
        ..Default::default()
    })
    .await
}

fn scim_error(r: &ScimResp, status: u16) -> bool {
    r.status == status
        && (r.body["Errors"][0]["code"] == json!(status.to_string())
            || r.body["status"] == json!(status.to_string()))
}

/// One request over HTTP/2 (TLS, ALPN h2) with the headers given, repeated names included.
async fn h2_call(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let ca = std::fs::read(gw.dir.join("tls").join("cert.pem")).unwrap();
    let tls = common::tls_connect(
        gw.gateway_addr,
        "gw.test",
        common::client_config(&ca, &[b"h2"]),
    )
    .await
    .unwrap();
    let mut sender = common::h2_handshake(tls).await.unwrap();
    let mut builder = http::Request::builder().method("GET").uri(format!(
        "https://localhost:{}{path}",
        gw.gateway_addr.port()
    ));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let resp = sender
        .send_request(builder.body(common::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let r = common::Resp::collect(resp).await.unwrap();
    (
        r.status.as_u16(),
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn several_authorization_headers_are_a_400() {
    let env = scim_env().await;
    let valid = format!("Bearer {TOKEN}");
    let users = format!("{BASE}/v2/Users");

    // Control: one valid header.
    let r = env
        .scim
        .send("GET", &users, &[("authorization", &valid)], None)
        .await;
    assert_eq!(r.status, 200, "one valid Authorization: {r}");
    let (status, _) = h2_call(&env.gw, &users, &[("authorization", &valid)]).await;
    assert_eq!(status, 200, "one valid Authorization over HTTP/2");

    for (what, pair) in [
        ("valid then garbage", [valid.as_str(), "Bearer garbage"]),
        ("garbage then valid", ["Bearer garbage", valid.as_str()]),
        ("valid twice", [valid.as_str(), valid.as_str()]),
        ("Basic then valid", ["Basic Zm9vOmJhcg==", valid.as_str()]),
    ] {
        let headers = [("authorization", pair[0]), ("authorization", pair[1])];
        let r = env.scim.send("GET", &users, &headers, None).await;
        assert!(scim_error(&r, 400), "HTTP/1.1, {what}: {r}");
        let r = env
            .scim
            .send("GET", &format!("{BASE}/Users"), &headers, None)
            .await;
        assert!(scim_error(&r, 400), "HTTP/1.1 (SCIM 1.1), {what}: {r}");
        let (status, body) = h2_call(&env.gw, &users, &headers).await;
        assert!(
            status == 400 && body["status"] == json!("400"),
            "HTTP/2, {what}: {status} {body}"
        );
    }

    // Unchanged around it: query-string tokens are refused, and no token is logged.
    let r = env
        .scim
        .send("GET", &format!("{users}?access_token={TOKEN}"), &[], None)
        .await;
    assert_eq!(r.status, 401, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !env.gw.all_output().iter().any(|l| l.contains(TOKEN)),
        "the token appears in the gateway's output"
    );
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": true,
    })
}

fn user_v1(name: &str) -> Value {
    json!({"schemas": ["urn:scim:schemas:core:1.0"], "userName": name})
}

impl Env {
    async fn write(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ScimResp {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        self.scim
            .send(method, path, &headers, Some(body.to_vec()))
            .await
    }

    async fn user_count(&self, name: &str) -> u64 {
        let auth = format!("Bearer {TOKEN}");
        let filter = enc(&format!("userName eq \"{name}\""));
        let r = self
            .scim
            .send(
                "GET",
                &format!("{BASE}/v2/Users?filter={filter}"),
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        r.body["totalResults"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn scim_writes_must_declare_a_json_body() {
    let env = scim_env().await;
    let v2 = format!("{BASE}/v2");
    let refused_types = [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/json",
        "application/xml",
        "application/jsonp",
        "multipart/form-data; boundary=x",
    ];

    // Creates of both versions: refused with 415 before the body is even parsed (the broken
    // JSON would otherwise be a 400), and nothing is created.
    for (path, body) in [
        (format!("{v2}/Users"), user("ct-refused")),
        (format!("{BASE}/Users"), user_v1("ct-refused")),
        (format!("{BASE}/v1/Users"), user_v1("ct-refused")),
    ] {
        for ct in refused_types {
            let r = env
                .write("POST", &path, Some(ct), body.to_string().as_bytes())
                .await;
            assert!(scim_error(&r, 415), "POST {path} as {ct}: {r}");
            let r = env.write("POST", &path, Some(ct), b"{not json").await;
            assert!(scim_error(&r, 415), "POST {path}, broken body as {ct}: {r}");
        }
    }
    assert_eq!(env.user_count("ct-refused").await, 0);

    // A user to aim the other writes at.
    let r = env
        .write(
            "POST",
            &format!("{v2}/Users"),
            Some("application/scim+json"),
            user("ct-target").to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Changed"}],
    });
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName eq \"ct-target\"",
    });
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [{"method": "POST", "path": "/Users", "bulkId": "a", "data": user("ct-bulk")}],
    });
    let writes = [
        ("PUT", format!("{v2}/Users/{id}"), user("ct-target")),
        ("PATCH", format!("{v2}/Users/{id}"), patch.clone()),
        ("PUT", format!("{BASE}/Users/{id}"), user_v1("ct-target")),
        ("PATCH", format!("{BASE}/Users/{id}"), user_v1("ct-target")),
        ("POST", format!("{v2}/Users/.search"), search.clone()),
        ("POST", format!("{v2}/.search"), search),
        ("POST", format!("{v2}/Bulk"), bulk.clone()),
        ("POST", format!("{BASE}/Bulk"), bulk),
    ];
    for (method, path, body) in &writes {
        let r = env
            .write(
                method,
                path,
                Some("text/plain"),
                body.to_string().as_bytes(),
            )
            .await;
        assert!(scim_error(&r, 415), "{method} {path} as text/plain: {r}");
    }
    // A method override does not get around it.
    let auth = format!("Bearer {TOKEN}");
    let r = env
        .scim
        .send(
            "POST",
            &format!("{v2}/Users/{id}"),
            &[
                ("authorization", &auth),
                ("x-http-method-override", "PATCH"),
                ("content-type", "text/plain"),
            ],
            Some(patch.to_string().into_bytes()),
        )
        .await;
    assert!(scim_error(&r, 415), "PATCH by override as text/plain: {r}");
    // Two Content-Type headers cannot be read one way only.
    let r = env
        .scim
        .send(
            "POST",
            &format!("{v2}/Users"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("content-type", "text/plain"),
            ],
            Some(user("ct-refused").to_string().into_bytes()),
        )
        .await;
    assert!(scim_error(&r, 415), "two Content-Types: {r}");
    assert_eq!(env.user_count("ct-refused").await, 0);
    assert_eq!(env.user_count("ct-bulk").await, 0);

    // Controls: every JSON spelling is accepted, and so is a body without a Content-Type.
    for (i, ct) in [
        Some("application/scim+json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/SCIM+JSON;charset=UTF-8"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("ct-ok-{i}");
        let r = env
            .write(
                "POST",
                &format!("{v2}/Users"),
                ct,
                user(&name).to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, 201, "POST as {ct:?}: {r}");
        let r = env
            .write(
                "POST",
                &format!("{BASE}/Users"),
                ct,
                user_v1(&format!("{name}-v1")).to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, 201, "1.1 POST as {ct:?}: {r}");
    }
    for (method, path, body) in &writes[..2] {
        let r = env
            .write(
                method,
                path,
                Some("application/json; charset=utf-8"),
                body.to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{method} {path} as JSON: {r}");
    }
    // Without a Content-Type the body must still be JSON.
    let r = env
        .write("POST", &format!("{v2}/Users"), None, b"userName=x")
        .await;
    assert!(scim_error(&r, 400), "an untyped body that is not JSON: {r}");
}
