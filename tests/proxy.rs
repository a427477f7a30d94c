//! Pass-through proxying: methods, large streamed bodies with bounded memory, forwarding headers,
//! hop-by-hop headers, access log and secrets in logs.

mod common;

use common::*;
use http::{Method, Request};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn plain_gateway(upstream: &TestUpstream, extra: &str) -> Gateway {
    Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", extra)).await
}

async fn headers_seen(resp: Resp) -> HashMap<String, String> {
    assert_eq!(resp.status, 200, "GET /headers: {}", resp.text());
    assert!(resp.came_from_upstream());
    parse_header_dump(&resp.text())
}

/// Splits a Forwarded element into lower-cased `key=value` pairs with quotes removed.
fn forwarded_params(v: &str) -> BTreeSet<String> {
    v.split(';')
        .map(|p| {
            let (k, v) = p.trim().split_once('=').unwrap_or((p.trim(), ""));
            format!("{}={}", k.to_ascii_lowercase(), v.trim_matches('"'))
        })
        .collect()
}

#[tokio::test]
async fn get_and_post_pass_through() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let host = gw.host_header();

    let r = send_plain(gw.gateway_addr, get(&host, "/hello"))
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    assert!(r.came_from_upstream());

    let payload = vec![b'x'; 100_000];
    let r = send_plain(
        gw.gateway_addr,
        request(Method::POST, &host, "/sink", full(payload.clone())),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "100000"));

    let r = send_plain(
        gw.gateway_addr,
        request(Method::POST, &host, "/echo", full("ping-pong")),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ping-pong"));

    // Upstream 404s are passed through as they are.
    let r = send_plain(gw.gateway_addr, get(&host, "/no/such/thing"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.came_from_upstream());

    // The query string reaches the upstream untouched.
    let r = send_plain(gw.gateway_addr, get(&host, "/headers?a=1&b=two%20words"))
        .await
        .unwrap();
    let h = headers_seen(r).await;
    assert_eq!(h["@uri"], "/headers?a=1&b=two%20words");
}

#[tokio::test]
async fn many_concurrent_requests() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let addr = gw.gateway_addr;
    let host = gw.host_header();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let path = if i % 2 == 0 { "/hello" } else { "/slow?ms=200" };
                send_plain(addr, get(&host, path)).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(upstream.requests(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_streams_through_without_buffering() {
    const SIZE: u64 = 50 * MIB;
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &self_signed_listener("@DIR@"),
        &upstream.url(),
        "",
        "",
    ))
    .await;
    let cert = std::fs::read(gw.dir.join("cert.pem")).unwrap();
    let cfg = client_config(&cert, &[b"http/1.1"]);
    let host = format!("localhost:{}", gw.gateway_addr.port());

    // Warm up (first connection, TLS, upstream pool) before taking the baseline.
    let r = send_tls(
        gw.gateway_addr,
        "localhost",
        cfg.clone(),
        get(&host, "/hello"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let (rss_before, hwm_before) = rss_kib(gw.pid);

    let expected = Checksum::of_test_data(SIZE);

    // 1. POST /echo, chunked, streamed from a generator both ways.
    let tls = tls_connect(gw.gateway_addr, "localhost", cfg.clone())
        .await
        .unwrap();
    let mut sender = h1_handshake(tls).await.unwrap();
    let resp = sender
        .send_request(request(Method::POST, &host, "/echo", data_body(SIZE)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed = checksum_body(resp.into_body()).await.unwrap();
    assert_eq!(echoed.len, SIZE, "echoed length");
    assert_eq!(echoed, expected, "echoed content differs");
    let (rss_echo, hwm_echo) = rss_kib(gw.pid);

    // 2. POST /sink with a Content-Length (not chunked).
    let req = Request::builder()
        .method(Method::POST)
        .uri("/sink")
        .header("host", &host)
        .header("content-length", SIZE.to_string())
        .body(data_body(SIZE))
        .unwrap();
    sender
        .ready()
        .await
        .expect("the gateway closed the connection after the echo");
    let r = Resp::collect(sender.send_request(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, SIZE.to_string()));

    // 3. GET /source.
    sender
        .ready()
        .await
        .expect("the gateway closed the connection after the sink");
    let resp = sender
        .send_request(get(&host, &format!("/source?bytes={SIZE}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = checksum_body(resp.into_body()).await.unwrap();
    assert_eq!(got.len, SIZE, "downloaded length");
    assert_eq!(got, expected, "downloaded content differs");

    let (rss_after, hwm_after) = rss_kib(gw.pid);
    let growth_kib = hwm_after.saturating_sub(rss_before);
    println!(
        "gateway memory (KiB): before VmRSS={rss_before} VmHWM={hwm_before}; after echo VmRSS={rss_echo} VmHWM={hwm_echo}; \
         after sink+source VmRSS={rss_after} VmHWM={hwm_after}; peak growth={growth_kib} KiB ({:.1} MiB) for 3 x 50 MiB",
        growth_kib as f64 / 1024.0
    );
    assert!(
        growth_kib < 32 * 1024,
        "gateway peak RSS grew by {growth_kib} KiB while streaming 50 MiB bodies: it buffers"
    );
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_client_over_tls() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &self_signed_listener("@DIR@"),
        &upstream.url(),
        "",
        "",
    ))
    .await;
    let cert = std::fs::read(gw.dir.join("cert.pem")).unwrap();
    let host = format!("localhost:{}", gw.gateway_addr.port());
    let req = Request::builder()
        .uri("/headers?x=1")
        .header("host", &host)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.test")
        .header("forwarded", "for=6.6.6.6;proto=http;host=evil.test")
        .body(empty())
        .unwrap();
    let r = send_tls(
        gw.gateway_addr,
        "localhost",
        client_config(&cert, &[b"http/1.1"]),
        req,
    )
    .await
    .unwrap();
    let h = headers_seen(r).await;
    println!("upstream saw: {h:#?}");
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        h.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(h.get("x-forwarded-host"), Some(&host));
    let fwd = h.get("forwarded").expect("no Forwarded header upstream");
    assert_eq!(
        forwarded_params(fwd),
        forwarded_params(&format!("for=127.0.0.1;proto=https;host=\"{host}\"")),
        "Forwarded = {fwd:?}"
    );
    for (k, v) in &h {
        assert!(
            !v.contains("6.6.6.6") && !v.contains("evil.test"),
            "spoofed value kept in {k}: {v}"
        );
    }
    // preserve_host = false: the upstream gets its own authority as Host.
    assert_eq!(h.get("host"), Some(&upstream.addr.to_string()));
    assert_eq!(h["@uri"], "/headers?x=1");
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_client_over_plain_http() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let host = "gw.example:8080";
    let req = Request::builder()
        .uri("/headers")
        .header("host", host)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    let h = headers_seen(send_plain(gw.gateway_addr, req).await.unwrap()).await;
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(h.get("x-forwarded-proto").map(String::as_str), Some("http"));
    assert_eq!(h.get("x-forwarded-host").map(String::as_str), Some(host));
    let fwd = h.get("forwarded").expect("no Forwarded header upstream");
    assert_eq!(
        forwarded_params(fwd),
        forwarded_params(&format!("for=127.0.0.1;proto=http;host=\"{host}\"")),
        "Forwarded = {fwd:?}"
    );
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_extended() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "[proxy]\ntrusted_proxies = [\"127.0.0.0/8\"]\n").await;
    let req = Request::builder()
        .uri("/headers")
        .header("host", "public.example")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .body(empty())
        .unwrap();
    let h = headers_seen(send_plain(gw.gateway_addr, req).await.unwrap()).await;
    println!("upstream saw: {h:#?}");
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(
        h.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    // The trusted proxy's Forwarded element is kept, and this hop's element follows it.
    let fwd = h.get("forwarded").expect("no Forwarded header upstream");
    let elements: Vec<&str> = fwd.split(',').map(str::trim).collect();
    assert_eq!(elements.len(), 2, "Forwarded = {fwd:?}");
    assert_eq!(
        forwarded_params(elements[0]),
        forwarded_params("for=6.6.6.6;proto=https"),
        "Forwarded = {fwd:?}"
    );
    assert!(
        forwarded_params(elements[1]).contains("for=127.0.0.1"),
        "Forwarded = {fwd:?}"
    );
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "preserve_host = true",
        "",
    );
    let gw = Gateway::start(&toml).await;
    let r = send_plain(gw.gateway_addr, get("public.example:8443", "/headers"))
        .await
        .unwrap();
    let h = headers_seen(r).await;
    assert_eq!(
        h.get("host").map(String::as_str),
        Some("public.example:8443")
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let req = Request::builder()
        .uri("/headers")
        .header("host", gw.host_header())
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "5")
        .header("te", "gzip")
        .header("proxy-authorization", "x")
        .header("x-keep-me", "1")
        .body(empty())
        .unwrap();
    let h = headers_seen(send_plain(gw.gateway_addr, req).await.unwrap()).await;
    println!("upstream saw: {h:#?}");
    assert_eq!(
        h.get("x-keep-me").map(String::as_str),
        Some("1"),
        "an end-to-end header was lost"
    );
    for name in ["x-drop-me", "keep-alive", "proxy-authorization"] {
        assert!(
            !h.contains_key(name),
            "hop-by-hop {name} reached the upstream: {:?}",
            h[name]
        );
    }
    if let Some(te) = h.get("te") {
        assert!(!te.contains("gzip"), "TE: gzip reached the upstream");
    }
    if let Some(c) = h.get("connection") {
        assert!(
            !c.contains("x-drop-me"),
            "Connection: x-drop-me reached the upstream"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hop"))
        .await
        .unwrap();
    println!("client saw: {:#?}", r.headers);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-normal").as_deref(), Some("1"));
    assert!(
        r.header("x-secret-hop").is_none(),
        "X-Secret-Hop (named in Connection) reached the client"
    );
    assert!(
        r.header("keep-alive").is_none(),
        "Keep-Alive reached the client"
    );
    if let Some(c) = r.header("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-secret-hop"),
            "Connection: {c}"
        );
    }
}

async fn wait_access(gw: &Gateway, path_prefix: &str) -> Json {
    gw.wait_log(Duration::from_secs(20), |j| {
        j.message() == "access"
            && j.str_field("path")
                .is_some_and(|p| p.starts_with(path_prefix))
    })
    .await
    .unwrap_or_else(|| panic!("no access log line for {path_prefix}"))
}

#[tokio::test]
async fn access_log_lines_and_no_secrets_in_logs() {
    let upstream = TestUpstream::start().await;
    let gw = plain_gateway(&upstream, "").await;
    let addr: SocketAddr = gw.gateway_addr;
    let secret_req = |path: &str| {
        Request::builder()
            .uri(path)
            .header("host", gw.host_header())
            .header("authorization", "Bearer sekrit-token-123")
            .header("cookie", "sid=sekrit-cookie")
            .header("appkey", "sekrit-header-key")
            .body(empty())
            .unwrap()
    };
    let r = send_plain(addr, secret_req("/headers?appKey=sekrit-key&x=1"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let headers_body_len = r.body.len();
    let r = send_plain(
        addr,
        secret_req("/Thingworx/SCIMProvider/SCIM/Users?appKey=sekrit-key"),
    )
    .await
    .unwrap();
    // The SCIM service refuses the unknown bearer token, and logs why without the token.
    assert_eq!(r.status, 401);
    let r = send_plain(addr, secret_req("/nothing-here?appKey=sekrit-key"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    let line = wait_access(&gw, "/headers").await;
    println!("access line: {line:?}");
    assert_eq!(line.str_field("method").as_deref(), Some("GET"));
    assert_eq!(line.str_field("status").as_deref(), Some("200"));
    assert_eq!(line.str_field("route").as_deref(), Some("passthrough"));
    for field in ["bytes", "duration_ms", "upstream_ms", "client"] {
        assert!(
            line.get(field).is_some(),
            "access line lacks {field}: {line:?}"
        );
    }
    assert!(
        line.str_field("client")
            .is_some_and(|c| c.contains("127.0.0.1")),
        "client: {:?}",
        line.get("client")
    );
    let bytes: usize = line.str_field("bytes").unwrap().parse().unwrap();
    assert_eq!(bytes, headers_body_len, "bytes: the response body's length");
    assert_eq!(line.str_field("complete").as_deref(), Some("true"));

    let scim = wait_access(&gw, "/Thingworx/SCIMProvider/SCIM/Users").await;
    assert_eq!(scim.str_field("route").as_deref(), Some("scim"));
    assert_eq!(scim.str_field("status").as_deref(), Some("401"));

    let missing = wait_access(&gw, "/nothing-here").await;
    assert_eq!(missing.str_field("status").as_deref(), Some("404"));
    assert_eq!(missing.str_field("route").as_deref(), Some("passthrough"));

    let out = gw.all_output();
    for secret in [
        "sekrit-token-123",
        "sekrit-cookie",
        "sekrit-key",
        "sekrit-header-key",
    ] {
        let leaks: Vec<&String> = out.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} appears in the logs: {leaks:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS upstream: ca_bundle, verification, client certificate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn https_upstream_verified_with_ca_bundle() {
    let server = self_signed_pair(&["127.0.0.1", "localhost"]);
    let upstream = TestUpstream::start_tls(&server.cert_pem, &server.key_pem, None).await;
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("upstream-ca.pem");
    std::fs::write(&ca, &server.cert_pem).unwrap();
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        &format!("ca_bundle = \"{}\"", ca.display()),
        "",
    );
    let gw = Gateway::start(&toml).await;

    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    let h = headers_seen(
        send_plain(gw.gateway_addr, get(&gw.host_header(), "/headers"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(h.get("host"), Some(&upstream.addr.to_string()));
    let (ready, seen) = poll_status(gw.admin_addr, "/readyz", 200, Duration::from_secs(20)).await;
    assert!(
        ready,
        "/readyz never 200 with a reachable https upstream: {seen:?}"
    );
}

#[tokio::test]
async fn https_upstream_with_an_untrusted_certificate_is_refused() {
    let server = self_signed_pair(&["127.0.0.1", "localhost"]);
    let upstream = TestUpstream::start_tls(&server.cert_pem, &server.key_pem, None).await;
    // Trust some other CA: the upstream's certificate must not be accepted.
    let other = self_signed_pair(&["127.0.0.1"]);
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("other-ca.pem");
    std::fs::write(&ca, &other.cert_pem).unwrap();
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        &format!("ca_bundle = \"{}\"", ca.display()),
        "",
    );
    let gw = Gateway::start(&toml).await;

    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 502, "body: {}", r.text());
    assert!(!r.came_from_upstream());
    assert_eq!(
        upstream.requests(),
        0,
        "a request went to an upstream whose certificate is untrusted"
    );
}

#[tokio::test]
async fn https_upstream_requiring_a_client_certificate() {
    let server = self_signed_pair(&["127.0.0.1", "localhost"]);
    let client = self_signed_pair(&["scimgate-client.test"]);
    let upstream =
        TestUpstream::start_tls(&server.cert_pem, &server.key_pem, Some(&client.cert_pem)).await;
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("upstream-ca.pem");
    let cert = files.path().join("client.pem");
    let key = files.path().join("client.key");
    std::fs::write(&ca, &server.cert_pem).unwrap();
    std::fs::write(&cert, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let ca_line = format!("ca_bundle = \"{}\"", ca.display());

    // Key from a file.
    let extra = format!(
        "{ca_line}\nclient_cert = \"{}\"\nclient_key = \"file:{}\"",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), &extra, "")).await;
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "hello"),
        "client_key = file:"
    );
    drop(gw);

    // Key from the environment; it must not be logged.
    let extra = format!(
        "{ca_line}\nclient_cert = \"{}\"\nclient_key = \"env:SCIMGATE_TEST_CLIENT_KEY\"",
        cert.display()
    );
    let gw = Gateway::start_with_env(
        &config_toml(&plain_listener(), &upstream.url(), &extra, ""),
        &[("SCIMGATE_TEST_CLIENT_KEY", &client.key_pem)],
    )
    .await;
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "hello"),
        "client_key = env:"
    );
    let key_body = client.key_pem.lines().nth(1).unwrap();
    // Looked for once the request's access line (and so all it logged before) is out.
    assert!(
        gw.wait_access_lines(1, Duration::from_secs(30)).await,
        "no access line: {:?}",
        gw.logs()
    );
    assert!(
        !gw.all_output().iter().any(|l| l.contains(key_body)),
        "the client key appears in the logs"
    );
    drop(gw);

    // Without a client certificate the upstream refuses the handshake: 502, nothing forwarded.
    let before = upstream.requests();
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        &ca_line,
        "",
    ))
    .await;
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 502, "body: {}", r.text());
    assert_eq!(upstream.requests(), before);
}

/// Small bodies of a declared length are read whole before the upstream request starts; they
/// must arrive intact, and a client that stalls mid-body gets 408 without the upstream ever
/// seeing a half request.
#[tokio::test]
async fn small_bodies_are_forwarded_whole_and_a_stalled_one_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "request_timeout = \"1s\"",
        "",
    ))
    .await;
    let host = gw.gateway_addr.to_string();
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let resp = send_plain(
        gw.gateway_addr,
        request(Method::POST, &host, "/echo", full(payload.clone())),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body.as_ref(),
        payload.as_slice(),
        "the echoed body differs"
    );

    let before = upstream.requests();
    let mut tcp = tokio::net::TcpStream::connect(gw.gateway_addr)
        .await
        .unwrap();
    tcp.write_all(
        format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\nonly ten..")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "stalled body: {text}");
    assert_eq!(
        upstream.requests(),
        before,
        "the upstream saw the stalled request"
    );
}

/// A platform with every keep-alive habit a real one may have: it closes a connection right
/// after an answer without saying so, answers HEAD with a length and no body, sends 204s, and
/// ends a body by closing. Returns its address and how many connections it accepted.
async fn quirky_platform() -> (SocketAddr, Arc<AtomicUsize>) {
    use common::scripted_platform::{scripted_platform, Answer};
    scripted_platform(|_method, target| {
        let (bytes, close) = match target {
            "/close" => ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nclose", true),
            "/head" => ("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", false),
            "/nocontent" => ("HTTP/1.1 204 No Content\r\n\r\n", false),
            "/eof" => ("HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
            _ => ("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nkept", false),
        };
        Answer {
            bytes: bytes.to_string(),
            close,
        }
    })
    .await
}

/// However the platform ends its connections, no pass-through request fails for it: a
/// connection it closed is never used again, and one whose answer was not read to its end is
/// never handed to another request. Sequential and concurrent, over a client connection each
/// and over kept-alive client connections.
#[tokio::test]
async fn a_platform_closing_keep_alive_connections_never_fails_a_request() {
    let (platform, accepted) = quirky_platform().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &format!("http://{platform}"),
        "",
        "",
    ))
    .await;
    let host = gw.host_header();
    let expected = |path: &str| -> (u16, &'static str) {
        match path {
            "/close" => (200, "close"),
            "/head" => (200, ""),
            "/nocontent" => (204, ""),
            "/eof" => (200, "until the end"),
            _ => (200, "kept"),
        }
    };
    let paths = ["/close", "/kept", "/head", "/nocontent", "/eof", "/kept"];
    let method = |path: &str| {
        if path == "/head" {
            Method::HEAD
        } else {
            Method::GET
        }
    };

    // A new client connection per request.
    for round in 0..60 {
        let path = paths[round % paths.len()];
        let r = send_plain(gw.gateway_addr, request(method(path), &host, path, empty()))
            .await
            .unwrap();
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            expected(path),
            "request {round} ({path})"
        );
    }

    // Eight kept-alive client connections at once, each sending every kind in turn.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let host = host.clone();
            let addr = gw.gateway_addr;
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut sender = h1_handshake(tcp).await.unwrap();
                for round in 0..30 {
                    let path = paths[(round + c) % paths.len()];
                    sender.ready().await.unwrap();
                    let r = sender
                        .send_request(request(method(path), &host, path, empty()))
                        .await
                        .unwrap();
                    let r = Resp::collect(r).await.unwrap();
                    assert_eq!(
                        (r.status.as_u16(), r.text().as_str()),
                        expected(path),
                        "client {c}, request {round} ({path})"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }

    // Connections were reused where the platform allowed it, and only there: every `/close`
    // and `/eof` answer ended its connection, so at least those (100 of the 300 requests) took
    // a new one, and the kept-alive answers did not each need one.
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        (100..300).contains(&opened),
        "{opened} platform connections for 300 requests"
    );
}
