//! Strict HTTP framing: Host and `:authority`, exact header and request-line limits, stalled,
//! malformed and oversized request bodies, CONNECT and asterisk-form targets, bodiless 204/304
//! answers, and HSTS. Each refusal has a control that must still pass.

mod common;

use common::*;
use http::Method;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const SCIM_AUTH: &str = "[scim]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n[platform]\napp_key = \"unused\"\n";

/// A raw HTTP/1.x answer: status, head text and body (read up to Content-Length, or to EOF).
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn came_from_upstream(&self) -> bool {
        self.header("x-test-upstream").is_some()
    }
}

/// How the request bytes are written.
#[derive(Clone, Copy, Debug)]
enum Writes {
    One,
    /// Pieces of a few hundred bytes with pauses, then the last bytes one at a time, so the
    /// gateway reads the head in many partial reads.
    Split,
}

async fn write_request(tcp: &mut TcpStream, bytes: &[u8], how: Writes) {
    match how {
        Writes::One => tcp.write_all(bytes).await.unwrap(),
        Writes::Split => {
            let tail = bytes.len().saturating_sub(64);
            let mut sizes = [331usize, 997, 7, 1499, 2].into_iter().cycle();
            let mut at = 0;
            while at < tail {
                let n = sizes.next().unwrap_or(1).min(tail - at);
                if tcp.write_all(&bytes[at..at + n]).await.is_err() {
                    return;
                }
                at += n;
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            for b in &bytes[tail..] {
                if tcp.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
}

/// Reads one response (skipping none: a `100 Continue` is returned as it is).
async fn read_response(tcp: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(15);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                panic!(
                    "connection ended before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                )
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response head within 15 s"),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut raw = Raw {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    if status == 100 || status == 204 || status == 304 {
        return raw;
    }
    let want = raw
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    while want.is_none_or(|w| raw.body.len() < w) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    raw
}

/// Sends `bytes` on a new connection and reads the answer.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], how: Writes) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    write_request(&mut tcp, bytes, how).await;
    read_response(&mut tcp).await
}

async fn raw(addr: std::net::SocketAddr, text: &str) -> Raw {
    raw_exchange(addr, text.as_bytes(), Writes::One).await
}

/// An upstream that writes canned bytes: `answer(request head)` is written verbatim and the
/// connection closed. Each connection's fate is reported: what it read, whether it saw EOF.
struct RawUpstream {
    addr: std::net::SocketAddr,
    closed: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
}

impl RawUpstream {
    async fn start(answer: fn(&str) -> Option<String>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let mut answered = false;
                    loop {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        }
                        if answered {
                            continue;
                        }
                        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        if let Some(reply) = answer(&String::from_utf8_lossy(&seen[..end])) {
                            let _ = tcp.write_all(reply.as_bytes()).await;
                            answered = true;
                        }
                    }
                    let _ = tx.send(seen);
                });
            }
        });
        RawUpstream { addr, closed }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bytes of the next upstream connection closed by the gateway after a request (the
    /// readiness probe's empty connections are skipped).
    async fn next_closed(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.closed.recv())
                .await
                .ok()
                .flatten()?;
            if !seen.is_empty() {
                return Some(seen);
            }
        }
    }
}

fn h2_tls() -> std::sync::Arc<rustls::ClientConfig> {
    insecure_client_config(&[b"h2"])
}

async fn h2_sender(
    gw: &Gateway,
    index: usize,
) -> hyper::client::conn::http2::SendRequest<common::Body> {
    let tls = tls_connect(gw.gateway_addrs[index], "gw.test", h2_tls())
        .await
        .unwrap();
    h2_handshake(tls).await.unwrap()
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<common::Body>,
    req: http::Request<common::Body>,
) -> Result<Resp, BoxError> {
    let resp = sender.send_request(req).await?;
    Resp::collect(resp).await
}

