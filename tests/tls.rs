//! TLS termination: self-signed certificate, ALPN (h2 and http/1.1), TLS 1.2 and 1.3.

mod common;

use common::*;
use http::{Method, Request, Version};
use std::time::Duration;

struct TlsSetup {
    _upstream: TestUpstream,
    gw: Gateway,
    cert_pem: Vec<u8>,
}

async fn tls_gateway() -> TlsSetup {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(&self_signed_listener("@DIR@"), &upstream.url(), "", "");
    let gw = Gateway::start(&toml).await;
    let cert_pem = std::fs::read(gw.dir.join("cert.pem")).unwrap();
    TlsSetup {
        _upstream: upstream,
        gw,
        cert_pem,
    }
}

#[tokio::test]
async fn self_signed_certificate_is_written_logged_and_served() {
    let s = tls_gateway().await;
    let gw = &s.gw;

    let line = gw
        .wait_log(Duration::from_secs(20), |j| {
            j.message() == "wrote self-signed certificate"
        })
        .await
        .expect("no 'wrote self-signed certificate' log line");
    let cert_path = line
        .str_field("cert_path")
        .expect("the line has no cert_path");
    assert_eq!(
        std::fs::canonicalize(&cert_path).unwrap(),
        std::fs::canonicalize(gw.dir.join("cert.pem")).unwrap()
    );
    assert!(gw.dir.join("key.pem").exists(), "key.pem not written");

    let listening = gw
        .json_logs()
        .into_iter()
        .find(|j| {
            j.message() == "listening" && j.str_field("listener").as_deref() == Some("gateway")
        })
        .unwrap();
    assert_eq!(
        listening.str_field("tls").as_deref(),
        Some("true"),
        "{listening:?}"
    );

    // The certificate served is the one written, and it verifies for every promised name.
    let written = pem_certs_der(&s.cert_pem);
    for name in ["localhost", "127.0.0.1", "gw.test"] {
        let stream = tls_connect(
            gw.gateway_addr,
            name,
            client_config(&s.cert_pem, &[b"http/1.1"]),
        )
        .await
        .unwrap_or_else(|e| panic!("handshake as {name:?} with the written cert as root: {e}"));
        assert_eq!(
            tls_info(&stream).leaf_der,
            written[0],
            "served leaf != cert.pem"
        );
    }
}

#[tokio::test]
async fn alpn_http1_serves_proxied_get() {
    let s = tls_gateway().await;
    let tls = tls_connect(
        s.gw.gateway_addr,
        "localhost",
        client_config(&s.cert_pem, &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls_info(&tls).alpn.as_deref(), Some(&b"http/1.1"[..]));
    let mut sender = h1_handshake(tls).await.unwrap();
    let host = format!("localhost:{}", s.gw.gateway_addr.port());
    for _ in 0..3 {
        // several requests on one connection
        sender.ready().await.unwrap();
        let resp = Resp::collect(sender.send_request(get(&host, "/hello")).await.unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.version, Version::HTTP_11);
        assert_eq!(resp.text(), "hello");
    }
}

#[tokio::test]
async fn alpn_h2_serves_proxied_get() {
    let s = tls_gateway().await;
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let tls = tls_connect(
        s.gw.gateway_addr,
        "localhost",
        client_config(&s.cert_pem, both),
    )
    .await
    .unwrap();
    assert_eq!(
        tls_info(&tls).alpn.as_deref(),
        Some(&b"h2"[..]),
        "server did not pick h2"
    );
    let mut sender = h2_handshake(tls).await.unwrap();
    let uri = format!("https://localhost:{}/hello", s.gw.gateway_addr.port());
    // Concurrent streams on the one connection.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        sender.ready().await.unwrap();
        let req = Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .body(empty())
            .unwrap();
        let fut = sender.send_request(req);
        tasks.push(tokio::spawn(async move {
            Resp::collect(fut.await.unwrap()).await.unwrap()
        }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.version, Version::HTTP_2);
        assert_eq!(resp.text(), "hello");
    }
}

#[tokio::test]
async fn no_alpn_falls_back_to_http1() {
    let s = tls_gateway().await;
    let resp = send_tls(
        s.gw.gateway_addr,
        "localhost",
        client_config(&s.cert_pem, &[]),
        get("localhost", "/hello"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello");
}

#[tokio::test]
async fn tls12_and_tls13_are_both_accepted() {
    let s = tls_gateway().await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = client_config_versions(&s.cert_pem, &[b"http/1.1"], &[version]);
        let tls = tls_connect(s.gw.gateway_addr, "localhost", cfg)
            .await
            .unwrap_or_else(|e| panic!("{want:?} handshake failed: {e}"));
        assert_eq!(tls_info(&tls).version, Some(want));
        let mut sender = h1_handshake(tls).await.unwrap();
        let resp = Resp::collect(
            sender
                .send_request(get("localhost", "/hello"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{want:?}");
        assert_eq!(resp.text(), "hello", "{want:?}");
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_listener_does_not_get_proxied() {
    let s = tls_gateway().await;
    // Whatever the gateway does with cleartext on a TLS port, it must not forward it.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        http_get(s.gw.gateway_addr, "/hello"),
    )
    .await;
    if let Ok(Ok(resp)) = r {
        assert!(
            !resp.came_from_upstream(),
            "cleartext request on the TLS listener reached the upstream"
        );
        assert_ne!(resp.status, 200);
    }
    assert_eq!(s._upstream.requests(), 0);
}

#[tokio::test]
async fn plain_and_tls_listeners_side_by_side() {
    let upstream = TestUpstream::start().await;
    let listeners = format!("{}{}", self_signed_listener("@DIR@"), plain_listener());
    let gw = Gateway::start(&config_toml(&listeners, &upstream.url(), "", "")).await;
    assert_eq!(gw.gateway_addrs.len(), 2);
    let announced: Vec<String> = gw
        .json_logs()
        .into_iter()
        .filter(|j| {
            j.message() == "listening" && j.str_field("listener").as_deref() == Some("gateway")
        })
        .map(|j| j.str_field("tls").unwrap_or_default())
        .collect();
    assert_eq!(
        announced,
        ["true", "false"],
        "listening lines not in config order"
    );

    let cert = std::fs::read(gw.dir.join("cert.pem")).unwrap();
    let r = send_tls(
        gw.gateway_addrs[0],
        "localhost",
        client_config(&cert, &[b"http/1.1"]),
        get("localhost", "/headers"),
    )
    .await
    .unwrap();
    assert_eq!(
        parse_header_dump(&r.text())
            .get("x-forwarded-proto")
            .map(String::as_str),
        Some("https")
    );
    let r = send_plain(gw.gateway_addrs[1], get("localhost", "/headers"))
        .await
        .unwrap();
    assert_eq!(
        parse_header_dump(&r.text())
            .get("x-forwarded-proto")
            .map(String::as_str),
        Some("http")
    );
}
