//! Gateway-made answers: 502 (upstream unreachable), 504 (upstream too slow), 501 (SCIM path
//! handled by the gateway, never forwarded).

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn upstream_down_gives_502_with_a_short_body() {
    let dead = dead_addr().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &format!("http://{dead}"),
        "",
        "",
    ))
    .await;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello")),
    )
    .await
    .expect("no answer within 20 s with the upstream down")
    .unwrap();
    println!("502 body: {:?}", r.text());
    assert_eq!(r.status, 502);
    assert!(!r.body.is_empty(), "502 with an empty body");
    assert!(r.body.len() < 4096, "502 body is {} bytes", r.body.len());

    // The gateway stays up and keeps answering.
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let line = gw
        .wait_log(Duration::from_secs(20), |j| {
            j.message() == "access" && j.str_field("status").as_deref() == Some("502")
        })
        .await;
    assert!(line.is_some(), "no access log line with status 502");
}

#[tokio::test]
async fn slow_upstream_gives_504_after_request_timeout() {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "request_timeout = \"1s\"",
        "",
    );
    let gw = Gateway::start(&toml).await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        send_plain(gw.gateway_addr, get(&gw.host_header(), "/slow?ms=10000")),
    )
    .await
    .expect("no answer within 60 s")
    .unwrap();
    assert_eq!(r.status, 504, "body: {}", r.text());
    assert!(!r.came_from_upstream());
    assert!(upstream.saw_path_prefix("/slow"));

    // A fast request on the same gateway still works.
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn scim_paths_are_answered_by_the_gateway_and_never_forwarded() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", "")).await;
    let host = gw.host_header();

    let r = send_plain(
        gw.gateway_addr,
        get(&host, "/Thingworx/SCIMProvider/SCIM/Users"),
    )
    .await
    .unwrap();
    // Answered by the gateway's SCIM service (401: no credentials), in the SCIM error shape.
    assert_eq!(r.status, 401, "body: {}", r.text());
    assert!(r.text().contains("\"Errors\""), "body: {}", r.text());
    assert!(!r.came_from_upstream());

    let r = send_plain(gw.gateway_addr, get(&host, "/Thingworx/Things/X"))
        .await
        .unwrap();
    assert!(
        r.came_from_upstream(),
        "/Thingworx/Things/X was not passed through"
    );
    assert!(upstream.saw_path_prefix("/Thingworx/Things/X"));

    let uris = upstream.uris();
    assert!(
        !uris.iter().any(|u| u.to_ascii_lowercase().contains("scim")),
        "the upstream saw a SCIM request: {uris:?}"
    );
    assert_eq!(upstream.requests(), 1, "{uris:?}");
}

#[tokio::test]
async fn disguised_scim_paths_are_not_forwarded() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", "")).await;
    let host = gw.host_header();
    for path in [
        "/Thingworx/SCIMProvider/SCIM",
        "/Thingworx/SCIMProvider/SCIM/",
        "/Thingworx/SCIMProvider/%53CIM/Users",
        "/Thingworx/./SCIMProvider;x/SCIM/Users",
        "//Thingworx/SCIMProvider/SCIM/Users",
        "/Thingworx/Foo/../SCIMProvider/SCIM/Users",
        "/thingworx/scimprovider/scim/Users",
    ] {
        let r = send_plain(gw.gateway_addr, get(&host, path)).await;
        if let Ok(r) = r {
            assert!(
                !r.came_from_upstream(),
                "{path} was forwarded (status {})",
                r.status
            );
        }
    }
    assert_eq!(
        upstream.requests(),
        0,
        "the upstream saw: {:?}",
        upstream.uris()
    );
}

#[tokio::test]
async fn scim_body_limit_gives_413_but_pass_through_bodies_are_not_limited() {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        &format!("[limits]\nmax_body_bytes = 1048576\n{SCIM_AUTH}"),
    );
    let gw = Gateway::start(&toml).await;
    let host = gw.host_header();
    let big = vec![b'{'; 2 * 1024 * 1024];

    // With a Content-Length.
    let r = send_plain(
        gw.gateway_addr,
        with_token(request(
            http::Method::POST,
            &host,
            "/Thingworx/SCIMProvider/SCIM/Users",
            full(big.clone()),
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "body: {}", r.text());

    // The limit is for gateway-handled requests only.
    let r = send_plain(
        gw.gateway_addr,
        request(http::Method::POST, &host, "/sink", full(big)),
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "2097152"));
    assert!(!upstream.uris().iter().any(|u| u.contains("SCIM")));
}

#[tokio::test]
async fn scim_body_limit_applies_to_chunked_bodies_too() {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        &format!("[limits]\nmax_body_bytes = 1048576\n{SCIM_AUTH}"),
    );
    let gw = Gateway::start(&toml).await;
    // Chunked, no length announced: the limit must hold all the same.
    let r = send_plain(
        gw.gateway_addr,
        with_token(request(
            http::Method::POST,
            &gw.host_header(),
            "/Thingworx/SCIMProvider/SCIM/Users",
            data_body(2 * MIB),
        )),
    )
    .await
    .unwrap_or_else(|e| {
        panic!("chunked 2 MiB body to a SCIM path: no response, the request failed: {e:?} (answered and closed without reading the body?)")
    });
    assert_eq!(
        r.status,
        413,
        "chunked 2 MiB body to a SCIM path: body: {}",
        r.text()
    );
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[limits]\nmax_header_bytes = 16384\n",
    );
    let gw = Gateway::start(&toml).await;
    let req = http::Request::builder()
        .uri("/hello")
        .header("host", gw.host_header())
        .header("x-big", "a".repeat(40_000))
        .body(empty())
        .unwrap();
    match send_plain(gw.gateway_addr, req).await {
        Ok(r) => {
            assert!(
                !r.came_from_upstream(),
                "a 40 KB header went through with max_header_bytes = 16384"
            );
            assert!(r.status.is_client_error(), "status {}", r.status);
        }
        Err(e) => println!("oversized headers: connection failed ({e}), acceptable"),
    }
    assert_eq!(upstream.requests(), 0);
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stalled_clients_are_disconnected_after_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::start().await;
    let listeners = format!("{}{}", plain_listener(), self_signed_listener("@DIR@"));
    let toml = config_toml(
        &listeners,
        &upstream.url(),
        "",
        "[limits]\nheader_read_timeout = \"1s\"\n",
    );
    let gw = Gateway::start(&toml).await;

    // Plain: half a request head, then nothing.
    let mut tcp = tokio::net::TcpStream::connect(gw.gateway_addrs[0])
        .await
        .unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "a stalled request head kept the connection open for 20 s (header_read_timeout = 1s)"
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "answer: {answer:?}"
    );

    // TLS: a TCP connection that never starts the handshake.
    let mut tcp = tokio::net::TcpStream::connect(gw.gateway_addrs[1])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "a silent TLS client kept the connection open for 20 s (header_read_timeout = 1s)"
    );
    assert_eq!(upstream.requests(), 0);
}

/// SCIM credentials and a platform, so SCIM requests get as far as reading their body.
const SCIM_AUTH: &str = "[scim]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n[platform]\napp_key = \"unused\"\n";

fn with_token(mut req: http::Request<Body>) -> http::Request<Body> {
    req.headers_mut().insert(
        "authorization",
        "Bearer 0123456789abcdef0123456789abcdef".parse().unwrap(),
    );
    req
}
