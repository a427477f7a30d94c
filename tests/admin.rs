//! The admin listener: liveness and readiness.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn healthz_is_200_and_readyz_is_200_with_the_upstream_up() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", "")).await;

    let r = http_get(gw.admin_addr, "/healthz").await.unwrap();
    assert_eq!(r.status, 200, "/healthz: {}", r.text());

    let (ready, seen) = poll_status(gw.admin_addr, "/readyz", 200, Duration::from_secs(20)).await;
    assert!(ready, "/readyz never 200 with the upstream up: {seen:?}");

    // Admin endpoints are not proxied, and proxied paths are not on the admin listener.
    let r = http_get(gw.admin_addr, "/hello").await.unwrap();
    assert!(!r.came_from_upstream(), "the admin listener proxied /hello");
    assert!(!upstream
        .uris()
        .iter()
        .any(|u| u.contains("healthz") || u.contains("readyz")));
}

#[tokio::test]
async fn readyz_is_503_with_the_upstream_down() {
    let dead = dead_addr().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &format!("http://{dead}"),
        "",
        "",
    ))
    .await;

    let r = http_get(gw.admin_addr, "/healthz").await.unwrap();
    assert_eq!(r.status, 200, "/healthz must not depend on the upstream");

    let (unready, seen) = poll_status(gw.admin_addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(
        unready,
        "/readyz never 503 with the upstream down: {seen:?}"
    );
    // It must never have claimed readiness.
    assert!(
        !seen.iter().any(|s| s == "200"),
        "/readyz said 200 with the upstream down: {seen:?}"
    );
    // A request that tried the upstream and failed (502) does not make it ready either.
    let r = send_plain(gw.gateway_addr, get(&gw.host_header(), "/hello"))
        .await
        .unwrap();
    assert_eq!(r.status, 502, "pass-through with the upstream down");
    let r = http_get(gw.admin_addr, "/readyz").await.unwrap();
    assert_eq!(r.status, 503);
}