/// A plain and a self-signed TLS listener (index 0 and 1) in front of `upstream`.
fn two_listeners(upstream: &str, upstream_extra: &str, extra: &str) -> String {
    config_toml(
        &format!("{}{}", plain_listener(), self_signed_listener("@DIR@")),
        upstream,
        upstream_extra,
        extra,
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Host
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn host_must_be_present_single_and_valid_and_agree_with_an_absolute_target() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        SCIM_AUTH,
    ))
    .await;
    let a = gw.gateway_addr;

    // Controls: these pass through.
    for ok in [
        "GET /hello HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example:8443\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
        "GET /hello HTTP/1.0\r\n\r\n",
        "GET http://a.example/hello HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http://A.example:81/hello HTTP/1.1\r\nHost: a.EXAMPLE:81\r\n\r\n",
    ] {
        let r = raw(a, ok).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (200, true),
            "{ok:?}: {r:?}"
        );
    }
    let passed = upstream.requests();

    for bad in [
        "GET /hello HTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example:99999\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example:8x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example:\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a example\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET /hello HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        "GET http://a.example/hello HTTP/1.1\r\nHost: b.example\r\n\r\n",
        "GET http://a.example:8443/hello HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ] {
        let r = raw(a, bad).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (400, false),
            "{bad:?}: {r:?}"
        );
    }
    assert_eq!(upstream.requests(), passed, "{:?}", upstream.uris());

    // Under the SCIM path the refusal is SCIM-shaped.
    let r = raw(
        a,
        &format!("GET /Thingworx/SCIMProvider/SCIM/v2/Users HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.text()
            .contains("urn:ietf:params:scim:api:messages:2.0:Error"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. HTTP/2 :authority
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http2_host_must_match_authority_which_is_the_one_forwarded() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(&upstream.url(), "", SCIM_AUTH)).await;
    let mut h2 = h2_sender(&gw, 1).await;

    let req = |host: Option<&str>, path: &str| {
        let mut b = http::Request::get(format!("https://a.example{path}"));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.header("authorization", format!("Bearer {TOKEN}"))
            .body(empty())
            .unwrap()
    };

    let r = h2_send(&mut h2, req(Some("b.example"), "/headers"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.came_from_upstream()),
        (400, false),
        "{}",
        r.text()
    );
    let r = h2_send(&mut h2, req(Some("a.example"), "/headers"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // A Host differing only in case is the same host; what is forwarded is `:authority`.
    let r = h2_send(&mut h2, req(Some("A.EXAMPLE"), "/headers"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let dump = parse_header_dump(&r.text());
    assert_eq!(
        dump.get("x-forwarded-host").map(String::as_str),
        Some("a.example")
    );
    assert!(
        dump.get("forwarded")
            .is_some_and(|f| f.contains("host=\"a.example\"")),
        "{dump:?}"
    );

    let r = h2_send(
        &mut h2,
        req(
            Some("A.EXAMPLE"),
            "/Thingworx/SCIMProvider/SCIM/v2/ServiceProviderConfig",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("\"https://a.example/Thingworx/SCIMProvider/SCIM/v2/ServiceProviderConfig\""),
        "{}",
        r.text()
    );
    assert_eq!(upstream.requests(), 2, "{:?}", upstream.uris());
}

// ---------------------------------------------------------------------------------------------
// 3. Header block size, 4. request-line length
// ---------------------------------------------------------------------------------------------

/// `GET /hello HTTP/1.1` with Host and one padding header, counting exactly `total` bytes as
/// the gateway counts them (request line, then `name: value` CRLF per header).
fn head_of(total: usize, host: &str) -> Vec<u8> {
    let line = "GET /hello HTTP/1.1\r\n";
    let host_line = format!("Host: {host}\r\n");
    let fixed = line.len() + host_line.len() + "X-Pad: \r\n".len();
    let pad = "p".repeat(total - fixed);
    format!("{line}{host_line}X-Pad: {pad}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn the_header_limit_is_exact_however_the_bytes_arrive() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(&upstream.url(), "", "")).await;
    let cap = 64 * 1024;
    for how in [Writes::One, Writes::Split] {
        let r = raw_exchange(gw.gateway_addr, &head_of(cap, "a.example"), how).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (200, true),
            "{how:?} {r:?}"
        );
        for over in [1, 2 * 1024, 36 * 1024] {
            let r = raw_exchange(gw.gateway_addr, &head_of(cap + over, "a.example"), how).await;
            assert_eq!(r.status, 431, "cap + {over}, {how:?}: {r:?}");
            assert!(!r.came_from_upstream());
        }
    }

    // HTTP/2: the request line is `:method :path`, `:authority` counts as Host.
    let h2_req = |total: usize| {
        let fixed =
            "GET /hello HTTP/1.1\r\n".len() + "host: a.example\r\n".len() + "x-pad: \r\n".len();
        http::Request::get("https://a.example/hello")
            .header("x-pad", "p".repeat(total - fixed))
            .body(empty())
            .unwrap()
    };
    let mut h2 = h2_sender(&gw, 1).await;
    let r = h2_send(&mut h2, h2_req(cap)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h2_send(&mut h2, h2_req(cap + 1)).await.unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
}

#[tokio::test]
async fn a_smaller_configured_header_limit_is_exact_too() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[limits]\nmax_header_bytes = 10000\nmax_request_line_bytes = 4000\n",
    ))
    .await;
    for how in [Writes::One, Writes::Split] {
        let r = raw_exchange(gw.gateway_addr, &head_of(10000, "a.example"), how).await;
        assert_eq!(r.status, 200, "{how:?} {r:?}");
        let r = raw_exchange(gw.gateway_addr, &head_of(10001, "a.example"), how).await;
        assert_eq!(r.status, 431, "{how:?} {r:?}");
    }
}

/// `GET /hello?q=… HTTP/1.1` CRLF of exactly `total` bytes.
fn line_of(total: usize) -> String {
    let fixed = "GET /hello?q= HTTP/1.1\r\n".len();
    format!("GET /hello?q={} HTTP/1.1\r\n", "x".repeat(total - fixed))
}

#[tokio::test]
async fn a_long_request_line_gets_414() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(&upstream.url(), "", "")).await;
    let limit = 8 * 1024;
    for how in [Writes::One, Writes::Split] {
        let ok = format!("{}Host: a.example\r\n\r\n", line_of(limit));
        let r = raw_exchange(gw.gateway_addr, ok.as_bytes(), how).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (200, true),
            "{how:?} {r:?}"
        );
        for over in [1, 12 * 1024] {
            let long = format!("{}Host: a.example\r\n\r\n", line_of(limit + over));
            let r = raw_exchange(gw.gateway_addr, long.as_bytes(), how).await;
            assert_eq!(
                (r.status, r.came_from_upstream()),
                (414, false),
                "+{over} {how:?} {r:?}"
            );
        }
    }
    let mut h2 = h2_sender(&gw, 1).await;
    let path = |n: usize| {
        format!(
            "/hello?q={}",
            "x".repeat(n - "GET /hello?q= HTTP/1.1\r\n".len())
        )
    };
    let r = h2_send(
        &mut h2,
        http::Request::get(format!("https://a.example{}", path(limit)))
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = h2_send(
        &mut h2,
        http::Request::get(format!("https://a.example{}", path(limit + 1)))
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 414);
}

// ---------------------------------------------------------------------------------------------
// 5. Stalled bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_body_gets_408_on_scim_and_pass_through() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(
        &upstream.url(),
        "",
        &format!("[limits]\nbody_read_timeout = \"1s\"\n{SCIM_AUTH}"),
    ))
    .await;
    let stalled = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/scim+json\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
    };
    for path in ["/Thingworx/SCIMProvider/SCIM/v2/Users", "/sink"] {
        let r = raw(gw.gateway_addr, &stalled(path)).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (408, false),
            "{path}: {r:?}"
        );
    }
    let r = raw(
        gw.gateway_addr,
        &stalled("/Thingworx/SCIMProvider/SCIM/v2/Users"),
    )
    .await;
    assert!(
        r.text()
            .contains("urn:ietf:params:scim:api:messages:2.0:Error"),
        "{r:?}"
    );
    // A stalled streamed (large) body too.
    let r = raw(
        gw.gateway_addr,
        "POST /sink HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1000000\r\n\r\n0123456789",
    )
    .await;
    assert_eq!((r.status, r.came_from_upstream()), (408, false), "{r:?}");

    // Control: a body arriving slowly, but never pausing for the timeout, is forwarded.
    let mut tcp = TcpStream::connect(gw.gateway_addr).await.unwrap();
    tcp.write_all(b"POST /sink HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tcp.write_all(&[b'x'; 20000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let r = read_response(&mut tcp).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100000"), "{r:?}");

    // HTTP/2: a stream whose body stops.
    let mut h2 = h2_sender(&gw, 1).await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>(4);
    tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
        b"0123456789",
    ))))
    .await
    .unwrap();
    let body =
        http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(tokio_stream_from(rx)));
    let r = h2_send(
        &mut h2,
        http::Request::post("https://a.example/sink")
            .body(body)
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.came_from_upstream()), (408, false));
    drop(tx);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_stalled_streamed_body_closes_its_upstream_connection() {
    let mut upstream = RawUpstream::start(|head| {
        head.starts_with("GET /hello").then(|| {
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string()
        })
    })
    .await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[limits]\nbody_read_timeout = \"1s\"\n",
    ))
    .await;
    let r = raw(
        gw.gateway_addr,
        "POST /sink HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1000000\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(r.status, 408, "{r:?}");
    // The upstream connection that carried the half-sent body is closed, not pooled.
    let seen = upstream
        .next_closed(Duration::from_secs(5))
        .await
        .expect("the upstream connection with the half-sent body was not closed");
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        seen.starts_with("POST /sink") && seen.ends_with("0123456789"),
        "{seen:?}"
    );
    // And the next request gets a connection of its own, with a clean exchange.
    let r = raw(
        gw.gateway_addr,
        "GET /hello HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Client framing errors are 4xx
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_client_framing_is_a_400_not_a_502() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        SCIM_AUTH,
    ))
    .await;
    let a = gw.gateway_addr;
    let head = "POST /sink HTTP/1.1\r\nHost: a.example\r\n";

    // Control: a well-formed chunked body.
    let r = raw(
        a,
        &format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "5"), "{r:?}");
    let r = raw(a, &format!("{head}Content-Length: 5\r\n\r\nhello")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "5"), "{r:?}");

    for bad in [
        // A chunk-size that is not hex.
        format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        // A chunk without its CRLF.
        format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        // Good first chunk, then garbage: the upstream request has already started.
        format!(
            "{head}Transfer-Encoding: chunked\r\n\r\n4000\r\n{}\r\nnothex\r\n\r\n",
            "y".repeat(0x4000)
        ),
        format!("{head}Content-Length: abc\r\n\r\nhello"),
        format!("{head}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        format!("{head}Content-Length: -5\r\n\r\nhello"),
    ] {
        let r = raw(a, &bad).await;
        assert_eq!(
            (r.status, r.came_from_upstream()),
            (400, false),
            "{bad:.120?}: {r:?}"
        );
    }

    // Content-Length beside Transfer-Encoding: hyper reads the body as chunked, drops the
    // length (RFC 9112 §6.3) and closes the connection after answering; the platform never
    // sees both.
    let r = raw(
        a,
        "GET /headers HTTP/1.1\r\nHost: a.example\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.text().contains("content-length: 50"), "{}", r.text());
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{r:?}");

    // Under the SCIM path.
    let r = raw(
        a,
        &format!("POST /Thingworx/SCIMProvider/SCIM/v2/Users HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. CONNECT and asterisk-form
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_is_405_and_the_asterisk_form_is_for_options_only() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(&upstream.url(), "", "")).await;
    let a = gw.gateway_addr;

    let r = raw(
        a,
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{r:?}");
    assert!(
        r.header("allow").is_some_and(|v| !v.contains("CONNECT")),
        "{r:?}"
    );

    let r = raw(a, "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("allow").is_some(), "{r:?}");
    for bad in [
        "GET * HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "POST * HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\n\r\n",
    ] {
        let r = raw(a, bad).await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    // Control: OPTIONS on a path is passed through.
    let r = raw(a, "OPTIONS /hello HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert!(r.came_from_upstream(), "{r:?}");

    // HTTP/2 CONNECT (not extended CONNECT, which stays disabled).
    let mut h2 = h2_sender(&gw, 1).await;
    let r = h2_send(
        &mut h2,
        http::Request::builder()
            .method(Method::CONNECT)
            .uri("a.example:443")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(upstream.requests(), 1, "{:?}", upstream.uris());
}

// ---------------------------------------------------------------------------------------------
// 8. 204/304 carry no length or body
// ---------------------------------------------------------------------------------------------

fn bodiless_with_length(head: &str) -> Option<String> {
    let status = if head.starts_with("GET /204") {
        "204 No Content"
    } else if head.starts_with("GET /304") {
        "304 Not Modified"
    } else {
        return None;
    };
    Some(format!(
        "HTTP/1.1 {status}\r\nContent-Length: 5\r\nX-Test-Upstream: 1\r\nConnection: close\r\n\r\nhello"
    ))
}

#[tokio::test]
async fn no_content_and_not_modified_lose_their_length_on_http2_and_http1() {
    let upstream = RawUpstream::start(bodiless_with_length).await;
    let gw = Gateway::start(&two_listeners(&upstream.url(), "", "")).await;
    let mut h2 = h2_sender(&gw, 1).await;
    for (path, status) in [("/204", 204), ("/304", 304)] {
        let r = h2_send(
            &mut h2,
            http::Request::get(format!("https://a.example{path}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 {path}: {e}"));
        assert_eq!(r.status.as_u16(), status);
        assert!(r.header("content-length").is_none(), "{:?}", r.headers);
        assert!(r.body.is_empty());
        assert!(r.came_from_upstream());

        let r = raw(
            gw.gateway_addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, status, "{r:?}");
        assert!(r.header("content-length").is_none(), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Pass-through body limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pass_through_bodies_over_the_limit_get_413_before_100_continue() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&two_listeners(
        &upstream.url(),
        "",
        "[limits]\nmax_passthrough_body_bytes = 100000\n",
    ))
    .await;
    let a = gw.gateway_addr;

    // Declared too large: 413 at once, and no 100 Continue before it.
    let mut tcp = TcpStream::connect(a).await.unwrap();
    tcp.write_all(b"POST /sink HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100001\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut tcp).await;
    assert_eq!(r.status, 413, "{r:?}");

    // Control: at the limit, 100 Continue and then the upstream's answer.
    let mut tcp = TcpStream::connect(a).await.unwrap();
    tcp.write_all(b"POST /sink HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut tcp).await;
    assert_eq!(r.status, 100, "{r:?}");
    tcp.write_all(&[b'x'; 100000]).await.unwrap();
    let r = read_response(&mut tcp).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100000"), "{r:?}");

    // Chunked, growing past the limit: cut with 413.
    let chunk = format!("4000\r\n{}\r\n", "z".repeat(0x4000));
    let mut body = String::new();
    for _ in 0..8 {
        body.push_str(&chunk);
    }
    let r = raw(
        a,
        &format!("POST /sink HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{body}0\r\n\r\n"),
    )
    .await;
    assert_eq!((r.status, r.came_from_upstream()), (413, false), "{r:?}");
    // Control: chunked within the limit.
    let r = raw(
        a,
        &format!("POST /sink HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "16384"), "{r:?}");

    // HTTP/2: declared and undeclared.
    let mut h2 = h2_sender(&gw, 1).await;
    let r = h2_send(
        &mut h2,
        http::Request::post("https://a.example/sink")
            .header("content-length", "200000")
            .body(data_body(200000))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413);
    let mut h2 = h2_sender(&gw, 1).await;
    let r = h2_send(
        &mut h2,
        http::Request::post("https://a.example/sink")
            .body(data_body(100000))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "100000"));
    let r = h2_send(
        &mut h2,
        http::Request::post("https://a.example/sink")
            .body(data_body(300000))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// 10. HSTS
// ---------------------------------------------------------------------------------------------

fn platform_hsts(head: &str) -> Option<String> {
    head.starts_with("GET /").then(|| {
        "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string()
    })
}

#[tokio::test]
async fn hsts_is_sent_on_tls_listeners_only_and_wins_over_the_platform() {
    let upstream = RawUpstream::start(platform_hsts).await;
    let listeners = format!(
        "{}[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ self_signed = true, self_signed_dir = \"@DIR@\", names = [\"gw.test\"] }}\nhsts = {{ max_age = 31536000, include_subdomains = true }}\n\n",
        plain_listener()
    );
    let gw = Gateway::start(&config_toml(&listeners, &upstream.url(), "", SCIM_AUTH)).await;
    let want = "max-age=31536000; includeSubDomains";

    let mut h2 = h2_sender(&gw, 1).await;
    for path in ["/x", "/Thingworx/SCIMProvider/SCIM/v2/Users"] {
        let r = h2_send(
            &mut h2,
            http::Request::get(format!("https://a.example{path}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            r.header("strict-transport-security").as_deref(),
            Some(want),
            "{path}"
        );
    }
    // A refusal before routing carries it too.
    let r = h2_send(
        &mut h2,
        http::Request::get("https://a.example/x")
            .header("host", "b.example")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("strict-transport-security").as_deref(), Some(want));

    // Plain HTTP: the gateway adds none (the platform's own passes through untouched).
    let r = raw(
        gw.gateway_addr,
        "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=5")
    );
    let r = raw(
        gw.gateway_addr,
        "GET /Thingworx/SCIMProvider/SCIM/v2/Users HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("strict-transport-security"), None, "{r:?}");
}

#[test]
fn hsts_on_a_plain_listener_is_a_configuration_error() {
    let out = run_check(&config_toml(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nhsts = { max_age = 60 }\n\n",
        "http://127.0.0.1:1",
        "",
        "",
    ));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("listeners[0].hsts"), "{text}");
}

#[test]
fn a_request_line_limit_above_the_header_limit_is_a_configuration_error() {
    let out = run_check(&config_toml(
        &plain_listener(),
        "http://127.0.0.1:1",
        "",
        "[limits]\nmax_header_bytes = 10000\nmax_request_line_bytes = 10001\n",
    ));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("limits.max_request_line_bytes"), "{text}");
    // Control: equal is fine, and so are the new settings with valid values.
    let out = run_check(&config_toml(
        &plain_listener(),
        "http://127.0.0.1:1",
        "",
        "[limits]\nmax_header_bytes = 10000\nmax_request_line_bytes = 10000\nbody_read_timeout = \"5s\"\nmax_passthrough_body_bytes = 1\n",
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
